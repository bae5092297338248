"""IbmQuantumRuntimeEmulator: an EMULATOR of the IBM Quantum Runtime REST API (``/api/v1``).

No IBM Quantum service is reachable from this workplace, so tests of the ``quantum``
adapter talk to this: a real HTTP server on 127.0.0.1 speaking the wire protocol the
Qiskit Runtime REST API documentation describes (quantum.cloud.ibm.com/docs/api/
qiskit-runtime-rest, "Jobs"; the error code registry, quantum.cloud.ibm.com/docs/errors)
and the ``qiskit-ibm-runtime`` client relies on, with the facts of shared/REFERENCE.md.
Circuits really run: the sampler's PUBs are OpenQASM 3 programs, parsed with Qiskit's
OpenQASM 3 importer (qiskit-qasm3-import) and sampled with Qiskit Aer, so counts are
those of a simulator, not made up.

Reproduced:

* Headers on every request: ``Authorization: Bearer <token>`` (missing or wrong: 401),
  ``Service-CRN`` (missing: 400; another instance: 403), ``IBM-API-Version`` (missing
  or not a version of the API: 400). Errors are IBM Cloud error containers:
  ``{"errors": [{"code", "message", "more_info"}], "trace", "status_code"}``.
* ``POST /api/v1/jobs`` ``{program_id, backend, params, tags, cost}``: ``params`` of the
  V2 sampler (``{"pubs": [[circuit, parameter values, shots]...], "shots", "version":
  2}``); ``cost`` is the maximum execution time in seconds (at most 10800, larger values
  are capped); answers 200 ``{"id", "backend"}``; an unknown program 404, an unknown
  backend or malformed params 400.
* ``GET /api/v1/jobs/{id}``: ``{id, backend, state: {status, reason, reason_code},
  status, program: {id}, created, tags, cost, usage, estimated_running_time_seconds,
  user_id, params}`` (``?exclude_params=true`` drops ``params``); status ``Queued``,
  ``Running``, ``Completed``, ``Failed``, ``Cancelled``. Unknown id: 404.
* ``GET /api/v1/jobs`` with ``limit`` (default 200), ``offset``, ``tags`` (repeatable; a
  job must have all), ``pending``, ``backend``, ``program``, ``sort`` (``DESC`` by
  creation, or ``ASC``), ``exclude_params`` (default true): ``{"jobs", "count", "limit",
  "offset"}``.
* ``GET /api/v1/jobs/{id}/results``: for a completed sampler job ``{"results": [{"data":
  {<register>: {"samples": ["0x3", ...], "num_bits"}}, "metadata"}], "metadata"}``; for
  a failed job the error report as text; otherwise 404.
* ``POST /api/v1/jobs/{id}/cancel``: 204; 409 for a job that has ended; 404 unknown.
* ``GET /api/v1/jobs/{id}/logs``: the job's log as text.
* A QPU per backend runs one job at a time, in submit order. A circuit that does not
  parse (or cannot be sampled) fails the job: ``Failed``, reason "Error in the
  validation process of the job.", reason code 1002, the importer's message in the
  log and the error report. A job running longer than its ``cost`` is stopped:
  ``Cancelled`` with reason "Ran too long" and reason code 1305, as the service reports
  a job over its maximum execution time.

Test controls: jobs submitted while :attr:`~IbmQuantumRuntimeEmulator.hold_queued` is
set stay Queued, and while :attr:`~IbmQuantumRuntimeEmulator.hold_running` is set stay
Running once started (their QPU time passes, so ``cost`` is enforced), until
:meth:`~IbmQuantumRuntimeEmulator.release`; :meth:`~IbmQuantumRuntimeEmulator.forget`
deletes a job; :attr:`~IbmQuantumRuntimeEmulator.submissions` keeps every accepted
body; :meth:`~IbmQuantumRuntimeEmulator.calls` lists the requests served.

Not reproduced: IAM (the token is a fixed string, not an IAM access token), rate limits
(5 jobs a minute), sessions and batches, the estimator (refused with 400), PUBs with
parameter values (the job fails), options (error mitigation, twirling, dynamical
decoupling: accepted and ignored), transpilation to a real QPU's instruction set (any
circuit Aer can sample runs), noise, ``created_after``/``created_before``/``session_id``
filters, private jobs, metrics, tags updates, and DELETE (see ``forget``). Execution
time is wall-clock time in Running, not QPU time, and is checked against ``cost`` while
a job is held and after its sampling, which is not interrupted.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from tests.emulators._http import HttpEmulator, Refused

__all__ = ["IbmQuantumRuntimeEmulator"]

API_VERSIONS = ("2025-01-01", "2025-05-01", "2026-02-01")
_DEFAULT_SHOTS = 4096
_MAX_COST_S = 10800
_DEFAULT_LIMIT = 200
_POLL_S = 0.02
_XID_ALPHABET = "0123456789abcdefghijklmnopqrstuv"
_VALIDATION = (1002, "Error in the validation process of the job.")
_RAN_TOO_LONG = (1305, "Ran too long")
# Qiskit's OpenQASM 3 importer crashes the interpreter (a segmentation fault, with qiskit
# 2.6 and qiskit-qasm3-import 0.6) when a second thread uses it after the first has ended:
# every emulator of the process does its Qiskit work in this one thread.
_QISKIT = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qiskit")


class _Refused(Refused):
    """An error answer in an IBM Cloud error container."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(status, {
            "errors": [{"code": code, "message": message,
                        "more_info": "https://quantum.cloud.ibm.com/docs/errors"}],
            "trace": secrets.token_hex(16), "status_code": status})


class _CircuitError(Exception):
    """The job's input cannot be run; the message goes to the log and the error report."""


@dataclasses.dataclass
class _Job:
    id: str
    backend: str
    program: str
    params: dict[str, Any]
    tags: list[str]
    cost: int | None
    created: float
    held_queued: bool
    held_running: bool
    status: str = "Queued"
    reason: str = ""
    reason_code: int | None = None
    running_at: float | None = None
    ended_at: float | None = None
    cancel_requested: bool = False
    results: dict[str, Any] | None = None
    error_report: str = ""
    log: list[str] = dataclasses.field(default_factory=list)

    def note(self, level: str, message: str) -> None:
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        self.log.append(f"{stamp} {level}: {message}")

    def describe(self, with_params: bool) -> dict[str, Any]:
        state: dict[str, Any] = {"status": self.status, "reason": self.reason}
        if self.reason_code is not None:
            state["reason_code"] = self.reason_code
        seconds = 0.0
        if self.running_at is not None:
            seconds = (self.ended_at or time.time()) - self.running_at
        record = {"id": self.id, "backend": self.backend, "state": state,
                  "status": self.status, "program": {"id": self.program},
                  "created": _iso(self.created), "tags": list(self.tags),
                  "usage": {"quantum_seconds": round(seconds, 3), "seconds": round(seconds, 3)},
                  "estimated_running_time_seconds": 1.0, "user_id": "emulated-user"}
        if self.cost is not None:
            record["cost"] = self.cost
        if with_params:
            record["params"] = self.params
        return record


class IbmQuantumRuntimeEmulator(HttpEmulator):
    """The Qiskit Runtime REST API on 127.0.0.1, sampling circuits with Aer (see the module)."""

    thread_name = "ibm-quantum-emulator"
    url_path = "/api"

    def __init__(self, *, token: str | None = None, service_crn: str | None = None,
                 backends: tuple[str, ...] = ("ibm_emulated",)) -> None:
        super().__init__()
        self.token = token or secrets.token_urlsafe(32)
        self.service_crn = service_crn or (
            "crn:v1:bluemix:public:quantum-computing:us-east:a/"
            f"{secrets.token_hex(16)}:{secrets.token_hex(16)}::")
        self.backends = backends
        self.hold_queued = False
        self.hold_running = False
        self.submissions: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        self._jobs: dict[str, _Job] = {}
        self._stopping = False
        self._workers: list[threading.Thread] = []

    # --- life --------------------------------------------------------------------------

    def start(self) -> IbmQuantumRuntimeEmulator:
        self._serve()
        self._workers = [threading.Thread(target=self._qpu, args=(backend,), daemon=True,
                                          name=f"qpu-{backend}") for backend in self.backends]
        for worker in self._workers:
            worker.start()
        return self

    def stop(self) -> None:
        self._shut_down()
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        for worker in self._workers:
            worker.join()

    # --- test controls -----------------------------------------------------------------

    def release(self) -> None:
        """Let held jobs go on: queued ones may start, running ones finish."""
        with self._changed:
            for job in self._jobs.values():
                job.held_queued = job.held_running = False
            self._changed.notify_all()

    def forget(self, job_id: str) -> None:
        """Delete a job, as ``DELETE /jobs/{id}`` does."""
        with self._changed:
            del self._jobs[job_id]
            self._changed.notify_all()

    def status(self, job_id: str) -> str:
        with self._changed:
            return self._jobs[job_id].status

    # --- routes ------------------------------------------------------------------------

    def handle(self, method: str, path: str, query: Mapping[str, list[str]],
               headers: Mapping[str, str], body: bytes) -> tuple[int, Any]:
        """(status, JSON body or text) of one request; :class:`_Refused` for errors."""
        parts = path.strip("/").split("/")
        if parts[:2] != ["api", "v1"] or parts[2:3] != ["jobs"] or len(parts) > 5:
            raise _Refused(404, "not_found", "Not Found")
        self._check_headers(headers)
        route = parts[3:]
        if not route:
            if method == "POST":
                return 200, self._submit(body)
            _expect(method, "GET")
            return 200, self._list(query)
        with self._changed:
            job = self._jobs.get(route[0])
            if job is None:
                raise _Refused(404, "not_found", f"Job {route[0]} not found")
            if len(route) == 1:
                _expect(method, "GET")
                return 200, job.describe(not _flag(query, "exclude_params", False))
            if route[1] == "cancel":
                _expect(method, "POST")
                return 204, self._cancel(job)
            if route[1] == "results":
                _expect(method, "GET")
                return _results(job)
            if route[1] == "logs":
                _expect(method, "GET")
                return 200, "".join(f"{line}\n" for line in job.log)
        raise _Refused(404, "not_found", "Not Found")

    def _check_headers(self, headers: Mapping[str, str]) -> None:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(),
                                                                    self.token.encode()):
            raise _Refused(401, "unauthorized", "Unauthorized: the token is missing, invalid "
                                                "or expired")
        crn = headers.get("service-crn")
        if not crn:
            raise _Refused(400, "bad_request", "The Service-CRN header is required")
        if crn != self.service_crn:
            raise _Refused(403, "forbidden", "You are not authorized to use this instance")
        version = headers.get("ibm-api-version")
        if version not in API_VERSIONS:
            raise _Refused(400, "bad_request",
                           f"IBM-API-Version must be one of {', '.join(API_VERSIONS)}")

    def _submit(self, raw: bytes) -> dict[str, str]:
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise _Refused(400, "bad_request", "The body must be a JSON object")
        program = body.get("program_id")
        if program not in ("sampler", "estimator"):
            raise _Refused(404, "not_found", f"Program not found: {program!r}")
        if program == "estimator":
            raise _Refused(400, "bad_request", "The estimator is not emulated")
        backend = body.get("backend") or self.backends[0]
        if backend not in self.backends:
            raise _Refused(400, "1007", "Backend not found.")
        params = _sampler_params(body.get("params"))
        tags = body.get("tags") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise _Refused(400, "bad_request", "tags must be a list of strings")
        cost = body.get("cost")
        if cost is not None and (isinstance(cost, bool) or not isinstance(cost, int)
                                 or cost < 0):
            raise _Refused(400, "bad_request", "cost must be an integer of at least 0")
        with self._changed:
            job = _Job(id=_xid(), backend=backend, program=program, params=params,
                       tags=tags, cost=None if cost is None else min(cost, _MAX_COST_S),
                       created=time.time(), held_queued=self.hold_queued,
                       held_running=self.hold_running)
            job.note("INFO", f"job queued on {backend}")
            self._jobs[job.id] = job
            self.submissions.append(body)
            self._changed.notify_all()
        return {"id": job.id, "backend": backend}

    def _list(self, query: Mapping[str, list[str]]) -> dict[str, Any]:
        limit = _int(query, "limit", _DEFAULT_LIMIT, minimum=1)
        offset = _int(query, "offset", 0, minimum=0)
        wanted_tags = set(query.get("tags", []))
        pending = _flag(query, "pending", None)
        sort = query.get("sort", ["DESC"])[-1].upper()
        if sort not in ("ASC", "DESC"):
            raise _Refused(400, "bad_request", "sort must be ASC or DESC")
        with self._changed:
            jobs = [job for job in self._jobs.values()
                    if wanted_tags <= set(job.tags)
                    and (pending is None or (job.status in ("Queued", "Running")) == pending)
                    and job.backend in query.get("backend", [job.backend])
                    and job.program in query.get("program", [job.program])]
            jobs.sort(key=lambda job: job.created, reverse=sort == "DESC")
            with_params = not _flag(query, "exclude_params", True)
            page = [job.describe(with_params) for job in jobs[offset:offset + limit]]
        return {"jobs": page, "count": len(jobs), "limit": limit, "offset": offset}

    def _cancel(self, job: _Job) -> None:
        """Stop a job (lock held): a queued one at once, a running one at its next step."""
        if job.status not in ("Queued", "Running"):
            raise _Refused(409, "conflict", f"Job {job.id} cannot be cancelled: it is "
                                            f"{job.status}")
        job.cancel_requested = True
        if job.status == "Queued":
            self._end(job, "Cancelled", "")
        self._changed.notify_all()

    # --- the QPUs ----------------------------------------------------------------------

    def _qpu(self, backend: str) -> None:
        """Run the backend's jobs one at a time, in the order they were submitted."""
        while (job := self._next(backend)) is not None:
            if not self._hold_running(job):
                continue
            try:
                results, messages = _QISKIT.submit(_sample, job.params).result()
            except _CircuitError as exc:
                with self._changed:
                    if self._over(job) is None:
                        job.error_report = f"Error code {_VALIDATION[0]}; {_VALIDATION[1]}\n{exc}"
                        job.note("ERROR", str(exc))
                        self._end(job, "Failed", _VALIDATION[1], _VALIDATION[0])
                continue
            with self._changed:
                if self._over(job) is None:
                    for message in messages:
                        job.note("INFO", message)
                    job.results = results
                    self._end(job, "Completed", "")

    def _next(self, backend: str) -> _Job | None:
        """The oldest queued job of ``backend`` that may start, marked Running."""
        with self._changed:
            while not self._stopping:
                ready = [job for job in self._jobs.values() if job.backend == backend
                         and job.status == "Queued" and not job.held_queued]
                if ready:
                    job = min(ready, key=lambda j: j.created)
                    job.status, job.running_at = "Running", time.time()
                    job.note("INFO", f"running {len(job.params['pubs'])} PUB(s) on {backend}")
                    return job
                self._changed.wait()
            return None

    def _hold_running(self, job: _Job) -> bool:
        """Wait while the job is held Running; False if it ended meanwhile."""
        with self._changed:
            while job.held_running and not self._stopping and self._over(job) is None:
                self._changed.wait(_POLL_S)
            return self._over(job) is None

    def _over(self, job: _Job) -> str | None:
        """End a running job that was cancelled or ran too long (lock held); its status."""
        if job.status != "Running":
            return job.status
        if job.cancel_requested or self._stopping or job.id not in self._jobs:
            job.note("INFO", "job cancelled")
            self._end(job, "Cancelled", "")
            return job.status
        assert job.running_at is not None
        if job.cost is not None and time.time() - job.running_at > job.cost:
            job.note("ERROR", f"job ran longer than its maximum execution time of {job.cost} s")
            self._end(job, "Cancelled", _RAN_TOO_LONG[1], _RAN_TOO_LONG[0])
            return job.status
        return None

    def _end(self, job: _Job, status: str, reason: str, code: int | None = None) -> None:
        job.status, job.reason, job.reason_code = status, reason, code
        job.ended_at = time.time()
        self._changed.notify_all()


def _results(job: _Job) -> tuple[int, Any]:
    if job.results is not None:
        return 200, job.results
    if job.status == "Failed":
        return 200, job.error_report
    raise _Refused(404, "not_found", f"Job {job.id} has no results: it is {job.status}")


def _sampler_params(params: Any) -> dict[str, Any]:
    """The sampler's params, checked as far as their shape goes (circuits parse later)."""
    if not isinstance(params, dict) or params.get("version") != 2:
        raise _Refused(400, "bad_request", "params must be V2 primitive inputs "
                                           "(version 2 with pubs)")
    pubs = params.get("pubs")
    if not isinstance(pubs, list) or not pubs:
        raise _Refused(400, "bad_request", "params.pubs must be a non-empty list")
    for index, pub in enumerate(pubs):
        if (not isinstance(pub, list) or not 1 <= len(pub) <= 3
                or not isinstance(pub[0], str)):
            raise _Refused(400, "bad_request", f"params.pubs[{index}] must be [circuit, "
                                               "parameter values, shots]")
        shots = pub[2] if len(pub) == 3 else None
        if shots is not None and (not isinstance(shots, int) or shots < 1):
            raise _Refused(400, "bad_request", f"params.pubs[{index}]: shots must be positive")
    shots = params.get("shots")
    if shots is not None and (isinstance(shots, bool) or not isinstance(shots, int)
                              or shots < 1):
        raise _Refused(400, "bad_request", "params.shots must be a positive integer")
    return params


def _sample(params: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Sample every PUB with Aer: the V2 result and log messages, or :class:`_CircuitError`."""
    from qiskit import qasm3
    from qiskit_aer.primitives import SamplerV2

    default_shots = params.get("shots") or _DEFAULT_SHOTS
    pubs = []
    for index, pub in enumerate(params["pubs"]):
        if len(pub) > 1 and pub[1] is not None:
            raise _CircuitError(f"pub {index}: parameter values are not emulated")
        try:
            circuit = qasm3.loads(pub[0])
        except Exception as exc:  # the importer raises several kinds of error
            raise _CircuitError(f"pub {index}: the OpenQASM 3 program does not parse: "
                                f"{exc}") from None
        if not circuit.clbits:
            raise _CircuitError(f"pub {index}: the circuit measures nothing")
        shots = pub[2] if len(pub) == 3 and pub[2] is not None else default_shots
        pubs.append((circuit, None, shots))
    try:
        outcome = SamplerV2().run(pubs).result()
    except Exception as exc:  # Aer refuses circuits it cannot simulate
        raise _CircuitError(f"the simulator cannot sample the circuits: {exc}") from None
    results = []
    for pub_result in outcome:
        data = {}
        for name in pub_result.data:
            bits = getattr(pub_result.data, name)
            data[name] = {"samples": [hex(int(s, 2)) for s in bits.get_bitstrings()],
                          "num_bits": bits.num_bits}
        results.append({"data": data, "metadata": {"circuit_metadata": {}}})
    messages = [f"pub {index}: {shots} shots" for index, (_, _, shots) in enumerate(pubs)]
    return {"results": results, "metadata": {"version": 2}}, [*messages, "job completed"]


def _expect(method: str, allowed: str) -> None:
    if method != allowed:
        raise _Refused(405, "method_not_allowed", "Method Not Allowed")


def _flag(query: Mapping[str, list[str]], key: str, default: bool | None) -> bool | None:
    values = query.get(key)
    if not values:
        return default
    if values[-1].lower() not in ("true", "false"):
        raise _Refused(400, "bad_request", f"{key} must be true or false")
    return values[-1].lower() == "true"


def _int(query: Mapping[str, list[str]], key: str, default: int, *, minimum: int) -> int:
    values = query.get(key)
    if not values:
        return default
    try:
        value = int(values[-1])
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise _Refused(400, "bad_request", f"{key} must be an integer of at least {minimum}")
    return value


def _xid() -> str:
    """A job id shaped like the service's: 20 characters of base32hex."""
    return "".join(secrets.choice(_XID_ALPHABET) for _ in range(20))


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
