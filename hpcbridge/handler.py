"""HTTP in, HTTP out: the one place where a function's request becomes a Bridge call.

A client's mistake is a 400 with a ``hpcbridge.job.rejected`` event naming the field (not
retried by Knative), as are a sender without a valid token (401, field ``Authorization``)
and a sender asking for another namespace (403), when sender authentication is on
(:mod:`hpcbridge.senders`); an outage of Redis or a manager is a 503 (retried with backoff);
anything else is a 500 that says where to look and never carries a stack trace.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

import flask

from adapters.base import ConfigError
from hpcbridge import events, metrics
from hpcbridge.credentials import redact
from hpcbridge.logs import configure
from hpcbridge.model import RequestError
from hpcbridge.senders import AUTHORIZATION, ReviewUnavailable, Sender, identify
from hpcbridge.service import TRANSIENT, Bridge, Reply
from hpcbridge.settings import Settings

__all__ = ["respond"]

log = logging.getLogger(__name__)
configure()

Handler = Callable[[Bridge, events.CloudEvent, Sender | None], Reply]


def respond(request: flask.Request, handler: Handler) -> flask.Response:
    """Decode ``request`` as a CloudEvent, run ``handler`` on the shared bridge, answer."""
    if request.method in ("GET", "HEAD"):
        if request.path == "/metrics":
            return flask.Response(metrics.render(), 200,
                                  content_type="text/plain; version=0.0.4; charset=utf-8")
        return flask.Response("ok\n", 200, mimetype="text/plain")
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        log.error("bad configuration: %s", exc)
        return flask.Response(f"unavailable, the bridge is misconfigured: {exc}\n", 503,
                              mimetype="text/plain")
    # Read one byte past the limit, whatever Content-Length says (or a chunked request
    # does not say): an oversized event is refused without being read whole.
    body = request.stream.read(settings.max_event_bytes + 1)
    if len(body) > settings.max_event_bytes:
        return _rejected(settings, RequestError(None, f"the event is larger than "
                                                      f"{settings.max_event_bytes} bytes"), None,
                         413)
    event = None
    try:
        # Who sent it comes first: an unknown sender learns nothing, not even a 400.
        sender = identify(settings, request.headers.get(AUTHORIZATION))
        event = events.parse(request.headers, body)
        reply = handler(Bridge.shared(), event, sender)
    except RequestError as error:
        log.info("rejected: %s", error, extra=_context(event, "rejected"))
        metrics.EVENTS.inc(event["type"] if event is not None else "-", "rejected")
        return _rejected(settings, error, event, getattr(error, "status", 400))
    except (*TRANSIENT, ReviewUnavailable) as exc:
        message = redact(str(exc))
        log.warning("unavailable: %s", message, extra=_context(event, "unavailable"))
        metrics.EVENTS.inc(event["type"] if event is not None else "-", "unavailable")
        return flask.Response(f"unavailable, retry later: {message}\n", 503,
                              mimetype="text/plain")
    except Exception:
        incident = uuid.uuid4().hex[:12]
        log.exception("internal error %s", incident, extra=_context(event, "error"))
        metrics.EVENTS.inc(event["type"] if event is not None else "-", "error")
        return flask.Response(f"internal error {incident}; see the bridge's logs\n", 500,
                              mimetype="text/plain")
    log.info("handled: %s", reply.detail or reply.outcome,
             extra=_context(event, reply.outcome))
    metrics.EVENTS.inc(event["type"], reply.outcome)
    headers = {"Hpcbridge-Outcome": reply.outcome}
    if reply.detail:
        headers["Hpcbridge-Detail"] = reply.detail
    if reply.event is None:
        return flask.Response(b"", reply.status, headers=headers)
    event_headers, body = events.encode(reply.event)
    return flask.Response(body, reply.status, headers={**event_headers, **headers})


def _rejected(settings: Settings, error: RequestError, event: events.CloudEvent | None,
              status: int) -> flask.Response:
    subject = event.get("subject") if event is not None else None
    headers, body = events.encode(events.rejected_event(settings.source, error, event, subject))
    headers = {**headers, "Hpcbridge-Outcome": "rejected"}
    if status == 401:
        headers["WWW-Authenticate"] = f'Bearer realm="{settings.audience}"'
    return flask.Response(body, status, headers=headers)


def _context(event: events.CloudEvent | None, outcome: str) -> dict[str, str | None]:
    if event is None:
        return {"outcome": outcome}
    return {"event_id": event["id"], "event_type": event["type"],
            "job_id": event.get("subject"), "outcome": outcome}
