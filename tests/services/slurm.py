"""A real single-node Slurm cluster with slurmrestd, started for a test session.

Everything lives under one private directory: its own ``slurm.conf``, munge key and
socket, JWT key, state, spool, pid and log files, and free TCP ports on 127.0.0.1, so
it never clashes with a system-wide Slurm or with another test session. The daemons run
in the foreground as children of this process and are stopped by their pids only.

The directory is created under ``/tmp`` (not pytest's ``tmp_path``, whose root is
mode 0700 for root): the users ``munge``, ``slurm``, ``slurmrestd`` and the job user all
have to reach files in it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import httpx

from hpcbridge.dev import free_port
from tests.services._daemon import Daemon, require_root, spawn, stop_process, wait_until

__all__ = ["JOB_USER", "ClusterJob", "SlurmCluster", "hs256_token"]

JOB_USER = "hpcbridge-job"
_RESTD_USER = "slurmrestd"
_API_PLUGINS = "openapi/v0.0.38,openapi/v0.0.37,openapi/v0.0.36"
_BINARIES = {
    "munged": "munge",
    "slurmctld": "slurmctld",
    "slurmd": "slurmd",
    "slurmrestd": "slurmrestd",
    "scontrol": "slurm-client",
    "sinfo": "slurm-client",
    "squeue": "slurm-client",
    "scancel": "slurm-client",
    "sbatch": "slurm-client",
    "setpriv": "util-linux",
    "runuser": "util-linux",
    "useradd": "passwd",
}
_JWT_PLUGIN = Path("/usr/lib/x86_64-linux-gnu/slurm-wlm/auth_jwt.so")
_CPUS = 16


class ClusterJob(NamedTuple):
    """One job as ``squeue`` sees it."""

    job_id: str
    name: str
    state: str


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_token(key: bytes, user: str, lifespan: int) -> str:
    """A JWT as Slurm's auth/jwt expects it: HS256 with the claims exp, iat and sun."""
    now = int(time.time())
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = _b64url(json.dumps({"exp": now + lifespan, "iat": now, "sun": user}).encode())
    signature = hmac.new(key, f"{header}.{claims}".encode(), hashlib.sha256).digest()
    return f"{header}.{claims}.{_b64url(signature)}"


def _ensure_user(name: str, *, system: bool) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        args = ["useradd", "--no-create-home", "--user-group"]
        args += ["--system", "--shell", "/usr/sbin/nologin"] if system else ["--shell",
                                                                             "/bin/sh"]
        subprocess.run([*args, name], check=True, capture_output=True)
        return pwd.getpwnam(name)


class SlurmCluster(Daemon):
    """slurmctld, slurmd, munged and slurmrestd on 127.0.0.1, owned by this object."""

    name = "the cluster"
    dir_prefix = "hpcbridge-slurm-"
    partition = "debug"
    #: A partition that accepts jobs and never starts them: a job sent there stays queued.
    held_partition = "held"
    user = JOB_USER

    def __init__(self, parent: Path | None = None, *, startup_timeout: float = 30.0) -> None:
        """``parent`` (default: the system's temporary directory) must be reachable by
        every user: the cluster's own directory is created in it, mode 0755."""
        super().__init__(parent, startup_timeout)
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._users: dict[str, pwd.struct_passwd] = {}
        self._restd_port = 0
        self.host = socket.gethostname().split(".")[0]

    # --- paths and views -------------------------------------------------------------

    @property
    def conf_path(self) -> Path:
        return self.root / "etc" / "slurm.conf"

    @property
    def jwt_key_path(self) -> Path:
        return self.root / "etc" / "jwt_hs256.key"

    @property
    def workdir(self) -> Path:
        """Owned by the job user: working directory and output files of test jobs."""
        return self.root / "work"

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._restd_port}"

    @property
    def env(self) -> dict[str, str]:
        """The environment for Slurm's command line tools talking to this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf_path)}

    def token(self, lifespan: int = 3600, user: str | None = None) -> str:
        return hs256_token(self.jwt_key_path.read_bytes(), user or self.user, lifespan)

    # --- lifecycle -------------------------------------------------------------------

    def _prepare(self) -> None:
        require_root("the Slurm test cluster must be started as root: it creates users and "
                     "runs each daemon as its own user")
        _check_binaries()
        self._ensure_hostname()
        self._users = {name: _ensure_user(name, system=name != JOB_USER)
                       for name in ("slurm", "munge", _RESTD_USER, JOB_USER)}
        self._users["root"] = pwd.getpwuid(0)

    def _launch(self) -> None:
        self._layout(self._users)
        self._start_munged()
        self._start_slurmctld()
        self._start_slurmd()
        self.start_slurmrestd()

    def _halt(self) -> None:
        """Cancel every job, then stop the daemons this object started, by pid."""
        if "slurmctld" in self._procs and "slurmd" in self._procs:
            self._cancel_all()
        for name in ("slurmrestd", "slurmd", "slurmctld", "munged"):
            proc = self._procs.pop(name, None)
            if proc is not None:
                stop_process(proc)

    def stop_slurmrestd(self) -> None:
        proc = self._procs.pop("slurmrestd", None)
        if proc is not None:
            stop_process(proc)

    def start_slurmrestd(self) -> None:
        """Start slurmrestd (again), on the same port as before if it ran already."""
        if "slurmrestd" in self._procs:
            return
        self._restd_port = self._restd_port or free_port()
        env = {**self.env, "SLURM_JWT": "daemon"}
        self._spawn("slurmrestd", [
            "setpriv", f"--reuid={_RESTD_USER}", f"--regid={_RESTD_USER}", "--init-groups",
            "slurmrestd", "-f", str(self.conf_path), "-a", "rest_auth/jwt", "-s",
            _API_PLUGINS, f"127.0.0.1:{self._restd_port}",
        ], env)
        self._wait_for("slurmrestd", self._restd_answers)

    # --- helpers for tests -----------------------------------------------------------

    def jobs(self) -> list[ClusterJob]:
        """Every job slurmctld still knows, finished ones included."""
        out = self._run("squeue", "--noheader", "--states=all", "--format=%i|%j|%T")
        return [ClusterJob(*line.split("|", 2)) for line in out.splitlines() if line]

    def job_state(self, job_id: str) -> str | None:
        for job in self.jobs():
            if job.job_id == job_id:
                return job.state
        return None

    def scontrol(self, *args: str) -> str:
        """Run ``scontrol`` as root against this cluster; return its output."""
        return self._run("scontrol", *args)

    def submit_direct(self, script: str, *, name: str = "direct",
                      extra: Sequence[str] = ()) -> str:
        """Submit a batch script with ``sbatch`` as the job user; return the job id."""
        path = self.workdir / f"{name}-{secrets.token_hex(4)}.sh"
        path.write_text(script)
        args = ["runuser", "-u", self.user, "--", "sbatch", "--parsable", f"--job-name={name}",
                f"--chdir={self.workdir}", f"--output={self.workdir}/%j.out", *extra, str(path)]
        result = subprocess.run(args, env=self.env, capture_output=True, text=True,
                                check=True, timeout=30)
        return result.stdout.strip().split(";")[0]

    # --- internals -------------------------------------------------------------------

    def _run(self, *args: str) -> str:
        result = subprocess.run(list(args), env=self.env, capture_output=True, text=True,
                                timeout=30)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def _ensure_hostname(self) -> None:
        try:
            socket.gethostbyname(self.host)
        except OSError:
            with open("/etc/hosts", "a") as hosts:
                hosts.write(f"\n127.0.0.1\t{self.host}\n")

    def _layout(self, users: Mapping[str, pwd.struct_passwd]) -> None:
        root = self.root
        root.chmod(0o755)
        owned = {
            "etc": "root", "log": "slurm", "run": "slurm", "state": "slurm",
            "spool": "root", "munge": "munge", "work": JOB_USER,
        }
        for name, owner in owned.items():
            path = root / name
            path.mkdir(mode=0o755)
            os.chown(path, users[owner].pw_uid, users[owner].pw_gid)
        _write_secret(root / "munge" / "munge.key", secrets.token_bytes(1024),
                      users["munge"], 0o400)
        _write_secret(self.jwt_key_path, secrets.token_bytes(32), users["slurm"], 0o600)
        self.conf_path.write_text(self._slurm_conf())
        self.conf_path.chmod(0o644)

    def _slurm_conf(self) -> str:
        root = self.root
        memory_mb = max(1024, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
                        // 2**20 - 512)
        return "\n".join([
            "ClusterName=hpcbridge",
            f"SlurmctldHost={self.host}(127.0.0.1)",
            f"SlurmctldPort={free_port()}",
            f"SlurmdPort={free_port()}",
            "SlurmUser=slurm",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={root}/munge/munge.socket",
            "AuthAltTypes=auth/jwt",
            f"AuthAltParameters=jwt_key={self.jwt_key_path}",
            f"StateSaveLocation={root}/state",
            f"SlurmdSpoolDir={root}/spool",
            f"SlurmctldPidFile={root}/run/slurmctld.pid",
            f"SlurmdPidFile={root}/run/slurmd.pid",
            f"SlurmctldLogFile={root}/log/slurmctld.log",
            f"SlurmdLogFile={root}/log/slurmd.log",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "SchedulerParameters=batch_sched_delay=0,sched_min_interval=0",
            "SlurmdParameters=config_overrides",
            "MailProg=/bin/true",
            "MpiDefault=none",
            # Known to the controller, present on no node: a GPU request is refused cleanly.
            "GresTypes=gpu",
            "MinJobAge=300",
            "ReturnToService=2",
            f"NodeName={self.host} CPUs={_CPUS} RealMemory={memory_mb} NodeAddr=127.0.0.1"
            " State=UNKNOWN",
            f"PartitionName={self.partition} Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
            f"PartitionName={self.held_partition} Nodes=ALL MaxTime=INFINITE State=DOWN",
            "",
        ])

    def _output(self, name: str) -> Path:
        """Where a daemon's stdout and stderr go; in the foreground that is its whole log."""
        return self.log_dir / f"{name}.out"

    def _spawn(self, name: str, args: list[str], env: Mapping[str, str]) -> None:
        self._procs[name] = spawn(args, self._output(name), env)

    def _wait_for(self, name: str, ready: Callable[[], bool]) -> None:
        """Until ``ready`` holds; fail if the daemon exits first."""
        wait_until(ready, self._timeout, name, self._output(name), self._procs[name])

    def _start_munged(self) -> None:
        munge = self.root / "munge"
        self._spawn("munged", [
            "setpriv", "--reuid=munge", "--regid=munge", "--init-groups",
            "munged", "--foreground", f"--socket={munge}/munge.socket",
            f"--key-file={munge}/munge.key", f"--pid-file={munge}/munged.pid",
            f"--seed-file={munge}/munged.seed",
        ], self.env)
        self._wait_for("munged", (munge / "munge.socket").exists)

    def _start_slurmctld(self) -> None:
        self._spawn("slurmctld", ["slurmctld", "-D", "-f", str(self.conf_path)], self.env)

        def ready() -> bool:
            ping = subprocess.run(["scontrol", "ping"], env=self.env, capture_output=True,
                                  text=True, timeout=10)
            return ping.returncode == 0 and "is UP" in ping.stdout

        self._wait_for("slurmctld", ready)

    def _start_slurmd(self) -> None:
        self._spawn("slurmd", ["slurmd", "-D", "-f", str(self.conf_path)], self.env)

        def ready() -> bool:
            state = self._run("sinfo", "--noheader", f"--partition={self.partition}",
                              "--format=%T")
            return state.strip() == "idle"

        self._wait_for("slurmd", ready)

    def _restd_answers(self) -> bool:
        headers = {"X-SLURM-USER-NAME": self.user, "X-SLURM-USER-TOKEN": self.token(60)}
        try:
            answer = httpx.get(f"{self.url}/openapi/v3", headers=headers, timeout=2)
        except httpx.TransportError:
            return False
        return answer.status_code == 200

    def _cancel_all(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            ids = [job.job_id for job in self.jobs()
                   if job.state not in _FINISHED]
            if ids:
                self._run("scancel", *ids)

            def settled() -> bool:
                return all(job.state in _FINISHED for job in self.jobs())

            wait_until(settled, 60, "job cancellation before shutdown")


_FINISHED = frozenset({
    "COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED",
    "BOOT_FAIL", "DEADLINE", "OUT_OF_MEMORY",
})


def _check_binaries() -> None:
    missing = sorted({pkg for binary, pkg in _BINARIES.items() if shutil.which(binary) is None}
                     | ({"slurm-wlm-jwt-plugin"} if not _JWT_PLUGIN.exists() else set()))
    if missing:
        raise RuntimeError(
            "the Slurm test cluster needs Debian packages that are missing; install them "
            f"with: apt-get install -y --no-install-recommends {' '.join(missing)}")


def _write_secret(path: Path, data: bytes, owner: pwd.struct_passwd, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chown(path, owner.pw_uid, owner.pw_gid)
    path.chmod(mode)
