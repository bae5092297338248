"""The supervisor of one job of the ``local`` target (see :mod:`adapters.local`).

Run as ``python -I _local_runner.py <jobdir>`` in a session of its own, with the job's
lock already held on file descriptor 3. The submitting bridge takes that lock before the
job directory becomes visible and hands it over, so the lock is held exactly as long as
someone is responsible for the job: a free lock without an exit record means the runner
died (the job is LOST).

The runner waits for its turn in the queue and for a free slot, starts the job in a
process group of its own, enforces cancel requests and the time limit, kills whatever
the job left behind in its group, and writes the outcome atomically. All it knows and
all it leaves are files, so it does not care whether the bridge that started it is
still alive.

Standard library only, and run by path in isolated mode: it imports nothing from the
bridge and needs no PYTHONPATH. :mod:`adapters.local` imports its file names and
helpers, so both sides agree on the layout.
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# The state directory.
JOBS = "jobs"
QUEUE = "queue"
SLOTS = "slots"
# One job's directory.
SPEC = "spec.json"
LOCK = "lock"
CONTROL = "control"
CANCEL = "cancel"
STARTED = "started.json"
EXIT = "exit.json"
OUTPUT = "output"
SCRIPT = "script"
RUNNER_PID = "runner.pid"
RUNNER_LOG = "runner.log"

LOCK_FD = 3
_POLL_S = 0.05
_MAX_QUEUE_POLL_S = 1.0


def lock_is_held(path: Path) -> bool:
    """Whether a live process holds the flock on ``path``."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold the flock on ``path`` (created if missing) for the duration of the block."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    return data


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path`` so that a reader sees the old file or the whole new one."""
    staging = path.with_name(f".{path.name}.tmp")
    with open(staging, "w", encoding="utf-8") as file:
        json.dump(data, file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(staging, path)


def signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)


def _job_of(entry: str) -> str:
    """The job id of a queue entry ``<monotonic ns>-<job id>``."""
    return entry.partition("-")[2]


def _jobs_ahead(root: Path, entry: str) -> int:
    """How many jobs wait before ``entry``; entries whose runner died are dropped."""
    names = sorted(os.listdir(root / QUEUE))
    ahead = names[: bisect.bisect_left(names, entry)]
    while ahead and not lock_is_held(root / JOBS / _job_of(ahead[0]) / LOCK):
        (root / QUEUE / ahead.pop(0)).unlink(missing_ok=True)
    return len(ahead)


def _take_slot(slots: Path, count: int) -> int | None:
    """The open, locked fd of a free slot, or None when all ``count`` slots are taken."""
    for number in range(count):
        fd = os.open(slots / str(number), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return fd
    return None


def _wait_for_slot(root: Path, jobdir: Path, spec: dict[str, Any]) -> int | None:
    """Wait until this job heads the queue and a slot is free; None if it was cancelled.

    Only the head of the queue tries the slots, so jobs start in submit order. The slot
    stays taken as long as the returned fd is open, that is until this process exits.
    """
    entry = spec["queue_entry"]
    try:
        while not (jobdir / CANCEL).exists():
            ahead = _jobs_ahead(root, entry)
            if ahead == 0 and (slot := _take_slot(root / SLOTS, spec["slots"])) is not None:
                return slot
            time.sleep(min(_POLL_S * (ahead + 1), _MAX_QUEUE_POLL_S))
        return None
    finally:
        (root / QUEUE / entry).unlink(missing_ok=True)


def _record(outcome: str, exit_code: int | None = None,
            started_at: float | None = None) -> dict[str, Any]:
    return {"outcome": outcome, "exit_code": exit_code, "started_at": started_at,
            "finished_at": time.time()}


def _start(jobdir: Path, spec: dict[str, Any]) -> subprocess.Popen[bytes]:
    with open(jobdir / OUTPUT, "ab") as output:
        return subprocess.Popen(
            spec["argv"], cwd=spec["cwd"], env=spec["env"], stdin=subprocess.DEVNULL,
            stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )


def _supervise(job: subprocess.Popen[bytes], jobdir: Path, spec: dict[str, Any]) -> str:
    """Wait for the job; stop its group on a cancel request or at its time limit.

    Returns the outcome: ``exited``, ``cancelled`` or ``timeout``. A job whose end finds a
    cancel request is cancelled, even when the bridge's own SIGTERM got there first.
    """
    limit = spec["time_limit_s"]
    deadline = math.inf if limit is None else time.monotonic() + limit
    outcome, kill_at = "exited", math.inf
    while True:
        try:
            job.wait(timeout=_POLL_S)
            break
        except subprocess.TimeoutExpired:
            pass
        now = time.monotonic()
        if outcome == "exited":
            if (jobdir / CANCEL).exists():
                outcome = "cancelled"
            elif now >= deadline:
                outcome = "timeout"
            else:
                continue
            signal_group(job.pid, signal.SIGTERM)
            kill_at = now + spec["kill_grace_s"]
        elif now >= kill_at:
            signal_group(job.pid, signal.SIGKILL)
            kill_at = math.inf
    if outcome == "exited" and (jobdir / CANCEL).exists():
        outcome = "cancelled"
    return outcome


def _run(jobdir: Path, spec: dict[str, Any]) -> dict[str, Any]:
    """Run the job to its end and return its exit record."""
    if _wait_for_slot(jobdir.parent.parent, jobdir, spec) is None:
        return _record("cancelled")
    # The control lock orders the start against a cancel: either the cancel finds the
    # job started (and signals it) or the job never starts.
    with exclusive(jobdir / CONTROL):
        if (jobdir / CANCEL).exists():
            return _record("cancelled")
        started_at = time.time()
        try:
            job = _start(jobdir, spec)
        except OSError as exc:
            with open(jobdir / OUTPUT, "a", encoding="utf-8") as output:
                output.write(f"hpc-bridge: cannot start the job: {exc}\n")
            return _record("exited", 127 if isinstance(exc, FileNotFoundError) else 126,
                           started_at)
        write_json(jobdir / STARTED, {"pid": job.pid, "started_at": started_at})
    outcome = _supervise(job, jobdir, spec)
    # Like a batch system at the end of a job: nothing it started in the background lives on.
    signal_group(job.pid, signal.SIGKILL)
    code = job.returncode if job.returncode >= 0 else 128 - job.returncode
    return _record(outcome, code, started_at)


def main() -> None:
    jobdir = Path(sys.argv[1])
    # Keep only the lock: an inherited socket of the bridge must not outlive the bridge here.
    os.closerange(LOCK_FD + 1, os.sysconf("SC_OPEN_MAX"))
    spec = json.loads((jobdir / SPEC).read_text(encoding="utf-8"))
    write_json(jobdir / EXIT, _run(jobdir, spec))


if __name__ == "__main__":
    main()
