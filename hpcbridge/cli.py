"""``hpc-bridge``: run the dev stack; submit, follow, list and cancel jobs; read their logs.

Events go to a broker (``--broker``, ``HPCBRIDGE_BROKER``, or the running dev stack);
state is read from Redis (``--redis``, ``REDIS_URL``, or the running dev stack) or, given a
kubeconfig and no Redis, from the Kubernetes mirror. Every command but ``dev`` is a thin
layer over :mod:`hpcbridge.client`, which does the work.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import yaml

from hpcbridge.client import Client, ClientError, TargetReport, exit_code
from hpcbridge.model import JobStatus, State
from hpcbridge.store import StoreUnavailable

_SOURCE = "/hpc-bridge/cli"
_COLUMNS = ("job_id", "target", "state", "native_id", "native_state", "exit_code", "reason",
            "updated")
_WATCH_COLUMNS = ("job_id", "target", "state", "native_id", "native_state", "age")
_FOLLOW_WIDTHS = (28, 10, 10, 10, 13, 9, 12, 8)
_RAW = argparse.RawDescriptionHelpFormatter


class CliError(Exception):
    """A message for the user, printed without a traceback; exit status 2."""


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (CliError, ClientError) as exc:
        print(f"hpc-bridge: {exc}", file=sys.stderr)
        return 2
    except StoreUnavailable as exc:
        print(f"hpc-bridge: {exc} (is the dev stack running? start it with "
              "'hpc-bridge dev')", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `hpc-bridge list | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        return 130


# -- the command line ----------------------------------------------------------------------

_MAIN_HELP = """\
Run jobs on HPC managers (Slurm, this machine, ...) from cloud-native pipelines: one
CloudEvent in, the job's states and exit code out.

  hpc-bridge dev                                   # the whole bridge here; keep it running
  hpc-bridge submit --wait --command sh -c 'echo hi; exit 3'   # exits 3, like the job
  hpc-bridge list --state RUNNING --label team=physics
  hpc-bridge logs JOB --follow
  hpc-bridge watch                                 # the active jobs, live
  hpc-bridge targets                               # is every manager answering?
"""

_MAIN_EPILOG = """\
where things are (each option also works after the command):
  broker    --broker, else $HPCBRIDGE_BROKER, else the running dev stack
  state     --redis, else --kubeconfig (the Kubernetes mirror), else $REDIS_URL, else the
            dev stack's Redis, else the mirror through $KUBECONFIG or ~/.kube/config
  targets   --targets, else $HPCBRIDGE_TARGETS, else the dev stack's, else 'local'

Errors print one sentence and exit 2. Start with 'hpc-bridge dev --demo'.
"""


def _common() -> argparse.ArgumentParser:
    """Options every command takes, before or after its name."""
    common = argparse.ArgumentParser(add_help=False)
    where = common.add_argument_group("where the bridge is")
    suppress = argparse.SUPPRESS
    where.add_argument("--broker", default=suppress, metavar="URL",
                       help="broker to send events to (default: $HPCBRIDGE_BROKER, else the "
                       "running dev stack)")
    where.add_argument("--redis", default=suppress, metavar="URL",
                       help="Redis to read job state from (default: $REDIS_URL, else the "
                       "running dev stack)")
    where.add_argument("--kubeconfig", default=suppress, metavar="FILE",
                       help="read job state from the Kubernetes mirror (the bridge's "
                       "ConfigMaps) through this kubeconfig instead of Redis")
    where.add_argument("-n", "--namespace", default=suppress,
                       help="Kubernetes namespace: where the mirror is read (default: all), "
                       "and for submit, where the job's mirror goes")
    where.add_argument("--targets", default=suppress, metavar="FILE",
                       help="the bridge's targets YAML, to read logs and ask managers "
                       "(default: $HPCBRIDGE_TARGETS, else the dev stack's)")
    return common


def _output() -> argparse.ArgumentParser:
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table",
                        help="table for people; json or yaml for programs (a job is its "
                        "JobStatus fields)")
    return output


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _natural(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, not {value}")
    return value


def _state(text: str) -> State:
    try:
        return State(text.upper())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a state (one of {', '.join(State)})") from None


def _seconds(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    common, output = _common(), _output()
    parser = argparse.ArgumentParser(prog="hpc-bridge", description=_MAIN_HELP,
                                     epilog=_MAIN_EPILOG, formatter_class=_RAW,
                                     parents=[common])
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    def command(name: str, summary: str, description: str, epilog: str,
                *parents: argparse.ArgumentParser) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=summary, description=description,
                                   epilog=epilog, formatter_class=_RAW,
                                   parents=[common, *parents])

    dev = command("dev", "run the whole bridge locally", """\
Start Redis (a private redis-server, or the one $REDIS_URL names), the three functions
under functions-framework, a broker and a poll ticker, all on loopback. Other commands in
other terminals find it through its state file.""", """\
examples:
  hpc-bridge dev                         # keep it running; Ctrl-C stops everything
  hpc-bridge dev --targets targets.yaml  # your own targets (see README: Targets)
  hpc-bridge dev --demo                  # submit one job, show it to its end, stop""")
    dev.add_argument("--tick", type=_seconds, default=1.0, help="seconds between poll ticks")
    dev.add_argument("--demo", action="store_true",
                     help="submit one job, show it run to its end, then stop")
    dev.set_defaults(run=_dev)

    submit = command("submit", "submit a job", """\
Send hpcbridge.job.requested to the broker and print the job id. The job comes from
flags, or from --file (a JobRequest in YAML or JSON) with flags overriding its fields.""",
                     """\
examples:
  hpc-bridge submit --command echo hello           # prints the job id
  hpc-bridge submit --wait --command sh -c 'exit 3'   # follows it; exits 3, like the job
  hpc-bridge submit --target hpc --script job.sh --time-limit 600 --label team=physics
  hpc-bridge submit --wait --collect result.csv --command ./analyse   # then: outputs JOB
  hpc-bridge submit --file job.yaml --name rerun-7 --wait -o json | jq .exit_code

job.yaml (any JobRequest field: see README, Event contract):
  target: hpc
  script: |
    #!/bin/sh
    srun ./simulate
  resources: {nodes: 2, time_limit_s: 3600}
  labels: {team: physics}

--command takes the rest of the line, so it comes last. With --wait the exit status is
the job's exit code (0 when it succeeded, 1 when it failed without one); on a terminal one
line shows the state, native state and elapsed time, elsewhere a row per change.""", output)
    submit.add_argument("-f", "--file", metavar="FILE",
                        help="a JobRequest document, YAML or JSON ('-' reads stdin)")
    submit.add_argument("--target", help="target name (default: the file's, else local)")
    what = submit.add_mutually_exclusive_group()
    what.add_argument("--script", type=Path, help="batch script file to run")
    what.add_argument("--command", nargs=argparse.REMAINDER,
                      help="the program and its arguments (everything after --command)")
    submit.add_argument("--name", help="a readable job name")
    submit.add_argument("--job-id", help="the job id (default: derived from the event); "
                        "submitting the same id again gives the same job")
    submit.add_argument("--queue", help="queue or partition")
    submit.add_argument("--account", help="account to charge")
    submit.add_argument("--working-dir", metavar="DIR", help="absolute working directory")
    submit.add_argument("--time-limit", type=_positive, metavar="S",
                        help="time limit in seconds")
    for flag, field in (("--nodes", "nodes"), ("--tasks", "tasks"),
                        ("--cpus-per-task", "cpus_per_task"), ("--memory-mb", "memory_mb")):
        submit.add_argument(flag, type=_positive, metavar="N", help=f"resources.{field}")
    submit.add_argument("--gpus", type=_natural, metavar="N", help="resources.gpus")
    submit.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                        help="a label (repeatable); list --label finds the job by it")
    submit.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable of the job (repeatable)")
    submit.add_argument("--collect", action="append", default=[], metavar="PATH",
                        help="a file to collect when the job ends, relative to its working "
                             "directory (repeatable); see 'hpc-bridge outputs'")
    submit.add_argument("--wait", action="store_true",
                        help="follow the job to its end and exit with its exit code")
    submit.add_argument("--timeout", type=_seconds, metavar="S",
                        help="with --wait: give up (exit 2) after this many seconds")
    submit.set_defaults(run=_submit)

    status = command("status", "show a job and its history", """\
Show a job's status and the history of its states.""", """\
examples:
  hpc-bridge status j-7bc808427d41c3f77fca7cb4
  hpc-bridge status JOB -o json | jq -r .state

From the Kubernetes mirror the history is the Events the bridge recorded on the job's
proxy pod (Kubernetes keeps them for an hour).""", output)
    status.add_argument("job_id", metavar="JOB")
    status.set_defaults(run=_status)

    listing = command("list", "list jobs, newest first", """\
List jobs, newest first. Filters of one kind match any of their values; different
kinds must all match.""", """\
examples:
  hpc-bridge list
  hpc-bridge list --state RUNNING --state QUEUED --target hpc
  hpc-bridge list --label team=physics --label run=42 --limit 5 -o yaml""", output)
    listing.add_argument("--target", action="append", default=[],
                         help="only jobs on this target (repeatable)")
    listing.add_argument("--state", action="append", default=[], type=_state,
                         help=f"only jobs in this state (repeatable): {', '.join(State)}")
    listing.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                         help="only jobs whose request has this label (repeatable)")
    listing.add_argument("--limit", type=_positive, default=50,
                         help="at most this many jobs (default: 50)")
    listing.set_defaults(run=_list)

    logs = command("logs", "print a job's output", """\
Print the job's output, fetched now from its manager through the job's target (so the
targets file must be the bridge's: --targets, $HPCBRIDGE_TARGETS or the dev stack's).""",
                   """\
examples:
  hpc-bridge logs JOB
  hpc-bridge logs JOB --tail 20
  hpc-bridge logs JOB --follow       # new output as it comes, until the job ends
  hpc-bridge logs JOB --stored       # the tail the bridge keeps; no manager access needed

--follow prints complete lines while the job runs and the rest when it ends; it re-reads
the log from the manager every half second. --stored prints the last lines the poll tick
keeps in Redis and the job's ConfigMap (refreshed while the job runs, final at its end).""")
    logs.add_argument("job_id", metavar="JOB")
    logs.add_argument("-f", "--follow", action="store_true",
                      help="keep printing new output until the job has ended")
    logs.add_argument("--tail", type=_natural, metavar="N", help="only the last N lines")
    logs.add_argument("--stored", action="store_true",
                      help="the log tail the bridge keeps, instead of asking the manager")
    logs.set_defaults(run=_logs)

    outputs = command("outputs", "list or fetch the files a job left", """\
List the output files a finished job named in its request (`outputs`) and where the
bridge keeps each (Redis, or s3://bucket/key), or fetch them.""", """\
examples:
  hpc-bridge outputs JOB                         # path, size, where (or why not collected)
  hpc-bridge outputs JOB --get result.csv > result.csv
  hpc-bridge outputs JOB --to ./results          # every collected file, paths kept

Files in a bucket are fetched with the bucket settings of this environment
(HPCBRIDGE_S3_*); each is checked against the digest recorded when it was collected.""",
                      output)
    outputs.add_argument("job_id", metavar="JOB")
    fetch = outputs.add_mutually_exclusive_group()
    fetch.add_argument("--get", metavar="PATH", help="write this file's content to stdout")
    fetch.add_argument("--to", type=Path, metavar="DIR",
                       help="write every collected file under DIR")
    outputs.set_defaults(run=_outputs)

    cancel = command("cancel", "cancel a job", """\
Send hpcbridge.job.cancel for a job that has not ended.""", """\
examples:
  hpc-bridge cancel JOB
  hpc-bridge cancel JOB --wait       # until the manager has stopped it""", output)
    cancel.add_argument("job_id", metavar="JOB")
    cancel.add_argument("--wait", action="store_true", help="wait until the job has ended")
    cancel.set_defaults(run=_cancel)

    watch = command("watch", "show the active jobs, live", """\
Show the jobs that have not ended, refreshed in place on a terminal. Elsewhere a new
table is printed whenever a job changes (json: one array per line; yaml: one document
per change).""", """\
examples:
  hpc-bridge watch
  hpc-bridge watch --target hpc --interval 5
  hpc-bridge watch --once -o json     # one snapshot, for scripts""", output)
    watch.add_argument("--target", action="append", default=[],
                       help="only jobs on this target (repeatable)")
    watch.add_argument("--interval", type=_seconds, default=1.0, metavar="S",
                       help="seconds between refreshes (default: 1)")
    watch.add_argument("--once", action="store_true", help="print one frame and stop")
    watch.set_defaults(run=_watch)

    targets = command("targets", "show the targets and whether they answer", """\
Show each target of the targets file: its kind, whether its manager answers, and how many
of its jobs are active. Each manager is asked one cheap question, all at once: its
capacity when its adapter reports one (Slurm: GET /nodes with the bridge's token, so a
refused token shows too; local: its work directory is usable), else for a job by a tag no
job carries (LSF, IBM Quantum), else what a poll tick asks (Flux).""", """\
examples:
  hpc-bridge targets
  hpc-bridge targets --targets /etc/hpc-bridge/targets.yaml -o json

Exits 1 when a manager does not answer.""", output)
    targets.set_defaults(run=_targets)
    return parser


# -- plumbing ------------------------------------------------------------------------------

def _client(args: argparse.Namespace) -> Client:
    return Client(broker=getattr(args, "broker", None), redis_url=getattr(args, "redis", None),
                  targets_file=getattr(args, "targets", None),
                  kubeconfig=getattr(args, "kubeconfig", None),
                  namespace=getattr(args, "namespace", None), source=_SOURCE,
                  notice=lambda message: print(f"hpc-bridge: {message}", file=sys.stderr))


def _pairs(values: Sequence[str], flag: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        key, equals, item = value.partition("=")
        if not equals or not key:
            raise CliError(f"{flag} wants KEY=VALUE, not {value!r}")
        pairs[key] = item
    return pairs


def _dump(data: Any, output: str, stream: TextIO | None = None) -> None:
    stream = stream or sys.stdout
    if output == "json":
        stream.write(json.dumps(data, indent=2) + "\n")
    else:
        stream.write(yaml.safe_dump(data, sort_keys=False, default_flow_style=False))
    stream.flush()


# -- commands ------------------------------------------------------------------------------

def _dev(args: argparse.Namespace) -> int:
    from hpcbridge.dev import DevStack, state_file

    targets = getattr(args, "targets", None) or os.environ.get("HPCBRIDGE_TARGETS")
    stack = DevStack(redis_url=os.environ.get("REDIS_URL"), targets_file=targets,
                     tick_s=args.tick)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    stack.start()
    path = state_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(stack.describe(), indent=2))
        print(f"hpc-bridge dev stack up: broker {stack.broker.url if stack.broker else '?'}, "
              f"redis {stack.redis_url}, logs in {stack.log_dir}", flush=True)
        if args.demo:
            return _demo(stack.describe())
        print("Submit with: hpc-bridge submit --command echo hello --wait   (Ctrl-C stops)",
              flush=True)
        threading.Event().wait()
        return 0
    finally:
        path.unlink(missing_ok=True)
        stack.stop()


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally that stops the stack


def _demo(stack: Mapping[str, Any]) -> int:
    request = {"target": "local", "name": "demo",
               "command": ["sh", "-c", "echo hello from hpc-bridge on $(hostname); sleep 2"]}
    with Client(broker=stack["broker"], redis_url=stack["redis_url"],
                targets_file=stack.get("targets_file"), source=_SOURCE) as client:
        job_id = client.submit(request)
        print(f"submitted {job_id}")
        status = _wait(client, job_id, sys.stdout, timeout_s=120)
    return exit_code(status)


def _request(args: argparse.Namespace) -> dict[str, Any]:
    """The JobRequest of ``submit``: the file's, with the flags on top."""
    data: dict[str, Any] = _document(args.file) if args.file else {}
    if args.target:
        data["target"] = args.target
    data.setdefault("target", "local")
    if args.script is not None:
        try:
            data["script"] = args.script.read_text()
        except OSError as exc:
            raise CliError(f"cannot read {args.script}: {exc.strerror}") from None
        data.pop("command", None)
    elif args.command is not None:
        if not args.command:
            raise CliError("--command needs a program")
        data["command"] = args.command
        data.pop("script", None)
    elif "script" not in data and "command" not in data:
        raise CliError("what should the job run? give --command, --script or --file")
    for key, value in (("name", args.name), ("job_id", args.job_id), ("queue", args.queue),
                       ("account", args.account), ("working_dir", args.working_dir),
                       ("namespace", getattr(args, "namespace", None))):
        if value is not None:
            data[key] = value
    resources = {key: value for key, value in (
        ("time_limit_s", args.time_limit), ("nodes", args.nodes), ("tasks", args.tasks),
        ("cpus_per_task", args.cpus_per_task), ("memory_mb", args.memory_mb),
        ("gpus", args.gpus)) if value is not None}
    if args.collect:
        data["outputs"] = [*(data.get("outputs") or []), *args.collect]
    for field, extra in (("resources", resources), ("labels", _pairs(args.label, "--label")),
                         ("environment", _pairs(args.env, "--env"))):
        if extra:
            base = data.get(field)
            data[field] = {**(base if isinstance(base, Mapping) else {}), **extra}
    return data


def _document(name: str) -> dict[str, Any]:
    try:
        text = sys.stdin.read() if name == "-" else Path(name).read_text()
    except OSError as exc:
        raise CliError(f"cannot read {name}: {exc.strerror}") from None
    try:
        document = json.loads(text) if name.endswith(".json") else yaml.safe_load(text)
    except ValueError as exc:
        raise CliError(f"{name} is not valid JSON: {exc}") from None
    except yaml.YAMLError as exc:
        raise CliError(f"{name} is not valid YAML: {exc}") from None
    if not isinstance(document, dict):
        raise CliError(f"{name} must hold one JobRequest: a mapping with 'target' and "
                       "'script' or 'command'")
    return document


def _submit(args: argparse.Namespace) -> int:
    request = _request(args)
    structured = args.output != "table"
    with _client(args) as client:
        job_id = client.submit(request)
        if not args.wait:
            if structured:
                _dump({"job_id": job_id}, args.output)
            else:
                print(job_id, flush=True)
            return 0
        if not structured:
            print(job_id, flush=True)
        status = _wait(client, job_id, sys.stderr if structured else sys.stdout,
                       timeout_s=args.timeout)
    if structured:
        _dump(status.to_dict(), args.output)
    return exit_code(status)


def _status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        status = client.status(args.job_id)
        if args.output != "table":
            _dump(status.to_dict(), args.output)
            return 0
        _print_table([status])
        history = client.history(args.job_id)
        mirror = client.reads == "mirror"
    print()
    print("history (Events of the proxy pod):" if mirror else "history:")
    for entry in history:
        extra = " ".join(f"{k}={entry[k]}" for k in ("native_state", "reason", "note")
                         if entry.get(k))
        print(f"  {_time(entry.get('at'))}  {entry['state']:<10} {extra}".rstrip())
    return 0


def _list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        statuses = client.jobs(targets=args.target, states=args.state,
                               labels=_pairs(args.label, "--label"), limit=args.limit)
    if args.output != "table":
        _dump([s.to_dict() for s in statuses], args.output)
    elif statuses:
        _print_table(statuses)
    else:
        print("no jobs", file=sys.stderr)
    return 0


def _logs(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.stored:
            if args.follow:
                raise CliError("--stored and --follow do not go together")
            text = client.log_tail(args.job_id)
            if args.tail is not None:
                text = "".join(text.splitlines(keepends=True)[-args.tail:] if args.tail else [])
            sys.stdout.write(text)
            sys.stdout.flush()
            return 0
        if not args.follow:
            sys.stdout.write(client.logs(args.job_id, args.tail))
            sys.stdout.flush()
            return 0
        for chunk in client.follow_logs(args.job_id, tail=args.tail):
            sys.stdout.write(chunk)
            sys.stdout.flush()
    return 0


def _outputs(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.get is not None:
            sys.stdout.buffer.write(client.output(args.job_id, args.get))
            sys.stdout.flush()
            return 0
        collected = client.outputs(args.job_id)
        if args.to is not None:
            for path, entry in collected.items():
                if "error" in entry:
                    print(f"hpc-bridge: skipped {path}: {entry['error']}", file=sys.stderr)
                    continue
                target = _inside(args.to, path)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(client.output(args.job_id, path))
                print(target)
            return 0
    if args.output != "table":
        _dump(collected, args.output)
    elif collected:
        _print_rows(("PATH", "BYTES", "WHERE"),
                    [[path, str(entry.get("bytes", "-")),
                      entry.get("location") or f"not collected: {entry.get('error')}"]
                     for path, entry in collected.items()])
    else:
        print(f"{args.job_id} has no collected outputs (none named, or it has not ended)",
              file=sys.stderr)
    return 0


def _inside(directory: Path, path: str) -> Path:
    """``directory/path``, refusing a path that would leave ``directory``."""
    base = directory.resolve()
    target = (base / path).resolve()
    if not target.is_relative_to(base) or target == base:
        raise CliError(f"output path {path!r} would be written outside {directory}")
    return target


def _cancel(args: argparse.Namespace) -> int:
    structured = args.output != "table"
    with _client(args) as client:
        before = client.cancel(args.job_id)
        if before.state.terminal:
            if structured:
                _dump(before.to_dict(), args.output)
            else:
                print(f"{args.job_id} already ended: {before.state}")
            return 0
        if not structured:
            print(f"cancel requested for {args.job_id}", flush=True)
        status = _wait(client, args.job_id, sys.stderr if structured else sys.stdout) \
            if args.wait else client.status(args.job_id)
    if structured:
        _dump(status.to_dict(), args.output)
    return 0


def _watch(args: argparse.Namespace) -> int:
    stream = sys.stdout
    live = stream.isatty() and not args.once
    last: list[tuple[Any, ...]] | None = None
    with _client(args) as client:
        while True:
            statuses = client.active(targets=args.target)
            shown = [(s.job_id, s.state, s.native_state, s.native_id) for s in statuses]
            if live or args.once or shown != last:
                if args.output == "table":
                    frame = _frame(statuses, client.reads_from)
                    stream.write(("\x1b[H\x1b[2J" if live else "" if last is None else "\n")
                                 + frame)
                elif args.once:
                    _dump([s.to_dict() for s in statuses], args.output, stream)
                elif args.output == "json":
                    stream.write(json.dumps([s.to_dict() for s in statuses]) + "\n")
                else:
                    stream.write("---\n" + yaml.safe_dump([s.to_dict() for s in statuses],
                                                          sort_keys=False))
                stream.flush()
            if args.once:
                return 0
            last = shown
            time.sleep(args.interval)


def _targets(args: argparse.Namespace) -> int:
    with _client(args) as client:
        reports = client.targets()
    if args.output != "table":
        _dump([r.to_dict() for r in reports], args.output)
    else:
        _print_rows(("NAME", "KIND", "ANSWERS", "ACTIVE", "DETAIL"),
                    [_target_row(r) for r in reports])
    return 1 if any(r.answers is False for r in reports) else 0


# -- display -------------------------------------------------------------------------------

def _time(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%H:%M:%S")


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _row(status: JobStatus, columns: Sequence[str] = _COLUMNS) -> list[str]:
    values = status.to_dict()
    values["updated"] = _time(status.updated_at)
    if status.submitted_at is not None:
        values["age"] = _duration(time.time() - status.submitted_at)
    return ["-" if values.get(c) is None else str(values[c]) for c in columns]


def _print_rows(header: Sequence[str], rows: Sequence[Sequence[str]],
                stream: TextIO | None = None) -> None:
    table = [list(header), *map(list, rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
              .rstrip(), file=stream or sys.stdout)


def _print_table(statuses: Sequence[JobStatus]) -> None:
    _print_rows([c.upper() for c in _COLUMNS], [_row(s) for s in statuses])


def _frame(statuses: Sequence[JobStatus], where: str) -> str:
    count = f"{len(statuses)} active job{'' if len(statuses) == 1 else 's'}"
    lines = [f"{count} at {_time(time.time())} UTC, from {where}"]
    if statuses:
        rows = [[c.upper() for c in _WATCH_COLUMNS],
                *(_row(s, _WATCH_COLUMNS) for s in statuses)]
        widths = [max(len(row[i]) for row in rows) for i in range(len(_WATCH_COLUMNS))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                  for row in rows]
    return "\n".join(lines) + "\n"


def _target_row(report: TargetReport) -> list[str]:
    answers = "yes" if report.answers else "no"
    active = "-" if report.active is None else str(report.active)
    return [report.name, report.kind, answers, active, report.detail or "-"]


class _Progress:
    """What ``--wait`` shows: on a terminal, one line rewritten in place with the state,
    the native state and the elapsed time; elsewhere, a table row per change."""

    def __init__(self, stream: TextIO, job_id: str) -> None:
        self.stream = stream
        self.job_id = job_id
        self.tty = stream.isatty()
        self._header = True
        self._open = False
        self._since = time.time()

    def poll(self, status: JobStatus | None) -> None:
        if not self.tty:
            return
        if status is None:
            text = (f"{self.job_id}  waiting for the bridge to record it  "
                    f"{_duration(time.time() - self._since)}")
        else:
            begun = status.submitted_at or self._since
            end = status.finished_at if status.state.terminal and status.finished_at \
                else time.time()
            text = (f"{self.job_id}  {status.state:<10} {status.native_state or '-':<12} "
                    f"{_duration(end - begun)}")
            if status.state.terminal and status.exit_code is not None:
                text += f"  exit code {status.exit_code}"
            if status.reason is not None:
                text += f" ({status.reason})"
        width = shutil.get_terminal_size().columns
        self.stream.write("\r\x1b[K" + text[:max(20, width - 1)])
        self.stream.flush()
        self._open = True

    def change(self, status: JobStatus) -> None:
        if self.tty:
            return
        rows = [_row(status)]
        if self._header:
            rows.insert(0, [c.upper() for c in _COLUMNS])
            self._header = False
        for row in rows:
            self.stream.write("  ".join(cell.ljust(width) for cell, width
                                        in zip(row, _FOLLOW_WIDTHS, strict=True)).rstrip()
                              + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False


def _wait(client: Client, job_id: str, stream: TextIO,
          timeout_s: float | None = None) -> JobStatus:
    progress = _Progress(stream, job_id)
    try:
        return client.wait(job_id, timeout_s=timeout_s, on_change=progress.change,
                           on_poll=progress.poll)
    finally:
        progress.close()


if __name__ == "__main__":
    sys.exit(main())
