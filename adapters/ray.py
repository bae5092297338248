"""Ray clusters through the Ray Jobs REST API of the head's dashboard.

Settings of a ``kind: ray`` target (unknown keys are an error):

``url`` (required)
    The dashboard's base URL, e.g. ``http://ray-head:8265``.
``token_file`` or ``token_env``
    A token sent as ``Authorization: Bearer`` on every request, read on every request so
    a rotated Secret is picked up: the cluster's token when Ray runs with token
    authentication (``RAY_AUTH_MODE=token``, Ray 2.52 and later), or whatever a proxy in
    front of the dashboard expects. Without one, requests carry no credential.
``runtime_env``
    The ``runtime_env`` of every job (a mapping passed to Ray as is: ``pip``,
    ``working_dir`` URIs, ``container``...). Its ``env_vars`` are merged with the
    request's ``environment``, which wins. Ray expands ``$VAR`` and ``${VAR}`` in
    ``env_vars`` (for the job's Ray tasks and actors); the job's command gets the
    request's values exactly.
``metadata``
    String metadata added to every job. A job's metadata also holds the request's
    ``labels``, ``job_name`` (the request's ``name``, else the job id) and
    ``hpcbridge.io/job-id``.
``python``
    The Python interpreter on the cluster's nodes that runs the launcher (default
    ``python``, as in Ray's own entrypoints; any Python 3.8 or later).
``kill_grace_s``
    Seconds between SIGTERM and SIGKILL when a job reaches its time limit (default 5).
``timeout_s``
    Timeout of each HTTP request (default 30).

A job's Ray ``submission_id`` is the bridge's job id, so :meth:`RayJobsAdapter.find_by_tag`
is one ``GET /api/jobs/{job_id}``, and Ray refuses a second job with the same id (with a
500): after any error, the adapter asks Ray whether the job exists before it reports a
failure. Ray keeps every job's record until it is deleted (``ray job delete``) or the
head restarts; a job it no longer knows is absent from
:meth:`RayJobsAdapter.status_many`, which lists all jobs in one request.

How requests map to Ray (see :mod:`adapters.ray_api` for the launcher that runs every
job): ``tasks`` times ``cpus_per_task`` CPUs, ``gpus`` and ``memory_mb`` are reserved for
the entrypoint (``entrypoint_num_cpus``, ``entrypoint_num_gpus``, ``entrypoint_memory``);
the Ray tasks a job starts reserve their own. ``time_limit_s`` is enforced on the node by
the launcher, from the moment the command starts. ``nodes`` above 1, ``queue`` and
``account`` are refused: Ray has nothing that honours them.

Ray cannot stop a job that waits for resources: it stays PENDING and is stopped the moment
it starts, before the launcher runs anything. So that the bridge sees such a cancel at
once, and from any process, the adapter also records it in Ray as a trivial job named
``<job id>.cancel`` (it runs ``true``); a PENDING job with such a record is CANCELLED.

Logs are Ray's log of the entrypoint without Ray's own lines; Ray reads it with universal
newlines, so a ``\\r`` in the output reads as ``\\n``.

Output files (``outputs``) are not collected: the Ray Jobs API has no file access.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar
from urllib.parse import quote

import httpx

from adapters import _http, _settings, ray_api
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

__all__ = ["RayJobsAdapter"]

_SETTINGS = frozenset({
    "kind", "url", "token_file", "token_env", "runtime_env", "metadata", "python",
    "kill_grace_s", "timeout_s",
})
_TERMINAL = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
# Right after a submit, Ray may not have registered the job's supervisor yet and answers a
# stop with {"stopped": false} for a job that is still PENDING; the stop is asked again.
_STOP_RETRY_S = 0.2
_STOP_PATIENCE_S = 10.0


class RayJobsAdapter:
    """One Ray cluster behind its dashboard's Jobs API."""

    kind: ClassVar[str] = "ray"
    capabilities: ClassVar[Capabilities] = Capabilities(report_capacity=True)

    def __init__(self, name: str, settings: Mapping[str, Any], *,
                 transport: httpx.BaseTransport | None = None) -> None:
        """``transport`` replaces httpx's own, for tests that watch the traffic."""
        self.name = name
        self._credential = _settings.credential(name, settings, "token")
        _settings.check_known(name, settings, _SETTINGS)
        url = settings.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigError(f"target {name!r} needs 'url', the dashboard's http(s) URL")
        self._url = url.rstrip("/")
        self._runtime_env = _runtime_env(name, settings.get("runtime_env", {}))
        self._metadata = _metadata(name, settings.get("metadata", {}))
        python = settings.get("python", "python")
        if not isinstance(python, str) or not python:
            raise ConfigError(f"target {name!r}: 'python' must name an interpreter")
        self._python = python
        self._kill_grace_s = _settings.positive(name, settings, "kill_grace_s", 5, finite=True)
        self._timeout = _settings.positive(name, settings, "timeout_s", 30, finite=True)
        self._client = httpx.Client(base_url=self._url, timeout=self._timeout,
                                    transport=transport)

    # --- the protocol ------------------------------------------------------------------

    def submit(self, request: JobRequest, job_id: str) -> str:
        body = ray_api.submission(request, job_id, python=self._python,
                                  runtime_env=self._runtime_env, metadata=self._metadata,
                                  kill_grace_s=self._kill_grace_s)
        self._create(body, f"submit job {job_id}")
        return job_id

    def status_many(self, native_ids: Sequence[str]) -> Mapping[str, Observation]:
        what = "list jobs"
        response = self._request("GET", "api/jobs/", what)
        if response.status_code != 200:
            raise self._failure(response, what)
        records, cancels = ray_api.index(_http.json_body(response))
        return {nid: ray_api.observe(records[nid], cancels.get(nid))
                for nid in native_ids if nid in records}

    def cancel(self, native_id: str) -> None:
        """Stop the job; a PENDING one also gets a cancel record (see the module docstring)."""
        patience = time.monotonic() + _STOP_PATIENCE_S
        while True:
            stopped = self._stop(native_id)
            job = self._job(native_id) if stopped is not None else None
            if job is None or job.get("status") in _TERMINAL:
                return
            if stopped:
                if job.get("status") == "PENDING":
                    self._create(ray_api.cancel_record_body(native_id),
                                 f"record the cancel of job {native_id}")
                return
            if time.monotonic() >= patience:
                raise ManagerUnavailable(
                    f"target {self.name!r}: Ray did not take the stop of job {native_id} "
                    f"within {_STOP_PATIENCE_S:g} s (its supervisor is not registered)")
            time.sleep(_STOP_RETRY_S)

    def logs(self, native_id: str, tail: int | None = None) -> str:
        """The job's output (empty for an unknown job), its last ``tail`` lines if given."""
        job = self._job(native_id)
        if job is None:
            return ""
        what = f"read the logs of job {native_id}"
        response = self._request("GET", f"api/jobs/{_quoted(native_id)}/logs", what)
        if response.status_code == 404:
            return ""
        body = _http.json_body(response)
        if response.status_code != 200 or not isinstance(body, Mapping):
            raise self._failure(response, what)
        text = ray_api.job_output(native_id, str(job.get("entrypoint") or ""),
                                  str(body.get("logs") or ""))
        return ray_api.tail(text, tail)

    def find_by_tag(self, job_id: str) -> str | None:
        return job_id if self._job(job_id) is not None else None

    def capacity(self) -> Mapping[str, Any]:
        what = "read the cluster's resources"
        response = self._request("GET", "api/cluster_status", what)
        if response.status_code != 200:
            raise self._failure(response, what)
        totals = ray_api.capacity(_http.json_body(response))
        if not totals:
            raise ManagerUnavailable(f"target {self.name!r}: Ray's cluster status at "
                                     f"{self._url} has no resource report")
        return totals

    def close(self) -> None:
        self._client.close()

    # --- Ray's jobs ----------------------------------------------------------------------

    def _create(self, body: Mapping[str, Any], what: str) -> None:
        """Submit ``body``; after any error, the job's existence in Ray decides.

        Ray answers a duplicate ``submission_id`` with a 500, and an answer can be lost
        after Ray took the job: in both cases the job exists and all is well.
        """
        job_id = str(body["submission_id"])
        failure: AdapterError
        try:
            response = self._request("POST", "api/jobs/", what, body=body)
        except ManagerUnavailable as exc:
            failure = exc
        else:
            if response.status_code == 200:
                return
            failure = self._failure(response, what)
        try:
            exists = self._job(job_id) is not None
        except AdapterError:
            exists = False
        if not exists:
            raise failure

    def _job(self, job_id: str) -> Mapping[str, Any] | None:
        """``GET /api/jobs/{id}``; None when Ray has no submitted job of that id.

        Ray also answers there for a driver's own Ray job id (``02000000``): only a record
        with this submission id counts.
        """
        what = f"look up job {job_id}"
        response = self._request("GET", f"api/jobs/{_quoted(job_id)}", what)
        if response.status_code == 404:
            return None
        body = _http.json_body(response)
        if response.status_code != 200 or not isinstance(body, Mapping):
            raise self._failure(response, what)
        return body if body.get("submission_id") == job_id else None

    def _stop(self, job_id: str) -> bool | None:
        """``POST /api/jobs/{id}/stop``: whether Ray signalled the job; None if unknown."""
        what = f"stop job {job_id}"
        response = self._request("POST", f"api/jobs/{_quoted(job_id)}/stop", what)
        if response.status_code == 404:
            return None
        body = _http.json_body(response)
        if response.status_code != 200 or not isinstance(body, Mapping):
            raise self._failure(response, what)
        return bool(body.get("stopped"))

    # --- HTTP --------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        if self._credential is None:
            return {}
        try:
            return {"Authorization": f"Bearer {self._credential.value()}"}
        except CredentialError as exc:
            raise ConfigError(f"target {self.name!r}: {exc}") from None

    def _request(self, method: str, path: str, what: str, *,
                 body: Any = None) -> httpx.Response:
        return _http.send(self._client, method, path, target=self.name, manager="Ray",
                          url=self._url, timeout=self._timeout, what=what, json=body,
                          headers=self._headers())

    def _failure(self, response: httpx.Response, what: str) -> AdapterError:
        """The exception for an answer that is not a success."""
        status = response.status_code
        if status in (401, 403):
            if self._credential is None:
                return AuthenticationFailed(
                    f"target {self.name!r}: Ray at {self._url} wants a token (HTTP {status});"
                    " set 'token_file' or 'token_env'")
            return AuthenticationFailed(
                f"target {self.name!r}: Ray at {self._url} refused the token "
                f"(HTTP {status}); check {self._credential.where}")
        detail = redact(ray_api.error_detail(response.text)) or f"HTTP {status}"
        if 400 <= status < 500 and status not in (408, 429):
            return ManagerRejected(f"target {self.name!r}: Ray refused to {what}: {detail}")
        return ManagerUnavailable(
            f"target {self.name!r}: Ray at {self._url} could not {what} (HTTP {status}): "
            f"{detail}")


def _runtime_env(name: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ConfigError(f"target {name!r}: 'runtime_env' must be a mapping")
    env_vars = value.get("env_vars") or {}
    if not isinstance(env_vars, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in env_vars.items()):
        raise ConfigError(f"target {name!r}: runtime_env 'env_vars' must map names to strings")
    if reserved := sorted(ray_api.RESERVED_ENV & set(env_vars)):
        raise ConfigError(f"target {name!r}: runtime_env sets {reserved[0]}, which the "
                          "bridge reserves")
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        raise ConfigError(f"target {name!r}: 'runtime_env' must be plain data") from None
    return dict(value)


def _metadata(name: str, value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ConfigError(f"target {name!r}: 'metadata' must map names to strings")
    if reserved := sorted(ray_api.RESERVED_METADATA & set(value)):
        raise ConfigError(f"target {name!r}: metadata key {reserved[0]!r} is reserved")
    return dict(value)


def _quoted(job_id: str) -> str:
    return quote(job_id, safe="")

