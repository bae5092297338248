"""Each function serves Prometheus metrics at GET /metrics."""

from __future__ import annotations

import re

import httpx

from hpcbridge import events
from hpcbridge.dev import DevStack
from hpcbridge.store import Store
from tests.functions import send, submitted, tick_until


def scrape(url: str) -> dict[str, float]:
    answer = httpx.get(url.rstrip("/") + "/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for line in answer.text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def test_functions_count_events_manager_calls_ticks_and_jobs(bridge: DevStack,
                                                             store: Store) -> None:
    before = scrape(bridge.functions["submit"])
    job_id = submitted(bridge, {"target": "local", "command": ["sleep", "30"]})
    send(bridge.functions["submit"], events.REQUESTED, {"target": "nowhere", "command": ["x"]})
    after = scrape(bridge.functions["submit"])

    def grew(samples: dict[str, float], name: str) -> float:
        return samples.get(name, 0.0) - before.get(name, 0.0)

    assert grew(after, 'hpcbridge_events_total{type="hpcbridge.job.requested",'
                       'outcome="submitted"}') == 1
    assert grew(after, 'hpcbridge_events_total{type="hpcbridge.job.requested",'
                       'outcome="rejected"}') == 1
    assert grew(after, 'hpcbridge_manager_request_seconds_count{target="local",'
                       'operation="submit"}') == 1

    tick_until(bridge, store, job_id, "RUNNING")
    poll = scrape(bridge.functions["poll"])
    assert poll['hpcbridge_active_jobs{target="local",state="RUNNING"}'] >= 1
    assert poll["hpcbridge_poll_tick_seconds_count"] >= 1
    assert poll['hpcbridge_transitions_total{target="local",state="RUNNING"}'] >= 1
    assert any(re.match(r'hpcbridge_manager_request_seconds_count\{target="local",'
                        r'operation="status"\}', name) for name in poll)
    send(bridge.functions["cancel"], events.CANCEL, {"job_id": job_id})
