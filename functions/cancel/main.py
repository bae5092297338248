"""Knative function: ``hpcbridge.job.cancel`` or a deleted proxy pod -> the job stops."""

import flask
import functions_framework

from hpcbridge.handler import respond
from hpcbridge.service import Bridge


@functions_framework.http
def cancel(request: flask.Request) -> flask.Response:
    return respond(request, Bridge.cancel)
