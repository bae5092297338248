"""mbatchd and sbatchd of the LSF EMULATOR (:mod:`tests.emulators.lsf`): jobs and processes.

The batch system both ways in share: jobs with LSF's ids, states and termination
reasons, queues that can be inactive, slots, run and memory limits enforced on real
processes, spooled output, CLEAN_PERIOD, the job history. The behaviour and its sources
are described in :mod:`tests.emulators.lsf`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pwd
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path

__all__ = ["CLEAN_PERIOD_S", "JOB_TERMINATE_INTERVAL_S", "MAX_JOBID", "TERM_REASONS", "Batch",
           "Caller", "Job", "Refused", "Submission"]

CLEAN_PERIOD_S = 3600.0  # lsb.params default
JOB_TERMINATE_INTERVAL_S = 10.0  # lsb.params default
MAX_JOBID = 999_999  # lsb.params default

#: The termination reasons this emulator gives: TERM_* keyword -> (exitInfo as logged in
#: lsb.acct, the text bjobs shows with it).
TERM_REASONS: dict[str, tuple[int, str]] = {
    "TERM_RUNLIMIT": (5, "Job killed after reaching LSF run time limit"),
    "TERM_OWNER": (14, "Job killed by owner"),
    "TERM_ADMIN": (15, "Job killed by root or LSF administrator"),
    "TERM_MEMLIMIT": (16, "Job killed after reaching LSF memory usage limit"),
    "TERM_CWD_NOTEXIST": (25, "Current working directory is not accessible or does not "
                              "exist on the execution host"),
}
_ACTIVE = frozenset({"RUN", "USUSP", "SSUSP"})
_FINISHED = frozenset({"DONE", "EXIT"})
_SHOWN = frozenset({"WAIT", "PROV", "ZOMBI", "UNKWN"})
_TICK_S = 0.05
_MEMORY_CHECK_S = 0.5
# Runs the job as its user: change to its working directory, then become the job.
_LAUNCH = 'cd -- "$1" || exit 1; shift; exec "$@"'


class Refused(Exception):
    """LSF refused a request; the message is the one its command prints."""


@dataclasses.dataclass(frozen=True, slots=True)
class Caller:
    """The user a request comes from."""

    name: str
    uid: int
    gid: int

    @classmethod
    def of_uid(cls, uid: int) -> Caller:
        entry = pwd.getpwuid(uid)
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid)

    @classmethod
    def of_name(cls, name: str) -> Caller:
        entry = pwd.getpwnam(name)
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid)

    @property
    def admin(self) -> bool:
        return self.uid == 0


@dataclasses.dataclass(slots=True)
class Submission:
    """What bsub (or Application Center on its behalf) hands to mbatchd."""

    caller: Caller
    command: str  # the job's command line, or its script
    cwd: str
    env: dict[str, str]
    name: str | None = None
    queue: str | None = None
    explicit_cwd: bool = False
    output: str | None = None
    error: str | None = None
    overwrite_output: bool = False
    overwrite_error: bool = False
    run_limit_min: int | None = None
    memory_limit_kb: int | None = None
    slots: int = 1
    hold: bool = False
    project: str | None = None
    resource_requirements: tuple[str, ...] = ()
    gpu: str | None = None


@dataclasses.dataclass(slots=True)
class Job:
    """One job as mbatchd knows it."""

    id: int
    sub: Submission
    queue: str
    submit_time: float
    status: str = "PEND"
    shown_state: str | None = None
    start_time: float | None = None
    finish_time: float | None = None
    wait_status: int | None = None
    term_reason: str | None = None
    kill_reason: str | None = None
    kill_deadline: float | None = None
    process: subprocess.Popen[bytes] | None = None
    spool_out: Path | None = None
    spool_err: Path | None = None
    memory_checked: float = 0.0

    @property
    def name(self) -> str:
        return self.sub.name or self.sub.command.split("\n", 1)[0][:4094]

    @property
    def stat(self) -> str:
        return self.shown_state or self.status

    @property
    def finished(self) -> bool:
        return self.status in _FINISHED

    @property
    def exit_code(self) -> int | None:
        """The exit code as the commands show it: the status, or 128 + the signal."""
        if self.wait_status is None or self.status != "EXIT":
            return None
        if self.wait_status & 0x7F:
            return 128 + (self.wait_status & 0x7F)
        return self.wait_status >> 8


class Batch:
    """mbatchd and one sbatchd: the jobs, their queues, their processes."""

    def __init__(self, root: Path, *, queues: Mapping[str, bool], default_queue: str,
                 slots: int, clean_period_s: float, terminate_interval_s: float,
                 stdout_direct: bool) -> None:
        self.root = root
        self.spool = root / "spool"  # output spools: root's only, jobs get open fds
        self.spool.mkdir(mode=0o700)
        self.job_files = root / "jobfiles"  # each job's file, readable by its user only
        self.job_files.mkdir(mode=0o711)
        self.hostname = socket.gethostname().split(".")[0] or "localhost"
        self.queues = dict(queues)
        self.default_queue = default_queue
        self.slots = slots
        self.clean_period_s = clean_period_s
        self.terminate_interval_s = terminate_interval_s
        self.stdout_direct = stdout_direct
        self.jobs: dict[int, Job] = {}
        self.history: dict[int, Job] = {}
        self.cond = threading.Condition(threading.RLock())
        self._next_id = 1
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="lsf-mbatchd", daemon=True)
        self._thread.start()

    # --- requests ------------------------------------------------------------------------

    def submit(self, sub: Submission) -> Job:
        queue = sub.queue or self.default_queue
        if queue not in self.queues:
            raise Refused(f"{queue}: No such queue. Job not submitted.")
        with self.cond:
            if self._next_id > MAX_JOBID:
                raise Refused("Job ID limit reached. Job not submitted.")
            sub.output = _output_path(sub.output, self._next_id, sub.cwd)
            sub.error = _output_path(sub.error, self._next_id, sub.cwd)
            job = Job(self._next_id, sub, queue, time.time(),
                      status="PSUSP" if sub.hold else "PEND")
            self._next_id += 1
            self.jobs[job.id] = self.history[job.id] = job
            self.cond.notify_all()
            return job

    def pend_reason(self, job: Job) -> str:
        """Why a job pends, in LSF's words; empty for a job that does not."""
        if job.stat == "PSUSP":
            return "The job was suspended by the user while pending"
        if job.stat != "PEND":
            return ""
        if not self.queues.get(job.queue, False):
            return "The queue is inactivated by the administrator"
        return "New job is waiting for scheduling"

    def find(self, job_id: int) -> Job | None:
        with self.cond:
            return self.jobs.get(job_id)

    def kill(self, job_id: int, caller: Caller) -> str:
        """bkill: the message it prints for the job; Refused for one it cannot kill."""
        with self.cond:
            job = self.jobs.get(job_id)
            if job is None:
                raise Refused(f"Job <{job_id}>: No matching job found")
            if not caller.admin and job.sub.caller.uid != caller.uid:
                raise Refused(f"Job <{job_id}>: User permission denied")
            if job.finished:
                raise Refused(f"Job <{job_id}>: Job has already finished")
            reason = "TERM_ADMIN" if caller.admin and job.sub.caller.uid != caller.uid \
                else "TERM_OWNER"
            if job.process is None:
                self._end(job, None, reason)
            else:
                self._terminate(job, reason)
            return f"Job <{job_id}> is being terminated"

    def peek(self, job_id: int, caller: Caller) -> str:
        """bpeek: the output a running job has produced so far."""
        with self.cond:
            job = self.jobs.get(job_id)
            if job is None:
                raise Refused(f"Job <{job_id}> is not found")
            if not caller.admin and job.sub.caller.uid != caller.uid:
                raise Refused(f"Job <{job_id}>: User permission denied")
            if job.status in ("PEND", "PSUSP"):
                raise Refused(f"Job <{job_id}> : Not yet started.")
            if job.finished:
                raise Refused(f"Job <{job_id}> : Job has already finished.")
            spools = [job.spool_out, job.spool_err]
        text = "<< output from stdout >>\n"
        for spool in spools:
            if spool is not None and spool.exists():
                text += spool.read_bytes().decode(errors="replace")
        return text

    # --- test controls -------------------------------------------------------------------

    def set_queue_active(self, queue: str, active: bool) -> None:
        with self.cond:
            if queue not in self.queues:
                raise KeyError(queue)
            self.queues[queue] = active
            self.cond.notify_all()

    def switch(self, job_id: int, queue: str) -> None:
        with self.cond:
            job = self.jobs[job_id]
            if queue not in self.queues:
                raise KeyError(queue)
            if job.status not in ("PEND", "PSUSP"):
                raise ValueError(f"job {job_id} is {job.status}: only pending jobs switch here")
            job.queue = queue
            self.cond.notify_all()

    def suspend(self, job_id: int, *, by_user: bool) -> None:
        with self.cond:
            job = self.jobs[job_id]
            if job.status != "RUN" or job.process is None:
                raise ValueError(f"job {job_id} is {job.status}, not RUN")
            _signal_group(job.process.pid, signal.SIGSTOP)
            job.status = "USUSP" if by_user else "SSUSP"

    def resume(self, job_id: int) -> None:
        with self.cond:
            job = self.jobs[job_id]
            if job.status == "PSUSP":
                job.status = "PEND"
            elif job.status in ("USUSP", "SSUSP") and job.process is not None:
                _signal_group(job.process.pid, signal.SIGCONT)
                job.status = "RUN"
            self.cond.notify_all()

    def show_state(self, job_id: int, state: str | None) -> None:
        if state is not None and state not in _SHOWN:
            raise ValueError(f"{state} is not one of {sorted(_SHOWN)}")
        with self.cond:
            self.jobs[job_id].shown_state = state

    def forget(self, job_id: int) -> None:
        with self.cond:
            self.jobs.pop(job_id, None)
            self.history.pop(job_id, None)

    def stop(self) -> None:
        """Kill every job still alive and stop scheduling."""
        with self.cond:
            self._stopping = True
            for job in self.jobs.values():
                if job.process is not None and job.process.poll() is None:
                    _signal_group(job.process.pid, signal.SIGKILL)
            self.cond.notify_all()
        self._thread.join(timeout=10)
        for job in list(self.history.values()):
            if job.process is not None:
                try:
                    job.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass

    # --- the scheduler -------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self.cond:
                if self._stopping:
                    return
                self.cond.wait(_TICK_S)
                if self._stopping:
                    return
                now = time.time()
                self._enforce_limits(now)
                self._dispatch()
                self._clean(now)

    def _dispatch(self) -> None:
        used = sum(job.sub.slots for job in self.jobs.values() if job.status in _ACTIVE)
        for job in sorted(self.jobs.values(), key=lambda j: j.id):
            if job.status != "PEND" or not self.queues.get(job.queue, False):
                continue
            if used + job.sub.slots > self.slots:
                continue
            used += job.sub.slots
            self._start(job)

    def _enforce_limits(self, now: float) -> None:
        for job in self.jobs.values():
            if job.process is None or job.finished:
                continue
            if job.kill_deadline is not None and now >= job.kill_deadline:
                _signal_group(job.process.pid, signal.SIGKILL)
                job.kill_deadline = None
            if job.kill_reason is not None or job.start_time is None:
                continue
            limit = job.sub.run_limit_min
            if limit is not None and now - job.start_time >= limit * 60:
                self._terminate(job, "TERM_RUNLIMIT")
            elif (job.sub.memory_limit_kb is not None
                  and now - job.memory_checked >= _MEMORY_CHECK_S):
                job.memory_checked = now
                if _group_rss_kb(job.process.pid) > job.sub.memory_limit_kb:
                    self._terminate(job, "TERM_MEMLIMIT")

    def _clean(self, now: float) -> None:
        expired = [job.id for job in self.jobs.values() if job.finish_time is not None
                   and now - job.finish_time >= self.clean_period_s]
        for job_id in expired:
            del self.jobs[job_id]

    # --- processes -----------------------------------------------------------------------

    def _start(self, job: Job) -> None:
        sub = job.sub
        cwd = sub.cwd
        if not os.path.isdir(cwd):
            if sub.explicit_cwd:
                job.start_time = time.time()
                self._end(job, 1 << 8, "TERM_CWD_NOTEXIST")
                return
            cwd = "/tmp"  # LSF runs a job whose submission directory is gone in /tmp
        job.spool_out = self.spool / f"{job.id}.out"
        separate_error = sub.error is not None and sub.error != sub.output
        job.spool_err = self.spool / f"{job.id}.err" if separate_error else None
        outputs = [self._open_output(job, sub.output, sub.overwrite_output, job.spool_out)]
        if job.spool_err is not None:
            outputs.append(self._open_output(job, sub.error, sub.overwrite_error,
                                             job.spool_err))
        env = {**sub.env, "LSB_JOBID": str(job.id), "LSB_JOBNAME": job.name,
               "LSB_QUEUE": job.queue, "LS_SUBCWD": sub.cwd, "LSB_JOBINDEX": "0",
               "LSB_HOSTS": " ".join([self.hostname] * sub.slots),
               "LSB_MCPU_HOSTS": f"{self.hostname} {sub.slots}"}
        argv = ["/bin/sh", "-c", _LAUNCH, "sh", cwd, *self._job_argv(job)]
        job.start_time = time.time()
        try:
            job.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=outputs[0],
                stderr=outputs[1] if len(outputs) > 1 else subprocess.STDOUT,
                env=env, cwd="/", start_new_session=True, **_become(sub.caller))
        except OSError:  # the job could not be started on the host: it exits
            self._end(job, 127 << 8, None)
            return
        finally:
            for fd in outputs:
                os.close(fd)
        job.status = "RUN"
        threading.Thread(target=self._wait, args=(job,), name=f"lsf-job-{job.id}",
                         daemon=True).start()

    def _job_argv(self, job: Job) -> list[str]:
        """What sbatchd runs: the job file with the command line or the script in it."""
        job_file = self.job_files / f"{job.id}.job"
        job_file.write_text(job.sub.command if job.sub.command.endswith("\n")
                            else job.sub.command + "\n")
        job_file.chmod(0o600)
        if job.sub.caller.uid != os.getuid():
            os.chown(job_file, job.sub.caller.uid, job.sub.caller.gid)
        return ["/bin/sh", str(job_file)]

    def _open_output(self, job: Job, path: str | None, overwrite: bool, spool: Path) -> int:
        if self.stdout_direct and path is not None:
            with contextlib.suppress(OSError):  # else spooled, as LSF falls back to mail
                return _open_as(job.sub.caller, path, overwrite)
        return os.open(spool, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)

    def _wait(self, job: Job) -> None:
        assert job.process is not None
        code = job.process.wait()
        with self.cond:
            _signal_group(job.process.pid, signal.SIGKILL)  # what the job left behind
            status = -code if code < 0 else code << 8
            self._end(job, status, job.kill_reason)

    def _terminate(self, job: Job, reason: str) -> None:
        """LSF's job control for a kill: SIGINT and SIGTERM, SIGKILL after the interval."""
        assert job.process is not None
        job.kill_reason = job.kill_reason or reason
        if job.status in ("USUSP", "SSUSP"):
            _signal_group(job.process.pid, signal.SIGCONT)
        _signal_group(job.process.pid, signal.SIGINT)
        _signal_group(job.process.pid, signal.SIGTERM)
        job.kill_deadline = time.time() + self.terminate_interval_s

    def _end(self, job: Job, wait_status: int | None, reason: str | None) -> None:
        job.wait_status = wait_status
        job.term_reason = reason
        job.kill_deadline = None
        job.status = "DONE" if wait_status == 0 and reason is None else "EXIT"
        job.finish_time = time.time()
        if not self.stdout_direct:
            for spool, path, overwrite in ((job.spool_out, job.sub.output,
                                            job.sub.overwrite_output),
                                           (job.spool_err, job.sub.error,
                                            job.sub.overwrite_error)):
                if spool is not None and path is not None and spool.exists():
                    _copy_as(job.sub.caller, spool, path, overwrite)
        self.cond.notify_all()


# --- helpers -----------------------------------------------------------------------------

def _become(caller: Caller) -> dict[str, object]:
    """Popen arguments that run a child as ``caller`` (nothing if it is us already)."""
    if caller.uid == os.getuid():
        return {}
    groups = os.getgrouplist(caller.name, caller.gid)
    return {"user": caller.uid, "group": caller.gid, "extra_groups": groups}


def _open_as(caller: Caller, path: str, overwrite: bool) -> int:
    """Open an output file for a job; a new file belongs to the job's user, as with LSF."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_APPEND)
    existed = os.path.exists(path)
    fd = os.open(path, flags, 0o644)
    if not existed and caller.uid != os.getuid():
        os.fchown(fd, caller.uid, caller.gid)
    return fd


def _copy_as(caller: Caller, spool: Path, path: str, overwrite: bool) -> None:
    try:
        fd = _open_as(caller, path, overwrite)
    except OSError:
        return  # LSF mails the output when it cannot write the file; here it is dropped
    with os.fdopen(fd, "wb") as target, open(spool, "rb") as source:
        shutil.copyfileobj(source, target)


def _output_path(path: str | None, job_id: int, cwd: str) -> str | None:
    """An output file name with %J (job id) and %I (array index) replaced, made absolute."""
    if path is None:
        return None
    path = path.replace("%J", str(job_id)).replace("%I", "0")
    return path if os.path.isabs(path) else os.path.join(cwd, path)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_rss_kb(pgid: int) -> int:
    """The resident memory of every process in a process group, in KB."""
    total = 0
    page_kb = os.sysconf("SC_PAGE_SIZE") // 1024
    for entry in (name for name in os.listdir("/proc") if name.isdigit()):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 21 and int(fields[2]) == pgid:
            total += int(fields[21]) * page_kb
    return total


