"""What flux-restful-api sends and expects, without any HTTP: pure functions, unit-tested.

The server answers with what Flux's job-list service reports, passed through
``flux.job.info``. Servers differ by version in the shape of a few fields, so every
reader here accepts both forms:

* ``state`` is a name (``"RUN"``) or Flux's state bit (``16``);
* ``result`` is a name (``"COMPLETED"``), Flux's result bit (``1``), or ``""`` while
  the job has not ended;
* ``returncode`` is ``""`` until the job has ended; ``waitstatus`` is the raw wait status
  of the job's largest task exit (exit 3 reads 768);
* ``GET /v1/jobs?details=true`` is an object keyed by job id, or a list with
  ``listing=true``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from adapters.base import Observation
from hpcbridge.model import Reason, State

__all__ = [
    "SCRIPT_RUNNER",
    "argv",
    "ended",
    "exit_code",
    "handshake_token",
    "job_records",
    "map_state",
    "observe",
    "submission",
    "tail_lines",
]

# Flux job states and results as bits (flux-core's job.h), for servers that send numbers.
_STATE_BITS = {1: "NEW", 2: "DEPEND", 4: "PRIORITY", 8: "SCHED", 16: "RUN", 32: "CLEANUP",
               64: "INACTIVE"}
_RESULT_BITS = {1: "COMPLETED", 2: "FAILED", 4: "CANCELED", 8: "TIMEOUT"}

_ACTIVE: dict[str, State] = {
    "NEW": State.QUEUED,
    "DEPEND": State.QUEUED,
    "PRIORITY": State.QUEUED,
    "SCHED": State.QUEUED,
    "RUN": State.RUNNING,
    # The job's tasks have exited, the epilog and the release of its resources run.
    "CLEANUP": State.RUNNING,
}
_RESULTS: dict[str, tuple[State, Reason | None]] = {
    "COMPLETED": (State.SUCCEEDED, None),
    "FAILED": (State.FAILED, Reason.EXIT_CODE),
    "CANCELED": (State.CANCELLED, Reason.CANCELLED),
    "TIMEOUT": (State.FAILED, Reason.TIMEOUT),
}

#: A script becomes a file in the job's temporary directory (``FLUX_JOB_TMPDIR``, which the
#: job shell removes when the job ends) and runs from there: directly when it has a ``#!``
#: line, else with ``/bin/sh``. The script is ``$1``, never part of the shell's code.
SCRIPT_RUNNER = (
    'f=$(mktemp "${FLUX_JOB_TMPDIR:-${TMPDIR:-/tmp}}/hpcbridge-script.XXXXXX") || exit 126\n'
    'trap \'rm -f "$f"\' EXIT\n'
    'printf "%s" "$1" > "$f" && chmod 700 "$f" || exit 126\n'
    'case "$1" in "#!"*) "$f" ;; *) /bin/sh "$f" ;; esac\n'
)


def _name(value: Any, bits: Mapping[int, str]) -> str:
    if isinstance(value, bool):
        return ""
    if isinstance(value, int):
        return bits.get(value, str(value))
    return value.upper() if isinstance(value, str) else ""


def map_state(state: Any, result: Any) -> tuple[State, Reason | None, str]:
    """The common state, reason and native state of a job's ``state`` and ``result``."""
    state_name = _name(state, _STATE_BITS)
    if state_name in _ACTIVE:
        return _ACTIVE[state_name], None, state_name
    if state_name == "INACTIVE":
        result_name = _name(result, _RESULT_BITS)
        common, reason = _RESULTS.get(result_name, (State.UNKNOWN, None))
        return common, reason, f"INACTIVE,{result_name}" if result_name else "INACTIVE"
    return State.UNKNOWN, None, state_name or "UNKNOWN"


def ended(job: Mapping[str, Any]) -> bool:
    """Whether Flux is done with the job (INACTIVE), whatever its result."""
    return _name(job.get("state"), _STATE_BITS) == "INACTIVE"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def exit_code(job: Mapping[str, Any]) -> int | None:
    """A shell-style exit code: ``returncode``, else decoded from ``waitstatus``."""
    code = _number(job.get("returncode"))
    if code is not None:
        return int(code)
    status = _number(job.get("waitstatus"))
    if status is None:
        return None
    raw = int(status)
    return 128 + (raw & 0x7F) if raw & 0x7F else (raw >> 8) & 0xFF


def observe(job: Mapping[str, Any]) -> Observation:
    """One job record of ``GET /v1/jobs?details=true`` as the bridge sees it."""
    state, reason, native = map_state(job.get("state"), job.get("result"))
    started = _number(job.get("t_run"))
    finished = _number(job.get("t_inactive")) or _number(job.get("t_cleanup"))
    return Observation(
        state=state,
        native_state=native,
        exit_code=exit_code(job) if state.terminal else None,
        reason=reason,
        started_at=started or None,
        finished_at=finished if state.terminal and finished else None,
    )


def job_records(body: Any) -> dict[str, Mapping[str, Any]] | None:
    """The detailed listing as ``{job id: record}``; None when the body is no such listing."""
    if isinstance(body, Mapping):
        if "jobs" in body and isinstance(body["jobs"], list):
            return None  # the plain listing: this server ignored ``details``
        items = list(body.values())
    elif isinstance(body, list):
        items = body
    else:
        return None
    records: dict[str, Mapping[str, Any]] = {}
    for item in items:
        if isinstance(item, Mapping) and _number(item.get("id")) is not None:
            records[str(int(item["id"]))] = item
    return records


def tail_lines(text: str, count: int | None) -> str:
    """The last ``count`` lines of ``text`` (all of it for None); lines end at ``\\n`` only."""
    if count is None:
        return text
    if count <= 0:
        return ""
    body = text[:-1] if text.endswith("\n") else text
    cut = len(body)
    for _ in range(count):
        cut = body.rfind("\n", 0, cut)
        if cut < 0:
            return text
    return text[cut + 1:]


def argv(script: str | None, command: Sequence[str] | None) -> list[str]:
    """What the job runs: ``command`` as given, or :data:`SCRIPT_RUNNER` with the script."""
    if command is not None:
        return list(command)
    return ["/bin/sh", "-c", SCRIPT_RUNNER, "hpcbridge-script", script or ""]


def submission(arguments: Sequence[str], *, environment: Mapping[str, str],
               workdir: str | None, runtime_s: int | None, tasks: int | None,
               cores_per_task: int | None, nodes: int | None,
               gpus_per_task: int | None) -> dict[str, Any]:
    """The body of ``POST /v1/jobs/submit``.

    The server runs ``shlex.split(command)`` as argv, never a shell, and
    ``shlex.split(shlex.join(a)) == a`` holds for every list of strings: each argument
    arrives as the data it was. (Newer servers also take a list, older ones only a string.)
    """
    body: dict[str, Any] = {"command": shlex.join(arguments), "envars": dict(environment)}
    optional = {"workdir": workdir, "runtime": runtime_s, "num_tasks": tasks,
                "cores_per_task": cores_per_task, "num_nodes": nodes,
                "gpus_per_task": gpus_per_task}
    body.update({key: value for key, value in optional.items() if value is not None})
    return body


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def handshake_token(user: str, password: str, secret_key: str) -> str:
    """The payload of ``POST /v1/token``: user and password in an HS256 JWT.

    It is signed with the secret the server shares with its clients (FLUX_SECRET_KEY)
    and carries the scope ``token``, as flux-restful's own client sends it.
    """
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = _b64url(json.dumps({"user": user, "pass": password, "scope": "token"}).encode())
    signature = hmac.new(secret_key.encode(), f"{header}.{claims}".encode(),
                         hashlib.sha256).digest()
    return f"{header}.{claims}.{_b64url(signature)}"
