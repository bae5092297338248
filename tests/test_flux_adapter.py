"""What only the ``flux`` adapter does; the common behaviour is in tests/adapters.

Against the flux-restful-api EMULATOR (tests/emulators/flux_restful.py), plus a few
answers no healthy server gives, from ``httpx.MockTransport``.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import adapters
from adapters.base import AuthenticationFailed, ConfigError, ManagerRejected, ManagerUnavailable
from adapters.flux import FluxRestfulAdapter
from hpcbridge.model import JobRequest, Reason, Resources, State
from tests.adapters import finished, new_job_id
from tests.adapters.flux_harness import FluxHarness, secret_file


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[FluxHarness]:
    built = FluxHarness(tmp_path)
    yield built
    built.close()


def _run(harness: FluxHarness, **fields: Any) -> tuple[str, Any]:
    native_id = harness.adapter.submit(harness.request(**fields), new_job_id())
    return native_id, finished(harness.adapter, native_id, harness.wait_s)


def test_kind_is_registered() -> None:
    assert adapters.KINDS["flux"] == "adapters.flux:FluxRestfulAdapter"


def test_the_submission_carries_the_request_as_documented(harness: FluxHarness) -> None:
    job_id = new_job_id()
    request = harness.request(command=["printf", "%s", "it's $HOME"], working_dir="/tmp",
                              environment={"STEP": "one"},
                              resources=Resources(nodes=1, tasks=2, cpus_per_task=1,
                                                  time_limit_s=90))

    harness.adapter.submit(request, job_id)

    (body,) = harness.emulator.submissions
    assert shlex.split(body["command"]) == ["printf", "%s", "it's $HOME"]
    assert body["envars"] == {"STEP": "one", "HPCBRIDGE_JOB_ID": job_id}
    assert {k: body[k] for k in ("workdir", "runtime", "num_tasks", "cores_per_task",
                                 "num_nodes")} == \
        {"workdir": "/tmp", "runtime": 90, "num_tasks": 2, "cores_per_task": 1, "num_nodes": 1}


def test_tasks_start_that_many_copies_of_the_command(harness: FluxHarness) -> None:
    native_id, observation = _run(harness, command=["sh", "-c", 'echo "rank $FLUX_TASK_RANK"'],
                                  resources=Resources(tasks=3))

    assert observation.state is State.SUCCEEDED
    assert sorted(harness.adapter.logs(native_id).splitlines()) == \
        ["rank 0", "rank 1", "rank 2"]


def test_the_job_knows_its_bridge_id(harness: FluxHarness) -> None:
    job_id = new_job_id()
    native_id = harness.adapter.submit(harness.request(command=["sh", "-c",
                                                                'echo "$HPCBRIDGE_JOB_ID"']),
                                       job_id)

    finished(harness.adapter, native_id, harness.wait_s)

    assert harness.adapter.logs(native_id) == f"{job_id}\n"


def test_a_script_without_interpreter_line_runs_with_sh(harness: FluxHarness) -> None:
    native_id, observation = _run(harness, script='echo "args: $#"; exit 6\n')

    assert (observation.state, observation.exit_code) == (State.FAILED, 6)
    assert harness.adapter.logs(native_id) == "args: 0\n"


def test_a_command_that_cannot_start_fails_with_127(harness: FluxHarness) -> None:
    _, observation = _run(harness, command=["/nonexistent/program"])

    assert observation.state is State.FAILED
    assert (observation.exit_code, observation.reason) == (127, Reason.EXIT_CODE)


def test_the_target_working_directory_is_the_default(tmp_path: Path,
                                                     harness: FluxHarness) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    adapter = FluxRestfulAdapter("flux-test", {**harness.settings, "working_dir": str(workdir)})
    try:
        native_id = adapter.submit(harness.request(command=["pwd"]), new_job_id())
        finished(adapter, native_id, harness.wait_s)
        assert adapter.logs(native_id) == f"{workdir}\n"
    finally:
        adapter.close()


@pytest.mark.parametrize(("fields", "field"), [
    ({"resources": Resources(memory_mb=512)}, "resources.memory_mb"),
    ({"queue": "batch"}, "queue"),
    ({"account": "physics"}, "account"),
])
def test_what_flux_restful_cannot_carry_is_refused(harness: FluxHarness, fields: dict[str, Any],
                                                   field: str) -> None:
    with pytest.raises(ManagerRejected, match=field):
        harness.adapter.submit(harness.request(**fields), new_job_id())
    assert harness.emulator.submissions == []


def test_a_request_the_server_refuses_is_rejected_with_its_reason(harness: FluxHarness) -> None:
    with pytest.raises(ManagerRejected, match="does not support gpus"):
        harness.adapter.submit(harness.request(resources=Resources(gpus=1)), new_job_id())


def test_authentication_is_the_documented_handshake_once(harness: FluxHarness) -> None:
    harness.adapter.status_many([harness.unknown_id])
    harness.adapter.status_many([harness.unknown_id])

    assert harness.emulator.calls() == [("GET", "/v1/jobs", 401), ("POST", "/v1/token", 200),
                                        ("GET", "/v1/jobs", 200), ("GET", "/v1/jobs", 200)]


def test_an_expired_token_is_replaced_once(harness: FluxHarness) -> None:
    harness.adapter.status_many([])
    harness.emulator.expire_tokens()
    before = len(harness.emulator.calls())

    harness.adapter.status_many([])

    assert harness.emulator.calls()[before:] == [
        ("GET", "/v1/jobs", 401), ("POST", "/v1/token", 200), ("GET", "/v1/jobs", 200)]


def test_a_wrong_shared_secret_is_refused_without_showing_it(tmp_path: Path,
                                                             harness: FluxHarness) -> None:
    secret = "not-the-shared-secret-0123456789"
    adapter = FluxRestfulAdapter("flux-test", {
        **harness.settings, "secret_key_file": str(secret_file(tmp_path, secret))})
    try:
        with pytest.raises(AuthenticationFailed) as refused:
            adapter.status_many([])
    finally:
        adapter.close()
    assert secret not in str(refused.value)
    assert harness.emulator.password not in str(refused.value)
    assert "Could not decode credentials" in str(refused.value)


def test_without_credentials_a_server_that_requires_them_is_a_clear_error(
        harness: FluxHarness) -> None:
    adapter = FluxRestfulAdapter("flux-test", {"url": harness.emulator.url})
    try:
        with pytest.raises(AuthenticationFailed, match="requires authentication"):
            adapter.status_many([])
    finally:
        adapter.close()


def test_find_by_tag_knows_only_this_adapters_jobs_and_only_while_the_server_does(
        harness: FluxHarness) -> None:
    job_id = new_job_id()
    native_id = harness.adapter.submit(harness.request(), job_id)
    finished(harness.adapter, native_id, harness.wait_s)
    other = FluxRestfulAdapter("flux-test", harness.settings)
    try:
        assert harness.adapter.find_by_tag(job_id) == native_id
        assert other.find_by_tag(job_id) is None  # the server cannot say: documented
    finally:
        other.close()
    harness.emulator.forget(int(native_id))
    assert harness.adapter.find_by_tag(job_id) is None
    assert not FluxRestfulAdapter.capabilities.find_by_tag


def test_a_non_numeric_native_id_is_no_job(harness: FluxHarness) -> None:
    harness.adapter.cancel("../etc")
    assert harness.adapter.logs("../etc") == ""
    assert harness.adapter.status_many(["../etc"]) == {}


def test_logs_of_a_job_without_output_are_empty(harness: FluxHarness) -> None:
    native_id, _ = _run(harness, command=["true"])

    assert harness.adapter.logs(native_id) == ""
    assert harness.adapter.logs(native_id, tail=0) == ""


def _mock(handler: Any) -> FluxRestfulAdapter:
    return FluxRestfulAdapter("flux-test", {"url": "http://flux.invalid"},
                              transport=httpx.MockTransport(handler))


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_server_errors_are_transient(status: int) -> None:
    adapter = _mock(lambda request: httpx.Response(status, json={"detail": "busy"}))
    with pytest.raises(ManagerUnavailable, match="busy"):
        adapter.status_many(["1"])
    with pytest.raises(ManagerUnavailable):
        adapter.submit(JobRequest(target="flux-test", command=("true",)), new_job_id())


def test_a_server_that_ignores_details_is_a_configuration_error() -> None:
    adapter = _mock(lambda request: httpx.Response(200, json={"jobs": [{"id": 1}]}))
    with pytest.raises(ConfigError, match="details=true"):
        adapter.status_many(["1"])


def test_an_unknown_job_answered_with_404_is_unknown_too() -> None:
    def server(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/cancel"):
            return httpx.Response(400, json={"Message": "Job cannot be cancelled"})
        return httpx.Response(404, json={"detail": "Job 5 not found"})

    _mock(server).cancel("5")


def test_a_refused_cancel_of_a_live_job_is_an_error() -> None:
    def server(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/cancel"):
            return httpx.Response(400, json={"Message": "Job cannot be cancelled: EPERM"})
        return httpx.Response(200, json={"id": 5, "state": "RUN"})

    with pytest.raises(ManagerRejected, match="EPERM"):
        _mock(server).cancel("5")


@pytest.mark.parametrize(("settings", "message"), [
    ({}, "url"),
    ({"url": "http://x", "colour": "blue"}, "unknown setting 'colour'"),
    ({"url": "http://x", "user": "u", "token_env": "T"}, "together"),
    ({"url": "http://x", "token": "inline"}, "must not be written"),
    ({"url": "http://x", "working_dir": "relative"}, "absolute"),
    ({"url": "http://x", "timeout_s": 0}, "timeout_s"),
])
def test_bad_settings_are_configuration_errors(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        FluxRestfulAdapter("flux-test", settings)
