"""Slurm through slurmrestd, authenticated with a JWT.

Settings of a ``kind: slurm`` target (unknown keys are an error):

``url`` (required)
    slurmrestd's base URL, e.g. ``http://slurm-login:6820``.
``user`` (required)
    The Slurm user the jobs run as. The token must have been issued for this user (or
    for root or SlurmUser, whose tokens may act for any user).
``token_file`` or ``token_env`` (one required)
    Where the JWT is read from on every request, so a rotated Secret is picked up.
``output_dir`` (required)
    An absolute directory on the cluster where every job writes its stdout and stderr,
    to ``<output_dir>/<native id>.out``. :meth:`SlurmRestAdapter.logs` reads that file,
    so the bridge sees job logs only when the directory is mounted at the same path.
``working_dir``
    The jobs' working directory when a request names none (default: ``output_dir``).
``outputs_root``
    An absolute directory on the cluster's shared file system, mounted in the bridge at
    the same path (default: ``working_dir``, else ``output_dir``). The files a request
    names in ``outputs`` are read from the job's working directory through that mount,
    with the bridge's own rights, not the job user's: so they are read only when that
    directory (symlinks resolved) lies inside ``outputs_root``, never from anywhere a
    request's ``working_dir`` points to.
``partition``
    The partition when a request names no ``queue`` (default: the cluster's default).
``api_version``
    ``auto`` (default): the newest version that slurmrestd serves (from
    ``/openapi/v3``) and this adapter speaks; or one of
    :data:`adapters.slurm_api.SUPPORTED_VERSIONS`, e.g. ``v0.0.38``.
``timeout_s``
    Timeout of each HTTP request (default 30). slurmrestd itself needs about 9 s to
    report that slurmctld cannot be reached.

Jobs are tagged with the bridge's job id twice: as the Slurm job name and in the
comment (``hpcbridge:<job id>``). Slurm does not refuse a second job of the same name, so
the adapter remembers what it submitted: submitting a job id again returns the first
job. Across processes, the bridge's claim on the job id and
:meth:`SlurmRestAdapter.find_by_tag` keep a job from being submitted twice.

Without accounting (slurmdbd), Slurm forgets a finished job ``MinJobAge`` seconds
(default 300) after it ends; after that the job is absent from
:meth:`SlurmRestAdapter.status_many` and cannot be found by its tag.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

import httpx

from adapters import _http, _settings, slurm_api
from adapters._files import read_confined
from adapters.base import (
    AdapterError,
    AuthenticationFailed,
    Capabilities,
    ConfigError,
    ManagerRejected,
    ManagerUnavailable,
    Observation,
    OutputMissing,
)
from hpcbridge.credentials import CredentialError
from hpcbridge.model import JobRequest

__all__ = ["SlurmRestAdapter"]

log = logging.getLogger(__name__)

_SETTINGS = frozenset({
    "kind", "url", "user", "token_file", "token_env", "output_dir", "working_dir",
    "outputs_root", "partition", "api_version", "timeout_s",
})
_DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
# slurmctld answers 304 to ``update_time=T`` when no job changed in second T or later
# (measured on 22.05). Without a server timestamp (v0.0.38 sends none) T comes from our
# clock at the previous request, this much earlier, so that clock skew cannot hide a change.
_CLOCK_MARGIN_S = 5
_LOG_BLOCK = 1 << 16


class SlurmRestAdapter:
    """One Slurm cluster behind slurmrestd.

    ``logs`` is declared because every job writes to ``output_dir``; reading it needs the
    directory mounted in the bridge, and :meth:`logs` says so when it is not. The same
    holds for ``collect_outputs`` and ``outputs_root``.
    """

    kind: ClassVar[str] = "slurm"
    capabilities: ClassVar[Capabilities] = Capabilities(report_capacity=True,
                                                        collect_outputs=True)

    def __init__(self, name: str, settings: Mapping[str, Any], *,
                 transport: httpx.BaseTransport | None = None) -> None:
        """``transport`` replaces httpx's own, for tests that watch the traffic."""
        self.name = name
        credential = _settings.credential(name, settings, "token")
        _settings.check_known(name, settings, _SETTINGS)
        self._credential = _settings.require_credential(name, credential, "token")
        self._url = _settings.needed(name, settings, "url")
        self._user = _settings.needed(name, settings, "user")
        self._output_dir = Path(_settings.absolute_path(name, settings, "output_dir"))
        self._working_dir = (Path(_settings.absolute_path(name, settings, "working_dir"))
                             if "working_dir" in settings else self._output_dir)
        self._outputs_root = (Path(_settings.absolute_path(name, settings, "outputs_root"))
                              if "outputs_root" in settings else self._working_dir)
        self._partition = _settings.needed(name, settings, "partition") if "partition" in settings \
            else None
        version = settings.get("api_version", "auto")
        if version != "auto" and version not in slurm_api.SUPPORTED_VERSIONS:
            raise ConfigError(f"target {name!r}: api_version {version!r} is not one of auto, "
                              f"{', '.join(slurm_api.SUPPORTED_VERSIONS)}")
        self._version: str | None = None if version == "auto" else version
        self._timeout = _settings.positive(name, settings, "timeout_s", 30)
        self._client = httpx.Client(base_url=self._url, timeout=self._timeout,
                                    transport=transport)
        self._lock = threading.Lock()
        self._jobs: dict[str, Mapping[str, Any]] = {}
        self._jobs_as_of: int | None = None
        self._submitted = _settings.Submissions()

    # --- the protocol ------------------------------------------------------------------

    def submit(self, request: JobRequest, job_id: str) -> str:
        if (known := self._submitted.get(job_id)) is not None:
            return known
        spec = slurm_api.JobSpec.for_request(
            request, job_id, script=slurm_api.batch_script(request.script, request.command),
            working_dir=request.working_dir or str(self._working_dir),
            environment={"PATH": _DEFAULT_PATH, **request.environment},
            output=f"{self._output_dir}/%j.out", partition=self._partition)
        version = self._api_version()
        response = self._request("POST", f"slurm/{version}/job/submit",
                                 f"submit job {job_id}",
                                 body=slurm_api.submission(version, spec))
        body = _http.json_body(response)
        native = slurm_api.number(body.get("job_id")) if isinstance(body, Mapping) else None
        if native is None:
            raise self._failure(response, f"submit job {job_id}")
        # Slurm may accept a job and still warn, e.g. that it can never run where it is.
        if found := slurm_api.errors(body):
            log.warning("Slurm accepted %s as %s but says: %s", job_id, native,
                        "; ".join(e.text for e in found))
        self._submitted.remember(job_id, str(native))
        return str(native)

    def status_many(self, native_ids: Sequence[str]) -> Mapping[str, Observation]:
        jobs = self._all_jobs()
        return {nid: slurm_api.observe(jobs[nid]) for nid in native_ids if nid in jobs}

    def cancel(self, native_id: str) -> None:
        what = f"cancel job {native_id}"
        response = self._request(
            "DELETE", f"slurm/{self._api_version()}/job/{quote(native_id, safe='')}", what)
        if response.status_code == 200:
            return
        codes = {e.code for e in slurm_api.errors(_http.json_body(response))}
        if codes & {slurm_api.INVALID_JOB_ID, slurm_api.ALREADY_DONE}:
            return  # purged or already over: the job is gone either way
        raise self._failure(response, what)

    def logs(self, native_id: str, tail: int | None = None) -> str:
        if not native_id.isdigit():
            raise AdapterError(f"target {self.name!r}: {native_id!r} is not a Slurm job id")
        if not self._output_dir.is_dir():
            raise AdapterError(
                f"target {self.name!r}: output_dir {self._output_dir} is not visible to the "
                "bridge; mount the cluster's directory at that path to read job logs")
        path = self._output_dir / f"{native_id}.out"
        try:
            return _read_tail(path, tail)
        except FileNotFoundError:
            return ""  # the job has not started, or wrote nothing yet
        except OSError as exc:
            raise AdapterError(f"target {self.name!r}: cannot read {path}: "
                               f"{exc.strerror}") from None

    def read_output(self, native_id: str, job_id: str, request: JobRequest, path: str,
                    limit: int) -> bytes:
        """``path`` in the job's working directory, read through the bridge's mount and
        only when that directory lies inside ``outputs_root``."""
        try:
            root = self._outputs_root.resolve(strict=True)
        except OSError as exc:
            raise ConfigError(
                f"target {self.name!r}: outputs_root {self._outputs_root} is not visible to "
                f"the bridge ({exc.strerror}); mount the cluster's directory at that path "
                "to collect output files") from None
        working_dir = Path(request.working_dir or self._working_dir)

        def inside_root(real: Path) -> None:
            if not real.is_relative_to(root):
                raise OutputMissing(
                    f"{path}: the job's working directory {working_dir} is outside "
                    f"outputs_root {self._outputs_root} of target {self.name!r}, the only "
                    "place the bridge reads output files from")

        try:
            return read_confined(working_dir, path, limit, allow=inside_root)
        except PermissionError:
            raise OutputMissing(f"{path}: cannot be read by the bridge (permission denied)") \
                from None
        except OSError as exc:
            raise ManagerUnavailable(f"target {self.name!r}: cannot read {path} in "
                                     f"{working_dir}: {exc.strerror or exc}") from None

    def find_by_tag(self, job_id: str) -> str | None:
        comment = f"hpcbridge:{job_id}"
        found = [int(nid) for nid, job in self._all_jobs().items()
                 if nid.isdigit() and (job.get("name") == job_id
                                       or _comment(job.get("comment")) == comment)]
        return str(min(found)) if found else None

    def capacity(self) -> Mapping[str, Any]:
        what = "list nodes"
        response = self._request("GET", f"slurm/{self._api_version()}/nodes", what)
        body = _http.json_body(response)
        if response.status_code != 200 or not isinstance(body, Mapping):
            raise self._failure(response, what)
        return slurm_api.capacity(body)

    def close(self) -> None:
        self._client.close()

    # --- HTTP --------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        try:
            token = self._credential.value()
        except CredentialError as exc:
            raise ConfigError(f"target {self.name!r}: {exc}") from None
        return {"X-SLURM-USER-NAME": self._user, "X-SLURM-USER-TOKEN": token}

    def _request(self, method: str, path: str, what: str, *,
                 body: Any = None, params: Mapping[str, Any] | None = None) -> httpx.Response:
        return _http.send(self._client, method, path, target=self.name,
                          manager="slurmrestd", url=self._url, timeout=self._timeout,
                          what=what, json=body, params=params, headers=self._headers())

    def _api_version(self) -> str:
        if self._version is not None:
            return self._version
        what = "list its API versions"
        response = self._request("GET", "openapi/v3", what)
        document = _http.json_body(response)
        if response.status_code != 200 or not isinstance(document, Mapping):
            raise self._failure(response, what)
        served = slurm_api.served_versions(document)
        version = slurm_api.pick_version(served)
        if version is None:
            raise ConfigError(
                f"target {self.name!r}: slurmrestd at {self._url} serves "
                f"{', '.join(sorted(served)) or 'no slurm API'}; this adapter speaks "
                f"{', '.join(slurm_api.SUPPORTED_VERSIONS)} (set api_version, or load one "
                "of them with slurmrestd -s)")
        self._version = version
        return version

    def _all_jobs(self) -> dict[str, Mapping[str, Any]]:
        """Every job slurmctld knows, in one request; unchanged answers come from memory.

        With ``update_time``, slurmrestd answers 304 and an empty body when no job has
        changed since then, and the previous answer still holds.
        """
        what = "list jobs"
        with self._lock:
            path = f"slurm/{self._api_version()}/jobs"
            asked_at = int(time.time())
            params = None if self._jobs_as_of is None else {"update_time": self._jobs_as_of}
            response = self._request("GET", path, what, params=params)
            if response.status_code == 304 and params is not None:
                return self._jobs
            body = _http.json_body(response)
            if response.status_code != 200 or not isinstance(body, Mapping):
                raise self._failure(response, what)
            self._jobs = {str(job["job_id"]): job for job in body.get("jobs") or []
                          if isinstance(job, Mapping) and "job_id" in job}
            server_time = slurm_api.number(body.get("last_update"))
            self._jobs_as_of = server_time or asked_at - _CLOCK_MARGIN_S
            return self._jobs

    # --- errors ------------------------------------------------------------------------

    def _failure(self, response: httpx.Response, what: str) -> AdapterError:
        """The exception for an answer that is not a success."""
        found = slurm_api.errors(_http.json_body(response))
        detail = "; ".join(e.text for e in found) or f"HTTP {response.status_code}"
        failure = slurm_api.classify(response.status_code, found)
        if failure is slurm_api.Failure.AMBIGUOUS:
            if self._credentials_refused():
                failure = slurm_api.Failure.CREDENTIALS_REFUSED
            else:
                detail += " (slurmctld did not answer slurmrestd)"
        if failure is slurm_api.Failure.CREDENTIALS_REFUSED:
            return AuthenticationFailed(
                f"target {self.name!r}: authentication failed for user {self._user!r}: "
                f"slurmrestd refused the token (check {self._credential.where}"
                f"{self._token_hint()})")
        if failure is slurm_api.Failure.REJECTED:
            return ManagerRejected(f"target {self.name!r}: Slurm refused to {what}: {detail}")
        return ManagerUnavailable(
            f"target {self.name!r}: slurmrestd at {self._url} could not {what}: {detail}")

    def _credentials_refused(self) -> bool:
        """Whether slurmctld refuses our token, asked in a way that tells it apart.

        The read endpoints say only "Unspecified error" both when slurmctld is down and
        when it refuses the token; a signal request says which. It targets job 0, which
        never exists: with a good token the answer is "invalid job id" and nothing happens.
        """
        try:
            response = self._request("DELETE", f"slurm/{self._api_version()}/job/0",
                                     "check the token")
        except ManagerUnavailable:
            return False
        found = slurm_api.errors(_http.json_body(response))
        return (slurm_api.classify(response.status_code, found)
                is slurm_api.Failure.CREDENTIALS_REFUSED)

    def _token_hint(self) -> str:
        """Why the token may be refused, from its own claims; never the token itself."""
        try:
            claims = _jwt_claims(self._credential.value())
        except CredentialError:
            return ""
        hints = []
        expires = slurm_api.number(claims.get("exp"))
        if expires is not None and expires <= time.time():
            hints.append("it expired at " + time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                          time.gmtime(expires)))
        subject = claims.get("sun", claims.get("username"))
        if isinstance(subject, str) and subject != self._user:
            hints.append(f"it was issued for user {subject!r}")
        if not claims:
            hints.append("it is not a JWT")
        return ": " + " and ".join(hints) if hints else ""


def _comment(value: Any) -> str | None:
    if isinstance(value, Mapping):  # slurmdbd's form: {"job": ..., "system": ...}
        value = value.get("job")
    return value if isinstance(value, str) else None


def _jwt_claims(token: str) -> Mapping[str, Any]:
    """The payload of a JWT, unverified (slurmctld verifies); empty if it is not one."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        return {}
    return claims if isinstance(claims, Mapping) else {}


def _read_tail(path: Path, lines: int | None) -> str:
    """The whole file, or its last ``lines`` lines read from the end in blocks."""
    with open(path, "rb") as handle:
        if lines is None:
            return handle.read().decode(errors="replace")
        if lines <= 0:
            return ""
        end = handle.seek(0, os.SEEK_END)
        data = b""
        position = end
        while position > 0 and data.count(b"\n") <= lines:
            step = min(_LOG_BLOCK, position)
            position -= step
            handle.seek(position)
            data = handle.read(step) + data
    text = data.decode(errors="replace")
    kept = text.splitlines(keepends=True)[-lines:]
    return "".join(kept)
