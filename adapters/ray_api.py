"""The Ray Jobs REST API's shapes: requests built and answers read, without any I/O.

Checked against Ray 2.60's dashboard (``/api/jobs/``, ``/api/cluster_status``); the
fields older versions lack (``driver_exit_code``, ``error_type``, ``driver_node_id``) are
read when present and inferred when not.

Every job runs under the *launcher*, a fixed Python program carried in the job's
``runtime_env`` (``HPCBRIDGE_LAUNCHER``). Ray runs a job's entrypoint through ``/bin/sh``,
so the entrypoint is only ``exec <python> -c <stub>`` followed by the command's arguments,
each quoted: nothing a request carries is ever read by a shell as syntax. The rest of the
request (script, working directory, environment, time limit) travels base64-encoded in
``HPCBRIDGE_LAUNCH``, because Ray expands ``$VAR`` and ``${VAR}`` in every value of
``env_vars`` and has no way to escape a ``$``. The launcher

* prints a boundary line, so that :func:`job_output` can tell Ray's own lines in the log
  (runtime environment set-up, ``Running entrypoint for job ...``) from the job's output;
* waits :data:`START_DELAY_S` before it starts anything: Ray delivers a stop that was
  requested while the job was PENDING right after it starts the entrypoint, and the job
  must not have run by then;
* sets the request's environment exactly (Ray's own copy in ``env_vars``, which the
  job's Ray tasks and actors get, is the expanded one);
* writes a script to a private temporary file and runs it (directly when it starts with
  ``#!``, else with ``/bin/sh``), in ``working_dir`` when the request names one;
* enforces ``time_limit_s`` from the moment the command starts: SIGTERM to the job's
  process group, then, once the command has ended or a grace period has passed, a last
  log line that :func:`observe` reads from Ray's failure message to report reason
  ``timeout``, and SIGKILL to the whole group, the launcher included (exit code 137);
* forwards Ray's stop signal to the job's process group the same way;
* exits ``128 + n`` when the command died of signal ``n``.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from adapters.base import ManagerRejected, Observation
from hpcbridge.model import JobRequest, Reason, State

__all__ = [
    "CANCELS_KEY",
    "JOB_ID_KEY",
    "LAUNCHER",
    "RESERVED_ENV",
    "RESERVED_METADATA",
    "START_DELAY_S",
    "boundary",
    "cancel_record_body",
    "cancel_record_id",
    "capacity",
    "entrypoint",
    "error_detail",
    "exit_code",
    "index",
    "job_output",
    "observe",
    "submission",
    "tail",
    "timed_out",
]

#: Metadata: the bridge's job id, and on a cancel record the job it cancels.
JOB_ID_KEY = "hpcbridge.io/job-id"
CANCELS_KEY = "hpcbridge.io/cancels"
#: Ray's own metadata keys: the job's display name, and the link of a driver to its job.
_JOB_NAME_KEY = "job_name"
RESERVED_METADATA = frozenset({JOB_ID_KEY, CANCELS_KEY, _JOB_NAME_KEY, "job_submission_id"})

_ENV_JOB_ID = "HPCBRIDGE_JOB_ID"
_ENV_LAUNCHER = "HPCBRIDGE_LAUNCHER"
_ENV_LAUNCH = "HPCBRIDGE_LAUNCH"
RESERVED_ENV = frozenset({_ENV_JOB_ID, _ENV_LAUNCHER, _ENV_LAUNCH})

#: Seconds the launcher waits before it starts the job (see the module docstring).
START_DELAY_S = 0.2
_CANCEL_SUFFIX = ".cancel"  # a bridge job id has no '.', so no job can be named like this

# Ray hands a job's runtime_env and metadata to its entrypoint as JSON in one environment
# variable, and Linux refuses to start a program with a variable over 128 KiB; Ray adds a
# few keys of its own, hence the margin.
_ENV_JSON_LIMIT = 120 * 1024

LAUNCHER = """\
import base64, json, os, shutil, signal, subprocess, sys, tempfile, time

def main():
    job = os.environ.get("HPCBRIDGE_JOB_ID", "")
    spec = json.loads(base64.b64decode(os.environ.pop("HPCBRIDGE_LAUNCH")))
    os.environ.update(spec["environment"])
    limit = spec.get("time_limit_s") or 0
    grace = spec["kill_grace_s"]
    workdir = spec.get("working_dir")
    script = spec.get("script")
    if os.getpgrp() != os.getpid():
        os.setpgid(0, 0)
    print("hpc-bridge: job %s starts" % job, flush=True)
    time.sleep(START_DELAY_S)
    stop = []
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda number, frame: stop.append(number))
    tmp = None
    argv = sys.argv[1:]
    if script is not None:
        tmp = tempfile.mkdtemp(prefix="hpcbridge-")
        path = os.path.join(tmp, "script")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o700), "wb") as f:
            f.write(os.fsencode(script))
        argv = [path] if script.startswith("#!") else ["/bin/sh", path]
    try:
        try:
            child = subprocess.Popen(argv, cwd=workdir)
        except OSError as exc:
            print("hpc-bridge: cannot start %s%s: %s" % (
                argv[0], " in " + workdir if workdir else "", exc.strerror), flush=True)
            return 127
        deadline = time.monotonic() + limit if limit > 0 else None
        signalled = None
        timed_out = False
        while child.poll() is None:
            now = time.monotonic()
            if signalled is None and (stop or (deadline is not None and now >= deadline)):
                timed_out = not stop
                number = stop[0] if stop else signal.SIGTERM
                signal.signal(number, signal.SIG_IGN)
                os.killpg(0, number)
                signalled = now
            elif signalled is not None and now >= signalled + grace:
                break
            time.sleep(0.05)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    if signalled is not None:
        if timed_out:
            print("hpc-bridge: job %s stopped at its time limit of %g s" % (job, limit),
                  flush=True)
        os.killpg(0, signal.SIGKILL)
    code = child.returncode
    return 128 - code if code < 0 else code

sys.exit(main())
""".replace("START_DELAY_S", repr(START_DELAY_S))

_STUB = f'import os; exec(os.environ.pop("{_ENV_LAUNCHER}"))'


# --- requests --------------------------------------------------------------------------

def entrypoint(python: str, command: Sequence[str] | None) -> str:
    """The shell command Ray runs: the launcher, then the command's arguments, quoted."""
    return "exec " + shlex.join([python, "-c", _STUB, *(command or ())])


def boundary(job_id: str) -> str:
    """The line the launcher prints before the job's own output."""
    return f"hpc-bridge: job {job_id} starts\n"


def submission(request: JobRequest, job_id: str, *, python: str,
               runtime_env: Mapping[str, Any], metadata: Mapping[str, str],
               kill_grace_s: float) -> dict[str, Any]:
    """The body of ``POST /api/jobs/`` for ``request``; refuses what Ray cannot honour."""
    resources = request.resources
    if request.queue is not None or request.account is not None:
        raise ManagerRejected("Ray has no queues or accounts ('queue', 'account')")
    if (resources.nodes or 1) > 1:
        raise ManagerRejected("a Ray job's entrypoint runs on one node (resources.nodes); "
                              "the job's own Ray tasks use the whole cluster")
    if reserved := sorted(RESERVED_ENV & set(request.environment)):
        raise ManagerRejected(f"environment variable {reserved[0]} is reserved")
    if reserved := sorted(RESERVED_METADATA & set(request.labels)):
        raise ManagerRejected(f"label {reserved[0]!r} is reserved on Ray")
    launch: dict[str, Any] = {"environment": dict(request.environment),
                              "kill_grace_s": kill_grace_s}
    for key, value in (("script", request.script), ("working_dir", request.working_dir),
                       ("time_limit_s", resources.time_limit_s)):
        if value is not None:
            launch[key] = value
    env_vars: dict[str, str] = {
        **(runtime_env.get("env_vars") or {}), **request.environment,
        _ENV_JOB_ID: job_id, _ENV_LAUNCHER: LAUNCHER,
        _ENV_LAUNCH: base64.b64encode(json.dumps(launch).encode()).decode(),
    }
    job_metadata = {**metadata, **request.labels, _JOB_NAME_KEY: request.name or job_id,
                    JOB_ID_KEY: job_id}
    job_env = {**runtime_env, "env_vars": env_vars}
    size = len(json.dumps({"runtime_env": job_env, "metadata": job_metadata}))
    if size > _ENV_JSON_LIMIT:
        raise ManagerRejected(
            f"the script and environment take {size // 1024} KiB once encoded; Ray passes "
            f"them to the job in one environment variable of at most "
            f"{_ENV_JSON_LIMIT // 1024} KiB")
    body: dict[str, Any] = {
        "entrypoint": entrypoint(python, request.command),
        "submission_id": job_id,
        "runtime_env": job_env,
        "metadata": job_metadata,
    }
    if resources.tasks is not None or resources.cpus_per_task is not None:
        body["entrypoint_num_cpus"] = (resources.tasks or 1) * (resources.cpus_per_task or 1)
    if resources.gpus:
        body["entrypoint_num_gpus"] = resources.gpus
    if resources.memory_mb is not None:
        body["entrypoint_memory"] = resources.memory_mb * (1 << 20)
    return body


def cancel_record_id(job_id: str) -> str:
    return job_id + _CANCEL_SUFFIX


def cancel_record_body(job_id: str) -> dict[str, Any]:
    """A trivial job that records, in Ray itself, that ``job_id`` was cancelled.

    Ray cannot stop a job that waits for resources: it stays PENDING, and the stop takes
    effect only once it starts. The record lets every adapter (in any process) report
    such a job CANCELLED at once, from the same ``GET /api/jobs/`` as everything else.
    """
    return {
        "entrypoint": "true",
        "submission_id": cancel_record_id(job_id),
        "metadata": {CANCELS_KEY: job_id, _JOB_NAME_KEY: f"hpc-bridge: cancel {job_id}"},
    }


# --- answers ---------------------------------------------------------------------------

def index(jobs: Any) -> tuple[dict[str, Mapping[str, Any]], dict[str, Mapping[str, Any]]]:
    """``GET /api/jobs/`` as jobs by submission id, and cancel records by the job they cancel.

    Drivers started outside the Jobs API (``ray.init`` from a shell) have no submission id
    and are left out.
    """
    records: dict[str, Mapping[str, Any]] = {}
    cancels: dict[str, Mapping[str, Any]] = {}
    for job in jobs if isinstance(jobs, list) else []:
        if not isinstance(job, Mapping) or not isinstance(job.get("submission_id"), str):
            continue
        records[job["submission_id"]] = job
        metadata = job.get("metadata")
        if isinstance(metadata, Mapping) and isinstance(metadata.get(CANCELS_KEY), str):
            cancels[metadata[CANCELS_KEY]] = job
    return records, cancels


_STATES: dict[str, State] = {
    "PENDING": State.QUEUED,
    "RUNNING": State.RUNNING,
    "SUCCEEDED": State.SUCCEEDED,
    "FAILED": State.FAILED,
    "STOPPED": State.CANCELLED,
}
_FAILURES: dict[str, Reason | None] = {
    "JOB_ENTRYPOINT_COMMAND_ERROR": Reason.EXIT_CODE,
    "JOB_ENTRYPOINT_COMMAND_START_ERROR": Reason.SUBMIT_ERROR,
    "RUNTIME_ENV_SETUP_FAILURE": Reason.SUBMIT_ERROR,
    "JOB_SUPERVISOR_ACTOR_START_TIMEOUT": Reason.SUBMIT_ERROR,
    "JOB_SUPERVISOR_ACTOR_START_FAILURE": Reason.SUBMIT_ERROR,
    "JOB_SUPERVISOR_ACTOR_UNSCHEDULABLE": Reason.SUBMIT_ERROR,
    "JOB_SUPERVISOR_ACTOR_DIED": Reason.NODE_FAILURE,
    "JOB_SUPERVISOR_ACTOR_UNKNOWN_FAILURE": None,
}
_EXIT_MESSAGE = re.compile(r"Job entrypoint command failed with exit code (-?\d+)")


def observe(job: Mapping[str, Any], cancel: Mapping[str, Any] | None = None) -> Observation:
    """One job record as the bridge sees it; ``cancel`` is its cancel record, if any.

    Ray's ``start_time`` is when it accepted the job, so ``started_at`` includes the time
    a job waited for resources; it is reported once the job has started.
    """
    status = str(job.get("status") or "UNKNOWN")
    state = _STATES.get(status, State.UNKNOWN)
    if cancel is not None and state is State.QUEUED:
        return Observation(state=State.CANCELLED, native_state=f"{status} (stop requested)",
                           reason=Reason.CANCELLED, finished_at=_seconds(cancel.get("start_time")))
    code = exit_code(job) if state.terminal else None
    started = state in (State.RUNNING, State.SUCCEEDED) or code is not None \
        or bool(job.get("driver_node_id"))
    reason: Reason | None = None
    if state is State.CANCELLED:
        reason = Reason.CANCELLED
    elif state is State.FAILED:
        reason = _failure_reason(job, code)
    error_type = job.get("error_type")
    native = f"{status} ({error_type})" if isinstance(error_type, str) and error_type else status
    return Observation(
        state=state,
        native_state=native,
        exit_code=code,
        reason=reason,
        started_at=_seconds(job.get("start_time")) if started else None,
        finished_at=_seconds(job.get("end_time")) if state.terminal else None,
    )


def _failure_reason(job: Mapping[str, Any], code: int | None) -> Reason | None:
    if timed_out(job):
        return Reason.TIMEOUT
    error_type = job.get("error_type")
    if isinstance(error_type, str) and error_type in _FAILURES:
        return _FAILURES[error_type]
    return Reason.EXIT_CODE if code is not None else None


def exit_code(job: Mapping[str, Any]) -> int | None:
    """A shell-style exit code: ``driver_exit_code``, else the one Ray's message names.

    A negative code (the entrypoint died of a signal) reads as ``128 + signal``.
    """
    if job.get("status") == "SUCCEEDED":
        return 0
    code = job.get("driver_exit_code")
    if isinstance(code, bool) or not isinstance(code, int):
        found = _EXIT_MESSAGE.match(str(job.get("message") or ""))
        if found is None:
            return None
        code = int(found.group(1))
    return 128 - code if code < 0 else code


def timed_out(job: Mapping[str, Any]) -> bool:
    """Whether the launcher stopped the job at its time limit.

    Ray's failure message ends with the last lines of the job's log, and the launcher's
    last line says so.
    """
    message = str(job.get("message") or "").rstrip("\n")
    last_line = message.rpartition("\n")[2]
    return f"hpc-bridge: job {job.get('submission_id')} stopped at its time limit" in last_line


def job_output(job_id: str, job_entrypoint: str, logs: str) -> str:
    """The job's own output from ``GET /api/jobs/{id}/logs``, without Ray's lines.

    Ray writes ``Running entrypoint for job <id>: <entrypoint>`` into the log when the
    entrypoint has already started, so the line can land anywhere in the job's first
    output; it is removed wherever it is. What precedes the launcher's boundary is Ray's
    set-up log. A job whose entrypoint never ran has no boundary: its log is all Ray's,
    and says why. Ray reads the log as text with universal newlines.
    """
    ray_line = f"Running entrypoint for job {job_id}: {job_entrypoint}\n"
    logs = logs.replace(_universal_newlines(ray_line), "")
    _, found, output = logs.rpartition(boundary(job_id))
    return output if found else logs


def tail(text: str, lines: int | None) -> str:
    if lines is None:
        return text
    if lines <= 0:
        return ""
    return "".join(text.splitlines(keepends=True)[-lines:])


def error_detail(text: str) -> str:
    """The gist of an error answer: Ray sends a whole Python traceback; its last line."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:500] if lines else ""


def capacity(body: Any) -> dict[str, int]:
    """Totals from ``GET /api/cluster_status``: its load report's ``[used, total]`` pairs."""
    status = _path(body, "data", "clusterStatus")
    usage = _path(status, "loadMetricsReport", "usage")
    if not isinstance(usage, Mapping):
        return {}

    def pair(name: str) -> tuple[float, float]:
        value = usage.get(name)
        if isinstance(value, Sequence) and len(value) == 2 \
                and all(isinstance(v, int | float) for v in value):
            return float(value[0]), float(value[1])
        return 0.0, 0.0

    used_cpus, cpus = pair("CPU")
    totals = {
        "cpus": int(cpus),
        "idle_cpus": int(cpus - used_cpus),
        "memory_mb": int(pair("memory")[1]) >> 20,
        "gpus": int(pair("GPU")[1]),
    }
    report = _path(status, "autoscalerReport")
    if isinstance(report, Mapping):
        totals["nodes"] = sum(int(count) for key in ("activeNodes", "idleNodes")
                              if isinstance(report.get(key), Mapping)
                              for count in report[key].values()
                              if isinstance(count, int))
    return totals


def _path(value: Any, *keys: str) -> Any:
    for key in keys:
        value = value.get(key) if isinstance(value, Mapping) else None
    return value


def _seconds(milliseconds: Any) -> float | None:
    if isinstance(milliseconds, bool) or not isinstance(milliseconds, int | float):
        return None
    return milliseconds / 1000 if milliseconds > 0 else None


def _universal_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")
