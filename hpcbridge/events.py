"""The event contract: types in and out, parsing, and the events the bridge emits.

Every event the bridge emits has ``subject`` = job id, so a Trigger can wait for one job,
and an id derived from the job and the transition, so a consumer can drop duplicates.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import cloudevents.exceptions
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent, from_http

from hpcbridge.model import JobStatus, RequestError, State

__all__ = [
    "APISERVER_DELETE",
    "APISERVER_UPDATE",
    "CANCEL",
    "NAMESPACE",
    "PING",
    "REJECTED",
    "REQUESTED",
    "SUBMITTED",
    "TICK",
    "CloudEvent",
    "dumps",
    "encode",
    "event_data",
    "loads",
    "parse",
    "rejected_event",
    "status_event",
    "trace_context",
    "type_for_state",
]

REQUESTED = "hpcbridge.job.requested"
CANCEL = "hpcbridge.job.cancel"
TICK = "hpcbridge.poll.tick"
PING = "dev.knative.sources.ping"
APISERVER_UPDATE = "dev.knative.apiserver.resource.update"
APISERVER_DELETE = "dev.knative.apiserver.resource.delete"
SUBMITTED = "hpcbridge.job.submitted"
REJECTED = "hpcbridge.job.rejected"
#: the extension attribute naming the Kubernetes namespace of the job an event is about
NAMESPACE = "namespace"

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


def type_for_state(state: State) -> str:
    """``hpcbridge.job.<state>``, the type of the event announcing a transition."""
    return f"hpcbridge.job.{state.lower()}"


def parse(headers: Mapping[str, str], body: bytes) -> CloudEvent:
    """A CloudEvent from an HTTP request in binary or structured mode.

    What is wrong is named: a missing or empty required attribute by its name, a body
    that is not JSON as such; the SDK's own words only for what it alone can tell.
    """
    lowered = {key.lower(): value for key, value in headers.items()}
    if "ce-specversion" in lowered:  # binary mode: the attributes are headers
        for name in ("id", "source", "type"):
            if f"ce-{name}" not in lowered:
                raise RequestError(name, f"is required (the ce-{name} header)")
    try:
        event = from_http(lowered, body)
    except cloudevents.exceptions.GenericException as exc:
        raise RequestError(None, f"not a CloudEvent: {exc}") from None
    except (ValueError, UnicodeDecodeError):
        raise RequestError(None, "the event body is not valid UTF-8 JSON") from None
    for name in ("id", "source", "type"):
        if not event.get(name):
            raise RequestError(name, "must not be empty")
    return event


def event_data(event: CloudEvent, *, required: bool = True) -> Any:
    """The event's data as JSON: a dict or list, or None when absent and not required."""
    data = event.data
    if isinstance(data, bytes | str):
        if not data:
            data = None
        else:
            try:
                data = json.loads(data)
            except (ValueError, UnicodeDecodeError):
                raise RequestError(None, "the event data is not valid JSON") from None
    if data is None and required:
        raise RequestError(None, "the event has no data")
    return data


def _timestamp(epoch: float | None) -> str:
    moment = datetime.now(UTC) if epoch is None else datetime.fromtimestamp(epoch, UTC)
    return moment.isoformat().replace("+00:00", "Z")


def trace_context(event: CloudEvent) -> dict[str, str]:
    """The event's W3C trace context (the CloudEvents distributed tracing extension).

    A malformed ``traceparent`` is dropped, not refused: tracing is best effort.
    """
    parent = event.get("traceparent")
    if not isinstance(parent, str) or not _TRACEPARENT.match(parent):
        return {}
    context = {"traceparent": parent}
    state = event.get("tracestate")
    if isinstance(state, str) and state and len(state) <= 512:
        context["tracestate"] = state
    return context


def status_event(source: str, status: JobStatus, event_type: str | None = None,
                 trace: Mapping[str, str] | None = None,
                 namespace: str | None = None) -> CloudEvent:
    """The event announcing ``status`` (by default, its state's transition event).

    ``trace`` (the request's trace context) is carried on every event about the job, and
    the job's Kubernetes ``namespace`` as the extension attribute ``namespace``, so that a
    Trigger can route a team's events to that team alone (``filter.attributes``).
    """
    event_type = event_type or type_for_state(status.state)
    stamp = int((status.updated_at or 0) * 1000)
    return CloudEvent(
        {
            "type": event_type,
            "source": source,
            "subject": status.job_id,
            "id": f"{status.job_id}.{event_type.rsplit('.', 1)[-1]}.{stamp}",
            "time": _timestamp(status.updated_at),
            "datacontenttype": "application/json",
            **(trace or {}),
            **({NAMESPACE: namespace} if namespace else {}),
        },
        status.to_dict(),
    )


def rejected_event(source: str, error: RequestError, cause: CloudEvent | None,
                   job_id: str | None = None) -> CloudEvent:
    attributes = {
        "type": REJECTED,
        "source": source,
        "id": f"{cause['id']}.rejected" if cause is not None else f"rejected.{_timestamp(None)}",
        "time": _timestamp(None),
        "datacontenttype": "application/json",
    }
    if job_id:
        attributes["subject"] = job_id
    return CloudEvent(attributes, {"error": error.message, "field": error.field})


def dumps(event: CloudEvent) -> str:
    """``event`` as one JSON string (structured mode), to keep it for later."""
    return json.dumps({**event.get_attributes(), "data": event.data}, default=str)


def loads(text: str) -> CloudEvent:
    document = json.loads(text)
    data = document.pop("data", None)
    return CloudEvent(document, data)


def encode(event: CloudEvent) -> tuple[dict[str, str], bytes]:
    """Binary-mode HTTP headers and body for ``event``."""
    headers, body = to_binary(event)
    return dict(headers), body or b""
