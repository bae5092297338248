"""FluxRestfulEmulator: an EMULATOR of flux-restful-api, the REST server of a Flux instance.

No Flux instance runs in this workplace, so tests of the ``flux`` adapter talk to this: a
real HTTP server on 127.0.0.1 speaking the wire protocol of flux-restful-api, as its
documentation describes it (docs/getting_started/api.md and user-guide.md of
github.com/flux-framework/flux-restful-api) and its FastAPI routes implement it, with
the facts of shared/REFERENCE.md. Jobs run for real, as local processes: exit codes,
output, runtime limits and cancel are real.

Reproduced:

* Authentication: every ``/v1`` route but the token endpoint needs ``Authorization:
  Bearer <access token>``; without one the answer is 401 ``{"detail": "Not
  authenticated"}`` with ``WWW-Authenticate: Bearer``, with an invalid or expired one
  401 ``{"detail": "Could not validate credentials"}``. ``POST /v1/token`` takes an
  ``Authorization`` header carrying an HS256 JWT of ``{"user", "pass", "scope":
  "token"}`` signed with the shared secret (FLUX_SECRET_KEY) and answers
  ``{"access_token", "token_type": "Bearer"}``, or 400 with a ``detail`` (OAuth2
  ``invalid_grant``: not 401, which would send clients back to the handshake).
  Access tokens are JWTs signed with a key only the server knows, and expire.
* ``POST /v1/jobs/submit`` with a JSON body: ``command`` (a string the server splits
  with ``shlex.split``, or a list taken as argv), ``num_tasks``, ``cores_per_task``,
  ``gpus_per_task``, ``num_nodes``, ``exclusive``, ``option_flags`` (a dict or
  ``"k=v,k2=v2"``; keys may not contain ``-o``), ``envars``, ``workdir``, ``runtime``
  (seconds, 0 = unlimited). Falsy optional values are ignored, unknown keys too. A bad
  request is 400 ``{"Message": "Invalid submit request", "Errors": [...]}``; a missing
  command 400 ``{"Message": "A 'command' is minimally required."}``; success 200
  ``{"Message": "Job submit.", "id": <integer job id>}``.
* ``GET /v1/jobs`` (``{"jobs": [{"id"}...]}``), ``?details=true`` (an object keyed by job
  id of job records), ``&listing=true`` (a list of them), ``&limit=N``.
* ``GET /v1/jobs/{id}``: the record of flux-restful's ``get_job`` (job-list's
  attributes with ``state`` and ``result`` as names, ``returncode``, ``waitstatus``,
  ``runtime``, ``exception``); an unknown id answers 200 with ``null``, an id that is no
  integer 400.
* ``POST /v1/jobs/{id}/cancel``: 200 ``{"Message": "Job is requested to cancel.", "id"}``;
  400 ``{"Message": "Job cannot be cancelled: ..."}`` for an inactive or unknown job.
* ``GET /v1/jobs/{id}/output``: ``{"Output": [chunks]}``, one chunk per line as the job
  shell records them (stdout and stderr together), or ``{"Message": "The output does
  not exist yet, or the jobid is incorrect."}``.
* Flux's job life: a job passes DEPEND and PRIORITY at once, waits in SCHED, runs in
  RUN, passes CLEANUP at once and ends INACTIVE with the result COMPLETED, FAILED,
  CANCELED or TIMEOUT. ``num_tasks`` copies of the command run, each
  in a process group of its own, with ``FLUX_JOB_ID``, ``FLUX_TASK_RANK``,
  ``FLUX_JOB_SIZE``, ``FLUX_JOB_TMPDIR`` (removed when the job ends) and the
  ``envars`` over a small allowlist of the server's environment. A command that
  cannot start fails the job with an ``exec`` exception and return code 127 (126 when
  not executable). Over its ``runtime`` a job gets SIGALRM, then SIGKILL after
  ``kill_timeout_s``, and ends with result TIMEOUT; a cancelled job gets SIGTERM, then
  SIGKILL, and ends CANCELED. ``returncode`` is the largest task's exit code (128 + the
  signal for a task killed by one); ``waitstatus`` is its raw wait status.

Test controls: :attr:`~FluxRestfulEmulator.hold_new_jobs` keeps jobs submitted while it
is set in SCHED until :meth:`~FluxRestfulEmulator.release`;
:meth:`~FluxRestfulEmulator.forget` purges a job (``flux job purge``);
:meth:`~FluxRestfulEmulator.expire_tokens` makes every issued token expire;
:attr:`~FluxRestfulEmulator.submissions` keeps the body of every accepted submit;
:meth:`~FluxRestfulEmulator.calls` lists the requests served.

Not reproduced: the web interface and its Basic auth, ``/v1/login/access-token``,
multi-user mode, ``/v1/jobs/search``, ``/v1/jobs/{id}/output/stream``, ``/v1/nodes``,
``/v1/service/stop``, ``is_launcher`` (refused), job ids in F58 or other textual forms,
Flux's scheduler (jobs start at once, on this machine, whatever they ask for; GPUs and
exclusive nodes are not allocated), and more than ``nodes`` nodes (1 by default).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import hashlib
import hmac
import json
import math
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.emulators._http import HttpEmulator, Refused

__all__ = ["FluxRestfulEmulator"]

_POLL_S = 0.02
_ENV_ALLOWLIST = ("PATH", "HOME", "USER", "LOGNAME", "LANG")
_NO_OUTPUT = "The output does not exist yet, or the jobid is incorrect."
_INT_FIELDS = ("num_tasks", "cores_per_task", "gpus_per_task", "num_nodes")


@dataclasses.dataclass
class _Job:
    id: int
    argv: list[str]
    env: dict[str, str]
    cwd: str
    ntasks: int
    cores_per_task: int
    runtime: int
    t_submit: float
    state: str = "SCHED"
    t_run: float | None = None
    t_cleanup: float | None = None
    t_inactive: float | None = None
    result: str = ""
    waitstatus: int | None = None
    exception: dict[str, Any] = dataclasses.field(
        default_factory=lambda: {"occurred": False, "severity": "", "type": "", "note": ""})
    output: list[str] = dataclasses.field(default_factory=list)
    released: threading.Event = dataclasses.field(default_factory=threading.Event)
    cancel_requested: bool = False
    processes: list[subprocess.Popen[bytes]] = dataclasses.field(default_factory=list)

    @property
    def name(self) -> str:
        return os.path.basename(self.argv[0])


class FluxRestfulEmulator(HttpEmulator):
    """flux-restful-api on 127.0.0.1 with jobs run as local processes (see the module)."""

    thread_name = "flux-restful-emulator"

    def __init__(self, workdir: Path, *, user: str = "fluxuser", password: str | None = None,
                 secret_key: str | None = None, nodes: int = 1, has_gpus: bool = False,
                 kill_timeout_s: float = 2.0, token_lifetime_s: float = 3600.0) -> None:
        super().__init__()
        self.user = user
        self.password = password or secrets.token_urlsafe(16)
        self.secret_key = secret_key or secrets.token_urlsafe(32)
        self.hold_new_jobs = False
        self.submissions: list[dict[str, Any]] = []
        self._signing_key = secrets.token_bytes(32)
        self._workdir = workdir
        self._nodes = nodes
        self._has_gpus = has_gpus
        self._kill_timeout_s = kill_timeout_s
        self._token_lifetime_s = token_lifetime_s
        self._tokens_issued_before = 0.0
        self._lock = threading.Lock()
        self._jobs: dict[int, _Job] = {}
        self._supervisors: list[threading.Thread] = []
        self._epoch_ms = int(time.time() * 1000)
        self._sequence = 0

    # --- life --------------------------------------------------------------------------

    def start(self) -> FluxRestfulEmulator:
        self._workdir.mkdir(parents=True, exist_ok=True)
        self._serve()
        return self

    def stop(self) -> None:
        """Stop serving, kill every job still running and wait for their supervisors."""
        self._shut_down()
        with self._lock:
            for job in self._jobs.values():
                job.cancel_requested = True
                job.released.set()
                for process in job.processes:
                    _signal_group(process, signal.SIGKILL)
            supervisors = list(self._supervisors)
        for thread in supervisors:
            thread.join()

    # --- test controls -----------------------------------------------------------------

    def release(self) -> None:
        """Let every job held in SCHED start, in the order they were submitted."""
        with self._lock:
            held = sorted(j.id for j in self._jobs.values() if not j.released.is_set())
            for job_id in held:
                self._jobs[job_id].released.set()

    def forget(self, job_id: int) -> None:
        """Purge a job from the instance, as ``flux job purge`` does with inactive jobs."""
        with self._lock:
            job = self._jobs.pop(job_id)
            job.cancel_requested = True
            job.released.set()
            for process in job.processes:
                _signal_group(process, signal.SIGKILL)

    def expire_tokens(self) -> None:
        """Make every access token issued so far expire now."""
        self._tokens_issued_before = time.time()

    # --- routes ------------------------------------------------------------------------

    def handle(self, method: str, path: str, query: Mapping[str, list[str]],
               headers: Mapping[str, str], body: bytes) -> tuple[int, Any]:
        """(200, the JSON answer) of one request; :class:`Refused` for anything else."""
        parts = path.strip("/").split("/")
        if parts[:1] != ["v1"]:
            raise Refused(404, {"detail": "Not Found"})
        route = parts[1:]
        if route == ["token"]:
            _expect(method, "POST")
            return 200, self._token(headers.get("authorization", ""))
        if not route or route[0] != "jobs" or len(route) > 3:
            raise Refused(404, {"detail": "Not Found"})
        self._authenticate(headers.get("authorization", ""))
        if route == ["jobs"]:
            _expect(method, "GET")
            return 200, self._list(query)
        if route == ["jobs", "submit"] and method == "POST":
            return 200, self._submit(body)
        job_id = _job_id(route[1])
        if len(route) == 2:
            _expect(method, "GET")
            return 200, self._record(job_id)
        if route[2] == "cancel":
            _expect(method, "POST")
            return 200, self._cancel(job_id, route[1])
        if route[2] == "output":
            _expect(method, "GET")
            return 200, self._output(job_id)
        raise Refused(404, {"detail": "Not Found"})

    def _token(self, authorization: str) -> dict[str, str]:
        encoded = authorization.split(" ")[-1].strip()
        if not encoded:
            raise Refused(400, {"detail": "Missing Authorization header"})
        claims = _verify_hs256(encoded, self.secret_key.encode())
        if claims is None:
            raise Refused(400, {"detail": "Could not decode credentials"})
        for required in ("user", "pass", "scope"):
            if not claims.get(required):
                raise Refused(400, {"detail": f"Credentials are missing '{required}'"})
        if claims["scope"] != "token":
            raise Refused(400, {"detail": "Invalid scope"})
        if not (hmac.compare_digest(str(claims["user"]).encode(), self.user.encode())
                and hmac.compare_digest(str(claims["pass"]).encode(), self.password.encode())):
            raise Refused(400, {"detail": "Incorrect user or password"})
        now = time.time()
        token = _sign_hs256({"sub": self.user, "backend": "database", "iat": now,
                             "exp": now + self._token_lifetime_s}, self._signing_key)
        return {"access_token": token, "token_type": "Bearer"}

    def _authenticate(self, authorization: str) -> None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Refused(401, {"detail": "Not authenticated"}, {"WWW-Authenticate": "Bearer"})
        claims = _verify_hs256(token.strip(), self._signing_key)
        now = time.time()
        if (claims is None or claims.get("sub") != self.user
                or not isinstance(claims.get("exp"), float | int) or claims["exp"] <= now
                or claims.get("iat", 0) <= self._tokens_issued_before):
            raise Refused(401, {"detail": "Could not validate credentials"},
                           {"WWW-Authenticate": "Bearer"})

    def _list(self, query: Mapping[str, list[str]]) -> Any:
        with self._lock:
            jobs = sorted(self._jobs.values(), key=lambda j: j.id, reverse=True)
            if not _true(query, "details"):
                return {"jobs": [{"id": job.id} for job in jobs]}
            limit = _int_query(query, "limit")
            if limit is not None:
                jobs = jobs[:limit]
            records = {str(job.id): self._describe(job) for job in jobs}
        return list(records.values()) if _true(query, "listing") else records

    def _record(self, job_id: int) -> Any:
        with self._lock:
            job = self._jobs.get(job_id)
            return None if job is None else self._describe(job)

    def _output(self, job_id: int) -> Any:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or not job.output:
                return {"Message": _NO_OUTPUT}
            return {"Output": list(job.output)}

    def _cancel(self, job_id: int, raw_id: str) -> Any:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                raise Refused(400, {"Message": "Job cannot be cancelled: [Errno 2] unknown "
                                                "job id.", "id": raw_id})
            if job.state == "INACTIVE" or job.cancel_requested:
                raise Refused(400, {"Message": "Job cannot be cancelled: [Errno 22] job is "
                                                "inactive.", "id": raw_id})
            job.cancel_requested = True
            job.exception = {"occurred": True, "severity": 0, "type": "cancel",
                             "note": "Canceled by the REST API"}
            if job.state == "SCHED":
                self._end(job, "CANCELED", None)
                job.released.set()
            else:
                for process in job.processes:
                    _signal_group(process, signal.SIGTERM)
        return {"Message": "Job is requested to cancel.", "id": raw_id}

    def _submit(self, raw: bytes) -> Any:
        try:
            payload = json.loads(raw or b"null")
        except ValueError:
            payload = None
        if not isinstance(payload, dict) or not payload.get("command"):
            raise Refused(400, {"Message": "A 'command' is minimally required."})
        errors: list[str] = []
        values: dict[str, int] = {}
        for key in _INT_FIELDS:
            if payload.get(key):
                try:
                    values[key] = int(payload[key])
                except (TypeError, ValueError):
                    errors.append(f"Parameter {key} must be an integer")
        envars = payload.get("envars") or {}
        runtime = payload.get("runtime") or 0
        if values.get("num_nodes", 0) > self._nodes:
            errors.append(f"The server only has {self._nodes} nodes, you requested "
                          f"{values['num_nodes']}")
        errors.extend(_option_flag_errors(payload.get("option_flags")))
        if "gpus_per_task" in values and not self._has_gpus:
            errors.append("This server does not support gpus: gpus_per_task cannot be set.")
        if not isinstance(runtime, int) or isinstance(runtime, bool):
            errors.append(f"Runtime must be an integer number of seconds, found {runtime!r}")
        elif runtime < 0:
            errors.append(f"Runtime must be >= 0, found {runtime}")
        if not isinstance(envars, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in envars.items()):
            errors.append("Environment variables must be key/value pairs (dict)")
        if payload.get("is_launcher"):
            errors.append("is_launcher: launchers are not emulated")
        if errors:
            raise Refused(400, {"Message": "Invalid submit request", "Errors": errors})
        command = payload["command"]
        try:
            argv = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
        except (TypeError, ValueError) as exc:
            raise Refused(400, {"Message": "There was an issue submitting that job.",
                                 "Error": str(exc)}) from None
        if not argv:
            raise Refused(400, {"Message": "A 'command' is minimally required."})
        workdir = payload.get("workdir")
        with self._lock:
            job = _Job(id=self._next_id(), argv=argv, env=dict(envars),
                       cwd=workdir if isinstance(workdir, str) else str(self._workdir),
                       ntasks=values.get("num_tasks", 1),
                       cores_per_task=values.get("cores_per_task", 1),
                       runtime=runtime, t_submit=time.time())
            if not self.hold_new_jobs:
                job.released.set()
            self._jobs[job.id] = job
            self.submissions.append(payload)
            supervisor = threading.Thread(target=self._supervise, args=(job,),
                                          name=f"flux-job-{job.id}", daemon=True)
            self._supervisors.append(supervisor)
        supervisor.start()
        return {"Message": "Job submit.", "id": job.id}

    def _next_id(self) -> int:
        """A Flux-like id: milliseconds since the instance started, then a sequence number."""
        self._sequence += 1
        elapsed = int(time.time() * 1000) - self._epoch_ms
        return (elapsed << 24) | (self._sequence & 0xFFFFFF)

    def _describe(self, job: _Job) -> dict[str, Any]:
        """A job as flux-restful's ``get_job`` reports it."""
        record: dict[str, Any] = {
            "id": job.id, "userid": os.getuid(), "urgency": 16, "priority": 16,
            "t_submit": job.t_submit, "t_depend": job.t_submit, "state": job.state,
            "name": job.name, "cwd": job.cwd, "ntasks": job.ntasks,
            "ncores": job.ntasks * job.cores_per_task, "nnodes": 1,
            "duration": float(job.runtime) if job.runtime else "",
            "result": job.result,
            "returncode": "" if job.waitstatus is None else _returncode(job.waitstatus),
            "waitstatus": "" if job.waitstatus is None else job.waitstatus,
            "exception": dict(job.exception), "annotations": {},
        }
        for name in ("t_run", "t_cleanup", "t_inactive"):
            if getattr(job, name) is not None:
                record[name] = getattr(job, name)
        if job.t_run is not None:
            record.update(ranks="0", nodelist=socket.gethostname(),
                          expiration=job.t_run + job.runtime if job.runtime else 0.0)
            end = job.t_cleanup or time.time()
            record["runtime"] = end - job.t_run
        else:
            record["runtime"] = 0.0
        if job.state == "INACTIVE":
            record["success"] = job.result == "COMPLETED"
            record["exception_occurred"] = job.exception["occurred"]
            if job.exception["occurred"]:
                record.update(exception_type=job.exception["type"],
                              exception_severity=job.exception["severity"],
                              exception_note=job.exception["note"])
        return record

    # --- jobs --------------------------------------------------------------------------

    def _supervise(self, job: _Job) -> None:
        """Wait for the job's turn, run its tasks, stop them on cancel or at the time limit."""
        job.released.wait()
        tmpdir = Path(tempfile.mkdtemp(prefix=f"job-{job.id}-", dir=self._workdir))
        try:
            with self._lock:
                if job.cancel_requested or job.state != "SCHED":
                    return
                job.state, job.t_run = "RUN", time.time()
                failure = self._start_tasks(job, tmpdir)
                if failure is not None:
                    self._end(job, "FAILED", failure)
                    return
            readers = [threading.Thread(target=self._read, args=(job, p), daemon=True)
                       for p in job.processes]
            for reader in readers:
                reader.start()
            outcome = self._wait(job)
            for reader in readers:
                reader.join()
            codes = [_wait_status(p.returncode) for p in job.processes]
            with self._lock:
                waitstatus = max(codes)
                if outcome is None:
                    outcome = "COMPLETED" if waitstatus == 0 else "FAILED"
                self._end(job, outcome, waitstatus)
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)

    def _start_tasks(self, job: _Job, tmpdir: Path) -> int | None:
        """Start every task; on failure stop those started and return the wait status."""
        base = {k: os.environ[k] for k in _ENV_ALLOWLIST if k in os.environ}
        for rank in range(job.ntasks):
            env = {**base, **job.env, "FLUX_JOB_ID": str(job.id), "FLUX_TASK_RANK": str(rank),
                   "FLUX_JOB_SIZE": str(job.ntasks), "FLUX_JOB_NNODES": "1",
                   "FLUX_JOB_TMPDIR": str(tmpdir)}
            try:
                job.processes.append(subprocess.Popen(
                    job.argv, cwd=job.cwd, env=env, stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True))
            except OSError as exc:
                for process in job.processes:
                    _signal_group(process, signal.SIGKILL)
                    process.wait()
                job.processes.clear()
                code = 127 if isinstance(exc, FileNotFoundError) else 126
                job.exception = {"occurred": True, "severity": 0, "type": "exec",
                                 "note": f"task {rank}: start failed: {job.argv[0]}: "
                                         f"{exc.strerror}"}
                return code << 8
        return None

    def _read(self, job: _Job, process: subprocess.Popen[bytes]) -> None:
        """Record a task's output line by line, as the job shell does (line buffering)."""
        assert process.stdout is not None
        pending = b""
        with process.stdout:
            while chunk := process.stdout.read1(65536):
                lines = (pending + chunk).split(b"\n")
                pending = lines.pop()
                with self._lock:
                    job.output.extend(line.decode("utf-8", "replace") + "\n" for line in lines)
        if pending:
            with self._lock:
                job.output.append(pending.decode("utf-8", "replace"))

    def _wait(self, job: _Job) -> str | None:
        """Wait for every task; the outcome forced on the job (CANCELED, TIMEOUT) or None."""
        assert job.t_run is not None
        deadline = job.t_run + job.runtime if job.runtime else math.inf
        outcome: str | None = None
        kill_at = math.inf
        while any(p.poll() is None for p in job.processes):
            time.sleep(_POLL_S)
            now = time.time()
            with self._lock:
                if outcome is None and job.cancel_requested:
                    outcome, kill_at = "CANCELED", now + self._kill_timeout_s
                elif outcome is None and now >= deadline:
                    outcome, kill_at = "TIMEOUT", now + self._kill_timeout_s
                    job.exception = {"occurred": True, "severity": 0, "type": "timeout",
                                     "note": "resource allocation expired"}
                    for process in job.processes:
                        _signal_group(process, signal.SIGALRM)
                elif now >= kill_at:
                    for process in job.processes:
                        _signal_group(process, signal.SIGKILL)
                    kill_at = math.inf
        with self._lock:
            # The tasks may have died of the cancel's SIGTERM before the loop saw the request.
            return "CANCELED" if outcome is None and job.cancel_requested else outcome

    def _end(self, job: _Job, result: str, waitstatus: int | None) -> None:
        """Record the job's end (lock held): CLEANUP, then INACTIVE with ``result``."""
        now = time.time()
        job.state, job.t_cleanup = "CLEANUP", now
        job.result, job.waitstatus = result, waitstatus
        job.state, job.t_inactive = "INACTIVE", now


def _expect(method: str, allowed: str) -> None:
    if method != allowed:
        raise Refused(405, {"detail": "Method Not Allowed"})


def _job_id(text: str) -> int:
    if not text.isdigit():
        raise Refused(400, {"detail": f"{text!r} is not a valid job id"})
    return int(text)


def _true(query: Mapping[str, list[str]], key: str) -> bool:
    return query.get(key, [""])[-1].lower() in ("true", "1", "yes", "on")


def _int_query(query: Mapping[str, list[str]], key: str) -> int | None:
    values = query.get(key)
    if not values:
        return None
    try:
        return int(values[-1])
    except ValueError:
        raise Refused(422, {"detail": f"{key} must be an integer"}) from None


def _option_flag_errors(flags: Any) -> list[str]:
    if not flags:
        return []
    if isinstance(flags, str):
        flags = dict(f.split("=", 1) for f in flags.split(",") if "=" in f)
    if not isinstance(flags, dict):
        return [f"Please provide option args as a dictionary, type {type(flags)} is invalid."]
    return [f"Please provide keys without -o, {key} is invalid." for key in flags if "-o" in key]


def _returncode(waitstatus: int) -> int:
    return 128 + (waitstatus & 0x7F) if waitstatus & 0x7F else waitstatus >> 8


def _wait_status(returncode: int | None) -> int:
    """The raw wait status of a Popen return code (negative: killed by that signal)."""
    assert returncode is not None
    return -returncode if returncode < 0 else returncode << 8


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signum)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign_hs256(claims: Mapping[str, Any], key: bytes) -> str:
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = _b64url(json.dumps(dict(claims)).encode())
    signature = hmac.new(key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64url(signature)}"


def _verify_hs256(token: str, key: bytes) -> dict[str, Any] | None:
    """The claims of an HS256 JWT signed with ``key``; None if it is anything else."""
    try:
        header_text, payload_text, signature_text = token.split(".")
        header = json.loads(_b64url_decode(header_text))
        claims = json.loads(_b64url_decode(payload_text))
        signature = _b64url_decode(signature_text)
    except (ValueError, binascii.Error):
        return None
    expected = hmac.new(key, f"{header_text}.{payload_text}".encode(), hashlib.sha256).digest()
    if (not isinstance(header, dict) or header.get("alg") != "HS256"
            or not hmac.compare_digest(signature, expected) or not isinstance(claims, dict)):
        return None
    return claims
