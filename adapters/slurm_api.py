"""slurmrestd's wire shapes: requests built and answers read, without any I/O.

Speaks the ``slurm`` OpenAPI plugin versions v0.0.38 (Slurm 22.05, checked against the
real daemon) to v0.0.41. The versions differ in shape, not in meaning:

* ``job_state`` is a string up to v0.0.38 and a list (base state, then flags) after;
* numbers that may be unset become ``{"set": bool, "infinite": bool, "number": n}``;
* ``exit_code`` is a raw wait status up to v0.0.38 and an object with ``status``,
  ``return_code`` and ``signal`` after;
* a submission carries ``environment`` as a map and ``script`` beside ``job`` up to
  v0.0.38, and ``environment`` as ``K=V`` strings with ``script`` inside ``job`` after.

Every reader here accepts both forms, so a server that mixes them does not break it.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from adapters.base import Observation
from hpcbridge.model import JobRequest, Reason, State

__all__ = [
    "ALREADY_DONE",
    "INVALID_JOB_ID",
    "SUPPORTED_VERSIONS",
    "Failure",
    "JobSpec",
    "SlurmError",
    "batch_script",
    "capacity",
    "classify",
    "decode_exit_code",
    "errors",
    "job_states",
    "map_state",
    "number",
    "observe",
    "pick_version",
    "served_versions",
    "submission",
]

#: Newest first: the order in which a version is preferred when the server offers several.
SUPPORTED_VERSIONS = ("v0.0.41", "v0.0.40", "v0.0.39", "v0.0.38")
_LEGACY = "v0.0.38"
_PATH_VERSION = re.compile(r"^/slurm/(v\d+\.\d+\.\d+)/")

# Slurm error numbers (slurm_errno.h) that decide how a failure is treated.
INVALID_JOB_ID = 2017
ALREADY_DONE = 2021
# Slurm 22.05's slurmctld closes the connection without an answer when it cannot verify
# the credential slurmrestd forwards; slurmrestd then reports "zero bytes" (5005).
_CREDENTIALS_REFUSED = frozenset({1007, 5005})
_COMMUNICATION = (range(1000, 2000), range(5000, 5005))


# --- versions ------------------------------------------------------------------------

def served_versions(openapi: Mapping[str, Any]) -> set[str]:
    """The ``slurm`` plugin versions an ``/openapi/v3`` document lists paths for."""
    paths = openapi.get("paths")
    if not isinstance(paths, Mapping):
        return set()
    return {m.group(1) for path in paths if (m := _PATH_VERSION.match(str(path)))}


def pick_version(served: Iterable[str]) -> str | None:
    offered = set(served)
    return next((v for v in SUPPORTED_VERSIONS if v in offered), None)


# --- values ----------------------------------------------------------------------------

def number(value: Any) -> int | None:
    """An integer field in either form; None when unset or infinite."""
    if isinstance(value, Mapping):
        if not value.get("set", True) or value.get("infinite", False):
            return None
        value = value.get("number")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


def _number_field(version: str, value: int) -> int | dict[str, Any]:
    if version == _LEGACY:
        return value
    return {"set": True, "infinite": False, "number": value}


def job_states(value: Any) -> list[str]:
    """``job_state`` as a list, base state first: ``"FAILED"`` and ``["FAILED"]`` alike."""
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, Sequence):
        return [str(item) for item in value if item]
    return []


_BASE: dict[str, tuple[State, Reason | None]] = {
    "PENDING": (State.QUEUED, None),
    "RUNNING": (State.RUNNING, None),
    "SUSPENDED": (State.SUSPENDED, None),
    "COMPLETED": (State.SUCCEEDED, None),
    "CANCELLED": (State.CANCELLED, Reason.CANCELLED),
    "FAILED": (State.FAILED, Reason.EXIT_CODE),
    "TIMEOUT": (State.FAILED, Reason.TIMEOUT),
    "DEADLINE": (State.FAILED, Reason.TIMEOUT),
    "OUT_OF_MEMORY": (State.FAILED, Reason.OUT_OF_MEMORY),
    "NODE_FAIL": (State.FAILED, Reason.NODE_FAILURE),
    "BOOT_FAIL": (State.FAILED, Reason.NODE_FAILURE),
    "PREEMPTED": (State.FAILED, Reason.PREEMPTED),
}
# Flags that say a job is between states. Up to v0.0.38 Slurm reports the flag instead of
# the base state (a job being cancelled reads COMPLETING until its processes are gone), so
# the flags are read first and mean the same in both forms.
_TRANSITIONAL: dict[str, State] = {
    "COMPLETING": State.RUNNING,
    "STAGE_OUT": State.RUNNING,
    "RESIZING": State.RUNNING,
    "CONFIGURING": State.QUEUED,
    "REQUEUED": State.QUEUED,
    "REQUEUE_FED": State.QUEUED,
    "REQUEUE_HOLD": State.QUEUED,
    "SPECIAL_EXIT": State.QUEUED,
    "RESV_DEL_HOLD": State.QUEUED,
}


def map_state(states: Sequence[str]) -> tuple[State, Reason | None]:
    for name in states:
        if name in _TRANSITIONAL:
            return _TRANSITIONAL[name], None
    if states and states[0] in _BASE:
        return _BASE[states[0]]
    return State.UNKNOWN, None


def decode_exit_code(value: Any) -> int | None:
    """A shell-style exit code: the program's status, or 128 + signal when killed by one.

    Up to v0.0.38 ``exit_code`` is the raw wait status (exit 3 reads 768); later it is an
    object with ``return_code`` and ``signal``.
    """
    if isinstance(value, Mapping) and "number" not in value:
        status = job_states(value.get("status"))
        signal = value.get("signal")
        if isinstance(signal, Mapping):
            signal_id = number(signal.get("id", signal.get("signal_id")))
            if signal_id and ("SIGNALED" in status or "CORE_DUMPED" in status):
                return 128 + signal_id
        return number(value.get("return_code"))
    raw = number(value)
    if raw is None:
        return None
    if raw & 0x7F:
        return 128 + (raw & 0x7F)
    return (raw >> 8) & 0xFF


def observe(job: Mapping[str, Any]) -> Observation:
    """One job record of ``GET /jobs`` as the bridge sees it."""
    states = job_states(job.get("job_state"))
    state, reason = map_state(states)
    exit_code = decode_exit_code(job.get("exit_code")) if state.terminal else None
    start, end = number(job.get("start_time")), number(job.get("end_time"))
    # While a job waits, start_time and end_time are Slurm's estimates, not facts.
    started = start if start and state is not State.QUEUED else None
    finished = end if end and state.terminal else None
    return Observation(state=state, native_state=",".join(states) or "UNKNOWN",
                       exit_code=exit_code, reason=reason, started_at=started,
                       finished_at=finished)


# --- errors ----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, slots=True)
class SlurmError:
    code: int | None
    text: str


def errors(body: Any) -> list[SlurmError]:
    """The ``errors`` of an answer; the key of the number varies between endpoints."""
    if not isinstance(body, Mapping) or not isinstance(body.get("errors"), list):
        return []
    found = []
    for item in body["errors"]:
        if not isinstance(item, Mapping):
            continue
        code = next((number(item[k]) for k in ("error_number", "error_code", "errno")
                     if k in item), None)
        error, description = str(item.get("error") or ""), str(item.get("description") or "")
        if error and description and error not in description:
            text = f"{description}: {error}"
        else:
            text = description or error or "unspecified error"
        found.append(SlurmError(code, text))
    return found


class Failure(enum.Enum):
    CREDENTIALS_REFUSED = "credentials refused"
    UNAVAILABLE = "unavailable"
    #: Slurm said only "Unspecified error": slurmctld unreachable and a refused
    #: credential read the same on the read-only endpoints.
    AMBIGUOUS = "ambiguous"
    REJECTED = "rejected"


def classify(status: int, found: Sequence[SlurmError]) -> Failure:
    """What an unsuccessful answer means for the caller."""
    if status == 401:
        return Failure.CREDENTIALS_REFUSED
    if status in (408, 429):
        return Failure.UNAVAILABLE
    codes = {e.code for e in found}
    if codes & _CREDENTIALS_REFUSED:
        return Failure.CREDENTIALS_REFUSED
    if any(code is not None and any(code in r for r in _COMMUNICATION) for code in codes):
        return Failure.UNAVAILABLE
    if status >= 500 and codes <= {None, -1}:
        return Failure.UNAVAILABLE if not found else Failure.AMBIGUOUS
    return Failure.REJECTED


# --- requests --------------------------------------------------------------------------

def batch_script(script: str | None, command: Sequence[str] | None) -> str:
    """The batch file Slurm runs: the script as given, or one that execs ``command``.

    Every argument is quoted, so the argv reaches the program exactly as sent. A script
    without an interpreter line gets ``#!/bin/sh``; Slurm refuses one without.
    """
    if command is not None:
        return "#!/bin/sh\nexec " + " ".join(shlex.quote(arg) for arg in command) + "\n"
    text = script or ""
    return text if text.startswith("#!") else "#!/bin/sh\n" + text


@dataclasses.dataclass(frozen=True, slots=True)
class JobSpec:
    """A job in Slurm's terms, independent of the API version."""

    script: str
    name: str
    comment: str
    working_dir: str
    environment: Mapping[str, str]
    output: str
    partition: str | None = None
    account: str | None = None
    time_limit_min: int | None = None
    nodes: int | None = None
    tasks: int | None = None
    cpus_per_task: int | None = None
    memory_mb: int | None = None
    gpus: int | None = None

    @classmethod
    def for_request(cls, request: JobRequest, job_id: str, *, script: str, working_dir: str,
                    environment: Mapping[str, str], output: str,
                    partition: str | None) -> JobSpec:
        """The job ``request`` asks for, tagged with ``job_id`` (its name and comment);
        ``partition`` is the target's, for a request that names no queue."""
        resources = request.resources
        return cls(
            script=script,
            name=job_id,
            comment=f"hpcbridge:{job_id}",
            working_dir=working_dir,
            environment=environment,
            output=output,
            partition=request.queue or partition,
            account=request.account,
            time_limit_min=(math.ceil(resources.time_limit_s / 60)
                            if resources.time_limit_s else None),
            nodes=resources.nodes,
            tasks=resources.tasks,
            cpus_per_task=resources.cpus_per_task,
            memory_mb=resources.memory_mb,
            gpus=resources.gpus,
        )


def submission(version: str, spec: JobSpec) -> dict[str, Any]:
    """The body of ``POST /slurm/<version>/job/submit``."""
    job: dict[str, Any] = {
        "name": spec.name,
        "comment": spec.comment,
        "current_working_directory": spec.working_dir,
        "standard_output": spec.output,
        "standard_error": spec.output,
    }
    for key in ("partition", "account", "tasks", "cpus_per_task"):
        if getattr(spec, key) is not None:
            job[key] = getattr(spec, key)
    if spec.time_limit_min is not None:
        job["time_limit"] = _number_field(version, spec.time_limit_min)
    if spec.memory_mb is not None:
        job["memory_per_node"] = _number_field(version, spec.memory_mb)
    if version == _LEGACY:
        job["environment"] = dict(spec.environment)
        if spec.nodes is not None:
            job["nodes"] = [spec.nodes, spec.nodes]
        if spec.gpus:
            job["gpus_per_node"] = str(spec.gpus)
        return {"script": spec.script, "job": job}
    job["environment"] = [f"{k}={v}" for k, v in spec.environment.items()]
    job["script"] = spec.script
    if spec.nodes is not None:
        job["minimum_nodes"] = job["maximum_nodes"] = spec.nodes
    if spec.gpus:
        job["tres_per_node"] = f"gres/gpu:{spec.gpus}"
    return {"job": job}


# --- nodes -----------------------------------------------------------------------------

_GRES_GPU = re.compile(r"(?:^|,)gpu(?::[^:,()]+)?:(\d+)")


def capacity(body: Mapping[str, Any]) -> dict[str, int]:
    """Totals over the nodes of ``GET /nodes``."""
    nodes = [n for n in body.get("nodes") or [] if isinstance(n, Mapping)]
    totals = {"nodes": len(nodes), "cpus": 0, "idle_cpus": 0, "memory_mb": 0, "gpus": 0}
    for node in nodes:
        totals["cpus"] += number(node.get("cpus")) or 0
        totals["idle_cpus"] += number(node.get("idle_cpus")) or 0
        totals["memory_mb"] += number(node.get("real_memory")) or 0
        totals["gpus"] += sum(int(n) for n in _GRES_GPU.findall(str(node.get("gres") or "")))
    return totals
