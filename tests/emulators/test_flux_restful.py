"""The flux-restful-api EMULATOR speaks the documented wire protocol (raw HTTP, no adapter)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.flux_api import handshake_token
from tests.emulators.flux_restful import FluxRestfulEmulator


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[FluxRestfulEmulator]:
    with FluxRestfulEmulator(tmp_path / "flux") as running:
        yield running


@pytest.fixture
def client(emulator: FluxRestfulEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emulator.url, timeout=10) as plain:
        payload = handshake_token(emulator.user, emulator.password, emulator.secret_key)
        token = plain.post("/v1/token", headers={"Authorization": f"Bearer {payload}"}).json()
    with httpx.Client(base_url=emulator.url, timeout=10,
                      headers={"Authorization": f"Bearer {token['access_token']}"}) as client:
        yield client


def _ended(client: httpx.Client, job_id: int) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while (record := client.get(f"/v1/jobs/{job_id}").json())["state"] != "INACTIVE":
        assert time.monotonic() < deadline, record
        time.sleep(0.02)
    return record


def test_requests_without_a_token_are_told_to_authenticate(emulator: FluxRestfulEmulator) -> None:
    answer = httpx.get(f"{emulator.url}/v1/jobs")

    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == "Bearer"
    assert answer.json() == {"detail": "Not authenticated"}
    forged = httpx.get(f"{emulator.url}/v1/jobs", headers={"Authorization": "Bearer x.y.z"})
    assert (forged.status_code, forged.json()) == \
        (401, {"detail": "Could not validate credentials"})


@pytest.mark.parametrize(("credentials", "detail"), [
    (("fluxuser", "wrong", None), "Incorrect user or password"),
    (("someone", None, None), "Incorrect user or password"),
    (("fluxuser", None, "another secret"), "Could not decode credentials"),
])
def test_a_failed_token_request_is_400_invalid_grant(emulator: FluxRestfulEmulator,
                                                     credentials: tuple[Any, ...],
                                                     detail: str) -> None:
    user, password, secret = credentials
    payload = handshake_token(user, password or emulator.password,
                              secret or emulator.secret_key)

    answer = httpx.post(f"{emulator.url}/v1/token",
                        headers={"Authorization": f"Bearer {payload}"})

    assert (answer.status_code, answer.json()) == (400, {"detail": detail})


def test_token_answer_is_a_bearer_access_token(emulator: FluxRestfulEmulator) -> None:
    payload = handshake_token(emulator.user, emulator.password, emulator.secret_key)

    answer = httpx.post(f"{emulator.url}/v1/token",
                        headers={"Authorization": f"Bearer {payload}"}).json()

    assert answer["token_type"] == "Bearer"
    assert answer["access_token"].count(".") == 2


def test_a_job_runs_and_reports_like_flux(client: httpx.Client) -> None:
    submitted = client.post("/v1/jobs/submit", json={"command": "sh -c 'echo hi; exit 3'"})

    job_id = submitted.json()["id"]
    record = _ended(client, job_id)

    assert submitted.json()["Message"] == "Job submit."
    assert isinstance(job_id, int)
    assert {k: record[k] for k in ("state", "result", "returncode", "waitstatus", "name",
                                   "success")} == \
        {"state": "INACTIVE", "result": "FAILED", "returncode": 3, "waitstatus": 768,
         "name": "sh", "success": False}
    assert record["t_submit"] <= record["t_run"] <= record["t_cleanup"] <= record["t_inactive"]
    assert client.get(f"/v1/jobs/{job_id}/output").json() == {"Output": ["hi\n"]}


def test_listings(client: httpx.Client) -> None:
    job_id = client.post("/v1/jobs/submit", json={"command": ["true"]}).json()["id"]
    _ended(client, job_id)

    assert client.get("/v1/jobs").json() == {"jobs": [{"id": job_id}]}
    details = client.get("/v1/jobs", params={"details": "true"}).json()
    assert list(details) == [str(job_id)]
    listing = client.get("/v1/jobs", params={"details": "true", "listing": "true"}).json()
    assert listing == [details[str(job_id)]]


def test_unknown_and_invalid_job_ids(client: httpx.Client) -> None:
    unknown = client.get("/v1/jobs/12345")
    assert (unknown.status_code, unknown.json()) == (200, None)
    assert client.get("/v1/jobs/nonsense").status_code == 400
    cancel = client.post("/v1/jobs/12345/cancel")
    assert cancel.status_code == 400
    assert cancel.json()["Message"].startswith("Job cannot be cancelled")
    assert client.get("/v1/jobs/12345/output").json() == \
        {"Message": "The output does not exist yet, or the jobid is incorrect."}


def test_a_held_job_waits_in_sched_and_cancels_without_running(
        emulator: FluxRestfulEmulator, client: httpx.Client) -> None:
    emulator.hold_new_jobs = True
    job_id = client.post("/v1/jobs/submit", json={"command": "true"}).json()["id"]

    assert client.get(f"/v1/jobs/{job_id}").json()["state"] == "SCHED"
    assert client.post(f"/v1/jobs/{job_id}/cancel").json() == \
        {"Message": "Job is requested to cancel.", "id": str(job_id)}
    record = client.get(f"/v1/jobs/{job_id}").json()
    assert (record["state"], record["result"], record["returncode"]) == \
        ("INACTIVE", "CANCELED", "")
    assert "t_run" not in record
    assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 400


def test_runtime_is_enforced_with_sigalrm(client: httpx.Client) -> None:
    job_id = client.post("/v1/jobs/submit",
                         json={"command": "sleep 100", "runtime": 1}).json()["id"]

    record = _ended(client, job_id)

    assert (record["result"], record["returncode"], record["exception_type"]) == \
        ("TIMEOUT", 142, "timeout")


@pytest.mark.parametrize(("body", "message"), [
    ({}, "A 'command' is minimally required."),
    ({"command": ""}, "A 'command' is minimally required."),
    ({"command": "true", "num_nodes": 2}, "Invalid submit request"),
    ({"command": "true", "option_flags": {"-ocpu-affinity": "off"}}, "Invalid submit request"),
    ({"command": "true", "runtime": -1}, "Invalid submit request"),
    ({"command": "true", "envars": ["A=1"]}, "Invalid submit request"),
    ({"command": "echo 'unbalanced"}, "There was an issue submitting that job."),
])
def test_bad_submissions_are_400_with_a_message(client: httpx.Client, body: dict[str, Any],
                                                message: str) -> None:
    answer = client.post("/v1/jobs/submit", json=body)

    assert (answer.status_code, answer.json()["Message"]) == (400, message)


def test_unknown_routes_and_methods(client: httpx.Client) -> None:
    assert client.get("/v1/nothing").status_code == 404
    assert client.delete("/v1/jobs").status_code == 405
