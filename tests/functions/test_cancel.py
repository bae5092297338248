"""The cancel function: running and queued jobs stop; repeats and strangers are no-ops."""

from __future__ import annotations

from pathlib import Path

from hpcbridge import events
from hpcbridge.dev import DevStack
from hpcbridge.naming import JOB_ID_LABEL
from hpcbridge.store import Store
from tests.functions import reply, send, submitted, tick, tick_until


def cancel(stack: DevStack, job_id: str):
    return send(stack.functions["cancel"], events.CANCEL, {"job_id": job_id})


def test_a_running_job_is_cancelled_once(bridge: DevStack, store: Store) -> None:
    job_id = submitted(bridge, {"target": "local", "command": ["sleep", "300"]})
    tick_until(bridge, store, job_id, "RUNNING")
    answer = cancel(bridge, job_id)
    assert answer.status_code == 200
    event = reply(answer)
    assert (event["type"], event["subject"]) == ("hpcbridge.job.cancelled", job_id)
    assert event.data["reason"] == "cancelled"
    again = cancel(bridge, job_id)
    assert (again.status_code, again.headers["Hpcbridge-Outcome"]) == (200, "already-cancelled")
    assert again.content == answer.content and again.headers["ce-id"] == answer.headers["ce-id"]
    tick(bridge)
    job = store.load(job_id)
    assert job is not None and str(job.status.state) == "CANCELLED", "terminal absorbs"


def test_a_queued_job_is_cancelled_and_never_runs(bridge: DevStack, store: Store,
                                                  tmp_path: Path) -> None:
    blocker = submitted(bridge, {"target": "single", "command": ["sleep", "300"]})
    marker = tmp_path / "ran"
    queued = submitted(bridge, {"target": "single", "command": ["touch", str(marker)]})
    tick_until(bridge, store, queued, "QUEUED")
    assert reply(cancel(bridge, queued))["type"] == "hpcbridge.job.cancelled"
    assert reply(cancel(bridge, blocker))["type"] == "hpcbridge.job.cancelled"
    follower = submitted(bridge, {"target": "single", "command": ["true"]})
    tick_until(bridge, store, follower, "SUCCEEDED")
    assert not marker.exists()


def test_cancelling_an_unknown_job_is_a_clear_no_op(bridge: DevStack) -> None:
    answer = cancel(bridge, "no-such-job")
    assert (answer.status_code, answer.headers["Hpcbridge-Outcome"]) == (200, "unknown-job")


def test_a_bad_cancel_names_the_field(bridge: DevStack) -> None:
    answer = send(bridge.functions["cancel"], events.CANCEL, {"job_id": "Not Valid"})
    assert answer.status_code == 400
    assert reply(answer).data["field"] == "job_id"
    answer = send(bridge.functions["cancel"], events.CANCEL, {"job": "x"})
    assert reply(answer).data["field"] == "job"


def test_a_deleted_proxy_pod_cancels_its_job(bridge: DevStack, store: Store) -> None:
    job_id = submitted(bridge, {"target": "local", "command": ["sleep", "300"]})
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": f"hpcbridge-{job_id}", "namespace": "default",
                        "labels": {JOB_ID_LABEL: job_id}}}
    untouched = send(bridge.functions["cancel"], events.APISERVER_UPDATE, pod)
    assert untouched.headers["Hpcbridge-Outcome"] == "ignored"
    pod["metadata"]["deletionTimestamp"] = "2026-11-23T10:00:00Z"
    answer = send(bridge.functions["cancel"], events.APISERVER_UPDATE, pod)
    assert reply(answer)["type"] == "hpcbridge.job.cancelled"


def test_a_job_is_cancelled_only_from_its_own_namespace(bridge: DevStack, store: Store) -> None:
    job_id = submitted(bridge, {"target": "local", "command": ["sleep", "300"],
                                "namespace": "team-a"})
    for stranger in ({"job_id": job_id}, {"job_id": job_id, "namespace": "team-b"}):
        answer = send(bridge.functions["cancel"], events.CANCEL, stranger)
        assert answer.headers["Hpcbridge-Outcome"] == "unknown-job", "no sign it exists"
    job = store.load(job_id)
    assert job is not None and not job.status.state.terminal
    answer = send(bridge.functions["cancel"], events.CANCEL,
                  {"job_id": job_id, "namespace": "team-a"})
    assert reply(answer)["type"] == "hpcbridge.job.cancelled"


def test_a_cancel_names_a_valid_namespace(bridge: DevStack) -> None:
    answer = send(bridge.functions["cancel"], events.CANCEL,
                  {"job_id": "x", "namespace": "Not A Namespace"})
    assert answer.status_code == 400
    assert reply(answer).data["field"] == "namespace"
