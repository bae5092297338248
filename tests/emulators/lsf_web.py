"""LSF Application Center web services of the LSF EMULATOR (:mod:`tests.emulators.lsf`).

A real HTTP server on 127.0.0.1, base ``/platform/``, after the IBM Spectrum LSF
Application Center 10.2 RESTful web services reference:

* ``POST ws/logon`` with ``<User><name>..</name><pass>..</pass></User>`` answers
  ``<User><token>..</token></User>`` (400 for an empty user, 403 for a refused one);
  the token looks like PAC's (``user"expiry"secret"secret``) and is sent back as the
  cookie ``platform_token`` with its double quotes written ``#quote#`` (a cookie with
  raw double quotes is refused, as RFC 6265 does not allow them); ``POST
  ws/logout`` releases it. Tokens expire after ``token_lifetime_s`` (PAC: 60 minutes).
* ``POST ws/jobs/submit``, ``multipart/mixed``: an ``AppName`` part (only ``generic``
  is published), a ``data`` part of ``<AppParam>`` documents (COMMANDTORUN, JOB_NAME,
  QUEUE, OUTPUT_FILE, ERROR_FILE, RUNLIMITHOUR, RUNLIMITMINUTE, EXTRA_PARAMS, and file
  parameters such as INPUT_FILE naming uploaded files), then one part per uploaded file.
  The job gets a job directory of its own, owned by the user, holding the uploaded files;
  it runs there, as the user, ``/bin/sh -c COMMANDTORUN`` with EXTRA_PARAMS read as
  bsub options. The answer is the new job's id (``<job><id>N</id></job>``).
* ``GET ws/jobs/{id,id,...}`` (detailed information: ``<jobs total="N"><job>`` with
  jobId, jobName, jobStatus, exitStatus, submitTimeGMT...; 404 when none is known),
  ``GET ws/jobs?jobname=&username=`` (basic information, ``pseudoJob`` records, finished
  jobs included until CLEAN_PERIOD), ``GET ws/jobhistory?ids=`` (every job of the event
  log, also after CLEAN_PERIOD), ``POST ws/jobs/kill`` with ``ids=``, and ``POST
  ws/jobfiles/download/{id}`` with ``dir=`` (file names relative to the job directory,
  comma-separated), answered ``multipart/mixed`` with one part per file.
* ``Accept: application/json`` gets the JSON that Jersey's mapped notation makes of the
  same XML (no root element, attributes as ``@name``, string values, a list of one
  element written as the element); anything else gets the XML. Errors are
  ``<error><message>..</message></error>`` (``{"message": ..}``).

The emulator's own choices, where the reference is silent or its excerpt ends: a missing,
unknown or expired token is refused like a role-based refusal, 403 with a message (no
401 is documented); a refused submission (unknown queue, bad EXTRA_PARAMS) is 400 with
bsub's message; the fields of a detailed job record after ``pidStr`` are ``startTimeGMT``,
``endTimeGMT`` (ISO 8601 UTC, like ``submitTimeGMT``) and ``exitInfo`` (the termination
reason's number, as in LSF's jobInfoEnt and lsb.acct); ``exitStatus`` is the wait(2)
status, as in jobInfoEnt; basic records carry id, name, status, user and queue; job
history records carry the detailed record's fields; ``ws/jobs/kill`` answers 200 with
bkill's messages, 404 when no id is known; a download always answers multipart.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import fnmatch
import itertools
import json
import os
import secrets
import shlex
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape, quoteattr

from tests.emulators.lsf_batch import TERM_REASONS, Batch, Caller, Job, Refused
from tests.emulators.lsf_cli import UsageError, parse_bsub_options, submission

__all__ = ["ApplicationCenter"]

_BASE = "/platform/"
_APPLICATION = "generic"
_PARAMS = ("COMMANDTORUN", "JOB_NAME", "QUEUE", "OUTPUT_FILE", "ERROR_FILE", "RUNLIMITHOUR",
           "RUNLIMITMINUTE", "EXTRA_PARAMS")
_JOB_ENV_PATH = "/usr/local/bin:/usr/bin:/bin"
_QUOTES = {'"': "&quot;"}  # PAC writes the quotes of its tokens as entities


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ApplicationCenter:
    """The web services, their tokens and the job directories (PAC's job repository)."""

    def __init__(self, batch: Batch, repository: Path, users: Mapping[str, str], *,
                 token_lifetime_s: float) -> None:
        self.batch = batch
        self.repository = repository
        self.repository.mkdir(mode=0o755)
        self.users = dict(users)
        self.token_lifetime_s = token_lifetime_s
        self.requests = 0
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[str, float]] = {}
        self._job_dirs: dict[int, Path] = {}
        self._directory_numbers = itertools.count(10001)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/platform"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        name="lsf-pac", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def expire_tokens(self) -> None:
        with self._lock:
            self._tokens.clear()

    def set_password(self, user: str, password: str) -> None:
        with self._lock:
            self.users[user] = password

    def logged_on(self) -> list[str]:
        now = time.time()
        with self._lock:
            return sorted(user for user, expiry in self._tokens.values() if expiry > now)

    # --- HTTP ----------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        center = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                center.handle(self, "GET")

            def do_POST(self) -> None:
                center.handle(self, "POST")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def handle(self, http: BaseHTTPRequestHandler, method: str) -> None:
        with self._lock:
            self.requests += 1
        length = int(http.headers.get("Content-Length") or 0)
        body = http.rfile.read(length) if length else b""
        accept = http.headers.get("Accept", "")
        as_json = "json" in accept.lower()
        parts = urlsplit(http.path)
        try:
            if not parts.path.startswith(_BASE):
                raise _HttpError(404, f"{parts.path} is not a web service")
            route = parts.path[len(_BASE):].rstrip("/")
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            if (method, route) == ("POST", "ws/logon"):
                status, root, data = 200, "User", {"token": self._logon(body)}
            else:
                caller = self._caller(http.headers.get("Cookie", ""))
                if method == "POST" and route.startswith("ws/jobfiles/download/"):
                    self._download(http, caller, route.rsplit("/", 1)[-1], body)
                    return
                status, root, data = self._route(method, route, query, body, caller,
                                                 http.headers.get("Content-Type", ""),
                                                 cookie=http.headers.get("Cookie", ""))
        except _HttpError as exc:
            status, root, data = exc.status, "error", {"message": exc.message}
        content = _json(data) if as_json else _xml(root, data)
        _answer(http, status, "application/json" if as_json else "application/xml", content)

    def _route(self, method: str, route: str, query: Mapping[str, str], body: bytes,
               caller: Caller, content_type: str, *, cookie: str
               ) -> tuple[int, str, dict[str, Any]]:
        if (method, route) == ("POST", "ws/logout"):
            with self._lock:
                self._tokens.pop(_cookie_token(cookie) or "", None)
            return 200, "message", {"message": "You have been logged out."}
        if (method, route) == ("POST", "ws/jobs/submit"):
            return 200, "job", {"id": str(self._submit(caller, content_type, body))}
        if (method, route) == ("POST", "ws/jobs/kill"):
            return self._kill(caller, _form(body).get("ids", ""))
        if (method, route) == ("GET", "ws/jobs"):
            return self._by_name(caller, query)
        if (method, route) == ("GET", "ws/jobhistory"):
            return self._history(caller, query.get("ids", ""))
        if method == "GET" and route.startswith("ws/jobs/"):
            return self._by_ids(caller, unquote(route[len("ws/jobs/"):]))
        raise _HttpError(404, f"No web service at {method} {_BASE}{route}")

    # --- logon ---------------------------------------------------------------------------

    def _logon(self, body: bytes) -> str:
        try:
            user = ET.fromstring(body)  # noqa: S314 - the test client's own XML
        except ET.ParseError:
            raise _HttpError(400, "The request body is not a valid User document.") from None
        name, password = user.findtext("name") or "", user.findtext("pass") or ""
        if not name.strip():
            raise _HttpError(400, "The user is empty.")
        with self._lock:
            known = self.users.get(name)
        if known != password or not password:
            raise _HttpError(403, f"Logon failed for user {name}: the user name or "
                                  "password is not correct.")
        expiry = time.time() + self.token_lifetime_s
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expiry))
        token = (f'{name}"{stamp}"{base64.b64encode(secrets.token_bytes(48)).decode()}"'
                 f"{base64.b64encode(secrets.token_bytes(16)).decode()}")
        with self._lock:
            self._tokens[token] = (name, expiry)
        return token

    def _caller(self, cookie: str) -> Caller:
        token = _cookie_token(cookie)
        with self._lock:
            entry = self._tokens.get(token or "")
            if entry is not None and entry[1] <= time.time():
                del self._tokens[token or ""]
                entry = None
        if entry is None:
            raise _HttpError(403, "The security token is not valid or has expired. "
                                  "Log on again.")
        return Caller.of_name(entry[0])

    # --- jobs ----------------------------------------------------------------------------

    def _submit(self, caller: Caller, content_type: str, body: bytes) -> int:
        app, params, files = _submission_parts(content_type, body)
        if app.split(":", 1)[0] != _APPLICATION:
            raise _HttpError(404, f"The application {app} is not published.")
        command = params.get("COMMANDTORUN", "").strip()
        if not command:
            raise _HttpError(400, "COMMANDTORUN is required by the application generic.")
        try:
            options, rest = parse_bsub_options(shlex.split(params.get("EXTRA_PARAMS", "")))
        except (UsageError, ValueError) as exc:
            raise _HttpError(400, f"EXTRA_PARAMS: {exc}") from None
        if rest:
            raise _HttpError(400, f"EXTRA_PARAMS: unexpected {shlex.join(rest)}")
        for option, param in (("-J", "JOB_NAME"), ("-q", "QUEUE"), ("-o", "OUTPUT_FILE"),
                              ("-e", "ERROR_FILE")):
            if params.get(param, "").strip():
                options[option] = [params[param].strip()]
        hours, minutes = params.get("RUNLIMITHOUR", "").strip(), \
            params.get("RUNLIMITMINUTE", "").strip()
        if hours or minutes:
            options["-W"] = [f"{hours or 0}:{minutes or 0}"]
        job_dir = self._job_directory(caller, params.get("JOB_NAME", "").strip() or app)
        for name, content in files.items():
            path = job_dir / name
            path.write_bytes(content)
            if caller.uid != os.getuid():
                os.chown(path, caller.uid, caller.gid)
        env = {"PATH": _JOB_ENV_PATH, "HOME": os.path.expanduser(f"~{caller.name}"),
               "USER": caller.name, "LOGNAME": caller.name, "SHELL": "/bin/sh"}
        try:
            job = self.batch.submit(submission(caller, options, command, str(job_dir), env))
        except Refused as exc:
            raise _HttpError(400, str(exc)) from None
        with self._lock:
            self._job_dirs[job.id] = job_dir
        return job.id

    def _job_directory(self, caller: Caller, name: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)[:64] or "job"
        user_dir = self.repository / caller.name
        user_dir.mkdir(mode=0o755, exist_ok=True)
        path = user_dir / f"{safe}_{next(self._directory_numbers)}"
        path.mkdir(mode=0o755)
        if caller.uid != os.getuid():
            os.chown(path, caller.uid, caller.gid)
        return path

    def _visible(self, caller: Caller, job: Job) -> bool:
        return caller.admin or job.sub.caller.uid == caller.uid

    def _by_ids(self, caller: Caller, ids: str) -> tuple[int, str, dict[str, Any]]:
        numbers = _ids(ids)
        with self.batch.cond:
            jobs = [job for number in numbers if (job := self.batch.jobs.get(number))
                    and self._visible(caller, job)]
            records = [self._detailed(job) for job in jobs]
        if not records:
            raise _HttpError(404, "No jobs that match the specified criteria were found.")
        return 200, "jobs", {"@total": str(len(records)),
                             "link": {"@href": f"{self.url}/ws/jobs/{ids}", "@rel": "self"},
                             "job": records}

    def _by_name(self, caller: Caller, query: Mapping[str, str]
                 ) -> tuple[int, str, dict[str, Any]]:
        user = query.get("username", caller.name)
        if user != caller.name and not caller.admin:
            raise _HttpError(403, "Access restricted by role-based access control.")
        name = query.get("jobname")
        with self.batch.cond:
            records = [self._basic(job) for job in sorted(self.batch.jobs.values(),
                                                          key=lambda j: j.id)
                       if (user == "all" or job.sub.caller.name == user)
                       and (name is None or fnmatch.fnmatchcase(job.name, name))]
        if not records:
            raise _HttpError(404, "No jobs that match the specified criteria were found.")
        return 200, "jobs", {"@total": str(len(records)), "pseudoJob": records}

    def _history(self, caller: Caller, ids: str) -> tuple[int, str, dict[str, Any]]:
        with self.batch.cond:
            records = [self._detailed(job) for number in _ids(ids)
                       if (job := self.batch.history.get(number))
                       and self._visible(caller, job)]
        if not records:
            raise _HttpError(404, "No jobs that match the specified criteria were found.")
        return 200, "jobHistories", {"@total": str(len(records)), "jobHistory": records}

    def _kill(self, caller: Caller, ids: str) -> tuple[int, str, dict[str, Any]]:
        messages, known = [], 0
        for number in _ids(ids):
            try:
                messages.append(self.batch.kill(number, caller))
                known += 1
            except Refused as exc:
                messages.append(str(exc))
                known += "No matching job" not in str(exc)
        if not known:
            raise _HttpError(404, "; ".join(messages) or "No matching job found")
        return 200, "message", {"message": "; ".join(messages)}

    def _detailed(self, job: Job) -> dict[str, str]:
        sub = job.sub
        started = job.start_time is not None
        return {
            "command": sub.command, "exHosts": self.batch.hostname if started else "",
            "fromHost": self.batch.hostname, "jobId": str(job.id), "jobName": job.name,
            "jobStatus": job.stat, "queue": job.queue,
            "submitTimeGMT": _gmt(job.submit_time), "user": sub.caller.name,
            "application": _APPLICATION if job.id in self._job_dirs else "",
            "askedHostsStr": "", "cpuTime": "0.0", "cwd": sub.cwd, "description": "",
            "execCwd": sub.cwd if started else "",
            "execHome": os.path.expanduser(f"~{sub.caller.name}") if started else "",
            "execUserName": sub.caller.name if started else "",
            "exitStatus": "" if job.wait_status is None else str(job.wait_status),
            "infile": "", "jobGroup": "", "mem": "", "nthreads": "",
            "numProcessors": str(sub.slots), "outfile": sub.output or "",
            "pendReason": self.batch.pend_reason(job),
            "pgidStr": str(job.process.pid) if job.process and not job.finished else "",
            "pidStr": str(job.process.pid) if job.process and not job.finished else "",
            "startTimeGMT": _gmt(job.start_time), "endTimeGMT": _gmt(job.finish_time),
            "exitInfo": str(TERM_REASONS[job.term_reason][0]) if job.term_reason else "",
        }

    def _basic(self, job: Job) -> dict[str, str]:
        return {"id": str(job.id), "name": job.name, "status": job.stat,
                "user": job.sub.caller.name, "queue": job.queue}

    # --- files ---------------------------------------------------------------------------

    def _download(self, http: BaseHTTPRequestHandler, caller: Caller, job_id: str,
                  body: bytes) -> None:
        accept = http.headers.get("Accept", "")
        with self._lock:
            job_dir = self._job_dirs.get(int(job_id)) if job_id.isdigit() else None
        with self.batch.cond:
            job = self.batch.history.get(int(job_id)) if job_id.isdigit() else None
        try:
            if job_dir is None or job is None:
                raise _HttpError(404, f"Job <{job_id}> has no job directory.")
            if not self._visible(caller, job):
                raise _HttpError(403, "Access restricted by role-based access control.")
            names = [n.strip() for n in _form(body).get("dir", "").split(",") if n.strip()]
            if not names:
                raise _HttpError(400, "The ID or directory is empty or not valid.")
            files = {name: self._job_file(job_dir, name) for name in names}
        except _HttpError as exc:
            as_json = "json" in accept.lower()
            content = _json({"message": exc.message}) if as_json else \
                _xml("error", {"message": exc.message})
            _answer(http, exc.status, "application/json" if as_json else "application/xml",
                    content)
            return
        boundary = f"pac-{uuid.uuid4().hex}"
        content = b"".join(
            f"--{boundary}\r\nContent-Type: application/octet-stream\r\n"
            f'Content-Disposition: attachment; filename="{path.name}"\r\n'
            f"Content-ID: <{path.name}>\r\n\r\n".encode() + path.read_bytes() + b"\r\n"
            for path in files.values()) + f"--{boundary}--\r\n".encode()
        _answer(http, 200, f"multipart/mixed; boundary={boundary}", content)

    def _job_file(self, job_dir: Path, name: str) -> Path:
        path = Path(name) if os.path.isabs(name) else job_dir / name.lstrip("/")
        resolved = path.resolve()
        if resolved.parent != job_dir.resolve() or resolved.name.startswith("."):
            raise _HttpError(403, f"{name}: access to this file is not allowed.")
        if not resolved.is_file():
            raise _HttpError(404, f"{name}: No such file in the job directory.")
        return resolved


# --- wire formats --------------------------------------------------------------------------

def _submission_parts(content_type: str, body: bytes
                      ) -> tuple[str, dict[str, str], dict[str, bytes]]:
    """The application, the parameters and the uploaded files of a submission; every file
    a ``file`` parameter names must be attached."""
    if not content_type.lower().startswith("multipart/"):
        raise _HttpError(400, "A submission is multipart/mixed.")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    app, params, files, named = "", {}, {}, []
    for part in message.iter_parts():
        assert isinstance(part, EmailMessage)
        name = part.get_param("name", header="content-disposition")
        filename = part.get_filename()
        if filename:
            if "/" in filename or filename.startswith("."):
                raise _HttpError(400, f"{filename}: not a file name.")
            payload = part.get_payload(decode=True)
            files[filename] = payload if isinstance(payload, bytes) else b""
        elif name == "AppName":
            app = part.get_content().strip()
        elif name == "data":
            for param in part.iter_parts():
                assert isinstance(param, EmailMessage)
                name, value, kind = _app_param(param.get_content())
                params[name] = value
                if kind == "file":
                    named += [item.strip() for item in value.split(";") if item.strip()]
    missing = [name for name in named if name not in files]
    if missing:
        raise _HttpError(400, f"{missing[0]}: the file is not attached to the request.")
    return app, params, files


def _app_param(document: Any) -> tuple[str, str, str]:
    text = document.decode() if isinstance(document, bytes) else str(document)
    try:
        element = ET.fromstring(text)  # noqa: S314 - the test client's own XML
    except ET.ParseError:
        raise _HttpError(400, "A parameter is not a valid AppParam document.") from None
    name = (element.findtext("id") or "").strip()
    if not name:
        raise _HttpError(400, "A parameter has no id.")
    return name, element.findtext("value") or "", (element.findtext("type") or "").strip()


def _cookie_token(cookie: str) -> str | None:
    for item in cookie.split(";"):
        key, _, value = item.strip().partition("=")
        if key == "platform_token":  # a raw double quote cannot be in a cookie value
            return None if '"' in value else value.replace("#quote#", '"')
    return None


def _form(body: bytes) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(body.decode(errors="replace")).items()}


def _ids(text: str) -> list[int]:
    try:
        numbers = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise _HttpError(400, f"{text}: job IDs are positive integers.") from None
    if not numbers or any(n <= 0 for n in numbers):
        raise _HttpError(400, "The job ID cannot be 0.")
    return numbers


def _gmt(stamp: float | None) -> str:
    return "" if stamp is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))


def _mapped(value: Any) -> Any:
    """Jersey's mapped notation: a list of one element is written as the element."""
    if isinstance(value, Mapping):
        return {key: _mapped(item) for key, item in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        items = [_mapped(item) for item in value]
        return items[0] if len(items) == 1 else items
    return value


def _json(data: Mapping[str, Any]) -> bytes:
    return json.dumps(_mapped(data)).encode()


def _xml(root: str, data: Mapping[str, Any]) -> bytes:
    return ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
            + _element(root, data)).encode()


def _element(tag: str, value: Any) -> str:
    if isinstance(value, Mapping):
        attrs = "".join(f" {key[1:]}={quoteattr(str(item))}"
                        for key, item in value.items() if key.startswith("@"))
        inner = "".join(_element(key, item) for key, item in value.items()
                        if not key.startswith("@"))
        tag = "atom:link" if tag == "link" else tag
        return f"<{tag}{attrs}>{inner}</{tag}>" if inner else f"<{tag}{attrs}/>"
    if isinstance(value, Sequence) and not isinstance(value, str):
        return "".join(_element(tag, item) for item in value)
    if value == "":
        return f"<{tag}/>"
    return f"<{tag}>{escape(str(value), _QUOTES)}</{tag}>"


def _answer(http: BaseHTTPRequestHandler, status: int, content_type: str,
            content: bytes) -> None:
    http.send_response(status)
    http.send_header("Content-Type", content_type)
    http.send_header("Content-Length", str(len(content)))
    http.end_headers()
    http.wfile.write(content)
