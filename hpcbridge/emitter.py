"""Sending the bridge's events to the sink Knative injects as ``K_SINK``."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import httpx

from hpcbridge.events import CloudEvent, encode

__all__ = ["Emitter"]

log = logging.getLogger(__name__)


class Emitter:
    """Posts events in binary mode; without a sink, events are only logged.

    Redis already holds every transition, so an event that cannot be delivered does not
    fail the tick that produced it: the caller keeps it and sends it again later.
    """

    def __init__(self, sink: str | None, timeout_s: float = 5.0) -> None:
        self.sink = sink
        self._client = httpx.Client(timeout=timeout_s) if sink else None

    def emit(self, events: Iterable[CloudEvent]) -> list[CloudEvent]:
        """Send ``events`` in order; return those the sink did not accept."""
        undelivered = []
        for event in events:
            if self._client is None or self.sink is None:
                log.debug("no sink; event %s not sent", event["type"],
                          extra={"job_id": event.get("subject")})
                continue
            headers, body = encode(event)
            try:
                answer = self._client.post(self.sink, headers=headers, content=body)
            except httpx.HTTPError as exc:
                log.warning("event %s not delivered: %s", event["type"], type(exc).__name__,
                            extra={"job_id": event.get("subject")})
                undelivered.append(event)
                continue
            if not answer.is_success:
                log.warning("sink refused event %s with %s", event["type"], answer.status_code,
                            extra={"job_id": event.get("subject")})
                undelivered.append(event)
        return undelivered

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
