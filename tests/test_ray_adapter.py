"""The Ray adapter against a real Ray head (Ray 2.60, token authentication on)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.base import AuthenticationFailed, ConfigError, ManagerRejected
from adapters.ray import RayJobsAdapter
from hpcbridge.model import Reason, State
from tests.adapters import finished, new_job_id, until, wait_for
from tests.adapters.ray_harness import RayHarness
from tests.services.ray_head import RayHead

pytestmark = pytest.mark.ray


class Traffic(httpx.BaseTransport):
    """A real transport that records every exchange as (method, path, status).

    With ``lose_submit_answer`` it sends the first ``POST /api/jobs/`` and then fails as
    if the connection dropped before the answer came.
    """

    def __init__(self, *, lose_submit_answer: bool = False) -> None:
        self._inner = httpx.HTTPTransport()
        self._lose = lose_submit_answer
        self.exchanges: list[tuple[str, str, int]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        self.exchanges.append((request.method, request.url.path, response.status_code))
        if self._lose and request.method == "POST" and request.url.path == "/api/jobs/":
            self._lose = False
            response.close()
            raise httpx.ReadError("connection lost", request=request)
        return response

    def close(self) -> None:
        self._inner.close()


@pytest.fixture
def harness(ray_head: RayHead, tmp_path: Path) -> Iterator[RayHarness]:
    harness = RayHarness(ray_head, tmp_path)
    yield harness
    harness.close()


def adapter_for(harness: RayHarness, transport: httpx.BaseTransport | None = None,
                **settings: Any) -> RayJobsAdapter:
    """Another adapter of the same target, as another function instance would have."""
    return RayJobsAdapter(harness.target, {**harness.settings, **settings},
                          transport=transport)


def test_a_job_is_its_job_id_in_ray_with_labels_name_and_the_targets_runtime_env(
        harness: RayHarness) -> None:
    adapter = adapter_for(harness, runtime_env={"env_vars": {"SITE": "from the target"}},
                          metadata={"site": "test"})
    job_id = new_job_id()
    request = harness.request(command=["sh", "-c", 'echo "$SITE|$HPCBRIDGE_JOB_ID"'],
                              name="step-1", labels={"team": "a"})
    try:
        native_id = adapter.submit(request, job_id)
        assert finished(adapter, native_id, harness.wait_s).state is State.SUCCEEDED
        logs = adapter.logs(native_id)
    finally:
        adapter.close()

    record = harness.head.job(job_id)
    assert native_id == job_id
    assert record is not None and record["submission_id"] == job_id
    assert {k: record["metadata"].get(k) for k in ("site", "team", "job_name")} == \
        {"site": "test", "team": "a", "job_name": "step-1"}
    assert logs == f"from the target|{job_id}\n"


def test_a_second_submit_from_another_instance_adopts_the_job(harness: RayHarness) -> None:
    runs = harness.shared_dir / "runs"
    request = harness.request(command=["sh", "-c", 'echo run >> "$1"', "sh", str(runs)])
    job_id = new_job_id()
    traffic = Traffic()
    other = adapter_for(harness, traffic)
    try:
        first = harness.adapter.submit(request, job_id)
        second = other.submit(request, job_id)
    finally:
        other.close()

    assert first == second == job_id
    # Ray refuses the duplicate with a 500; the adapter's GET finds the job.
    assert traffic.exchanges == [("POST", "/api/jobs/", 500),
                                 ("GET", f"/api/jobs/{job_id}", 200)]
    assert finished(harness.adapter, first, harness.wait_s).state is State.SUCCEEDED
    assert runs.read_text() == "run\n"


def test_a_submit_whose_answer_was_lost_finds_its_job(harness: RayHarness) -> None:
    traffic = Traffic(lose_submit_answer=True)
    adapter = adapter_for(harness, traffic)
    job_id = new_job_id()
    try:
        assert adapter.submit(harness.request(), job_id) == job_id
    finally:
        adapter.close()

    assert traffic.exchanges == [("POST", "/api/jobs/", 200),
                                 ("GET", f"/api/jobs/{job_id}", 200)]
    assert finished(harness.adapter, job_id, harness.wait_s).state is State.SUCCEEDED


def test_a_cancelled_waiting_job_is_cancelled_for_everyone_and_never_runs(
        harness: RayHarness) -> None:
    marker = harness.shared_dir / "ran"
    native_id = harness.queued_job(command=["touch", str(marker)])
    wait_for(harness.adapter, native_id, lambda o: o.state is State.QUEUED, harness.wait_s)

    harness.adapter.cancel(native_id)
    harness.adapter.cancel(native_id)

    elsewhere = adapter_for(harness)
    try:
        observation = elsewhere.status_many([native_id])[native_id]
    finally:
        elsewhere.close()
    assert observation.state is State.CANCELLED
    assert observation.native_state == "PENDING (stop requested)"
    assert observation.started_at is None
    # Once the CPUs are free Ray starts the job and stops it at once.
    harness.release()
    until(lambda: (harness.head.job(native_id) or {}).get("status") == "STOPPED",
          harness.wait_s, lambda: f"Ray's record: {harness.head.job(native_id)}")
    assert harness.adapter.status_many([native_id])[native_id].state is State.CANCELLED
    assert not marker.exists()


def test_a_job_cancelled_as_it_is_submitted_never_runs(harness: RayHarness) -> None:
    marker = harness.shared_dir / "ran"
    native_id = harness.adapter.submit(harness.request(command=["touch", str(marker)]),
                                       new_job_id())

    harness.adapter.cancel(native_id)

    observation = finished(harness.adapter, native_id, harness.wait_s)
    assert observation.state is State.CANCELLED
    until(lambda: (harness.head.job(native_id) or {}).get("status") == "STOPPED",
          harness.wait_s, lambda: f"Ray's record: {harness.head.job(native_id)}")
    assert not marker.exists()


def test_a_stop_ray_did_not_take_yet_is_asked_again() -> None:
    """Right after a submit Ray may answer a stop with ``stopped: false`` for a job that is
    still PENDING (its supervisor is not registered): the stop is asked again before the
    cancel is recorded."""
    answers = iter([{"stopped": False}, {"status": "PENDING", "submission_id": "j-1"},
                    {"stopped": True}, {"status": "PENDING", "submission_id": "j-1"},
                    {"job_id": "j-1.cancel", "submission_id": "j-1.cancel"}])
    sent: list[tuple[str, str]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append((request.method, request.url.path))
        return httpx.Response(200, json=next(answers))

    adapter = RayJobsAdapter("ray-test", {"url": "http://ray-head:8265"},
                             transport=httpx.MockTransport(answer))
    adapter.cancel("j-1")

    assert sent == [("POST", "/api/jobs/j-1/stop"), ("GET", "/api/jobs/j-1"),
                    ("POST", "/api/jobs/j-1/stop"), ("GET", "/api/jobs/j-1"),
                    ("POST", "/api/jobs/")]


def test_the_time_limit_counts_from_the_start_not_from_the_wait(harness: RayHarness) -> None:
    native_id = harness.queued_job(command=["true"], resources={"time_limit_s": 1})
    waiting = wait_for(harness.adapter, native_id, lambda o: o.state is State.QUEUED,
                       harness.wait_s)
    assert waiting.started_at is None
    held = harness.head.job(native_id)
    assert held is not None
    # Held for longer than its limit: a limit counted from Ray's start_time (when Ray took
    # the job) would kill it the moment it starts.
    limit_passed = held["start_time"] / 1000 + 2
    until(lambda: time.time() > limit_passed, 30, lambda: "the clock did not move")

    harness.release()

    assert finished(harness.adapter, native_id, harness.wait_s).state is State.SUCCEEDED


def test_a_script_reaches_the_job_unexpanded(harness: RayHarness) -> None:
    """Ray expands $VAR in runtime_env env_vars; the script must not suffer from it."""
    script = "#!/bin/sh\necho '${PATH} $HOME $$'\n"

    native_id = harness.adapter.submit(harness.request(script=script), new_job_id())

    assert finished(harness.adapter, native_id, harness.wait_s).state is State.SUCCEEDED
    assert harness.adapter.logs(native_id) == "${PATH} $HOME $$\n"


def test_a_job_whose_runtime_env_cannot_be_set_up_is_a_submit_error(
        harness: RayHarness) -> None:
    adapter = adapter_for(harness, runtime_env={"working_dir": "/nonexistent/dir"})
    try:
        native_id = adapter.submit(harness.request(), new_job_id())
        observation = finished(adapter, native_id, harness.wait_s)
    finally:
        adapter.close()

    assert observation.state is State.FAILED
    assert observation.reason is Reason.SUBMIT_ERROR
    assert observation.exit_code is None


def test_a_drivers_ray_job_id_is_not_a_tag(harness: RayHarness) -> None:
    """``GET /api/jobs/02000000`` answers with the submission whose driver has that id."""
    program = "import ray; ray.init(); print(ray.get_runtime_context().get_job_id())"
    native_id = harness.adapter.submit(harness.request(command=["python", "-c", program]),
                                       new_job_id())
    assert finished(harness.adapter, native_id, harness.wait_s * 2).state is State.SUCCEEDED
    ray_job_id = harness.adapter.logs(native_id).split()[-1]
    assert harness.head.request("GET", f"/api/jobs/{ray_job_id}").status_code == 200

    assert harness.adapter.find_by_tag(ray_job_id) is None
    assert ray_job_id not in harness.adapter.status_many([ray_job_id])


def test_logs_of_an_unknown_job_are_empty(harness: RayHarness) -> None:
    assert harness.adapter.logs(harness.unknown_id) == ""


def test_capacity_is_the_heads(harness: RayHarness) -> None:
    capacity = harness.adapter.capacity()

    assert (capacity["cpus"], capacity["nodes"], capacity["gpus"]) == \
        (harness.head.cpus, 1, 0)
    assert capacity["memory_mb"] > 0


def test_without_a_token_ray_says_one_is_needed(harness: RayHarness) -> None:
    settings = {k: v for k, v in harness.settings.items() if k != "token_file"}
    adapter = RayJobsAdapter(harness.target, settings)
    try:
        with pytest.raises(AuthenticationFailed, match="token_file"):
            adapter.status_many([harness.unknown_id])
    finally:
        adapter.close()


def test_a_request_ray_cannot_honour_submits_nothing(harness: RayHarness) -> None:
    job_id = new_job_id()

    with pytest.raises(ManagerRejected, match="queues"):
        harness.adapter.submit(harness.request(queue="gpu"), job_id)

    assert harness.head.job(job_id) is None


@pytest.mark.parametrize(("settings", "says"), [
    ({"url": None}, "url"),
    ({"url": "ray-head:8265"}, "url"),
    ({"token": "secret"}, "token_file"),
    ({"runtime_env": {"env_vars": {"HPCBRIDGE_LAUNCH": "x"}}}, "reserves"),
    ({"runtime_env": {"env_vars": {"A": 1}}}, "env_vars"),
    ({"metadata": {"job_name": "x"}}, "reserved"),
    ({"timeout_s": 0}, "timeout_s"),
    ({"partition": "x"}, "unknown setting"),
])
def test_settings_are_checked(harness: RayHarness, settings: dict[str, Any],
                              says: str) -> None:
    merged = {k: v for k, v in {**harness.settings, **settings}.items() if v is not None}

    with pytest.raises(ConfigError, match=says):
        RayJobsAdapter(harness.target, merged)
