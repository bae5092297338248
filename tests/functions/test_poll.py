"""The poll function: ticks follow jobs to their end and emit one event per transition."""

from __future__ import annotations

import shutil
from pathlib import Path

from hpcbridge import events
from hpcbridge.dev import DevStack, free_port
from hpcbridge.model import JobStatus, State
from hpcbridge.store import Store
from tests.adapters import until
from tests.functions import emitted, reply, send, submitted, tick, tick_until
from tests.functions.conftest import new_stack, write_targets
from tests.services.redis_server import RedisServer


def test_a_job_is_followed_to_success_with_one_event_per_transition(
        bridge: DevStack, store: Store) -> None:
    job_id = submitted(bridge, {"target": "local", "command": ["sh", "-c", "echo hi"]})
    status = tick_until(bridge, store, job_id, "SUCCEEDED")
    assert (status.exit_code, status.reason) == (0, None)
    assert status.started_at is not None and status.finished_at is not None
    until(lambda: any(e["type"] == "hpcbridge.job.succeeded" for e in emitted(bridge, job_id)),
          10, lambda: f"events: {emitted(bridge, job_id)}")
    seen = emitted(bridge, job_id)
    types = [e["type"] for e in seen]
    assert types[-1] == "hpcbridge.job.succeeded"
    assert len(types) == len(set(types)), f"one event per transition: {types}"
    assert all(e["subject"] == job_id for e in seen)
    assert seen[-1]["data"]["state"] == "SUCCEEDED"
    history = [entry["state"] for entry in store.history(job_id)]
    assert history[0] == "ACCEPTED" and history[-1] == "SUCCEEDED"


def test_a_non_zero_exit_is_failed_with_its_exit_code(bridge: DevStack, store: Store) -> None:
    job_id = submitted(bridge, {"target": "local", "command": ["sh", "-c", "exit 3"]})
    status = tick_until(bridge, store, job_id, "FAILED")
    assert (status.exit_code, str(status.reason)) == (3, "exit_code")


def test_a_job_over_its_time_limit_fails_with_reason_timeout(bridge: DevStack,
                                                            store: Store) -> None:
    job_id = submitted(bridge, {"target": "local", "command": ["sleep", "60"],
                                "resources": {"time_limit_s": 1}})
    status = tick_until(bridge, store, job_id, "FAILED")
    assert str(status.reason) == "timeout"


def test_a_tick_skips_a_target_another_tick_holds(bridge: DevStack, store: Store) -> None:
    job_id = submitted(bridge, {"target": "local", "command": ["true"]})
    lease = store.acquire_lease("local", 30)
    assert lease is not None
    answer = tick(bridge)
    assert "skipped=local" in answer.headers["Hpcbridge-Detail"]
    job = store.load(job_id)
    assert job is not None and str(job.status.state) == "ACCEPTED"
    store.release_lease("local", lease)
    tick_until(bridge, store, job_id, "SUCCEEDED")


def test_a_vanished_job_goes_unknown_then_lost(bridge: DevStack, store: Store,
                                               local_targets: dict) -> None:
    job_id = submitted(bridge, {"target": "local", "command": ["sleep", "20"]})
    tick_until(bridge, store, job_id, "RUNNING")
    shutil.rmtree(Path(local_targets["local"]["workdir"]) / "jobs" / job_id)  # purged
    tick(bridge)
    job = store.load(job_id)
    assert job is not None and str(job.status.state) == "UNKNOWN"
    tick(bridge)  # HPCBRIDGE_LOST_AFTER_S=0 in these tests
    job = store.load(job_id)
    assert job is not None
    assert (str(job.status.state), str(job.status.reason)) == ("FAILED", "lost")


def test_a_tick_may_name_its_targets_and_refuses_unknown_ones(bridge: DevStack) -> None:
    assert send(bridge.functions["poll"], events.TICK, {"targets": ["local"]}).status_code == 200
    answer = send(bridge.functions["poll"], events.TICK, {"targets": ["mars"]})
    assert answer.status_code == 400
    assert answer.headers["ce-type"] == events.REJECTED


def test_a_pingsource_tick_is_accepted(bridge: DevStack) -> None:
    answer = send(bridge.functions["poll"], events.PING, "tick")
    assert answer.status_code == 200


def test_a_target_that_does_not_answer_does_not_stop_the_others(
        redis_server: RedisServer, store: Store, local_targets: dict, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("not used: nothing answers")
    targets = write_targets(tmp_path / "targets.yaml", {
        "local": local_targets["local"],
        "away": {"kind": "slurm", "url": f"http://127.0.0.1:{free_port()}", "user": "nobody",
                 "token_file": str(token), "output_dir": str(tmp_path)}})
    # A job the away target took earlier, while it still answered.
    earlier = JobStatus(job_id="on-away", target="away", state=State.ACCEPTED,
                        submitted_at=1.0, updated_at=1.0)
    assert store.claim(earlier, {"target": "away", "command": ["true"]}, "t", 2.0)
    assert store.record_native("on-away", "t", "42")
    with new_stack(redis_server.url, targets, tmp_path / "logs").running() as stack:
        job_id = submitted(stack, {"target": "local", "command": ["true"]})
        status = tick_until(stack, store, job_id, "SUCCEEDED")
        assert "unreachable=away" in tick(stack).headers["Hpcbridge-Detail"]
    assert status.exit_code == 0
    away = store.load("on-away")
    assert away is not None and str(away.status.state) == "ACCEPTED", "nothing guessed"


def test_the_requests_trace_context_is_on_every_event_about_the_job(
        bridge: DevStack, store: Store) -> None:
    trace = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
             "tracestate": "vendor=opaque"}
    answer = send(bridge.functions["submit"], events.REQUESTED,
                  {"target": "local", "command": ["true"]}, extensions=trace)
    submitted_event = reply(answer)
    job_id = submitted_event["subject"]
    assert {k: submitted_event.get(k) for k in trace} == trace
    tick_until(bridge, store, job_id, "SUCCEEDED")
    until(lambda: any(e["type"] == "hpcbridge.job.succeeded" for e in emitted(bridge, job_id)),
          10, lambda: f"events: {emitted(bridge, job_id)}")
    assert all({k: e.get(k) for k in trace} == trace for e in emitted(bridge, job_id))


def test_a_malformed_traceparent_is_dropped_not_refused(bridge: DevStack) -> None:
    answer = send(bridge.functions["submit"], events.REQUESTED,
                  {"target": "local", "command": ["true"]},
                  extensions={"traceparent": "not-a-trace"})
    assert answer.status_code == 200
    assert reply(answer).get("traceparent") is None


def test_every_event_about_a_job_names_its_namespace(bridge: DevStack, store: Store) -> None:
    """A Trigger can route one team's events to that team alone (filter on `namespace`)."""
    team = submitted(bridge, {"target": "local", "command": ["true"], "namespace": "team-a"})
    plain = submitted(bridge, {"target": "local", "command": ["true"]})
    for job_id in (team, plain):
        tick_until(bridge, store, job_id, "SUCCEEDED")
        until(lambda job_id=job_id: any(e["type"] == "hpcbridge.job.succeeded"
                                        for e in emitted(bridge, job_id)),
              10, lambda job_id=job_id: f"events: {emitted(bridge, job_id)}")
    assert {e["namespace"] for e in emitted(bridge, team)} == {"team-a"}
    assert {e["namespace"] for e in emitted(bridge, plain)} == {"default"}
    answer = send(bridge.functions["submit"], events.REQUESTED,
                  {"target": "local", "command": ["true"], "namespace": "team-b"})
    assert reply(answer)["type"] == events.SUBMITTED
    assert reply(answer)["namespace"] == "team-b", "the submit reply names it too"
