"""A no-op HTTP function: the baseline a function's cold start is compared with."""

import flask
import functions_framework


@functions_framework.http
def noop(request: flask.Request) -> flask.Response:
    return flask.Response(b"", 200)
