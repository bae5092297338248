"""Flux through flux-restful-api (the REST server that runs beside a Flux instance).

Settings of a ``kind: flux`` target (unknown keys are an error):

``url`` (required)
    The server's base URL, e.g. ``http://flux-login:5000``; paths are under ``/v1``.
``user``, ``token_file`` or ``token_env``, ``secret_key_file`` or ``secret_key_env``
    The server's credentials, as its clients name them: FLUX_USER, FLUX_TOKEN (the
    user's password) and FLUX_SECRET_KEY (the secret the server shares with its clients
    to encode the token request). All three or none: a server started without
    authentication needs none. Credentials are read when a token is requested, so a
    rotated Secret is picked up.
``working_dir``
    The jobs' working directory when a request names none (default: the server's).
``timeout_s``
    Timeout of each HTTP request (default 30).

Authentication follows the documented handshake: a request without a token gets 401
and ``WWW-Authenticate``; the adapter then posts the user and password, encoded as an
HS256 JWT with the shared secret, to ``POST /v1/token`` and sends the access token it
gets as ``Authorization: Bearer`` until the server refuses it (expired), when it asks
for a new one once.

What a request becomes: ``command`` is the job's argv (sent as a ``shlex``-quoted
string, which the server splits back into exactly that argv; no shell is involved); a
``script`` is run from a file by a fixed ``sh`` wrapper that receives the script as an
argument (:data:`adapters.flux_api.SCRIPT_RUNNER`). ``environment`` plus
``HPCBRIDGE_JOB_ID`` become ``envars``; ``resources`` map to ``num_nodes``,
``num_tasks`` (Flux starts that many copies of the command, as ``flux submit -n``
does), ``cores_per_task``, ``gpus_per_task`` (from ``gpus``) and ``runtime`` (from
``time_limit_s``, enforced by Flux). flux-restful has no memory, queue or account
fields: a request with ``memory_mb``, ``queue`` or ``account`` is refused, not silently
run without them.

Tags: flux-restful's submit has no job name, and nothing it stores is listed back (the
job name Flux reports is the command's basename; environment and shell options are not
in the job record), so a job cannot be found by the bridge's job id on the server. The
adapter remembers what it submitted: submitting a job id again returns the first job and
:meth:`FluxRestfulAdapter.find_by_tag` answers from that memory, checked against the
server. It cannot find a job that another process submitted, so ``find_by_tag`` is not
declared: after a crash between submit and record, the bridge may submit again.

States: DEPEND, PRIORITY, SCHED are QUEUED; RUN and CLEANUP are RUNNING; INACTIVE is
decided by the result: COMPLETED is SUCCEEDED, FAILED is FAILED (reason ``exit_code``),
CANCELED is CANCELLED, TIMEOUT is FAILED (reason ``timeout``). ``native_state`` reads
e.g. ``RUN`` or ``INACTIVE,TIMEOUT``. A job Flux has purged is absent.

:meth:`FluxRestfulAdapter.status_many` is one ``GET /v1/jobs?details=true`` whatever
the number of jobs asked about. The server builds that answer from every job Flux still
keeps, one record each, so its cost grows with the inactive jobs the instance keeps:
let Flux purge them (``job-manager.inactive-age-limit``).

Output files (``outputs``) are not collected: flux-restful-api has no file access.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar
from urllib.parse import quote

import httpx

from adapters import _http, _settings, flux_api
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

__all__ = ["FluxRestfulAdapter"]

_SETTINGS = frozenset({
    "kind", "url", "user", "token_file", "token_env", "secret_key_file", "secret_key_env",
    "working_dir", "timeout_s",
})


class FluxRestfulAdapter:
    """One Flux instance behind flux-restful-api."""

    kind: ClassVar[str] = "flux"
    capabilities: ClassVar[Capabilities] = Capabilities(find_by_tag=False)

    def __init__(self, name: str, settings: Mapping[str, Any], *,
                 transport: httpx.BaseTransport | None = None) -> None:
        """``transport`` replaces httpx's own, for tests that watch the traffic."""
        self.name = name
        token = _settings.credential(name, settings, "token")
        secret_key = _settings.credential(name, settings, "secret_key")
        _settings.check_known(name, settings, _SETTINGS)
        user = settings.get("user")
        given = [user is not None, token is not None, secret_key is not None]
        if any(given) and not all(given):
            raise ConfigError(f"target {name!r}: give 'user', 'token_file' or 'token_env' and "
                              "'secret_key_file' or 'secret_key_env' together, or none of them")
        self._user = _settings.string(name, settings, "user") if user is not None else None
        self._password = token
        self._secret_key = secret_key
        self._url = _settings.string(name, settings, "url")
        working_dir = settings.get("working_dir")
        if working_dir is not None and not (isinstance(working_dir, str)
                                            and working_dir.startswith("/")):
            raise ConfigError(f"target {name!r}: working_dir must be an absolute path")
        self._working_dir: str | None = working_dir
        self._timeout = _settings.positive(name, settings, "timeout_s", 30)
        self._client = httpx.Client(base_url=self._url, timeout=self._timeout,
                                    transport=transport)
        self._lock = threading.Lock()
        self._access_token: str | None = None
        self._submitted = _settings.Submissions()

    # --- the protocol ------------------------------------------------------------------

    def submit(self, request: JobRequest, job_id: str) -> str:
        if (known := self._submitted.get(job_id)) is not None:
            return known
        for field, value in (("resources.memory_mb", request.resources.memory_mb),
                             ("queue", request.queue), ("account", request.account)):
            if value is not None:
                raise ManagerRejected(f"target {self.name!r}: {field}: flux-restful-api "
                                      "cannot pass it to Flux")
        resources = request.resources
        body = flux_api.submission(
            flux_api.argv(request.script, request.command),
            environment={**request.environment, "HPCBRIDGE_JOB_ID": job_id},
            workdir=request.working_dir or self._working_dir,
            runtime_s=resources.time_limit_s,
            tasks=resources.tasks,
            cores_per_task=resources.cpus_per_task,
            nodes=resources.nodes,
            gpus_per_task=resources.gpus or None,
        )
        what = f"submit job {job_id}"
        response = self._request("POST", "v1/jobs/submit", what, body=body)
        answer = _http.json_body(response)
        native = answer.get("id") if isinstance(answer, Mapping) else None
        if response.status_code != 200 or isinstance(native, bool) \
                or not isinstance(native, int):
            raise self._failure(response, what)
        self._submitted.remember(job_id, str(native))
        return str(native)

    def status_many(self, native_ids: Sequence[str]) -> Mapping[str, Observation]:
        what = "list jobs"
        response = self._request("GET", "v1/jobs", what, params={"details": "true"})
        if response.status_code != 200:
            raise self._failure(response, what)
        records = flux_api.job_records(_http.json_body(response))
        if records is None:
            raise ConfigError(f"target {self.name!r}: flux-restful-api at {self._url} did not "
                              "list job details for ?details=true; this adapter needs a "
                              "server that reads that query parameter")
        return {nid: flux_api.observe(records[nid]) for nid in native_ids if nid in records}

    def cancel(self, native_id: str) -> None:
        if not native_id.isdigit():
            return  # never a Flux job id, so no job to stop
        what = f"cancel job {native_id}"
        response = self._request("POST", f"v1/jobs/{native_id}/cancel", what)
        if response.status_code == 200:
            return
        # flux-restful answers 400 both for a job that has ended or is unknown and for a
        # real refusal: the job's record tells them apart.
        if response.status_code in (400, 404):
            job = self._job(native_id)
            if job is None or flux_api.ended(job):
                return
        raise self._failure(response, what)

    def logs(self, native_id: str, tail: int | None = None) -> str:
        """The job's output (stdout and stderr as Flux recorded them), ``tail`` lines if given."""
        if not native_id.isdigit():
            return ""
        what = f"read the output of job {native_id}"
        response = self._request("GET", f"v1/jobs/{native_id}/output", what)
        body = _http.json_body(response)
        if response.status_code != 200 or not isinstance(body, Mapping):
            raise self._failure(response, what)
        chunks = body.get("Output")
        text = "".join(c for c in chunks if isinstance(c, str)) if isinstance(chunks, list) \
            else ""
        return flux_api.tail_lines(text, tail)

    def find_by_tag(self, job_id: str) -> str | None:
        """The job this adapter submitted for ``job_id``, if the server still knows it."""
        native_id = self._submitted.get(job_id)
        if native_id is None or self._job(native_id) is None:
            return None
        return native_id

    def capacity(self) -> Mapping[str, Any]:
        return {}

    def close(self) -> None:
        self._client.close()

    # --- HTTP --------------------------------------------------------------------------

    def _job(self, native_id: str) -> Mapping[str, Any] | None:
        """``GET /v1/jobs/{id}``: the record, or None for a job the server does not know.

        The server answers 200 with ``null`` for an unknown id (newer versions 404).
        """
        what = f"read job {native_id}"
        response = self._request("GET", f"v1/jobs/{quote(native_id, safe='')}", what)
        if response.status_code == 404:
            return None
        body = _http.json_body(response)
        if response.status_code != 200:
            raise self._failure(response, what)
        return body if isinstance(body, Mapping) else None

    def _request(self, method: str, path: str, what: str, *, body: Any = None,
                 params: Mapping[str, str] | None = None) -> httpx.Response:
        """One request, authenticated when the server asks for it (401)."""
        with self._lock:
            token = self._access_token
        response = self._send(method, path, what, body, params, token)
        if response.status_code != 401:
            return response
        token = self._new_access_token(what)
        response = self._send(method, path, what, body, params, token)
        if response.status_code == 401:
            raise AuthenticationFailed(
                f"target {self.name!r}: flux-restful-api at {self._url} refused the access "
                f"token it had just issued to user {self._user!r}")
        return response

    def _send(self, method: str, path: str, what: str, body: Any,
              params: Mapping[str, str] | None, token: str | None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        return _http.send(self._client, method, path, target=self.name,
                          manager="flux-restful-api", url=self._url, timeout=self._timeout,
                          what=what, json=body, params=params, headers=headers)

    def _new_access_token(self, what: str) -> str:
        """Run the token handshake and keep the access token for the next requests."""
        if self._user is None or self._password is None or self._secret_key is None:
            raise AuthenticationFailed(
                f"target {self.name!r}: flux-restful-api at {self._url} requires "
                f"authentication to {what}; set user, token_file and secret_key_file")
        try:
            payload = flux_api.handshake_token(self._user, self._password.value(),
                                               self._secret_key.value())
        except CredentialError as exc:
            raise ConfigError(f"target {self.name!r}: {exc}") from None
        response = self._send("POST", "v1/token", f"request a token to {what}", None, None,
                              payload)
        body = _http.json_body(response)
        token = body.get("access_token") if isinstance(body, Mapping) else None
        if response.status_code == 200 and isinstance(token, str) and token:
            with self._lock:
                self._access_token = token
            return token
        if response.status_code in (400, 401, 403):
            raise AuthenticationFailed(
                f"target {self.name!r}: flux-restful-api refused the credentials of user "
                f"{self._user!r}: {_detail(response)} (check {self._password.where} and "
                f"{self._secret_key.where})")
        raise self._failure(response, f"issue a token to {what}")

    def _failure(self, response: httpx.Response, what: str) -> AdapterError:
        detail = _detail(response)
        if response.status_code in (408, 429) or response.status_code >= 500:
            return ManagerUnavailable(f"target {self.name!r}: flux-restful-api at {self._url} "
                                      f"could not {what}: {detail}")
        if response.status_code == 403:
            return AuthenticationFailed(f"target {self.name!r}: flux-restful-api does not let "
                                        f"user {self._user!r} {what}: {detail}")
        return ManagerRejected(f"target {self.name!r}: flux-restful-api refused to {what}: "
                               f"{detail}")


def _detail(response: httpx.Response) -> str:
    """What the server said: FastAPI's ``detail`` or flux-restful's ``Message``/``Errors``."""
    body = _http.json_body(response)
    parts: list[str] = []
    if isinstance(body, Mapping):
        for key in ("detail", "Message", "Error"):
            if isinstance(body.get(key), str):
                parts.append(body[key])
        errors = body.get("Errors")
        if isinstance(errors, list):
            parts.extend(str(e) for e in errors)
    text = "; ".join(parts) or f"HTTP {response.status_code}"
    return redact(text)

