"""Knative function: ``hpcbridge.job.requested`` -> the job runs on its target, once."""

import flask
import functions_framework

from hpcbridge.handler import respond
from hpcbridge.service import Bridge


@functions_framework.http
def submit(request: flask.Request) -> flask.Response:
    return respond(request, Bridge.submit)
