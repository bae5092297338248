"""The IBM Quantum Runtime EMULATOR speaks the documented wire protocol (raw HTTP, no adapter)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.adapters.quantum_harness import BELL
from tests.emulators.ibm_quantum import IbmQuantumRuntimeEmulator


@pytest.fixture
def emulator() -> Iterator[IbmQuantumRuntimeEmulator]:
    with IbmQuantumRuntimeEmulator() as running:
        yield running


def _headers(emulator: IbmQuantumRuntimeEmulator) -> dict[str, str]:
    return {"Authorization": f"Bearer {emulator.token}", "Service-CRN": emulator.service_crn,
            "IBM-API-Version": "2025-05-01"}


@pytest.fixture
def client(emulator: IbmQuantumRuntimeEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{emulator.url}/v1", headers=_headers(emulator),
                      timeout=10) as client:
        yield client


def _job(client: httpx.Client, **fields: Any) -> str:
    body = {"program_id": "sampler", "params": {"pubs": [[BELL]], "version": 2, "shots": 8},
            **fields}
    answer = client.post("/jobs", json=body)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["id"])


def _ended(client: httpx.Client, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while (job := client.get(f"/jobs/{job_id}").json())["status"] in ("Queued", "Running"):
        assert time.monotonic() < deadline, job
        time.sleep(0.02)
    return job


@pytest.mark.parametrize(("drop", "replace", "status"), [
    ("Authorization", None, 401),
    (None, {"Authorization": "Bearer wrong"}, 401),
    ("Service-CRN", None, 400),
    (None, {"Service-CRN": "crn:v1:another"}, 403),
    ("IBM-API-Version", None, 400),
    (None, {"IBM-API-Version": "1999-01-01"}, 400),
])
def test_the_three_headers_are_checked(emulator: IbmQuantumRuntimeEmulator, drop: str | None,
                                       replace: dict[str, str] | None, status: int) -> None:
    headers = {k: v for k, v in _headers(emulator).items() if k != drop} | (replace or {})

    answer = httpx.get(f"{emulator.url}/v1/jobs", headers=headers)

    assert answer.status_code == status
    assert answer.json()["errors"][0]["message"]
    assert answer.json()["status_code"] == status


def test_a_job_runs_on_the_simulator(client: httpx.Client,
                                     emulator: IbmQuantumRuntimeEmulator) -> None:
    created = client.post("/jobs", json={"program_id": "sampler",
                                         "params": {"pubs": [[BELL, None, 16]], "version": 2},
                                         "tags": ["a"]}).json()

    job = _ended(client, created["id"])

    assert created["backend"] == emulator.backends[0]
    assert (job["status"], job["state"]["status"], job["program"], job["tags"]) == \
        ("Completed", "Completed", {"id": "sampler"}, ["a"])
    assert job["params"]["pubs"] == [[BELL, None, 16]]
    assert "params" not in client.get(f"/jobs/{created['id']}",
                                      params={"exclude_params": "true"}).json()
    samples = client.get(f"/jobs/{created['id']}/results").json()["results"][0]["data"]["c"]
    assert samples["num_bits"] == 2
    assert len(samples["samples"]) == 16
    assert set(samples["samples"]) <= {"0x0", "0x3"}
    assert "job completed" in client.get(f"/jobs/{created['id']}/logs").text


def test_listing_filters_sorts_and_pages(client: httpx.Client) -> None:
    first = _job(client, tags=["bridge", "one"])
    second = _job(client, tags=["bridge"])
    _job(client, tags=["other"])
    for job_id in (first, second):
        _ended(client, job_id)

    page = client.get("/jobs", params={"tags": "bridge", "limit": 1}).json()
    assert ([j["id"] for j in page["jobs"]], page["count"], page["limit"], page["offset"]) == \
        ([second], 2, 1, 0)
    page = client.get("/jobs", params={"tags": "bridge", "limit": 1, "offset": 1}).json()
    assert [j["id"] for j in page["jobs"]] == [first]
    both = client.get("/jobs", params=[("tags", "bridge"), ("tags", "one")]).json()
    assert [j["id"] for j in both["jobs"]] == [first]
    ascending = client.get("/jobs", params={"tags": "bridge", "sort": "ASC"}).json()
    assert [j["id"] for j in ascending["jobs"]] == [first, second]
    assert client.get("/jobs", params={"pending": "true"}).json()["count"] <= 1
    assert "params" not in ascending["jobs"][0]
    assert client.get("/jobs", params={"limit": 0}).status_code == 400


def test_cancel(client: httpx.Client, emulator: IbmQuantumRuntimeEmulator) -> None:
    emulator.hold_queued = True
    queued = _job(client)

    assert client.post(f"/jobs/{queued}/cancel").status_code == 204
    assert client.get(f"/jobs/{queued}").json()["state"] == {"status": "Cancelled",
                                                             "reason": ""}
    assert client.post(f"/jobs/{queued}/cancel").status_code == 409
    assert client.get(f"/jobs/{queued}/results").status_code == 404
    assert client.post("/jobs/nothing/cancel").status_code == 404


def test_a_job_over_its_cost_is_cancelled_as_ran_too_long(
        client: httpx.Client, emulator: IbmQuantumRuntimeEmulator) -> None:
    emulator.hold_running = True

    job = _ended(client, _job(client, cost=1))

    assert job["state"] == {"status": "Cancelled", "reason": "Ran too long",
                            "reason_code": 1305}
    assert _job(client, cost=99999) and emulator.submissions[-1]["cost"] == 99999
    assert client.get("/jobs", params={"limit": 1}).json()["jobs"][0]["cost"] == 10800


def test_a_circuit_that_does_not_parse_fails_the_job(client: httpx.Client) -> None:
    job_id = _job(client, params={"pubs": [["OPENQASM 3.0; qubit q; nope q;"]], "version": 2})

    job = _ended(client, job_id)

    assert job["state"] == {"status": "Failed",
                            "reason": "Error in the validation process of the job.",
                            "reason_code": 1002}
    report = client.get(f"/jobs/{job_id}/results")
    assert report.headers["content-type"].startswith("text/plain")
    assert report.text.startswith("Error code 1002;")


@pytest.mark.parametrize(("body", "status"), [
    ({"program_id": "nothing", "params": {}}, 404),
    ({"program_id": "estimator", "params": {"pubs": [], "version": 2}}, 400),
    ({"program_id": "sampler", "backend": "ibm_nowhere",
      "params": {"pubs": [[BELL]], "version": 2}}, 400),
    ({"program_id": "sampler", "params": {"circuits": [BELL]}}, 400),
    ({"program_id": "sampler", "params": {"pubs": [[BELL, None, 0]], "version": 2}}, 400),
    ({"program_id": "sampler", "params": {"pubs": [[BELL]], "version": 2}, "tags": "a"}, 400),
    ({"program_id": "sampler", "params": {"pubs": [[BELL]], "version": 2}, "cost": -1}, 400),
])
def test_bad_submissions(client: httpx.Client, body: dict[str, Any], status: int) -> None:
    answer = client.post("/jobs", json=body)

    assert answer.status_code == status
    assert answer.json()["errors"]


def test_unknown_jobs_and_routes(client: httpx.Client) -> None:
    assert client.get("/jobs/nothing").status_code == 404
    assert client.get("/jobs/nothing/logs").status_code == 404
    assert client.get("/backends").status_code == 404
    assert client.delete("/jobs").status_code == 405
