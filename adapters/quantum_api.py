"""What the IBM Quantum Runtime REST API (``/api/v1``) sends and expects: pure functions.

Jobs are Qiskit Runtime primitive jobs (V2). A job record carries ``state.status``:
``Queued``, ``Running``, ``Completed``, ``Cancelled`` or ``Failed`` (compared without
regard to case), and for failures ``state.reason`` with a ``reason_code`` (older
answers: ``reasonCode``) from IBM's error code registry. A job stopped at its maximum
execution time is ``Cancelled`` with reason code 1305 ("Ran too long"); older answers
say ``Cancelled - Ran too long``. Sampler results (``GET /jobs/{id}/results``) hold,
per PUB, each classical register's shots as hexadecimal ``samples`` and its
``num_bits``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from adapters.base import Observation
from hpcbridge.model import Reason, State

__all__ = [
    "BRIDGE_TAG",
    "MAX_EXECUTION_S",
    "RAN_TOO_LONG",
    "error_text",
    "job_tag",
    "jobs_page",
    "observe",
    "results_summary",
    "submission",
]

#: Every job the bridge submits carries this tag, so one listing finds them all.
BRIDGE_TAG = "hpcbridge"
#: The reason code of a job stopped at its maximum execution time.
RAN_TOO_LONG = 1305
#: The largest maximum execution time (``cost``) the service takes, in seconds.
MAX_EXECUTION_S = 10800


def job_tag(job_id: str) -> str:
    """The tag that names the bridge's job id on the service."""
    return f"{BRIDGE_TAG}:{job_id}"


def submission(circuit: str, *, backend: str, job_id: str, shots: int | None,
               time_limit_s: int | None) -> dict[str, Any]:
    """The body of ``POST /jobs``: one OpenQASM 3 circuit as one sampler PUB.

    ``cost`` is what the client library sends for ``max_execution_time``: the service
    stops the job after that many seconds of execution.
    """
    params: dict[str, Any] = {"pubs": [[circuit]], "version": 2}
    if shots is not None:
        params["shots"] = shots
    body: dict[str, Any] = {"program_id": "sampler", "backend": backend, "params": params,
                            "tags": [BRIDGE_TAG, job_tag(job_id)]}
    if time_limit_s is not None:
        body["cost"] = min(time_limit_s, MAX_EXECUTION_S)
    return body


def _reason_code(state: Mapping[str, Any]) -> int | None:
    code = state.get("reason_code", state.get("reasonCode"))
    if isinstance(code, str) and code.isdigit():
        return int(code)
    return code if isinstance(code, int) and not isinstance(code, bool) else None


def observe(job: Mapping[str, Any]) -> Observation:
    """One job record as the bridge sees it."""
    state = job.get("state") if isinstance(job.get("state"), Mapping) else {}
    status = str(state.get("status") or job.get("status") or "")
    upper = status.upper()
    code = _reason_code(state)
    reason = str(state.get("reason") or "")
    native = f"{status} ({code})" if code is not None else status or "UNKNOWN"
    if upper == "QUEUED":
        return Observation(State.QUEUED, native)
    if upper == "RUNNING":
        return Observation(State.RUNNING, native)
    if upper == "COMPLETED":
        return Observation(State.SUCCEEDED, native, exit_code=0)
    if upper.startswith("CANCELLED"):
        if code == RAN_TOO_LONG or "RAN TOO LONG" in f"{upper} {reason.upper()}":
            return Observation(State.FAILED, native, reason=Reason.TIMEOUT)
        return Observation(State.CANCELLED, native, reason=Reason.CANCELLED)
    if upper == "FAILED":
        return Observation(State.FAILED, native, exit_code=1, reason=Reason.EXIT_CODE)
    return Observation(State.UNKNOWN, native)


def jobs_page(body: Any) -> tuple[list[Mapping[str, Any]], int | None]:
    """The jobs of one ``GET /jobs`` answer and the ``count`` of all that match."""
    if not isinstance(body, Mapping) or not isinstance(body.get("jobs"), list):
        raise ValueError("not a jobs collection")
    jobs = [job for job in body["jobs"] if isinstance(job, Mapping) and "id" in job]
    count = body.get("count")
    return jobs, count if isinstance(count, int) and not isinstance(count, bool) else None


def _bits(sample: Any, width: int) -> str:
    value = int(sample, 16) if isinstance(sample, str) else int(sample)
    return format(value, f"0{width}b")


def results_summary(body: Mapping[str, Any]) -> list[str]:
    """One line per PUB and register: shots, then counts by bitstring (``00=510 11=514``)."""
    lines = []
    results = body.get("results")
    for index, pub in enumerate(results if isinstance(results, Sequence) else []):
        data = pub.get("data") if isinstance(pub, Mapping) else None
        for name, value in (data.items() if isinstance(data, Mapping) else []):
            samples = value.get("samples") if isinstance(value, Mapping) else None
            if not isinstance(samples, list):
                lines.append(f"pub {index} {name}: {json.dumps(value)}")
                continue
            width = int(value.get("num_bits") or 1)
            counts = Counter(_bits(sample, width) for sample in samples)
            shown = " ".join(f"{bits}={n}" for bits, n in sorted(counts.items()))
            lines.append(f"pub {index} {name}: {len(samples)} shots, {width} bits: {shown}")
    return lines


def error_text(body: Any) -> str:
    """The messages of an IBM Cloud error answer (``{"errors": [{"code", "message"}]}``)."""
    if not isinstance(body, Mapping):
        return ""
    errors = body.get("errors")
    messages = []
    for error in errors if isinstance(errors, list) else []:
        if isinstance(error, Mapping) and error.get("message"):
            code = error.get("code")
            messages.append(f"{error['message']} ({code})" if code else str(error["message"]))
    return "; ".join(messages) or str(body.get("message") or body.get("detail") or "")
