"""IBM Spectrum LSF, through its Application Center web services or its commands over SSH.

Settings of a ``kind: lsf`` target (unknown keys are an error):

``transport`` (required)
    ``web``: the LSF Application Center (PAC) RESTful web services; ``ssh``: ``bsub``,
    ``bjobs``, ``bkill`` and ``bpeek`` on a login node over SSH.
``queue``
    The queue when a request names none (default: the cluster's default queue).
``working_dir``
    The jobs' working directory when a request names none (default: for ``web`` the job
    directory Application Center makes for each job, for ``ssh`` the user's home).

With ``transport: web``:

``url`` (required)
    Application Center's address with its context, e.g. ``https://pac:8443/platform``.
``user`` (required), ``password_file`` or ``password_env`` (one required)
    The Application Center account the jobs are submitted as; the password is read at
    every logon, so a rotated Secret is picked up, and is never shown.
``timeout_s`` (default 30)
    Timeout of each HTTP request.

The adapter logs on once (``POST ws/logon``) and sends the token back as the cookie
``platform_token``; when Application Center refuses it (expired, or released by an
administrator) it logs on again and repeats the request once. :meth:`LsfAdapter.close`
logs off. A job is the ``generic`` application: the job script is uploaded as a file
into the job directory Application Center creates for the job (``hpcbridge-job.sh``),
``COMMANDTORUN`` is the constant ``/bin/sh hpcbridge-job.sh``, the output goes to
``hpcbridge-job.out`` in that directory, which :meth:`LsfAdapter.logs` downloads (LSF
spools a job's output and writes that file when the job ends, unless the cluster sets
LSB_STDOUT_DIRECT=Y: until then the logs are empty). Only
integers and validated words go into ``EXTRA_PARAMS`` (which Application Center hands
to a shell as bsub options).

With ``transport: ssh``:

``host`` (required), ``port`` (default 22), ``user`` (required), ``key_file`` or
``key_env`` (one required), ``known_hosts_file`` (required), ``timeout_s`` (default 30)
    The login node and its account, as :mod:`adapters._ssh` reads them.
``remote_dir`` (required)
    An absolute directory on the cluster's shared file system, created if missing (mode
    0700), without ``%`` (LSF's file name patterns) or control characters. Each job's
    script is ``<remote_dir>/<job id>.sh``; its output goes to
    ``<remote_dir>/<native id>.out``, which :meth:`LsfAdapter.logs` reads over SFTP.
``profile``
    The absolute path of the site's ``profile.lsf`` on the login node. LSF users source
    it to get LSF's commands and environment; every command the adapter runs is
    ``/bin/sh -c`` sourcing this file first (its path passed as an argument, quoted like
    every other one), then running the LSF command. Without it the commands must be on
    the ``PATH`` of a non-interactive SSH session.

The files a request names in ``outputs`` are read over SFTP, with the user's rights and
never outside the job's working directory (the request's, else ``working_dir``, else the
user's home, where the SSH session that ran bsub started). With ``transport: web`` they
are not collected.

Commands run with ``TZ=UTC0`` so that the times bjobs prints are read without guessing
the login node's time zone. The job script reaches the cluster over SFTP and bsub runs
it as ``/bin/sh <path>``; the login shell must be a POSIX one.

Both ways, the job script is a file, never a command line: it changes to the working
directory and exports the request's environment (every value single-quoted, so it is
data whatever it contains), then runs the command with ``exec`` (every argument quoted)
or runs the request's script, which travels verbatim in a quoted here-document
(:func:`adapters.lsf_api.job_script`). Jobs are named after the bridge's job id (``bsub
-J``); :meth:`LsfAdapter.find_by_tag` asks for jobs of that name. LSF does not refuse a
second job of the same name, so, as the Slurm adapter does, this adapter remembers what
it submitted and returns the first job for a job id submitted again.

Costs: :meth:`LsfAdapter.status_many` is one request (``GET ws/jobs/<id>,<id>,...``) or
one command (``bjobs -json -o ... <id> <id> ...``) for all the ids; cancel, find_by_tag
and logs one each (logs over SSH: SFTP, plus ``bpeek`` while the job still runs and its
output is spooled). LSF forgets a finished job CLEAN_PERIOD (lsb.params, default one
hour) after it ended; after that the job is absent from :meth:`LsfAdapter.status_many`
and :meth:`LsfAdapter.find_by_tag` does not find it.

States: PEND, WAIT, PROV and PSUSP (held before it ever ran) are QUEUED; RUN is RUNNING;
USUSP and SSUSP are SUSPENDED; DONE is SUCCEEDED; EXIT is FAILED with its exit code and
reason ``exit_code``, ``timeout`` (TERM_RUNLIMIT, TERM_DEADLINE), ``out_of_memory``
(TERM_MEMLIMIT, TERM_SWAP), ``preempted`` (TERM_PREEMPT) or ``node_failure`` (TERM_RC,
TERM_REMOVE_HUNG_JOB), or CANCELLED when bkill ended it (TERM_OWNER, TERM_ADMIN and their
FORCE variants); ZOMBI and UNKWN are UNKNOWN. The reason comes from bjobs' ``exit_reason``
or Application Center's ``exitInfo``; exit codes of jobs killed by a signal read 128 + the
signal, as a shell shows them.

Resources: ``tasks`` x ``cpus_per_task`` slots (``-n``), ``nodes`` as ``span[hosts=1]``
or ``span[ptile=...]``, ``memory_mb`` as a memory limit (``-M <n>MB``), ``gpus`` as
``-gpu num=<n>``, ``time_limit_s`` as a run limit rounded up to whole minutes (``-W``).
"""

from __future__ import annotations

import contextlib
import re
import shlex
import threading
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Protocol

import httpx

from adapters import _http, _settings, lsf_api
from adapters._ssh import SSH_SETTINGS, Completed, SshConnection
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
from hpcbridge.credentials import Credential, CredentialError, redact
from hpcbridge.model import JobRequest, RequestError, Resources, validate_job_id

__all__ = ["LsfAdapter"]

_COMMON = frozenset({"kind", "transport", "queue", "working_dir"})
_WEB = frozenset({"url", "user", "password_file", "password_env", "timeout_s"})
_SSH = frozenset({*SSH_SETTINGS, "remote_dir", "profile"})
_DETAIL_LIMIT = 500
_WEB_FILE_PARAM = "INPUT_FILE"
_UNUSABLE_IN_PATHS = re.compile(r"[%\x00-\x1f\x7f]")
# Sources the site's profile (when there is one), then becomes the LSF command.
_PRELUDE = ('if [ -n "$1" ]; then [ -r "$1" ] || { echo "cannot read the LSF profile '
            '$1" >&2; exit 127; }; . "$1"; fi; shift; TZ=UTC0; export TZ; exec "$@"')
_NOTHING_TO_KILL = ("Job has already finished", "No matching job found")
_NO_JOB = re.compile(r"No (unfinished )?job found|is not found")
_DOWN = re.compile(r"LSF is down|not responding|Cannot connect|Please wait",
                   re.IGNORECASE)
_PEEK_HEADER = re.compile(r"^<< output from std(out|err) >>\n?", re.MULTILINE)


class _Way(Protocol):
    """How the adapter reaches LSF: Application Center, or the commands over SSH."""

    def submit(self, job_id: str, script: str, *, queue: str | None,
               resources: Resources, account: str | None) -> str: ...

    def records(self, native_ids: Sequence[str]) -> dict[str, lsf_api.JobRecord]: ...

    def named(self, name: str) -> list[str]: ...

    def kill(self, native_id: str) -> None: ...

    def output(self, native_id: str, tail: int | None) -> str: ...

    def close(self) -> None: ...


class LsfAdapter:
    """One LSF cluster, behind its Application Center or a login node.

    Its capabilities depend on the transport (only ``ssh`` reads a job's files), so they
    are the instance's, set by :meth:`__init__`.
    """

    kind: ClassVar[str] = "lsf"
    capabilities: Capabilities

    def __init__(self, name: str, settings: Mapping[str, Any], *,
                 transport: httpx.BaseTransport | None = None,
                 connection: SshConnection | None = None) -> None:
        """``transport`` (web) or ``connection`` (ssh) replaces the one built from
        ``settings``, for tests that watch the traffic."""
        self.name = name
        way = settings.get("transport")
        known = {"web": _COMMON | _WEB, "ssh": _COMMON | _SSH}.get(str(way))
        if known is None:
            raise ConfigError(f"target {name!r}: transport must be 'web' or 'ssh'")
        # first: a password written into the settings gets its own message
        password = _settings.credential(name, settings, "password") if way == "web" else None
        _settings.check_known(name, settings, known, context=f" for transport {way}")
        self._queue = _word(name, settings, "queue") if "queue" in settings else None
        self._working_dir = _settings.absolute_path(name, settings, "working_dir") \
            if "working_dir" in settings else None
        self._way: _Way = _Web(name, settings, password, transport) if way == "web" \
            else _Ssh(name, settings, connection)
        self.capabilities = Capabilities(collect_outputs=isinstance(self._way, _Ssh))
        self._submitted = _settings.Submissions()

    # --- the protocol ------------------------------------------------------------------

    def submit(self, request: JobRequest, job_id: str) -> str:
        if (known := self._submitted.checked(self.name, job_id)) is not None:
            return known
        try:
            script = lsf_api.job_script(
                job_id=job_id, script=request.script, command=request.command,
                environment=request.environment,
                working_dir=request.working_dir or self._working_dir)
        except ValueError as exc:
            raise ManagerRejected(f"target {self.name!r}: job {job_id}: {exc}") from None
        try:
            native = self._way.submit(job_id, script, queue=request.queue or self._queue,
                                      resources=request.resources, account=request.account)
        except ValueError as exc:  # a word the options cannot carry
            raise ManagerRejected(f"target {self.name!r}: job {job_id}: {exc}") from None
        self._submitted.remember(job_id, native)
        return native

    def status_many(self, native_ids: Sequence[str]) -> Mapping[str, Observation]:
        asked = [nid for nid in dict.fromkeys(native_ids) if lsf_api.is_job_id(nid)]
        if not asked:
            return {}
        records = self._way.records(asked)
        return {nid: lsf_api.observe(records[nid]) for nid in asked if nid in records}

    def cancel(self, native_id: str) -> None:
        if lsf_api.is_job_id(native_id):  # anything else LSF cannot know: nothing to stop
            self._way.kill(native_id)

    def logs(self, native_id: str, tail: int | None = None) -> str:
        if not lsf_api.is_job_id(native_id):
            raise AdapterError(f"target {self.name!r}: {native_id!r} is not an LSF job id")
        return self._way.output(native_id, tail)

    def read_output(self, native_id: str, job_id: str, request: JobRequest, path: str,
                    limit: int) -> bytes:
        """``path`` in the job's working directory, over SFTP (``transport: ssh`` only)."""
        if not isinstance(self._way, _Ssh):
            raise OutputMissing(f"{path}: target {self.name!r} (transport web) cannot read "
                                "a job's files")
        # "." is where SFTP sessions start, the user's home, where bsub ran.
        root = request.working_dir or self._working_dir or "."
        return self._way.read_confined(root, path, limit)

    def find_by_tag(self, job_id: str) -> str | None:
        try:
            validate_job_id(job_id)
        except RequestError:
            return None
        found = [int(nid) for nid in self._way.named(job_id)]
        return str(min(found)) if found else None

    def capacity(self) -> Mapping[str, Any]:
        return {}

    def close(self) -> None:
        self._way.close()


# --- Application Center ----------------------------------------------------------------

class _Web:
    """The LSF Application Center RESTful web services, with a cached logon token."""

    def __init__(self, target: str, settings: Mapping[str, Any],
                 credential: Credential | None, transport: httpx.BaseTransport | None
                 ) -> None:
        self.target = target
        self._credential = _settings.require_credential(target, credential, "password")
        self._url = _settings.needed(target, settings, "url").rstrip("/")
        if not self._url.startswith(("http://", "https://")):
            raise ConfigError(f"target {target!r}: url must be an http:// or https:// URL")
        self._user = _settings.needed(target, settings, "user")
        self._timeout = _settings.positive(target, settings, "timeout_s", 30)
        self._client = httpx.Client(base_url=self._url + "/", timeout=self._timeout,
                                    transport=transport,
                                    headers={"Accept": "application/json"})
        self._lock = threading.Lock()
        self._token: str | None = None

    def submit(self, job_id: str, script: str, *, queue: str | None,
               resources: Resources, account: str | None) -> str:
        params = {"COMMANDTORUN": f"/bin/sh {lsf_api.WEB_SCRIPT_FILE}", "JOB_NAME": job_id,
                  "OUTPUT_FILE": lsf_api.WEB_OUTPUT_FILE,
                  "ERROR_FILE": lsf_api.WEB_OUTPUT_FILE}
        if queue is not None:
            params["QUEUE"] = queue
        minutes = lsf_api.run_limit_minutes(resources)
        if minutes is not None:
            params["RUNLIMITHOUR"], params["RUNLIMITMINUTE"] = str(minutes // 60), \
                str(minutes % 60)
        extra = lsf_api.bsub_options(resources, account=account)
        if extra:
            params["EXTRA_PARAMS"] = shlex.join(extra)
        content_type, body = lsf_api.web_submission(
            params, {lsf_api.WEB_SCRIPT_FILE: script.encode()}, _WEB_FILE_PARAM)
        what = f"submit job {job_id}"
        response = self._call("POST", "ws/jobs/submit", what, content=body,
                              headers={"Content-Type": content_type})
        if response.status_code != 200:
            raise self._failure(response, what)
        native = lsf_api.parse_submitted_id(_http.json_body(response))
        if native is None:
            raise ManagerUnavailable(f"target {self.target!r}: Application Center at "
                                     f"{self._url} accepted job {job_id} without a job id")
        return native

    def records(self, native_ids: Sequence[str]) -> dict[str, lsf_api.JobRecord]:
        what = "list jobs"
        response = self._call("GET", f"ws/jobs/{','.join(native_ids)}", what)
        if response.status_code == 404:  # none of them is known (any more)
            return {}
        if response.status_code != 200:
            raise self._failure(response, what)
        return lsf_api.parse_web_jobs(_http.json_body(response))

    def named(self, name: str) -> list[str]:
        what = f"find jobs named {name}"
        response = self._call("GET", "ws/jobs", what, params={"jobname": name})
        if response.status_code == 404:
            return []
        if response.status_code != 200:
            raise self._failure(response, what)
        return [nid for nid, record in lsf_api.parse_web_jobs(_http.json_body(response)).items()
                if record.name in (None, name)]

    def kill(self, native_id: str) -> None:
        what = f"kill job {native_id}"
        response = self._call("POST", "ws/jobs/kill", what, data={"ids": native_id})
        if response.status_code not in (200, 404):  # 404: LSF no longer knows the job
            raise self._failure(response, what)

    def output(self, native_id: str, tail: int | None) -> str:
        what = f"download the output of job {native_id}"
        response = self._call("POST", f"ws/jobfiles/download/{native_id}", what,
                              data={"dir": lsf_api.WEB_OUTPUT_FILE},
                              headers={"Accept": "multipart/mixed"})
        if response.status_code == 404:  # not written yet
            return ""
        if response.status_code != 200:
            raise self._failure(response, what)
        try:
            files = lsf_api.parse_download(response.headers.get("Content-Type", ""),
                                           response.content)
        except ValueError as exc:
            raise ManagerUnavailable(f"target {self.target!r}: cannot {what}: {exc}") \
                from None
        return _tail(files.get(lsf_api.WEB_OUTPUT_FILE, b"").decode(errors="replace"), tail)

    def close(self) -> None:
        """Log off (releasing the token, as PAC asks of its clients), then disconnect."""
        token, self._token = self._token, None
        if token is not None:
            with contextlib.suppress(AdapterError):
                self._send("POST", "ws/logout", "log off", token=token)
        self._client.close()

    # --- HTTP --------------------------------------------------------------------------

    def _call(self, method: str, path: str, what: str, **kwargs: Any) -> httpx.Response:
        """A request with the logon token; a refused token is renewed once."""
        token = self._token or self._logon(None)
        response = self._send(method, path, what, token=token, **kwargs)
        if response.status_code not in (401, 403):
            return response
        token = self._logon(token)
        response = self._send(method, path, what, token=token, **kwargs)
        if response.status_code in (401, 403):
            raise AuthenticationFailed(
                f"target {self.target!r}: Application Center at {self._url} refuses user "
                f"{self._user!r} to {what} right after a logon: "
                f"{self._detail(response)} (check the user's roles)")
        return response

    def _logon(self, refused: str | None) -> str:
        """A fresh token, unless another thread already replaced the ``refused`` one."""
        with self._lock:
            if self._token is not None and self._token != refused:
                return self._token
            try:
                password = self._credential.value()
            except CredentialError as exc:
                raise ConfigError(f"target {self.target!r}: {exc}") from None
            response = self._send("POST", "ws/logon", "log on",
                                  content=lsf_api.logon_body(self._user, password),
                                  headers={"Content-Type": "application/xml"})
            if response.status_code in (400, 401, 403):
                raise AuthenticationFailed(
                    f"target {self.target!r}: Application Center at {self._url} refused "
                    f"the logon of user {self._user!r}: {self._detail(response)} (check "
                    f"{self._credential.where})")
            if response.status_code != 200:
                raise self._failure(response, "log on")
            token = lsf_api.parse_logon(_http.json_body(response))
            if token is None:
                raise ManagerUnavailable(f"target {self.target!r}: Application Center at "
                                         f"{self._url} answered the logon without a token")
            self._token = token
            return token

    def _send(self, method: str, path: str, what: str, *, token: str | None = None,
              headers: Mapping[str, str] | None = None, **kwargs: Any) -> httpx.Response:
        sent = dict(headers or {})
        if token is not None:
            sent["Cookie"] = f"platform_token={lsf_api.cookie_token(token)}"
        return _http.send(self._client, method, path, target=self.target,
                          manager="Application Center", url=self._url,
                          timeout=self._timeout, what=what, headers=sent, **kwargs)

    def _failure(self, response: httpx.Response, what: str) -> AdapterError:
        detail = self._detail(response)
        if response.status_code >= 500 or response.status_code in (408, 429):
            return ManagerUnavailable(f"target {self.target!r}: Application Center at "
                                      f"{self._url} could not {what}: {detail}")
        return ManagerRejected(f"target {self.target!r}: LSF refused to {what}: {detail}")

    @staticmethod
    def _detail(response: httpx.Response) -> str:
        message = lsf_api.error_message(_http.json_body(response))
        text = f"HTTP {response.status_code}" + (f": {message}" if message else "")
        return redact(text)[:_DETAIL_LIMIT]


# --- the commands over SSH -------------------------------------------------------------

class _Ssh:
    """bsub, bjobs, bkill and bpeek on a login node, over one kept SSH connection."""

    def __init__(self, target: str, settings: Mapping[str, Any],
                 connection: SshConnection | None) -> None:
        self.target = target
        self._ssh = connection or SshConnection.from_settings(target, settings)
        self._remote_dir = (_settings.absolute_path(target, settings, "remote_dir")
                            .rstrip("/") or "/")
        if _UNUSABLE_IN_PATHS.search(self._remote_dir):
            raise ConfigError(f"target {target!r}: remote_dir must not contain '%' or "
                              "control characters")
        self._profile = (_settings.absolute_path(target, settings, "profile")
                         if "profile" in settings else "")
        self._dir_ready = False

    def submit(self, job_id: str, script: str, *, queue: str | None,
               resources: Resources, account: str | None) -> str:
        if not self._dir_ready:
            self._ssh.make_dirs(self._remote_dir)
            self._dir_ready = True
        path = f"{self._remote_dir}/{job_id}.sh"
        self._ssh.write_file(path, script, 0o700)
        output = f"{self._remote_dir}/%J.out"
        argv = ["bsub", "-J", job_id, "-o", output, "-e", output]
        if queue is not None:
            argv += ["-q", queue]
        minutes = lsf_api.run_limit_minutes(resources)
        if minutes is not None:
            argv += ["-W", str(minutes)]
        # bsub joins its command into one line that LSF's /bin/sh parses: quote it for that.
        argv += [*lsf_api.bsub_options(resources, account=account),
                 shlex.join(["/bin/sh", path])]
        what = f"submit job {job_id}"
        done = self._lsf(argv)
        native = lsf_api.parse_bsub_output(done.stdout)
        if native is None:
            raise self._failure(done, "bsub", what)
        return native

    def records(self, native_ids: Sequence[str]) -> dict[str, lsf_api.JobRecord]:
        done = self._lsf(["bjobs", "-json", "-hms", "-o", lsf_api.BJOBS_FIELDS,
                          *native_ids])
        try:
            return lsf_api.parse_bjobs_json(done.stdout)
        except ValueError:
            raise self._failure(done, "bjobs", "list jobs") from None

    def named(self, name: str) -> list[str]:
        done = self._lsf(["bjobs", "-a", "-json", "-o", "jobid stat job_name", "-J", name])
        try:
            records = lsf_api.parse_bjobs_json(done.stdout)
        except ValueError:
            if _NO_JOB.search(done.stderr):
                return []
            raise self._failure(done, "bjobs", f"find jobs named {name}") from None
        return [nid for nid, record in records.items() if record.name in (None, name)]

    def kill(self, native_id: str) -> None:
        done = self._lsf(["bkill", native_id])
        if done.exit_status == 0 or any(text in done.stdout + done.stderr
                                        for text in _NOTHING_TO_KILL):
            return
        raise self._failure(done, "bkill", f"kill job {native_id}")

    def output(self, native_id: str, tail: int | None) -> str:
        with contextlib.suppress(FileNotFoundError):
            return self._ssh.read_file(f"{self._remote_dir}/{native_id}.out",
                                       tail_lines=tail)
        # LSF spools a running job's output and writes the file when the job ends.
        done = self._lsf(["bpeek", native_id])
        if done.exit_status != 0:
            return ""
        return _tail(_PEEK_HEADER.sub("", done.stdout), tail)

    def read_confined(self, root: str, relative: str, limit: int) -> bytes:
        return self._ssh.read_confined(root, relative, limit)

    def close(self) -> None:
        self._ssh.close()

    def _lsf(self, argv: list[str]) -> Completed:
        return self._ssh.run(["/bin/sh", "-c", _PRELUDE, "sh", self._profile, *argv])

    def _failure(self, done: Completed, program: str, what: str) -> AdapterError:
        detail = redact(done.stderr.strip() or done.stdout.strip()
                        or f"exit status {done.exit_status}")[:_DETAIL_LIMIT]
        if done.exit_status == 127:
            return ConfigError(f"target {self.target!r}: {program} cannot run on the login "
                               f"node ({detail}); set 'profile' to the site's profile.lsf")
        if "not submitted" in detail or "permission denied" in detail.lower():
            return ManagerRejected(f"target {self.target!r}: LSF refused to {what}: {detail}")
        return ManagerUnavailable(f"target {self.target!r}: {program} could not {what}: "
                                  f"{detail}")


# --- settings and small helpers --------------------------------------------------------

def _word(target: str, settings: Mapping[str, Any], key: str) -> str:
    value = _settings.needed(target, settings, key)
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", value):
        raise ConfigError(f"target {target!r}: '{key}' must be a plain name")
    return value


def _tail(text: str, lines: int | None) -> str:
    if lines is None:
        return text
    return "".join(text.splitlines(keepends=True)[-lines:]) if lines > 0 else ""
