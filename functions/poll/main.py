"""Knative function: a tick -> one batched status call per target, transitions emitted."""

import flask
import functions_framework

from hpcbridge.handler import respond
from hpcbridge.service import Bridge


@functions_framework.http
def poll(request: flask.Request) -> flask.Response:
    return respond(request, Bridge.poll)
