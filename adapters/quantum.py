"""Quantum circuits through the IBM Quantum Runtime REST API (Qiskit Runtime primitives).

Settings of a ``kind: quantum`` target (unknown keys are an error):

``url``
    The API's base URL (default ``https://quantum.cloud.ibm.com/api``; for instances
    in eu-de ``https://eu-de.quantum.cloud.ibm.com/api``); paths are under ``/v1``.
``token_file`` or ``token_env`` (one required)
    The bearer token (an IBM Cloud IAM access token), read on every request: IAM tokens
    expire after an hour, so whatever refreshes the Secret keeps the target working.
``service_crn`` (required)
    The CRN of the Qiskit Runtime instance, sent as ``Service-CRN``.
``backend`` (required)
    The QPU (or simulator) the jobs run on when a request names no ``queue``.
``shots``
    Shots per circuit (default: the service's).
``api_version``
    The ``IBM-API-Version`` date the adapter speaks (default ``2025-05-01``).
``timeout_s``
    Timeout of each HTTP request (default 30).

A job is one OpenQASM 3 program in the request's ``script``, run by the ``sampler``
primitive as one PUB. A ``command`` is refused: a quantum service runs no programs of
ours (:attr:`Capabilities.runs_commands` is false). ``queue`` names the backend;
``resources.time_limit_s`` becomes the job's maximum execution time (``cost``, at most
10800 s; the service stops the job there and reports reason code 1305). Everything else
a request can ask for (``environment``, ``working_dir``, ``account``, other
resources) means nothing to the service and is refused, not dropped.

States: Queued is QUEUED, Running RUNNING, Completed SUCCEEDED (exit code 0), Failed
FAILED (reason ``exit_code``, exit code 1; ``native_state`` carries the service's
reason code, e.g. ``Failed (1002)``), Cancelled CANCELLED, and Cancelled with reason
code 1305 ("Ran too long") FAILED with reason ``timeout``.

Every job is tagged ``hpcbridge`` and ``hpcbridge:<job id>``. :meth:`status_many` lists
the jobs tagged ``hpcbridge``, newest first, 200 to a page, and reads further pages
only while some asked-for job is still missing (at most 20 pages): one request while the
jobs asked about are among the latest 200. :meth:`find_by_tag` lists by the job's own
tag. :meth:`logs` is the service's job log followed by the result: per PUB and
register, the shots and the counts of each bitstring.

Output files (``outputs``) are not collected: the service runs circuits, not files.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar
from urllib.parse import quote

import httpx

from adapters import _http, _settings, quantum_api
from adapters.base import (
    AdapterError,
    AuthenticationFailed,
    Capabilities,
    ConfigError,
    ManagerRejected,
    ManagerUnavailable,
    Observation,
)
from hpcbridge.credentials import CredentialError, redact
from hpcbridge.model import JobRequest

__all__ = ["IbmQuantumAdapter"]

_SETTINGS = frozenset({
    "kind", "url", "token_file", "token_env", "service_crn", "backend", "shots",
    "api_version", "timeout_s",
})
_DEFAULT_URL = "https://quantum.cloud.ibm.com/api"
_DEFAULT_API_VERSION = "2025-05-01"
_API_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_PAGE = 200
_MAX_PAGES = 20


class IbmQuantumAdapter:
    """One Qiskit Runtime instance on IBM Quantum."""

    kind: ClassVar[str] = "quantum"
    capabilities: ClassVar[Capabilities] = Capabilities(runs_commands=False)

    def __init__(self, name: str, settings: Mapping[str, Any], *,
                 transport: httpx.BaseTransport | None = None) -> None:
        """``transport`` replaces httpx's own, for tests that watch the traffic."""
        self.name = name
        credential = _settings.credential(name, settings, "token")
        _settings.check_known(name, settings, _SETTINGS)
        self._token = _settings.require_credential(name, credential, "token")
        self._url = _settings.string(name, settings, "url", _DEFAULT_URL)
        self._service_crn = _settings.string(name, settings, "service_crn")
        self._backend = _settings.string(name, settings, "backend")
        self._api_version = _settings.string(name, settings, "api_version", _DEFAULT_API_VERSION)
        if not _API_VERSION.match(self._api_version):
            raise ConfigError(f"target {name!r}: api_version must be a date like "
                              f"{_DEFAULT_API_VERSION}")
        shots = settings.get("shots")
        if shots is not None and (isinstance(shots, bool) or not isinstance(shots, int)
                                  or shots < 1):
            raise ConfigError(f"target {name!r}: shots must be a positive integer")
        self._shots: int | None = shots
        self._timeout = _settings.positive(name, settings, "timeout_s", 30)
        self._client = httpx.Client(base_url=self._url, timeout=self._timeout,
                                    transport=transport)
        self._submitted = _settings.Submissions()

    # --- the protocol ------------------------------------------------------------------

    def submit(self, request: JobRequest, job_id: str) -> str:
        if (known := self._submitted.get(job_id)) is not None:
            return known
        self._refuse_what_does_not_apply(request)
        assert request.script is not None
        body = quantum_api.submission(request.script, backend=request.queue or self._backend,
                                      job_id=job_id, shots=self._shots,
                                      time_limit_s=request.resources.time_limit_s)
        what = f"submit job {job_id}"
        response = self._request("POST", "v1/jobs", what, body=body)
        answer = _http.json_body(response)
        native = answer.get("id") if isinstance(answer, Mapping) else None
        if response.status_code not in (200, 201) or not isinstance(native, str) or not native:
            raise self._failure(response, what, about_request=True)
        self._submitted.remember(job_id, native)
        return native

    def status_many(self, native_ids: Sequence[str]) -> Mapping[str, Observation]:
        wanted = set(native_ids)
        found: dict[str, Observation] = {}
        offset = 0
        for _ in range(_MAX_PAGES if wanted else 0):
            jobs, count = self._list({"tags": quantum_api.BRIDGE_TAG, "limit": str(_PAGE),
                                      "offset": str(offset)})
            found.update((job["id"], quantum_api.observe(job)) for job in jobs
                         if job["id"] in wanted)
            offset += len(jobs)
            if len(found) == len(wanted) or len(jobs) < _PAGE \
                    or (count is not None and offset >= count):
                break
        return found

    def cancel(self, native_id: str) -> None:
        what = f"cancel job {native_id}"
        response = self._request("POST", f"v1/jobs/{quote(native_id, safe='')}/cancel", what)
        # 404: no such job; 409: the job has ended already. Either way nothing runs.
        if response.status_code not in (200, 202, 204, 404, 409):
            raise self._failure(response, what)

    def logs(self, native_id: str, tail: int | None = None) -> str:
        """The service's log of the job, then a summary of its result (counts per PUB)."""
        job = quote(native_id, safe="")
        lines: list[str] = []
        what = f"read the log of job {native_id}"
        response = self._request("GET", f"v1/jobs/{job}/logs", what)
        if response.status_code == 200:
            lines.extend(_lines(response.text))
        elif response.status_code != 404:
            raise self._failure(response, what)
        what = f"read the result of job {native_id}"
        response = self._request("GET", f"v1/jobs/{job}/results", what)
        if response.status_code == 200:
            body = _http.json_body(response)
            if isinstance(body, Mapping) and "results" in body:
                lines.extend(quantum_api.results_summary(body))
            else:
                lines.extend(_lines(response.text))  # a failed job's error report
        elif response.status_code not in (404, 409):
            raise self._failure(response, what)
        if tail is not None:
            lines = lines[-tail:] if tail > 0 else []
        return "".join(f"{line}\n" for line in lines)

    def find_by_tag(self, job_id: str) -> str | None:
        jobs, _ = self._list({"tags": quantum_api.job_tag(job_id), "limit": "1",
                              "sort": "ASC"})
        return str(jobs[0]["id"]) if jobs else None

    def capacity(self) -> Mapping[str, Any]:
        return {}

    def close(self) -> None:
        self._client.close()

    # --- HTTP --------------------------------------------------------------------------

    def _refuse_what_does_not_apply(self, request: JobRequest) -> None:
        if request.command is not None:
            raise ManagerRejected(
                f"target {self.name!r}: command: a quantum target runs circuits, not "
                "commands; send the OpenQASM 3 program as 'script'")
        resources = request.resources
        ignored = {"environment": request.environment or None,
                   "working_dir": request.working_dir, "account": request.account,
                   "resources.nodes": resources.nodes, "resources.tasks": resources.tasks,
                   "resources.cpus_per_task": resources.cpus_per_task,
                   "resources.memory_mb": resources.memory_mb, "resources.gpus": resources.gpus}
        for field, value in ignored.items():
            if value is not None:
                raise ManagerRejected(f"target {self.name!r}: {field}: means nothing to a "
                                      "quantum service")

    def _list(self, params: Mapping[str, str]) -> tuple[list[Mapping[str, Any]], int | None]:
        what = "list jobs"
        response = self._request("GET", "v1/jobs", what,
                                 params={**params, "exclude_params": "true"})
        if response.status_code == 200:
            try:
                return quantum_api.jobs_page(_http.json_body(response))
            except ValueError:
                pass
        raise self._failure(response, what)

    def _headers(self) -> dict[str, str]:
        try:
            token = self._token.value()
        except CredentialError as exc:
            raise ConfigError(f"target {self.name!r}: {exc}") from None
        return {"Authorization": f"Bearer {token}", "Service-CRN": self._service_crn,
                "IBM-API-Version": self._api_version, "Accept": "application/json"}

    def _request(self, method: str, path: str, what: str, *, body: Any = None,
                 params: Mapping[str, str] | None = None) -> httpx.Response:
        return _http.send(self._client, method, path, target=self.name,
                          manager="IBM Quantum", url=self._url, timeout=self._timeout,
                          what=what, json=body, params=params, headers=self._headers())

    def _failure(self, response: httpx.Response, what: str, *,
                 about_request: bool = False) -> AdapterError:
        """The exception for an answer that is not a success.

        A 400 to a submission is about the job; to anything else the adapter sends it is
        about the target's settings (``api_version``, ``service_crn``).
        """
        status = response.status_code
        detail = redact(quantum_api.error_text(_http.json_body(response)) or f"HTTP {status}")
        if status in (401, 403):
            return AuthenticationFailed(
                f"target {self.name!r}: IBM Quantum refused to {what}: {detail} (check the "
                f"token in {self._token.where} and that service_crn names an instance it "
                "may use)")
        if status in (408, 429) or status >= 500:
            return ManagerUnavailable(f"target {self.name!r}: IBM Quantum could not {what}: "
                                      f"{detail}")
        if about_request:
            return ManagerRejected(f"target {self.name!r}: IBM Quantum refused to {what}: "
                                   f"{detail}")
        return ConfigError(f"target {self.name!r}: IBM Quantum refused to {what}: {detail} "
                           f"(check api_version {self._api_version!r} and service_crn)")


def _lines(text: str) -> list[str]:
    """The lines of ``text``, split at ``\\n`` only (a log may hold other control characters)."""
    return text.removesuffix("\n").split("\n") if text else []

