"""The ``quantum`` adapter against the IBM Quantum Runtime EMULATOR, which samples with Aer.

These are the quantum equivalents of the conformance tests that run commands (a quantum
service runs circuits): a circuit that succeeds with its counts in the logs, one that
fails with the service's reason, cancel while queued and while running, many jobs in
one call, logs, a vanished job, the time limit, refused credentials, an unreachable
service; and what only this adapter does.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import adapters
from adapters.base import (
    AuthenticationFailed,
    ConfigError,
    ManagerRejected,
    ManagerUnavailable,
)
from adapters.quantum import IbmQuantumAdapter
from hpcbridge.model import Reason, Resources, State
from tests.adapters import finished, new_job_id, observe_until, wait_for
from tests.adapters.quantum_harness import BELL, QuantumHarness

X_THEN_MEASURE = """OPENQASM 3.0;
include "stdgates.inc";
bit[1] c;
qubit[1] q;
x q[0];
c[0] = measure q[0];
"""


#: Settings for adapters on a stand-in service (``httpx.MockTransport``).
_MOCKED = {"token_env": "HB_QUANTUM_TEST_TOKEN", "service_crn": "crn", "backend": "b"}


@pytest.fixture(autouse=True)
def _mock_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HB_QUANTUM_TEST_TOKEN", "token-of-the-stand-in-service")


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[QuantumHarness]:
    built = QuantumHarness(tmp_path)
    yield built
    built.close()


def _submit(harness: QuantumHarness, **fields: Any) -> str:
    return harness.adapter.submit(harness.request(**fields), new_job_id())


def _finished(harness: QuantumHarness, native_id: str) -> Any:
    return finished(harness.adapter, native_id, harness.wait_s)


def test_kind_is_registered_and_runs_no_commands() -> None:
    assert adapters.KINDS["quantum"] == "adapters.quantum:IbmQuantumAdapter"
    assert not IbmQuantumAdapter.capabilities.runs_commands
    assert IbmQuantumAdapter.capabilities.find_by_tag


def test_a_circuit_succeeds_and_its_counts_are_in_the_logs(harness: QuantumHarness) -> None:
    bell = _submit(harness, script=BELL)
    one = _submit(harness, script=X_THEN_MEASURE)

    for native_id in (bell, one):
        observation = _finished(harness, native_id)
        assert (observation.state, observation.exit_code, observation.reason) == \
            (State.SUCCEEDED, 0, None)
        assert observation.native_state == "Completed"

    assert harness.adapter.logs(one, tail=1) == "pub 0 c: 256 shots, 1 bits: 1=256\n"
    summary = harness.adapter.logs(bell, tail=1)
    assert summary.startswith("pub 0 c: 256 shots, 2 bits: 00=")
    counts = dict(item.split("=") for item in summary.split(": ")[-1].split())
    assert set(counts) == {"00", "11"}  # entangled: never 01 or 10
    assert sum(map(int, counts.values())) == 256
    assert "job completed" in harness.adapter.logs(bell)


def test_an_invalid_circuit_fails_with_the_services_reason(harness: QuantumHarness) -> None:
    native_id = _submit(harness, script="OPENQASM 3.0;\nqubit[1] q;\nnot_a_gate q[0];\n")

    observation = _finished(harness, native_id)

    assert (observation.state, observation.reason, observation.exit_code) == \
        (State.FAILED, Reason.EXIT_CODE, 1)
    assert observation.native_state == "Failed (1002)"
    logs = harness.adapter.logs(native_id)
    assert "Error code 1002; Error in the validation process of the job." in logs
    assert "does not parse" in logs


def test_a_shell_script_is_no_circuit(harness: QuantumHarness) -> None:
    native_id = _submit(harness, script="#!/bin/sh\necho hello\n")

    assert _finished(harness, native_id).state is State.FAILED


def test_cancel_of_a_queued_job_means_it_never_runs(harness: QuantumHarness) -> None:
    native_id = harness.queued_job()
    wait_for(harness.adapter, native_id, lambda o: o.state is State.QUEUED, harness.wait_s)

    harness.adapter.cancel(native_id)

    observation = _finished(harness, native_id)
    assert (observation.state, observation.reason) == (State.CANCELLED, Reason.CANCELLED)
    harness.release()
    assert _finished(harness, _submit(harness)).state is State.SUCCEEDED
    assert "pub 0" not in harness.adapter.logs(native_id)  # it has no result
    assert harness.emulator.status(native_id) == "Cancelled"


def test_cancel_of_a_running_job(harness: QuantumHarness) -> None:
    native_id = harness.running_job()
    wait_for(harness.adapter, native_id, lambda o: o.state is State.RUNNING, harness.wait_s)

    harness.adapter.cancel(native_id)

    observation = _finished(harness, native_id)
    assert (observation.state, observation.reason) == (State.CANCELLED, Reason.CANCELLED)


def test_cancel_of_a_finished_or_unknown_job_changes_nothing(harness: QuantumHarness) -> None:
    native_id = _submit(harness)
    assert _finished(harness, native_id).state is State.SUCCEEDED

    harness.adapter.cancel(native_id)
    harness.adapter.cancel(harness.unknown_id)

    assert harness.adapter.status_many([native_id])[native_id].state is State.SUCCEEDED


def test_status_of_many_jobs_is_one_request(harness: QuantumHarness) -> None:
    good = [_submit(harness) for _ in range(3)]
    bad = _submit(harness, script="OPENQASM 3.0;\nqubit[1] q;\nnot_a_gate q[0];\n")
    asked = [*good, bad, harness.unknown_id]
    answer = observe_until(harness.adapter, asked,
                           lambda a: all(n in a and a[n].state.terminal for n in [*good, bad]),
                           harness.wait_s)
    before = harness.calls()

    again = harness.adapter.status_many(asked)

    assert harness.calls() - before == 1
    assert again == answer
    assert [answer[n].state for n in good] == [State.SUCCEEDED] * 3
    assert answer[bad].state is State.FAILED
    assert harness.unknown_id not in answer


def test_logs_tail(harness: QuantumHarness) -> None:
    native_id = _submit(harness, script=X_THEN_MEASURE)
    _finished(harness, native_id)

    everything = harness.adapter.logs(native_id).splitlines()

    assert len(everything) > 2
    assert harness.adapter.logs(native_id, tail=2).splitlines() == everything[-2:]
    assert harness.adapter.logs(native_id, tail=0) == ""
    assert harness.adapter.logs(harness.unknown_id) == ""


def test_a_vanished_job_is_absent_and_not_found(harness: QuantumHarness) -> None:
    job_id = new_job_id()
    native_id = harness.adapter.submit(harness.request(), job_id)
    _finished(harness, native_id)
    assert harness.adapter.find_by_tag(job_id) == native_id

    harness.vanish(native_id)

    assert harness.adapter.status_many([native_id]) == {}
    assert harness.adapter.find_by_tag(job_id) is None


def test_find_by_tag_works_from_another_adapter(harness: QuantumHarness) -> None:
    job_id = new_job_id()
    native_id = harness.adapter.submit(harness.request(), job_id)
    other = IbmQuantumAdapter("quantum-test", harness.settings)
    try:
        assert other.find_by_tag(job_id) == native_id
    finally:
        other.close()


def test_the_time_limit_is_the_maximum_execution_time(harness: QuantumHarness) -> None:
    native_id = harness.running_job(resources=Resources(time_limit_s=harness.min_time_limit_s))

    observation = finished(harness.adapter, native_id,
                           harness.wait_s + 2 * harness.min_time_limit_s)

    assert (observation.state, observation.reason) == (State.FAILED, Reason.TIMEOUT)
    assert observation.native_state == "Cancelled (1305)"
    assert harness.emulator.submissions[0]["cost"] == harness.min_time_limit_s


def test_the_submission_is_as_documented(harness: QuantumHarness) -> None:
    job_id = new_job_id()

    harness.adapter.submit(harness.request(queue=harness.emulator.backends[0],
                                           resources=Resources(time_limit_s=30)), job_id)

    assert harness.emulator.submissions == [{
        "program_id": "sampler", "backend": harness.emulator.backends[0],
        "params": {"pubs": [[BELL]], "version": 2, "shots": 256},
        "tags": ["hpcbridge", f"hpcbridge:{job_id}"], "cost": 30}]


def test_a_duplicate_submit_makes_one_job(harness: QuantumHarness) -> None:
    job_id = new_job_id()
    request = harness.request()

    assert harness.adapter.submit(request, job_id) == harness.adapter.submit(request, job_id)
    assert len(harness.emulator.submissions) == 1


@pytest.mark.parametrize(("fields", "field"), [
    ({"command": ["sh", "-c", "exit 3"]}, "command"),
    ({"environment": {"A": "1"}}, "environment"),
    ({"working_dir": "/tmp"}, "working_dir"),
    ({"account": "physics"}, "account"),
    ({"resources": Resources(nodes=1)}, "resources.nodes"),
    ({"resources": Resources(gpus=1)}, "resources.gpus"),
])
def test_what_a_quantum_service_cannot_do_is_refused_naming_the_field(
        harness: QuantumHarness, fields: dict[str, Any], field: str) -> None:
    with pytest.raises(ManagerRejected, match=f": {field}: "):
        harness.adapter.submit(harness.request(**fields), new_job_id())
    assert harness.emulator.submissions == []


def test_an_unknown_backend_is_rejected(harness: QuantumHarness) -> None:
    with pytest.raises(ManagerRejected, match="Backend not found"):
        harness.adapter.submit(harness.request(queue="ibm_nowhere"), new_job_id())


def test_a_bad_token_is_refused_without_showing_it(harness: QuantumHarness) -> None:
    adapter, token = harness.with_bad_credentials()
    try:
        for call in (lambda: adapter.submit(harness.request(), new_job_id()),
                     lambda: adapter.status_many(["x"]), lambda: adapter.cancel("x"),
                     lambda: adapter.logs("x"), lambda: adapter.find_by_tag("x")):
            with pytest.raises(AuthenticationFailed) as refused:
                call()
            assert token not in str(refused.value)
    finally:
        adapter.close()


def test_another_instance_is_refused(harness: QuantumHarness) -> None:
    adapter = IbmQuantumAdapter("quantum-test", {
        **harness.settings, "service_crn": "crn:v1:bluemix:public:quantum-computing:x:a/y:z::"})
    try:
        with pytest.raises(AuthenticationFailed, match="service_crn"):
            adapter.status_many(["x"])
    finally:
        adapter.close()


def test_an_api_version_the_service_does_not_speak_is_a_configuration_error(
        harness: QuantumHarness) -> None:
    adapter = IbmQuantumAdapter("quantum-test", {**harness.settings, "api_version": "2001-01-01"})
    try:
        with pytest.raises(ConfigError, match="IBM-API-Version"):
            adapter.status_many(["x"])
        with pytest.raises(ManagerRejected, match="IBM-API-Version"):
            adapter.submit(harness.request(), new_job_id())
    finally:
        adapter.close()


def test_an_unreachable_service_is_a_transient_error(harness: QuantumHarness) -> None:
    adapter = harness.unreachable()
    try:
        for call in (lambda: adapter.logs("x"), lambda: adapter.find_by_tag("x")):
            with pytest.raises(ManagerUnavailable):
                call()
    finally:
        adapter.close()


def _paging_service(total: int, calls: list[dict[str, str]]) -> IbmQuantumAdapter:
    """An adapter on a stand-in service holding ``total`` bridge jobs, newest first."""
    def serve(request: httpx.Request) -> httpx.Response:
        query = dict(request.url.params)
        calls.append(query)
        offset, limit = int(query["offset"]), int(query["limit"])
        ids = [f"job{n}" for n in range(total)][offset:offset + limit]
        jobs = [{"id": i, "state": {"status": "Completed"}} for i in ids]
        return httpx.Response(200, json={"jobs": jobs, "count": total, "limit": limit,
                                         "offset": offset})

    return IbmQuantumAdapter("quantum-test", _MOCKED, transport=httpx.MockTransport(serve))


def test_status_reads_further_pages_only_for_jobs_still_missing() -> None:
    calls: list[dict[str, str]] = []
    adapter = _paging_service(450, calls)

    assert set(adapter.status_many(["job3", "job150"])) == {"job3", "job150"}
    assert len(calls) == 1
    assert set(adapter.status_many(["job3", "job420"])) == {"job3", "job420"}
    assert [c["offset"] for c in calls[1:]] == ["0", "200", "400"]
    assert calls[0] | {"offset": "0"} == {"tags": "hpcbridge", "limit": "200", "offset": "0",
                                          "exclude_params": "true"}


def test_status_gives_up_on_missing_jobs_after_the_last_page() -> None:
    calls: list[dict[str, str]] = []
    adapter = _paging_service(10_000, calls)

    assert adapter.status_many(["gone"]) == {}
    assert len(calls) == 20
    assert adapter.status_many([]) == {}
    assert len(calls) == 20


@pytest.mark.parametrize(("status", "error"), [
    (500, ManagerUnavailable), (503, ManagerUnavailable), (429, ManagerUnavailable),
    (401, AuthenticationFailed), (403, AuthenticationFailed),
])
def test_answers_are_classified(status: int, error: type[Exception]) -> None:
    body = {"errors": [{"code": "x", "message": "said the service"}]}
    adapter = IbmQuantumAdapter(
        "quantum-test", _MOCKED,
        transport=httpx.MockTransport(lambda request: httpx.Response(status, json=body)))
    with pytest.raises(error, match="said the service"):
        adapter.status_many(["x"])


def test_a_failed_jobs_error_report_is_in_its_logs() -> None:
    def serve(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/logs"):
            return httpx.Response(404, json={"errors": []})
        return httpx.Response(200, text="Traceback (most recent call last):\nBoom")

    adapter = IbmQuantumAdapter("q", _MOCKED, transport=httpx.MockTransport(serve))

    assert adapter.logs("j") == "Traceback (most recent call last):\nBoom\n"


@pytest.mark.parametrize(("settings", "message"), [
    ({"service_crn": "c", "backend": "b"}, "token_file"),
    ({"token_env": "T", "backend": "b"}, "service_crn"),
    ({"token_env": "T", "service_crn": "c"}, "backend"),
    ({"token_env": "T", "service_crn": "c", "backend": "b", "api_version": "v1"},
     "api_version"),
    ({"token_env": "T", "service_crn": "c", "backend": "b", "shots": 0}, "shots"),
    ({"token_env": "T", "service_crn": "c", "backend": "b", "program_id": "x"},
     "unknown setting 'program_id'"),
    ({"token": "inline", "service_crn": "c", "backend": "b"}, "must not be written"),
])
def test_bad_settings_are_configuration_errors(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        IbmQuantumAdapter("quantum-test", settings)


def test_results_of_the_emulator_are_the_documented_v2_shape(harness: QuantumHarness) -> None:
    native_id = _submit(harness, script=X_THEN_MEASURE)
    _finished(harness, native_id)
    headers = {"Authorization": f"Bearer {harness.emulator.token}",
               "Service-CRN": harness.emulator.service_crn, "IBM-API-Version": "2025-05-01"}

    body = httpx.get(f"{harness.emulator.url}/v1/jobs/{native_id}/results",
                     headers=headers).json()

    assert body["results"][0]["data"] == {"c": {"samples": ["0x1"] * 256, "num_bits": 1}}
    assert json.dumps(body)  # plain JSON: no Qiskit-specific encoding
