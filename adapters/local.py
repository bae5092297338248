"""The ``local`` target: jobs are processes on the bridge's own machine.

The embedded default target, in the spirit of PSI/J's local executor. Settings:

``workdir``
    The state directory, by default ``$XDG_STATE_HOME/hpc-bridge/local/<target>`` (else
    ``~/.local/state/hpc-bridge/local/<target>``). It must be on a local file system:
    liveness and slots are ``flock`` locks.
``slots``
    How many jobs run at once, by default ``os.cpu_count()``. The others wait QUEUED and
    start in submit order. Every job takes one slot, whatever its ``resources`` say.
``kill_grace_s``
    Seconds between SIGTERM and SIGKILL when a job is cancelled or reaches its time
    limit, by default 5.

A job is a directory ``<workdir>/jobs/<job id>/`` and its native id is the job id. It
runs in the request's ``working_dir``, else in that directory, and the files a request
names in ``outputs`` are read from there (:meth:`LocalAdapter.read_output`). The
directory is staged under a temporary name and renamed into place, so a job is visible
only once complete and two submits of one job id make one job (which is also how
:meth:`LocalAdapter.find_by_tag` works). A detached runner (:mod:`adapters._local_runner`)
supervises the job; everything it knows is in the directory, so jobs outlive the bridge
and a new adapter on the same workdir reports on them:

==================  =========================================================
``spec.json``       what to run: argv, environment, working directory, limits
``script``          the request's script (mode 0700), run directly when it has
                    a ``#!`` line, else with ``/bin/sh``
``lock``            flock held by the job's runner for its whole life
``control``         flock that orders a cancel against the start of the job
``cancel``          present once a cancel was requested
``started.json``    pid (and process group) and start time of the running job
``exit.json``       outcome, exit code, start and end times
``output``          the job's stdout and stderr
``runner.pid``      for people: the runner's pid
``runner.log``      for people: the runner's own diagnostics
==================  =========================================================

``<workdir>/queue/`` holds an entry per waiting job, named to sort in submit order;
``<workdir>/slots/<n>`` are the slots' locks.

States (``native_state`` in brackets): waiting for a slot is QUEUED [QUEUED], started is
RUNNING [RUNNING]; exit 0 is SUCCEEDED [EXITED]; another exit code, or death by signal
``n`` read as ``128 + n``, is FAILED with reason ``exit_code`` [EXITED]; over the time
limit is FAILED with reason ``timeout`` [TIMEOUT]; cancelled is CANCELLED [CANCELLED]. A
runner that died without an exit record (killed, machine rebooted) is UNKNOWN [LOST]:
the core decides what that means.

Commands are executed as argv, never through a shell. Jobs get a minimal environment
(PATH, HOME, USER, LOGNAME, LANG, HPCBRIDGE_JOB_ID) plus the request's, never the
bridge's own. Not enforced: resources other than ``time_limit_s`` (``nodes`` above 1 is
refused), ``queue`` and ``account`` (ignored). A process that leaves the job's process
group (``setsid``) escapes cancel and time limit, and the processes of a job whose runner
was killed keep running unsupervised.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import pwd
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from adapters import _local_runner
from adapters._files import read_confined
from adapters._local_runner import (
    CANCEL,
    CONTROL,
    EXIT,
    JOBS,
    LOCK,
    LOCK_FD,
    OUTPUT,
    QUEUE,
    RUNNER_LOG,
    RUNNER_PID,
    SCRIPT,
    SLOTS,
    SPEC,
    STARTED,
    exclusive,
    lock_is_held,
    read_json,
    signal_group,
    write_json,
)
from adapters.base import (
    Capabilities,
    ConfigError,
    ManagerRejected,
    ManagerUnavailable,
    Observation,
    OutputMissing,
)
from hpcbridge.model import JobRequest, Reason, RequestError, State, validate_job_id

__all__ = ["LocalAdapter"]

_SETTINGS = frozenset({"kind", "workdir", "slots", "kill_grace_s"})
_SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
_TAIL_WINDOW = 64 * 1024

# Runners are children of this process until they end; they are reaped on the next
# call of any adapter, so none lingers as a zombie.
_children: set[int] = set()
_children_lock = threading.Lock()


class LocalAdapter:
    """Jobs as processes on this machine, supervised by detached runners."""

    kind: ClassVar[str] = "local"
    capabilities: ClassVar[Capabilities] = Capabilities(report_capacity=True,
                                                        collect_outputs=True)

    def __init__(self, name: str, settings: Mapping[str, Any]) -> None:
        unknown = sorted(set(settings) - _SETTINGS)
        if unknown:
            raise ConfigError(f"target {name!r}: unknown setting(s) {', '.join(unknown)}")
        self.name = name
        self._slots = _slots(name, settings.get("slots", os.cpu_count() or 1))
        self._kill_grace_s = _kill_grace(name, settings.get("kill_grace_s", 5.0))
        self._root = _workdir(name, settings.get("workdir"))
        self._base_env = _base_environment()
        try:
            self._root.mkdir(mode=0o700, parents=True, exist_ok=True)
            for part in (JOBS, QUEUE, SLOTS):
                (self._root / part).mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"target {name!r}: cannot use workdir {self._root}: "
                              f"{exc.strerror}") from None

    def submit(self, request: JobRequest, job_id: str) -> str:
        jobdir = self._job_dir(job_id)
        if jobdir is None:
            raise ManagerRejected(f"{job_id!r} is not a valid job id")
        if (request.resources.nodes or 1) > 1:
            raise ManagerRejected("the local target runs a job on one node (resources.nodes)")
        _reap()
        with self._unavailable():
            if not jobdir.is_dir():
                self._create(request, job_id, jobdir)
        return job_id

    def status_many(self, native_ids: Sequence[str]) -> Mapping[str, Observation]:
        _reap()
        answer: dict[str, Observation] = {}
        with self._unavailable():
            for native_id in native_ids:
                jobdir = self._job_dir(native_id)
                observation = None if jobdir is None else _observe(jobdir)
                if observation is not None:
                    answer[native_id] = observation
        return answer

    def cancel(self, native_id: str) -> None:
        """Record the request and SIGTERM the job's group; the runner SIGKILLs it later.

        A queued job then never starts; a finished or unknown job is left alone.
        """
        jobdir = self._job_dir(native_id)
        if jobdir is None or not jobdir.is_dir() or (jobdir / EXIT).exists():
            return
        with self._unavailable():
            with exclusive(jobdir / CONTROL):
                (jobdir / CANCEL).touch(0o600)
                started = read_json(jobdir / STARTED)
            # Only a live runner vouches that the recorded group is still this job's.
            if started is not None and lock_is_held(jobdir / LOCK):
                signal_group(started["pid"], signal.SIGTERM)

    def logs(self, native_id: str, tail: int | None = None) -> str:
        """The job's output (empty for an unknown job), its last ``tail`` lines if given."""
        jobdir = self._job_dir(native_id)
        if jobdir is None:
            return ""
        with self._unavailable():
            try:
                data = _read_output(jobdir / OUTPUT, tail)
            except FileNotFoundError:
                return ""
        return data.decode("utf-8", errors="replace")

    def read_output(self, native_id: str, job_id: str, request: JobRequest, path: str,
                    limit: int) -> bytes:
        """``path`` under the directory the job ran in, as :meth:`_stage` chose it."""
        if request.working_dir is not None:
            root = Path(request.working_dir)
        elif (jobdir := self._job_dir(job_id)) is not None:
            root = jobdir
        else:
            raise OutputMissing(f"{path}: {job_id!r} is not a valid job id")
        with self._unavailable():
            return read_confined(root, path, limit)

    def find_by_tag(self, job_id: str) -> str | None:
        jobdir = self._job_dir(job_id)
        return job_id if jobdir is not None and jobdir.is_dir() else None

    def capacity(self) -> Mapping[str, Any]:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // (1 << 20)
        return {"cpus": self._slots, "memory_mb": memory, "nodes": 1}

    def close(self) -> None:
        """Nothing to release: runners are detached and carry on without the adapter."""
        _reap()

    def _job_dir(self, native_id: str) -> Path | None:
        """The directory of a job id; None for a string that cannot be one (no ``../``)."""
        try:
            validate_job_id(native_id)
        except RequestError:
            return None
        return self._root / JOBS / native_id

    @contextlib.contextmanager
    def _unavailable(self) -> Iterator[None]:
        """Trouble with the state directory is this manager being unavailable."""
        try:
            yield
        except OSError as exc:
            raise ManagerUnavailable(f"local target {self.name!r}: {exc}") from None

    def _create(self, request: JobRequest, job_id: str, jobdir: Path) -> None:
        """Stage the job directory, rename it into place, queue the job, start its runner."""
        entry = self._root / QUEUE / f"{time.monotonic_ns():020d}-{job_id}"
        with contextlib.ExitStack() as cleanup:
            staging = Path(tempfile.mkdtemp(prefix=f".{job_id}.", dir=jobdir.parent))
            cleanup.callback(shutil.rmtree, staging, ignore_errors=True)
            lock = _hold_lock(staging / LOCK)
            cleanup.callback(os.close, lock)
            self._stage(staging, request, job_id, jobdir, entry.name)
            if not _claim(staging, jobdir):
                return
            try:
                entry.touch(0o600)
                pid = _spawn_runner(jobdir, lock)
            except OSError:
                entry.unlink(missing_ok=True)
                shutil.rmtree(jobdir, ignore_errors=True)
                raise
        (jobdir / RUNNER_PID).write_text(f"{pid}\n")

    def _stage(self, staging: Path, request: JobRequest, job_id: str, jobdir: Path,
               entry: str) -> None:
        if request.script is not None:
            script = staging / SCRIPT
            script.write_text(request.script, encoding="utf-8")
            script.chmod(0o700)
            path = str(jobdir / SCRIPT)
            argv = [path] if request.script.startswith("#!") else ["/bin/sh", path]
        else:
            assert request.command is not None
            argv = list(request.command)
        write_json(staging / SPEC, {
            "argv": argv,
            "env": {**self._base_env, **request.environment, "HPCBRIDGE_JOB_ID": job_id},
            "cwd": request.working_dir or str(jobdir),
            "time_limit_s": request.resources.time_limit_s,
            "kill_grace_s": self._kill_grace_s,
            "slots": self._slots,
            "queue_entry": entry,
        })
        (staging / OUTPUT).touch(0o600)


def _slots(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"target {name!r}: slots must be a positive integer")
    return value


def _kill_grace(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 3600:
        raise ConfigError(f"target {name!r}: kill_grace_s must be between 0 and 3600 seconds")
    return float(value)


def _workdir(name: str, value: Any) -> Path:
    if value is None:
        if Path(name).name != name:
            raise ConfigError(f"target {name!r}: the name cannot be a directory; set workdir")
        state = os.environ.get("XDG_STATE_HOME", "")
        if not os.path.isabs(state):
            state = os.path.expanduser("~/.local/state")
        return Path(state, "hpc-bridge", "local", name)
    if not isinstance(value, str) or not os.path.isabs(os.path.expanduser(value)):
        raise ConfigError(f"target {name!r}: workdir must be an absolute path")
    return Path(os.path.expanduser(value))


def _base_environment() -> dict[str, str]:
    """What every job starts from: enough to work, nothing of the bridge's own secrets."""
    try:
        entry = pwd.getpwuid(os.getuid())
        home, user = entry.pw_dir, entry.pw_name
    except KeyError:  # an arbitrary uid without a passwd entry, common in containers
        home, user = "/", str(os.getuid())
    return {"PATH": _SAFE_PATH, "HOME": home, "USER": user, "LOGNAME": user,
            "LANG": "C.UTF-8"}


def _hold_lock(path: Path) -> int:
    """Create and lock a job's lock file; the fd is never ``LOCK_FD`` itself.

    The runner receives the lock by a dup2 onto ``LOCK_FD``. Onto itself, that dup2 clears
    the close-on-exec flag only in C libraries that follow POSIX.1-2024; in older ones the
    lock would not reach the runner.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    if fd == LOCK_FD:
        moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, LOCK_FD + 1)
        os.close(fd)
        fd = moved
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _claim(staging: Path, jobdir: Path) -> bool:
    """Rename the staged directory into place; False if the job exists already.

    rename(2) refuses to replace a non-empty directory and a job directory is never
    empty, so of two concurrent submits of one job exactly one wins.
    """
    try:
        staging.rename(jobdir)
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
            return False
        raise
    return True


def _spawn_runner(jobdir: Path, lock: int) -> int:
    """Start the job's runner in a session of its own, holding ``lock`` as its fd 3."""
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(jobdir / RUNNER_LOG),
         os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600),
        (os.POSIX_SPAWN_DUP2, 1, 2),
        (os.POSIX_SPAWN_DUP2, lock, LOCK_FD),
    ]
    argv = [sys.executable, "-I", _local_runner.__file__, str(jobdir)]
    pid = os.posix_spawn(sys.executable, argv, {"PATH": _SAFE_PATH},
                         file_actions=actions, setsid=True)
    with _children_lock:
        _children.add(pid)
    return pid


def _reap() -> None:
    with _children_lock:
        for pid in list(_children):
            try:
                ended, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere
                ended = pid
            if ended:
                _children.discard(pid)


def _observe(jobdir: Path) -> Observation | None:
    try:
        names = set(os.listdir(jobdir))
    except (FileNotFoundError, NotADirectoryError):
        return None
    if EXIT not in names and lock_is_held(jobdir / LOCK):
        started = read_json(jobdir / STARTED) if STARTED in names else None
        if started is None:
            return Observation(State.QUEUED, "QUEUED")
        return Observation(State.RUNNING, "RUNNING", started_at=started["started_at"])
    # The runner writes the exit record before its lock goes: read it only now.
    record = read_json(jobdir / EXIT)
    if record is None:
        started = read_json(jobdir / STARTED)
        return Observation(State.UNKNOWN, "LOST",
                           started_at=None if started is None else started["started_at"])
    return _ended(record)


def _ended(record: Mapping[str, Any]) -> Observation:
    code = record["exit_code"]
    times = {"started_at": record["started_at"], "finished_at": record["finished_at"]}
    if record["outcome"] == "cancelled":
        return Observation(State.CANCELLED, "CANCELLED", code, Reason.CANCELLED, **times)
    if record["outcome"] == "timeout":
        return Observation(State.FAILED, "TIMEOUT", code, Reason.TIMEOUT, **times)
    if code == 0:
        return Observation(State.SUCCEEDED, "EXITED", 0, **times)
    return Observation(State.FAILED, "EXITED", code, Reason.EXIT_CODE, **times)


def _read_output(path: Path, tail: int | None) -> bytes:
    """The whole file, or its last ``tail`` lines read from the end (outputs can be huge)."""
    with open(path, "rb") as file:
        if tail is None:
            return file.read()
        size = file.seek(0, os.SEEK_END)
        window = _TAIL_WINDOW
        while True:
            start = max(0, size - window)
            file.seek(start)
            data = file.read(size - start)
            lines = _last_lines(data, tail)
            if lines is not None:
                return lines
            if start == 0:
                return data
            window *= 4


def _last_lines(data: bytes, count: int) -> bytes | None:
    """The last ``count`` lines of ``data``; None if ``data`` may not hold all of them."""
    if count <= 0:
        return b""
    cut = len(data) - 1 if data.endswith(b"\n") else len(data)
    for _ in range(count):
        cut = data.rfind(b"\n", 0, cut)
        if cut < 0:
            return None
    return data[cut + 1:]
