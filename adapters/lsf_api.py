"""IBM Spectrum LSF's wire shapes, read and written without any I/O.

Two ways in, one meaning:

* the LSF Application Center (PAC) web services: an XML logon body, a token sent back as
  the cookie ``platform_token`` (its double quotes written ``#quote#``), a
  ``multipart/mixed`` submission of the ``generic`` application, and JSON answers in the
  shape Jersey's "mapped" notation gives PAC's XML: no root element, attributes prefixed
  with ``@``, every value a string, and a list of one element written as that element;
* the LSF commands: ``bsub`` answers ``Job <123> is submitted to queue <normal>.`` and
  ``bjobs -o "..." -json`` a document whose ``RECORDS`` carry upper-case keys and string
  values, with an ``ERROR`` record for every id LSF does not know.

Both sides produce a :class:`JobRecord`; :func:`observe` maps it to the bridge's states.
"""

from __future__ import annotations

import calendar
import dataclasses
import datetime
import email.parser
import email.policy
import hashlib
import json
import math
import re
import shlex
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from xml.sax.saxutils import escape

from adapters.base import Observation
from hpcbridge.model import Reason, Resources, State

__all__ = [
    "BJOBS_FIELDS",
    "WEB_APPLICATION",
    "WEB_OUTPUT_FILE",
    "WEB_SCRIPT_FILE",
    "JobRecord",
    "bsub_options",
    "cookie_token",
    "error_message",
    "is_job_id",
    "job_script",
    "logon_body",
    "map_state",
    "observe",
    "parse_bjobs_json",
    "parse_bsub_output",
    "parse_cli_time",
    "parse_download",
    "parse_logon",
    "parse_submitted_id",
    "parse_web_jobs",
    "run_limit_minutes",
    "web_submission",
]

#: The ``bjobs -o`` fields the adapter reads, in LSF's field names.
BJOBS_FIELDS = "jobid stat exit_code exit_reason job_name submit_time start_time finish_time"
#: Application Center's built-in application that runs a command line.
WEB_APPLICATION = "generic"
#: Names of the job script uploaded to, and of the output written in, the PAC job directory.
WEB_SCRIPT_FILE = "hpcbridge-job.sh"
WEB_OUTPUT_FILE = "hpcbridge-job.out"

_MAX_JOB_ID = 2_147_483_646  # the largest MAX_JOBID lsb.params accepts
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TOKEN_WORD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def is_job_id(text: str) -> bool:
    """Whether ``text`` can be an LSF job id (a positive integer in LSF's range)."""
    return text.isascii() and text.isdigit() and 0 < int(text) <= _MAX_JOB_ID


# --- states ----------------------------------------------------------------------------

# PSUSP is a job suspended while it was still pending: it has never run, so to the bridge
# it is still waiting (QUEUED), and native_state keeps the difference.
_STATES: dict[str, State] = {
    "PEND": State.QUEUED,
    "WAIT": State.QUEUED,
    "PROV": State.QUEUED,
    "PSUSP": State.QUEUED,
    "RUN": State.RUNNING,
    "USUSP": State.SUSPENDED,
    "SSUSP": State.SUSPENDED,
    "DONE": State.SUCCEEDED,
    "EXIT": State.FAILED,
    "ZOMBI": State.UNKNOWN,
    "UNKWN": State.UNKNOWN,
}
# Termination reasons (lsbatch.h TERM_*, shown by bjobs -o exit_reason and logged as
# exitInfo) that say more than "the job exited with a non-zero code".
_CANCELLED = frozenset({"TERM_OWNER", "TERM_ADMIN", "TERM_FORCE_OWNER", "TERM_FORCE_ADMIN"})
_REASONS: dict[str, Reason] = {
    "TERM_RUNLIMIT": Reason.TIMEOUT,
    "TERM_DEADLINE": Reason.TIMEOUT,
    "TERM_MEMLIMIT": Reason.OUT_OF_MEMORY,
    "TERM_SWAP": Reason.OUT_OF_MEMORY,
    "TERM_PREEMPT": Reason.PREEMPTED,
    "TERM_RC": Reason.NODE_FAILURE,
    "TERM_REMOVE_HUNG_JOB": Reason.NODE_FAILURE,
    **{name: Reason.CANCELLED for name in _CANCELLED},
}
# exitInfo, the termination reason as a number (lsb.acct JOB_FINISH; lsbatch.h).
_EXIT_INFO: dict[int, str] = {
    1: "TERM_PREEMPT", 5: "TERM_RUNLIMIT", 6: "TERM_DEADLINE", 8: "TERM_FORCE_OWNER",
    9: "TERM_FORCE_ADMIN", 14: "TERM_OWNER", 15: "TERM_ADMIN", 16: "TERM_MEMLIMIT",
    20: "TERM_SWAP", 26: "TERM_REMOVE_HUNG_JOB", 34: "TERM_RC",
}
_TERM = re.compile(r"\bTERM_[A-Z_]+")


def map_state(stat: str, term_reason: str | None) -> tuple[State, Reason | None]:
    """The bridge's state (and reason) for an LSF ``STAT`` and termination reason."""
    state = _STATES.get(stat, State.UNKNOWN)
    if state is State.FAILED:
        reason = _REASONS.get(term_reason or "", Reason.EXIT_CODE)
        return (State.CANCELLED if reason is Reason.CANCELLED else state), reason
    return state, None


@dataclasses.dataclass(frozen=True, slots=True)
class JobRecord:
    """One job as LSF reports it, from either way in."""

    job_id: str
    stat: str
    name: str | None = None
    exit_code: int | None = None
    term_reason: str | None = None
    submitted_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None


def observe(record: JobRecord) -> Observation:
    state, reason = map_state(record.stat, record.term_reason)
    exit_code = None
    if state is State.SUCCEEDED:
        exit_code = 0
    elif state.terminal:
        exit_code = record.exit_code
    return Observation(
        state=state, native_state=record.stat or "UNKNOWN", exit_code=exit_code,
        reason=reason,
        started_at=record.started_at if state is not State.QUEUED else None,
        finished_at=record.finished_at if state.terminal else None)


# --- the job script --------------------------------------------------------------------

def job_script(*, job_id: str, script: str | None, command: Sequence[str] | None,
               environment: Mapping[str, str], working_dir: str | None) -> str:
    """The ``/bin/sh`` script LSF runs for a request: a file, never a command line.

    Every value the request carries (arguments, environment values, the working
    directory) is single-quoted, and a script travels verbatim in a quoted here-document
    whose delimiter does not occur in it, so nothing a client sends is ever expanded.
    """
    if (script is None) == (command is None):
        raise ValueError("give exactly one of script or command")
    lines = ["#!/bin/sh", f"# hpc-bridge job {_word(job_id)}"]
    if working_dir is not None:
        lines.append(f"cd -- {shlex.quote(working_dir)} || exit 1")
    for name, value in environment.items():
        if not _ENV_NAME.match(name):
            raise ValueError(f"{name!r} is not an environment variable name")
        lines.append(f"{name}={shlex.quote(value)}; export {name}")
    if command is not None:
        if not command:
            raise ValueError("the command is empty")
        lines.append("exec " + " ".join(shlex.quote(arg) for arg in command))
        return "\n".join(lines) + "\n"
    assert script is not None
    body = script if script.endswith("\n") else script + "\n"
    delimiter = _delimiter(body)
    run = '"$hb_script"' if script.startswith("#!") else '/bin/sh "$hb_script"'
    lines += [
        'hb_script=$(mktemp "${TMPDIR:-/tmp}/hpcbridge.XXXXXX") || exit 1',
        "trap 'rm -f \"$hb_script\"' EXIT",
        f"cat > \"$hb_script\" <<'{delimiter}'",
    ]
    return "\n".join(lines) + "\n" + body + "\n".join(
        [delimiter, 'chmod 700 "$hb_script"', run]) + "\n"


def _delimiter(body: str) -> str:
    lines = set(body.splitlines())
    delimiter = "HPCBRIDGE_" + hashlib.sha256(body.encode()).hexdigest()[:16].upper()
    while delimiter in lines:
        delimiter += "_"
    return delimiter


def _word(text: str) -> str:
    """``text`` if it is a plain word (letters, digits, ``._-``), else ValueError."""
    if not _TOKEN_WORD.match(text):
        raise ValueError(f"{text!r} is not allowed here")
    return text


def run_limit_minutes(resources: Resources) -> int | None:
    """LSF run limits are whole minutes: a time limit is rounded up to the next one."""
    if resources.time_limit_s is None:
        return None
    return max(1, math.ceil(resources.time_limit_s / 60))


def bsub_options(resources: Resources, *, account: str | None) -> list[str]:
    """The ``bsub`` options for a request's resources (besides name, queue, run limit).

    Only integers and validated words go in, so the list can become a command line.
    """
    options: list[str] = []
    if account is not None:
        options += ["-P", _word(account)]
    slots = (resources.tasks or 1) * (resources.cpus_per_task or 1)
    if resources.nodes is not None:
        slots = max(slots, resources.nodes)
    if slots > 1:
        options += ["-n", str(slots)]
    if resources.nodes == 1:
        options += ["-R", "span[hosts=1]"]
    elif resources.nodes is not None:
        options += ["-R", f"span[ptile={math.ceil(slots / resources.nodes)}]"]
    if resources.memory_mb is not None:
        options += ["-M", f"{resources.memory_mb}MB"]
    if resources.gpus:
        options += ["-gpu", f"num={resources.gpus}"]
    return options


# --- the command line: bsub and bjobs --------------------------------------------------

_SUBMITTED = re.compile(r"Job <(\d+)> is submitted to (?:default )?queue <[^>]*>\.")


def parse_bsub_output(text: str) -> str | None:
    """The job id in ``bsub``'s answer, or None if it did not submit a job."""
    found = _SUBMITTED.search(text)
    return found.group(1) if found else None


def parse_bjobs_json(text: str, *, now: float | None = None) -> dict[str, JobRecord]:
    """The jobs of ``bjobs -o ... -json`` by id; ``ERROR`` records (unknown ids) are skipped.

    Raises ValueError if ``text`` is not such a document.
    """
    document = json.loads(text)
    if not isinstance(document, Mapping) or not isinstance(document.get("RECORDS"), list):
        raise ValueError("not a bjobs -json document")
    now = time.time() if now is None else now
    found: dict[str, JobRecord] = {}
    for item in document["RECORDS"]:
        if not isinstance(item, Mapping) or "ERROR" in item:
            continue
        job_id = _text(item.get("JOBID"))
        if job_id is None or not is_job_id(job_id):
            continue
        found[job_id] = JobRecord(
            job_id=job_id,
            stat=_text(item.get("STAT")) or "",
            name=_text(item.get("JOB_NAME")),
            exit_code=_integer(item.get("EXIT_CODE")),
            term_reason=_term_reason(item.get("EXIT_REASON")),
            submitted_at=parse_cli_time(item.get("SUBMIT_TIME"), now),
            started_at=parse_cli_time(item.get("START_TIME"), now),
            finished_at=parse_cli_time(item.get("FINISH_TIME"), now))
    return found


_CLI_TIME = re.compile(
    r"^(?P<month>[A-Z][a-z]{2})\s+(?P<day>\d{1,2})\s+(?P<hour>\d{1,2}):(?P<minute>\d{2})"
    r"(?::(?P<second>\d{2}))?(?:\s+(?P<year>\d{4}))?(?:\s+[A-Z])?$")
_MONTHS = {name: number for number, name in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}


def parse_cli_time(value: Any, now: float) -> float | None:
    """A time as the LSF commands print it, read as UTC (the adapter runs them with TZ=UTC0).

    ``Jul  2 17:07``, ``Jul  2 17:07:33`` (``-hms``), either with a year, and with the
    one-letter mark bjobs may append (``E`` for an estimate). Without a year the time is
    the latest one not more than a day after ``now``.
    """
    text = _text(value)
    found = _CLI_TIME.match(text.strip()) if text else None
    if found is None or found["month"] not in _MONTHS:
        return None
    fields = (_MONTHS[found["month"]], int(found["day"]), int(found["hour"]),
              int(found["minute"]), int(found["second"] or 0))
    year = int(found["year"]) if found["year"] else time.gmtime(now).tm_year
    try:
        stamp = _utc(year, *fields)
        if not found["year"] and stamp > now + 86400:
            stamp = _utc(year - 1, *fields)
    except ValueError:  # no such day (Feb 30), or no Feb 29 that year
        return None
    return stamp


def _utc(*fields: int) -> float:
    return datetime.datetime(*fields, tzinfo=datetime.UTC).timestamp()


def _term_reason(value: Any) -> str | None:
    text = _text(value)
    found = _TERM.search(text) if text else None
    return found.group(0) if found else None


# --- the web services ------------------------------------------------------------------

def logon_body(user: str, password: str) -> str:
    """The XML body of ``POST ws/logon``; both values escaped, never interpolated raw."""
    return f"<User><name>{escape(user)}</name><pass>{escape(password)}</pass></User>"


def parse_logon(body: Any) -> str | None:
    """The token of a JSON logon answer (``{"token": ...}``, or wrapped in ``User``)."""
    if isinstance(body, Mapping) and isinstance(body.get("User"), Mapping):
        body = body["User"]
    token = body.get("token") if isinstance(body, Mapping) else None
    return token.strip() if isinstance(token, str) and token.strip() else None


def cookie_token(token: str) -> str:
    """The token as the cookie carries it: PAC wants its double quotes as ``#quote#``."""
    return token.replace('"', "#quote#")


def error_message(body: Any) -> str | None:
    """The message of an error answer (``{"message": ...}``, or PAC's older ``errMsg``)."""
    if isinstance(body, Mapping):
        for key in ("message", "errMsg", "error"):
            value = body.get(key)
            if isinstance(value, Mapping):
                value = value.get("message")
            if isinstance(value, str) and value.strip():
                return value.strip()
    return None


def web_submission(params: Mapping[str, str], files: Mapping[str, bytes],
                   file_param: str) -> tuple[str, bytes]:
    """Content type and body of ``POST ws/jobs/submit`` for the ``generic`` application.

    The body follows the documented layout: an ``AppName`` part, a ``data`` part that is
    itself ``multipart/mixed`` with one ``<AppParam>`` per parameter (values escaped),
    then one part per uploaded file, named in the ``file_param`` parameter.
    """
    outer, inner = _boundary(), _boundary()
    data = [_part(inner, [f'Content-Disposition: form-data; name="{_word(name)}"',
                          "Content-Type: application/xml; charset=UTF-8",
                          "Content-Transfer-Encoding: 8bit"],
                  _app_param(name, value, "").encode())
            for name, value in params.items()]
    if files:
        data.append(_part(inner, [f'Content-Disposition: form-data; name="{_word(file_param)}"',
                                  "Content-Type: application/xml; charset=UTF-8",
                                  "Content-Transfer-Encoding: 8bit"],
                          _app_param(file_param, ";".join(map(_word, files)), "file").encode()))
    parts = [
        _part(outer, ['Content-Disposition: form-data; name="AppName"',
                      "Content-ID: <AppName>"], WEB_APPLICATION.encode()),
        _part(outer, ['Content-Disposition: form-data; name="data"',
                      f"Content-Type: multipart/mixed; boundary={inner}",
                      "Content-ID: <data>"],
              b"".join(data) + f"--{inner}--\r\n".encode()),
    ]
    for name, content in files.items():
        parts.append(_part(outer, [
            f'Content-Disposition: form-data; name="{name}"; filename="{name}"',
            "Content-Type: application/octet-stream",
            "Content-Transfer-Encoding: binary",
            f"Content-ID: <{name}>"], content))
    body = b"".join(parts) + f"--{outer}--\r\n".encode()
    return f"multipart/mixed; boundary={outer}", body


def _boundary() -> str:
    return f"hpcbridge-{uuid.uuid4().hex}"


def _part(boundary: str, headers: list[str], content: bytes) -> bytes:
    head = f"--{boundary}\r\n" + "".join(f"{line}\r\n" for line in headers) + "\r\n"
    return head.encode() + content + b"\r\n"


def _app_param(name: str, value: str, kind: str) -> str:
    return (f"<AppParam><id>{escape(name)}</id><value>{escape(value)}</value>"
            f"<type>{kind}</type></AppParam>")


def parse_submitted_id(body: Any) -> str | None:
    """The job id of a JSON submission answer (``{"id": "123"}``)."""
    if isinstance(body, Mapping) and isinstance(body.get("job"), Mapping):
        body = body["job"]
    value = _text(body.get("id")) if isinstance(body, Mapping) else None
    return value if value is not None and is_job_id(value) else None


def parse_web_jobs(body: Any) -> dict[str, JobRecord]:
    """The jobs of a JSON job list (``ws/jobs/{ids}``, ``ws/jobs?jobname=``) by id.

    Reads detailed (``job``) and basic (``pseudoJob``) records alike; a list of one job
    comes as the job itself.
    """
    found: dict[str, JobRecord] = {}
    for item in _items(body, ("job", "pseudoJob", "Job")):
        job_id = _text(item.get("jobId", item.get("id")))
        if job_id is None or not is_job_id(job_id):
            continue
        exit_info = _integer(item.get("exitInfo"))
        found[job_id] = JobRecord(
            job_id=job_id,
            stat=_text(item.get("jobStatus", item.get("status"))) or "",
            name=_text(item.get("jobName", item.get("name"))),
            exit_code=decode_wait_status(_integer(item.get("exitStatus"))),
            term_reason=_EXIT_INFO.get(exit_info) if exit_info is not None else None,
            submitted_at=_iso_time(item.get("submitTimeGMT")),
            started_at=_iso_time(item.get("startTimeGMT")),
            finished_at=_iso_time(item.get("endTimeGMT")))
    return found


def decode_wait_status(status: int | None) -> int | None:
    """A shell-style exit code from LSF's exitStatus, a wait(2) status: 768 is exit 3."""
    if status is None or status < 0:
        return None
    if status & 0x7F:
        return 128 + (status & 0x7F)
    return (status >> 8) & 0xFF


def _items(body: Any, keys: Sequence[str]) -> Iterator[Mapping[str, Any]]:
    if not isinstance(body, Mapping):
        return
    for key in keys:
        value = body.get(key)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, Mapping):
                yield item


def _iso_time(value: Any) -> float | None:
    text = _text(value)
    if not text:
        return None
    try:
        return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))
    except ValueError:
        return None


def parse_download(content_type: str, body: bytes) -> dict[str, bytes]:
    """The files of a ``multipart/mixed`` download answer, by file name."""
    if not content_type.lower().startswith("multipart/"):
        raise ValueError(f"not a multipart answer: {content_type!r}")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    files: dict[str, bytes] = {}
    for part in message.iter_parts():
        name = part.get_filename() or (part.get("Content-ID") or "").strip("<> ")
        payload = part.get_payload(decode=True)
        if name and isinstance(payload, bytes):
            files[name.rsplit("/", 1)[-1]] = payload
    return files


# --- values ----------------------------------------------------------------------------

def _text(value: Any) -> str | None:
    """A string field; LSF writes every value as a string, ``""`` or ``-`` when unset."""
    if isinstance(value, bool) or value is None:
        return None
    text = str(value).strip()
    return text if text and text != "-" else None


def _integer(value: Any) -> int | None:
    text = _text(value)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return None
