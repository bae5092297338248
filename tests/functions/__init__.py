"""Tests of the three functions over HTTP, as Knative calls them."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx

from hpcbridge import events
from hpcbridge.dev import DevStack
from hpcbridge.model import JobStatus
from hpcbridge.store import Store
from tests.adapters import until

SOURCE = "/tests/pipeline"


def send(url: str, event_type: str, data: Any, *, mode: str = "binary",
         event_id: str | None = None, source: str = SOURCE,
         extensions: dict[str, str] | None = None,
         headers: dict[str, str] | None = None) -> httpx.Response:
    """POST one CloudEvent to ``url`` in binary or structured mode (``headers`` on top,
    e.g. Authorization)."""
    extra = headers or {}
    attributes = {"type": event_type, "source": source, "id": event_id or uuid.uuid4().hex,
                  "specversion": "1.0", **(extensions or {})}
    if mode == "structured":
        body = json.dumps({**attributes, "datacontenttype": "application/json", "data": data})
        return httpx.post(url, content=body, timeout=60,
                          headers={"content-type": "application/cloudevents+json", **extra})
    sent = {f"ce-{k}": v for k, v in attributes.items()}
    sent["content-type"] = "application/json"
    return httpx.post(url, content=json.dumps(data), headers={**sent, **extra}, timeout=60)


def reply(answer: httpx.Response) -> events.CloudEvent:
    """The CloudEvent a function answered with."""
    assert answer.headers.get("ce-type"), f"no reply event: {answer.status_code} {answer.text}"
    return events.parse(answer.headers, answer.content)


def submitted(stack: DevStack, data: dict[str, Any],
              headers: dict[str, str] | None = None) -> str:
    """Submit through the submit function; the job id."""
    answer = send(stack.functions["submit"], events.REQUESTED, data, headers=headers)
    assert answer.status_code == 200, answer.text
    return reply(answer)["subject"]


def tick(stack: DevStack, headers: dict[str, str] | None = None) -> httpx.Response:
    answer = send(stack.functions["poll"], events.TICK, None, headers=headers)
    assert answer.status_code == 200, answer.text
    return answer


def tick_until(stack: DevStack, store: Store, job_id: str, *states: str,
               timeout_s: float = 60, headers: dict[str, str] | None = None) -> JobStatus:
    """Send ticks until the job is in one of ``states``; its status then."""
    def reached() -> bool:
        tick(stack, headers)
        job = store.load(job_id)
        return job is not None and str(job.status.state) in states

    until(reached, timeout_s, lambda: f"{job_id} is {store.load(job_id)}")
    job = store.load(job_id)
    assert job is not None
    return job.status


def emitted(stack: DevStack, job_id: str) -> list[dict[str, Any]]:
    """The events the broker received about ``job_id``, oldest first."""
    assert stack.broker is not None
    return stack.broker.seen(job_id)
