"""The LSF commands of the LSF EMULATOR (:mod:`tests.emulators.lsf`): bsub, bjobs, bkill, bpeek.

Each command is a small Python script in ``bin/`` that sends its arguments, working
directory and environment (and, for ``bsub`` without a command, its standard input: the
job script) to the emulator over a Unix socket, then prints what the emulator answers
and exits with its code. The emulator reads the caller's uid from the socket
(``SO_PEERCRED``). ``profile.lsf`` puts ``bin/`` on the ``PATH``, as the profile an LSF
site's users source.

What they print follows the LSF 10.1 command reference: ``Job <N> is submitted to
queue <q>.`` (``default queue`` when ``-q`` is not given), ``<q>: No such queue. Job not
submitted.``; ``bjobs -o "fields" -json`` with ``COMMAND``, ``JOBS`` and ``RECORDS``,
upper-case field names and string values, an ``{"ERROR": "Job <N> is not found"}``
record per unknown id, exit code 255 when no id given was found; ``-hms`` for times with
seconds; ``Job <N> is being terminated``, ``Job <N>: Job has already finished``,
``Job <N>: No matching job found``; ``<< output from stdout >>`` before bpeek's output.
Times are printed in the caller's ``TZ`` when it is UTC (``UTC``, ``UTC0``, ``GMT``...),
else in this machine's local time. The emulator's own choices: an empty string for an
unset field in JSON (``-`` in tables), the ``EXIT_REASON`` text as ``TERM_X: text``,
exit code 255 for bkill and bpeek errors and for usage errors, and the wording of the
messages the reference does not show (unknown options and fields, ``Not yet started``).

Options: bsub ``-J -q -o -oo -e -eo -cwd -W -M -n -R -P -gpu -H`` and ``#BSUB`` lines at
the top of a script; bjobs ``-a -d -p -r -s -J -u -q -o -json -hms -noheader -w``; bkill
``-J`` and ids; bpeek ``-J`` and an id.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import os
import shlex
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tests.emulators.lsf_batch import TERM_REASONS, Batch, Caller, Job, Refused, Submission

__all__ = ["COMMANDS", "CommandServer", "Result", "parse_bsub_options", "run"]

COMMANDS = ("bsub", "bjobs", "bkill", "bpeek")
_CLIENT_PYTHON = "/usr/bin/python3"  # reachable by every user, unlike a virtualenv's
_UTC = frozenset({"UTC", "UTC0", "GMT", "GMT0", "UCT", "Etc/UTC", "Zulu"})


@dataclasses.dataclass(frozen=True, slots=True)
class Result:
    stdout: str = ""
    stderr: str = ""
    rc: int = 0


class UsageError(Exception):
    pass


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    """One command run: who, where, with what."""

    caller: Caller
    argv: list[str]
    cwd: str
    env: dict[str, str]
    stdin: str | None = None


def run(batch: Batch, command: str, request: Request) -> Result:
    handlers: dict[str, Callable[[Batch, Request], Result]] = {
        "bsub": _bsub, "bjobs": _bjobs, "bkill": _bkill, "bpeek": _bpeek}
    try:
        return handlers[command](batch, request)
    except UsageError as exc:
        return Result(stderr=f"{command}: {exc}\n", rc=255)


def needs_stdin(command: str, argv: Sequence[str]) -> bool:
    """Whether bsub will read its job script from standard input (no command given)."""
    if command != "bsub":
        return False
    try:
        _options, rest = parse_bsub_options(argv)
    except UsageError:
        return False
    return not rest


# --- bsub --------------------------------------------------------------------------------

_VALUED = {"-J", "-q", "-o", "-oo", "-e", "-eo", "-cwd", "-W", "-M", "-n", "-R", "-P", "-gpu"}
_FLAGS = {"-H"}


def parse_bsub_options(argv: Sequence[str]) -> tuple[dict[str, list[str]], list[str]]:
    """bsub's options (each with all its values) and the command that follows them."""
    options: dict[str, list[str]] = {}
    index = 0
    while index < len(argv) and argv[index].startswith("-"):
        option = argv[index]
        if option in _FLAGS:
            options.setdefault(option, []).append("")
            index += 1
        elif option in _VALUED:
            if index + 1 >= len(argv):
                raise UsageError(f"option requires an argument -- {option[1:]}")
            options.setdefault(option, []).append(argv[index + 1])
            index += 2
        else:
            raise UsageError(f"illegal option -- {option[1:]}\nUsage: bsub [options] "
                             "command [arguments]")
    return options, list(argv[index:])


def _script_options(script: str) -> list[str]:
    """The ``#BSUB`` options at the top of a job script (before its first command)."""
    found: list[str] = []
    for line in script.splitlines()[1:] if script.startswith("#!") else script.splitlines():
        stripped = line.strip()
        if stripped.startswith("#BSUB"):
            found += shlex.split(stripped[len("#BSUB"):])
        elif stripped and not stripped.startswith("#"):
            break
    return found


def submission(caller: Caller, options: dict[str, list[str]], command: str, cwd: str,
               env: dict[str, str]) -> Submission:
    """A Submission from bsub options; Refused with bsub's message when one is bad."""
    def last(option: str) -> str | None:
        values = options.get(option)
        return values[-1] if values else None

    job_cwd = last("-cwd")
    if job_cwd is not None and not os.path.isabs(job_cwd):
        job_cwd = os.path.join(cwd, job_cwd)
    output, overwrite_output = last("-oo"), True
    if output is None:
        output, overwrite_output = last("-o"), False
    error, overwrite_error = last("-eo"), True
    if error is None:
        error, overwrite_error = last("-e"), False
    return Submission(
        caller=caller, command=command, cwd=job_cwd or cwd, env=env, name=last("-J"),
        queue=last("-q"), explicit_cwd=job_cwd is not None, output=output, error=error,
        overwrite_output=overwrite_output, overwrite_error=overwrite_error,
        run_limit_min=_run_limit(last("-W")), memory_limit_kb=_memory_limit(last("-M")),
        slots=_slots(last("-n")), hold="-H" in options, project=last("-P"),
        resource_requirements=tuple(options.get("-R", ())), gpu=last("-gpu"))


def _run_limit(value: str | None) -> int | None:
    if value is None:
        return None
    hours, _, minutes = value.rpartition(":")
    try:
        total = int(hours or 0) * 60 + int(minutes)
    except ValueError:
        raise Refused(f"{value}: Bad RUNLIMIT specification. Job not submitted.") from None
    if total <= 0:
        raise Refused(f"{value}: Bad RUNLIMIT specification. Job not submitted.")
    return total


_UNITS_KB = {"": 1, "K": 1, "KB": 1, "M": 1024, "MB": 1024, "G": 1 << 20, "GB": 1 << 20,
             "T": 1 << 30, "TB": 1 << 30}


def _memory_limit(value: str | None) -> int | None:
    """-M in LSF_UNIT_FOR_LIMITS (KB by default) or with a unit: the limit in KB."""
    if value is None:
        return None
    digits = value.rstrip("KMGTBkmgtb")
    unit = value[len(digits):].upper()
    if not digits.isdigit() or unit not in _UNITS_KB or int(digits) <= 0:
        raise Refused(f"{value}: Bad memory limit specification. Job not submitted.")
    return int(digits) * _UNITS_KB[unit]


def _slots(value: str | None) -> int:
    if value is None:
        return 1
    low = value.split(",", 1)[0]
    if not low.isdigit() or int(low) < 1:
        raise Refused(f"{value}: Bad argument for option -n. Job not submitted.")
    return int(low)


def _bsub(batch: Batch, request: Request) -> Result:
    options, rest = parse_bsub_options(request.argv)
    if rest:
        command = " ".join(rest)
    else:
        command = request.stdin or ""
        if not command.strip():
            return Result(stderr="No command is specified. Job not submitted.\n", rc=255)
        script_options, _ = parse_bsub_options(_script_options(command))
        options = {**script_options, **options}
    try:
        job = batch.submit(submission(request.caller, options, command, request.cwd,
                                      request.env))
    except Refused as exc:
        return Result(stderr=f"{exc}\n", rc=255)
    where = "queue" if "-q" in options else "default queue"
    return Result(stdout=f"Job <{job.id}> is submitted to {where} <{job.queue}>.\n")


# --- bjobs -------------------------------------------------------------------------------

_ALIASES = {"id": "jobid", "name": "job_name", "cmd": "command"}
_FIELDS = ("jobid", "stat", "user", "queue", "job_name", "command", "from_host",
           "exec_host", "submit_time", "start_time", "finish_time", "exit_code",
           "exit_reason", "pend_reason", "run_time", "proj_name", "nreq_slot",
           "runtimelimit", "memlimit", "output_file", "error_file", "sub_cwd")
_DEFAULT_FIELDS = ("jobid", "user", "stat", "queue", "from_host", "exec_host", "job_name",
                   "submit_time")
_BJOBS_VALUED = {"-J", "-u", "-q", "-o"}
_BJOBS_FLAGS = {"-a", "-d", "-p", "-r", "-s", "-json", "-hms", "-noheader", "-w"}


def _bjobs(batch: Batch, request: Request) -> Result:
    flags, values, ids = _parse(request.argv, _BJOBS_FLAGS, _BJOBS_VALUED)
    fields = _fields(values.get("-o")) if "-o" in values else list(_DEFAULT_FIELDS)
    if "-json" in flags and "-o" not in values:
        raise UsageError("-json must be used with -o")
    as_json, hms = "-json" in flags, "-hms" in flags
    utc = request.env.get("TZ", "") in _UTC
    now = time.time()
    rows: list[dict[str, str] | str] = []
    missing = 0
    with batch.cond:
        if ids:
            for text in ids:
                job = batch.jobs.get(int(text)) if text.isdigit() else None
                if job is None:
                    rows.append(f"Job <{text}> is not found")
                    missing += 1
                else:
                    rows.append(_row(batch, job, fields, now, utc=utc, hms=hms))
        else:
            for job in sorted(batch.jobs.values(), key=lambda j: j.id):
                if _selected(job, request.caller, flags, values):
                    rows.append(_row(batch, job, fields, now, utc=utc, hms=hms))
    rc = 255 if ids and missing == len(ids) else 0
    if as_json:
        return Result(stdout=_json_document(fields, rows), rc=rc)
    jobs = [row for row in rows if isinstance(row, dict)]
    errors = "".join(f"{row}\n" for row in rows if isinstance(row, str))
    if not jobs:
        if not ids:
            errors += "No job found\n" if flags & {"-a", "-d"} else "No unfinished job found\n"
        return Result(stderr=errors, rc=rc)
    return Result(stdout=_table(fields, jobs, header="-noheader" not in flags),
                  stderr=errors, rc=rc)


def _parse(argv: Sequence[str], flags: set[str], valued: set[str]
           ) -> tuple[set[str], dict[str, str], list[str]]:
    seen: set[str] = set()
    values: dict[str, str] = {}
    rest: list[str] = []
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg in flags:
            seen.add(arg)
        elif arg in valued:
            if index + 1 >= len(argv):
                raise UsageError(f"option requires an argument -- {arg[1:]}")
            values[arg] = argv[index + 1]
            index += 1
        elif arg.startswith("-"):
            raise UsageError(f"illegal option -- {arg[1:]}")
        else:
            rest.append(arg)
        index += 1
    return seen, values, rest


def _fields(spec: str) -> list[str]:
    fields = []
    for word in spec.split():
        if word.startswith("delimiter="):
            continue
        name = _ALIASES.get(word.split(":", 1)[0].lower(), word.split(":", 1)[0].lower())
        if name not in _FIELDS:
            raise UsageError(f"{name}: Illegal field name in the output format")
        fields.append(name)
    return fields


def _selected(job: Job, caller: Caller, flags: set[str], values: dict[str, str]) -> bool:
    user = values.get("-u", caller.name)
    if user != "all" and job.sub.caller.name != user:
        return False
    if "-q" in values and job.queue != values["-q"]:
        return False
    if "-J" in values and not fnmatch.fnmatchcase(job.name, values["-J"]):
        return False
    wanted = [state for flag, state in (("-p", {"PEND", "PSUSP"}), ("-r", {"RUN"}),
                                        ("-s", {"USUSP", "SSUSP", "PSUSP"}),
                                        ("-d", {"DONE", "EXIT"})) if flag in flags]
    if wanted:
        return any(job.status in states for states in wanted)
    return "-a" in flags or not job.finished


def _row(batch: Batch, job: Job, fields: Sequence[str], now: float, *, utc: bool,
         hms: bool) -> dict[str, str]:
    def when(stamp: float | None) -> str:
        return "" if stamp is None else format_time(stamp, utc=utc, hms=hms)

    sub = job.sub
    started = job.start_time is not None and job.stat not in ("PEND", "PSUSP")
    run_time = 0 if job.start_time is None else (job.finish_time or now) - job.start_time
    reason = "" if job.term_reason is None else \
        f"{job.term_reason}: {TERM_REASONS[job.term_reason][1]}"
    value = {
        "jobid": str(job.id), "stat": job.stat, "user": sub.caller.name, "queue": job.queue,
        "job_name": job.name, "command": "; ".join(sub.command.strip().splitlines()),
        "from_host": batch.hostname, "exec_host": batch.hostname if started else "",
        "submit_time": when(job.submit_time), "start_time": when(job.start_time),
        "finish_time": when(job.finish_time),
        "exit_code": "" if job.exit_code is None else str(job.exit_code),
        "exit_reason": reason,
        "pend_reason": batch.pend_reason(job),
        "run_time": _duration(int(run_time), hms),
        "proj_name": sub.project or "default", "nreq_slot": str(sub.slots),
        "runtimelimit": "" if sub.run_limit_min is None else f"{sub.run_limit_min:.1f}",
        "memlimit": "" if sub.memory_limit_kb is None else f"{sub.memory_limit_kb} Kbytes",
        "output_file": sub.output or "", "error_file": sub.error or "", "sub_cwd": sub.cwd,
    }
    return {name: value[name] for name in fields}


def format_time(stamp: float, *, utc: bool, hms: bool) -> str:
    moment = time.gmtime(stamp) if utc else time.localtime(stamp)
    return time.strftime("%b %e %H:%M:%S" if hms else "%b %e %H:%M", moment)


def _duration(seconds: int, hms: bool) -> str:
    if hms:
        return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    return f"{seconds} second(s)"


def _json_document(fields: Sequence[str], rows: Sequence[dict[str, str] | str]) -> str:
    records: list[dict[str, str]] = []
    for row in rows:
        if isinstance(row, str):
            records.append({"ERROR": row})
        else:
            records.append({name.upper(): row[name] for name in fields})
    document = {"COMMAND": "bjobs", "JOBS": len(records), "RECORDS": records}
    return json.dumps(document, indent=2, separators=(",", ":")) + "\n"


def _table(fields: Sequence[str], rows: Sequence[dict[str, str]], *, header: bool) -> str:
    table = [[name.upper() for name in fields]] if header else []
    table += [[row[name] or "-" for name in fields] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(fields))]
    return "".join(" ".join(cell.ljust(width) for cell, width in zip(line, widths,
                                                                       strict=True)).rstrip()
                   + "\n" for line in table)


# --- bkill and bpeek ---------------------------------------------------------------------

def _bkill(batch: Batch, request: Request) -> Result:
    _flags, values, ids = _parse(request.argv, set(), {"-J"})
    targets = [(text, int(text) if text.isdigit() else None) for text in ids]
    if "-J" in values:
        with batch.cond:
            targets += [(str(job.id), job.id) for job in batch.jobs.values()
                        if fnmatch.fnmatchcase(job.name, values["-J"]) and not job.finished
                        and job.sub.caller.uid == request.caller.uid]
        if not targets:
            return Result(stderr=f"Job <{values['-J']}>: No matching job found\n", rc=255)
    if not targets:
        raise UsageError("a job ID or -J job_name is required")
    out, err = [], []
    for text, job_id in targets:
        if job_id is None:
            err.append(f"{text}: Illegal job ID.")
            continue
        try:
            out.append(batch.kill(job_id, request.caller))
        except Refused as exc:
            err.append(str(exc))
    return Result(stdout="".join(f"{line}\n" for line in out),
                  stderr="".join(f"{line}\n" for line in err), rc=255 if err else 0)


def _bpeek(batch: Batch, request: Request) -> Result:
    _flags, values, ids = _parse(request.argv, set(), {"-J"})
    if "-J" in values:
        with batch.cond:
            matches = [job.id for job in batch.jobs.values()
                       if fnmatch.fnmatchcase(job.name, values["-J"])]
        if not matches:
            return Result(stderr=f"Job <{values['-J']}> is not found\n", rc=255)
        ids = [str(max(matches))]
    if len(ids) != 1 or not ids[0].isdigit():
        raise UsageError("give one job ID")
    try:
        return Result(stdout=batch.peek(int(ids[0]), request.caller))
    except Refused as exc:
        return Result(stderr=f"{exc}\n", rc=255)


# --- the commands' executables and their socket -----------------------------------------

_CLIENT = '''#!{python} -I
"""{command}: an LSF command of the hpc-bridge LSF EMULATOR (not IBM's)."""
import json, os, socket, sys

def _send(stream, message):
    stream.write(json.dumps(message).encode() + b"\\n")
    stream.flush()

def main():
    try:
        cwd = os.getcwd()
    except OSError:
        cwd = "/"
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect({socket_path!r})
    except OSError:
        sys.stderr.write("LSF is down. Please wait ...\\n")
        return 255
    stream = sock.makefile("rwb")
    _send(stream, {{"command": {command!r}, "argv": sys.argv[1:], "cwd": cwd,
                   "env": dict(os.environ)}})
    answer = json.loads(stream.readline())
    if answer.get("stdin"):
        data = sys.stdin.buffer.read().decode("utf-8", "surrogateescape")
        _send(stream, {{"stdin": data}})
        answer = json.loads(stream.readline())
    sys.stdout.write(answer["stdout"])
    sys.stderr.write(answer["stderr"])
    return answer["rc"]

sys.exit(main())
'''

_PROFILE = '''# LSF environment of the hpc-bridge LSF EMULATOR: source it (. {path}).
LSF_ENVDIR={conf}
PATH={bin}:$PATH
export LSF_ENVDIR PATH
'''


class CommandServer:
    """The commands' executables and the Unix socket they reach the emulator through."""

    def __init__(self, batch: Batch, root: Path) -> None:
        self.batch = batch
        self.count = 0
        self._lock = threading.Lock()
        self.socket_path = root / "mbatchd.sock"
        self.bin_dir = root / "bin"
        self.bin_dir.mkdir(mode=0o755)
        conf = root / "conf"
        conf.mkdir(mode=0o755)
        (conf / "lsf.conf").write_text(
            f"LSF_UNIT_FOR_LIMITS=KB\nLSB_STDOUT_DIRECT={'Y' if batch.stdout_direct else 'N'}"
            f"\n# lsb.params\nCLEAN_PERIOD={batch.clean_period_s:g}\n"
            f"JOB_TERMINATE_INTERVAL={batch.terminate_interval_s:g}\n")
        for command in COMMANDS:
            path = self.bin_dir / command
            python = _CLIENT_PYTHON if os.path.exists(_CLIENT_PYTHON) else "/usr/bin/env python3"
            path.write_text(_CLIENT.format(python=python, command=command,
                                           socket_path=str(self.socket_path)))
            path.chmod(0o755)
        self.profile = root / "profile.lsf"
        self.profile.write_text(_PROFILE.format(path=self.profile, conf=conf,
                                                bin=self.bin_dir))
        self.profile.chmod(0o644)
        self._server = socketserver.ThreadingUnixStreamServer(str(self.socket_path),
                                                              self._handler())
        self._server.daemon_threads = True
        self.socket_path.chmod(0o666)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        name="lsf-commands", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.socket_path.unlink(missing_ok=True)

    def _handler(self) -> type[socketserver.StreamRequestHandler]:
        server = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                server.serve(self.connection, self.rfile, self.wfile)

        return Handler

    def serve(self, connection: socket.socket, rfile: Any, wfile: Any) -> None:
        credentials = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                            struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", credentials)
        line = rfile.readline()
        if not line:
            return
        message = json.loads(line)
        command, argv = message["command"], [str(arg) for arg in message["argv"]]
        with self._lock:
            self.count += 1
        stdin = None
        if needs_stdin(command, argv):
            _send(wfile, {"stdin": True})
            stdin = json.loads(rfile.readline())["stdin"]
        request = Request(Caller.of_uid(uid), argv, str(message["cwd"]),
                          {str(k): str(v) for k, v in message["env"].items()}, stdin)
        result = run(self.batch, command, request)
        _send(wfile, {"stdout": result.stdout, "stderr": result.stderr, "rc": result.rc})


def _send(wfile: Any, message: dict[str, Any]) -> None:
    wfile.write(json.dumps(message).encode() + b"\n")
    wfile.flush()
