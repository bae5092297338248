"""The Slurm adapter against a real Slurm 22.05 cluster and slurmrestd (v0.0.38)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from adapters.base import (
    AuthenticationFailed,
    ConfigError,
    ManagerRejected,
    ManagerUnavailable,
    Observation,
)
from adapters.slurm import SlurmRestAdapter
from hpcbridge.model import Reason, State
from tests.adapters import new_job_id, observe_until, until, wait_for
from tests.adapters.slurm_harness import SlurmHarness
from tests.services.slurm import SlurmCluster, hs256_token

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("timeout_job")]


class Traffic(httpx.BaseTransport):
    """A real transport that records every exchange as (method, path, status)."""

    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport()
        self.exchanges: list[tuple[str, str, int]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        self.exchanges.append((request.method, request.url.path, response.status_code))
        return response

    def close(self) -> None:
        self._inner.close()


def wait_state(harness: SlurmHarness, native_id: str, *states: State,
               timeout: float | None = None) -> Observation:
    return wait_for(harness.adapter, native_id, lambda o: o.state in states,
                    timeout or harness.wait_s)


@pytest.fixture(scope="module")
def traffic() -> Traffic:
    return Traffic()


@pytest.fixture(scope="module")
def harness(slurm_cluster: SlurmCluster, tmp_path_factory: pytest.TempPathFactory,
            traffic: Traffic) -> Iterator[SlurmHarness]:
    harness = SlurmHarness(slurm_cluster, tmp_path_factory.mktemp("slurm-adapter"),
                           transport=traffic)
    yield harness
    harness.close()


@pytest.fixture(scope="module")
def timeout_job(harness: SlurmHarness) -> str:
    """A job over its time limit, submitted first so that its minute overlaps the others.

    Slurm's smallest time limit is one minute and slurmctld looks for jobs over their
    limit every 30 s, so this job ends 60 to 90 s after it starts.
    """
    request = harness.request(command=["sleep", "300"], resources={"time_limit_s": 50})
    return harness.adapter.submit(request, new_job_id())


def test_command_runs_with_every_argument_intact(harness: SlurmHarness) -> None:
    arguments = ["it's", "a b", "$HOME", "`id`", "; exit 7", "\"quoted\"", "*"]
    native_id = harness.adapter.submit(
        harness.request(command=["printf", "%s|", *arguments]), new_job_id())

    done = wait_state(harness, native_id, State.SUCCEEDED, State.FAILED)

    assert done.state is State.SUCCEEDED
    assert (done.exit_code, done.reason, done.native_state) == (0, None, "COMPLETED")
    assert done.started_at is not None and done.finished_at is not None
    assert harness.adapter.logs(native_id) == "|".join(arguments) + "|"


def test_script_gets_environment_and_working_directory(harness: SlurmHarness) -> None:
    workdir = harness.cluster.workdir / "scripts"
    workdir.mkdir(exist_ok=True)
    owner = harness.cluster.workdir.stat()
    os.chown(workdir, owner.st_uid, owner.st_gid)
    request = harness.request(script="echo \"$GREETING\"\npwd\necho oops >&2\n",
                              environment={"GREETING": "hello there"},
                              working_dir=str(workdir))
    native_id = harness.adapter.submit(request, new_job_id())

    wait_state(harness, native_id, State.SUCCEEDED)

    assert harness.adapter.logs(native_id) == f"hello there\n{workdir}\noops\n"
    assert harness.adapter.logs(native_id, tail=2) == f"{workdir}\noops\n"
    assert harness.adapter.logs(native_id, tail=0) == ""


def test_nonzero_exit_code_is_kept(harness: SlurmHarness) -> None:
    native_id = harness.adapter.submit(harness.request(command=["sh", "-c", "exit 3"]),
                                       new_job_id())

    done = wait_state(harness, native_id, State.SUCCEEDED, State.FAILED)

    assert (done.state, done.exit_code, done.reason) == (State.FAILED, 3, Reason.EXIT_CODE)
    assert done.native_state == "FAILED"


def test_death_by_signal_reads_as_128_plus_signal(harness: SlurmHarness) -> None:
    native_id = harness.adapter.submit(harness.request(command=["sh", "-c", "kill -9 $$"]),
                                       new_job_id())

    done = wait_state(harness, native_id, State.SUCCEEDED, State.FAILED)

    assert (done.state, done.exit_code, done.reason) == (State.FAILED, 137, Reason.EXIT_CODE)


def test_running_job_is_cancelled(harness: SlurmHarness) -> None:
    native_id = harness.adapter.submit(harness.request(command=["sleep", "300"]),
                                       new_job_id())
    running = wait_state(harness, native_id, State.RUNNING)
    assert running.native_state == "RUNNING" and running.started_at is not None

    harness.adapter.cancel(native_id)

    done = wait_state(harness, native_id, State.CANCELLED)
    assert (done.reason, done.native_state) == (Reason.CANCELLED, "CANCELLED")
    assert harness.cluster.job_state(native_id) == "CANCELLED"


def test_queued_job_is_cancelled(harness: SlurmHarness) -> None:
    native_id = harness.queued_job()
    queued = wait_state(harness, native_id, State.QUEUED)
    assert queued.native_state == "PENDING" and queued.started_at is None

    harness.adapter.cancel(native_id)

    done = wait_state(harness, native_id, State.CANCELLED)
    assert done.reason is Reason.CANCELLED


def test_cancelling_a_finished_or_unknown_job_is_not_an_error(harness: SlurmHarness) -> None:
    native_id = harness.adapter.submit(harness.request(), new_job_id())
    wait_state(harness, native_id, State.SUCCEEDED)

    harness.adapter.cancel(native_id)
    harness.adapter.cancel("987654")

    assert harness.adapter.status_many([native_id])[native_id].state is State.SUCCEEDED


def test_status_of_fifty_jobs_is_one_request(harness: SlurmHarness, traffic: Traffic) -> None:
    native_ids = [harness.adapter.submit(harness.request(), new_job_id())
                  for _ in range(50)]
    traffic.exchanges.clear()

    seen = harness.adapter.status_many([*native_ids, "987654"])

    assert len(traffic.exchanges) == 1
    assert traffic.exchanges[0][:2] == ("GET", "/slurm/v0.0.38/jobs")
    assert set(seen) == set(native_ids)
    observe_until(harness.adapter, native_ids,
                  lambda seen: all(o.state is State.SUCCEEDED for o in seen.values()),
                  harness.wait_s)


def test_unchanged_jobs_are_answered_from_memory(harness: SlurmHarness,
                                                 traffic: Traffic) -> None:
    native_id = harness.adapter.submit(harness.request(), new_job_id())
    first = wait_state(harness, native_id, State.SUCCEEDED)

    answers: list[Observation | None] = []

    def not_modified() -> bool:
        traffic.exchanges.clear()
        answers.append(harness.adapter.status_many([native_id]).get(native_id))
        return [status for _, _, status in traffic.exchanges] == [304]

    until(not_modified, harness.wait_s, lambda: f"no 304 in {traffic.exchanges}")
    assert answers[-1] == first


def test_submitting_a_job_id_again_returns_the_first_job(harness: SlurmHarness) -> None:
    job_id = new_job_id()
    first = harness.adapter.submit(harness.request(), job_id)

    assert harness.adapter.submit(harness.request(), job_id) == first
    assert [job.job_id for job in harness.cluster.jobs() if job.name == job_id] == [first]


def test_unknown_native_id_is_absent(harness: SlurmHarness) -> None:
    assert harness.adapter.status_many(["987654", "not-a-number"]) == {}


def test_job_is_found_by_its_tag(harness: SlurmHarness) -> None:
    job_id = new_job_id()
    native_id = harness.adapter.submit(harness.request(command=["sleep", "1"]), job_id)

    assert harness.adapter.find_by_tag(job_id) == native_id
    assert harness.adapter.find_by_tag(new_job_id()) is None


def test_job_submitted_with_sbatch_is_observed(harness: SlurmHarness) -> None:
    native_id = harness.cluster.submit_direct("#!/bin/sh\nexit 0\n", name="by-hand")

    done = wait_state(harness, native_id, State.SUCCEEDED)

    assert done.native_state == "COMPLETED"
    assert (native_id, "by-hand", "COMPLETED") in harness.cluster.jobs()


def test_capacity_reports_the_node(harness: SlurmHarness) -> None:
    capacity = harness.adapter.capacity()

    assert (capacity["nodes"], capacity["cpus"], capacity["gpus"]) == (1, 16, 0)
    assert capacity["memory_mb"] > 0


@pytest.mark.parametrize(("overrides", "message"), [
    ({"queue": "no-such-partition"}, "Invalid partition name specified"),
    ({"resources": {"gpus": 1}}, "Requested node configuration is not available"),
    ({"resources": {"memory_mb": 10**8}}, "Requested node configuration is not available"),
])
def test_submission_slurm_refuses_is_rejected(harness: SlurmHarness, overrides: dict,
                                              message: str) -> None:
    with pytest.raises(ManagerRejected, match=message) as refused:
        harness.adapter.submit(harness.request(**overrides), new_job_id())

    assert not isinstance(refused.value, AuthenticationFailed)


@pytest.mark.parametrize("kind", ["foreign key", "expired", "not a jwt"])
def test_refused_token_is_an_authentication_failure(harness: SlurmHarness, tmp_path: Path,
                                                    kind: str) -> None:
    token = {
        "foreign key": hs256_token(b"k" * 32, harness.cluster.user, 3600),
        "expired": harness.cluster.token(lifespan=-60),
        "not a jwt": "s3cr3t-garbage-token",
    }[kind]
    token_file = tmp_path / "token"
    token_file.write_text(token)
    adapter = SlurmRestAdapter("bad-token", {**harness.settings,
                                             "token_file": str(token_file)})
    try:
        for attempt in (lambda: adapter.submit(harness.request(), new_job_id()),
                        lambda: adapter.status_many(["1"]),
                        lambda: adapter.cancel("1")):
            with pytest.raises(AuthenticationFailed) as failed:
                attempt()
            message = str(failed.value)
            assert "authentication failed for user 'hpcbridge-job'" in message
            assert f"file {token_file}" in message
            assert token not in message
            assert token.split(".")[-1] not in message
    finally:
        adapter.close()


def test_stopped_slurmrestd_is_unavailable(harness: SlurmHarness) -> None:
    queued = harness.queued_job()
    harness.cluster.stop_slurmrestd()
    try:
        with pytest.raises(ManagerUnavailable, match="cannot reach slurmrestd"):
            harness.adapter.status_many([queued])
        with pytest.raises(ManagerUnavailable):
            harness.adapter.submit(harness.request(), new_job_id())
        with pytest.raises(ManagerUnavailable):
            harness.adapter.cancel(queued)
    finally:
        harness.cluster.start_slurmrestd()

    assert harness.adapter.status_many([queued])[queued].state is State.QUEUED


@pytest.mark.parametrize(("settings", "message"), [
    ({"url": None}, "needs 'url'"),
    ({"token_file": None}, "needs 'token_file' or 'token_env'"),
    ({"output_dir": "relative/dir"}, "must be an absolute path"),
    ({"api_version": "v0.0.99"}, "api_version 'v0.0.99' is not one of"),
    ({"timeout_s": 0}, "timeout_s must be a positive number"),
    ({"tokenfile": "/x"}, "unknown setting 'tokenfile'"),
    ({"token_file": None, "token": "inline"}, "must not be written into the targets file"),
])
def test_unusable_settings_are_config_errors(harness: SlurmHarness, settings: dict,
                                             message: str) -> None:
    merged = {k: v for k, v in {**harness.settings, **settings}.items() if v is not None}
    with pytest.raises(ConfigError, match=message):
        SlurmRestAdapter("broken", merged)


def test_time_limit_exceeded_is_a_timeout(harness: SlurmHarness, timeout_job: str) -> None:
    done = wait_state(harness, timeout_job, State.SUCCEEDED, State.FAILED, State.CANCELLED,
                      timeout=harness.wait_s + 3 * harness.min_time_limit_s)

    assert (done.state, done.reason, done.native_state) == (State.FAILED, Reason.TIMEOUT,
                                                            "TIMEOUT")
