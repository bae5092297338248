"""``hpc-bridge``: run the dev stack, submit jobs, watch and cancel them.

Events go to a broker (``--broker``, ``HPCBRIDGE_BROKER``, or the running dev stack);
state is read from Redis (``--redis``, ``REDIS_URL``, or the running dev stack).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from hpcbridge import events
from hpcbridge.model import JobRequest, JobStatus, RequestError, job_id_for_event
from hpcbridge.store import Store, StoreUnavailable

_SOURCE = "/hpc-bridge/cli"
_COLUMNS = ("job_id", "target", "state", "native_id", "native_state", "exit_code", "reason",
            "updated")
_FOLLOW_WIDTHS = (28, 10, 10, 10, 13, 9, 12, 8)


class CliError(Exception):
    """A message for the user, printed without a traceback; exit status 2."""


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except CliError as exc:
        print(f"hpc-bridge: {exc}", file=sys.stderr)
        return 2
    except StoreUnavailable as exc:
        print(f"hpc-bridge: {exc} (is the dev stack running? start it with "
              "'hpc-bridge dev')", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130



def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hpc-bridge",
        description="Run HPC, AI and quantum jobs from cloud-native pipelines.",
        epilog="Start with 'hpc-bridge dev --demo' to see a job go from ACCEPTED to SUCCEEDED.")
    parser.add_argument("--broker", help="broker URL to send events to "
                        "(default: $HPCBRIDGE_BROKER, else the running dev stack)")
    parser.add_argument("--redis", help="Redis URL to read state from "
                        "(default: $REDIS_URL, else the running dev stack)")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    dev = commands.add_parser("dev", help="run the whole bridge locally",
                              description="Start Redis (embedded unless $REDIS_URL is set), "
                              "the three functions, a broker and a poll ticker on loopback.")
    dev.add_argument("--targets", default=os.environ.get("HPCBRIDGE_TARGETS"),
                     help="targets YAML file (default: one 'local' target)")
    dev.add_argument("--tick", type=float, default=1.0, help="seconds between poll ticks")
    dev.add_argument("--demo", action="store_true",
                     help="submit one job, show it run to its end, then stop")
    dev.set_defaults(run=_dev)

    submit = commands.add_parser("submit", help="submit a job",
                                 description="Send hpcbridge.job.requested to the broker.")
    submit.add_argument("--target", default="local", help="target name (default: local)")
    what = submit.add_mutually_exclusive_group(required=True)
    what.add_argument("--script", type=Path, help="batch script file to run")
    what.add_argument("--command", nargs=argparse.REMAINDER,
                      help="the program and its arguments (everything after --command)")
    submit.add_argument("--name", help="a readable job name")
    submit.add_argument("--job-id", help="the job id (default: derived from the event)")
    submit.add_argument("--queue", help="queue or partition")
    submit.add_argument("--time-limit", type=int, help="time limit in seconds")
    submit.add_argument("--wait", action="store_true",
                        help="follow the job to its end and exit with its exit code")
    submit.set_defaults(run=_submit)

    status = commands.add_parser("status", help="show a job and its history")
    status.add_argument("job_id")
    status.add_argument("--output", choices=("table", "json"), default="table")
    status.set_defaults(run=_status)

    listing = commands.add_parser("list", help="list recent jobs, newest first")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--output", choices=("table", "json"), default="table")
    listing.set_defaults(run=_list)

    cancel = commands.add_parser("cancel", help="cancel a job")
    cancel.add_argument("job_id")
    cancel.add_argument("--wait", action="store_true", help="wait until the job has ended")
    cancel.set_defaults(run=_cancel)
    return parser


# -- where things are ----------------------------------------------------------------------

def _dev_state() -> dict[str, Any]:
    from hpcbridge.dev import state_file

    try:
        return json.loads(state_file().read_text())
    except (OSError, ValueError):
        return {}


def _broker(args: argparse.Namespace) -> str:
    url = args.broker or os.environ.get("HPCBRIDGE_BROKER") or _dev_state().get("broker")
    if not url:
        raise CliError("no broker: give --broker, set HPCBRIDGE_BROKER, or run 'hpc-bridge dev'")
    return url


def _store(args: argparse.Namespace) -> Store:
    url = args.redis or os.environ.get("REDIS_URL") or _dev_state().get("redis_url")
    if not url:
        raise CliError("no Redis: give --redis, set REDIS_URL, or run 'hpc-bridge dev'")
    return Store.from_url(url, os.environ.get("HPCBRIDGE_REDIS_PREFIX") or "hpcbridge:")


def _send(broker: str, event_type: str, data: dict[str, Any]) -> events.CloudEvent:
    event = events.CloudEvent({"type": event_type, "source": _SOURCE, "id": uuid.uuid4().hex,
                               "datacontenttype": "application/json"}, data)
    headers, body = events.encode(event)
    try:
        answer = httpx.post(broker, headers=headers, content=body, timeout=30)
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach the broker at {broker}: {type(exc).__name__}") from None
    if not answer.is_success:
        raise CliError(f"the broker refused the event: {answer.status_code} {answer.text}")
    return event


# -- commands ------------------------------------------------------------------------------

def _dev(args: argparse.Namespace) -> int:
    from hpcbridge.dev import DevStack, state_file

    stack = DevStack(redis_url=os.environ.get("REDIS_URL"), targets_file=args.targets,
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
            return _demo(args, stack.describe())
        print("Submit with: hpc-bridge submit --command echo hello --wait   (Ctrl-C stops)",
              flush=True)
        threading.Event().wait()
        return 0
    finally:
        path.unlink(missing_ok=True)
        stack.stop()


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally that stops the stack


def _demo(args: argparse.Namespace, stack: dict[str, Any]) -> int:
    args.broker, args.redis = stack["broker"], stack["redis_url"]
    request = {"target": "local", "name": "demo",
               "command": ["sh", "-c", "echo hello from hpc-bridge on $(hostname); sleep 2"]}
    event = _send(args.broker, events.REQUESTED, request)
    job_id = job_id_for_event(event["source"], event["id"])
    print(f"submitted {job_id}")
    status = _follow(_store(args), job_id, timeout_s=120)
    return 0 if status.exit_code == 0 and status.state == "SUCCEEDED" else 1


def _submit(args: argparse.Namespace) -> int:
    request: dict[str, Any] = {"target": args.target}
    if args.script is not None:
        try:
            request["script"] = args.script.read_text()
        except OSError as exc:
            raise CliError(f"cannot read {args.script}: {exc.strerror}") from None
    else:
        if not args.command:
            raise CliError("--command needs a program")
        request["command"] = args.command
    for key, value in (("name", args.name), ("job_id", args.job_id), ("queue", args.queue)):
        if value is not None:
            request[key] = value
    if args.time_limit is not None:
        request["resources"] = {"time_limit_s": args.time_limit}
    try:
        JobRequest.from_dict(request)
    except RequestError as exc:
        raise CliError(f"invalid job: {exc}") from None
    event = _send(_broker(args), events.REQUESTED, request)
    job_id = args.job_id or job_id_for_event(event["source"], event["id"])
    print(job_id, flush=True)
    if not args.wait:
        return 0
    status = _follow(_store(args), job_id)
    if status.exit_code is not None:
        return status.exit_code
    return 0 if status.state == "SUCCEEDED" else 1


def _status(args: argparse.Namespace) -> int:
    store = _store(args)
    job = store.load(args.job_id)
    if job is None:
        raise CliError(f"no job {args.job_id}")
    if args.output == "json":
        print(json.dumps(job.status.to_dict(), indent=2))
        return 0
    _print_table([job.status])
    print()
    print("history:")
    for entry in store.history(args.job_id):
        extra = " ".join(f"{k}={entry[k]}" for k in ("native_state", "reason", "note")
                         if entry.get(k))
        print(f"  {_time(entry.get('at'))}  {entry['state']:<10} {extra}".rstrip())
    return 0


def _list(args: argparse.Namespace) -> int:
    store = _store(args)
    jobs = store.load_many(store.recent(args.limit))
    statuses = [job.status for job in jobs.values()]
    if args.output == "json":
        print(json.dumps([s.to_dict() for s in statuses], indent=2))
    else:
        _print_table(statuses)
    return 0


def _cancel(args: argparse.Namespace) -> int:
    store = _store(args)
    job = store.load(args.job_id)
    if job is None:
        raise CliError(f"no job {args.job_id}")
    if job.status.state.terminal:
        print(f"{args.job_id} already ended: {job.status.state}")
        return 0
    _send(_broker(args), events.CANCEL, {"job_id": args.job_id})
    print(f"cancel requested for {args.job_id}")
    if args.wait:
        _follow(store, args.job_id)
    return 0


# -- display -------------------------------------------------------------------------------

def _time(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%H:%M:%S")


def _row(status: JobStatus) -> list[str]:
    values = status.to_dict()
    values["updated"] = _time(status.updated_at)
    return ["-" if values.get(c) is None else str(values[c]) for c in _COLUMNS]


def _print_table(statuses: Sequence[JobStatus]) -> None:
    rows = [[c.upper() for c in _COLUMNS]] + [_row(s) for s in statuses]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
              .rstrip())


def _follow(store: Store, job_id: str, timeout_s: float = 24 * 3600) -> JobStatus:
    """Print a row each time the job's state changes; return its terminal status."""
    deadline = time.monotonic() + timeout_s
    last: tuple[Any, ...] | None = None
    header = True
    while time.monotonic() < deadline:
        job = store.load(job_id)
        if job is not None:
            key = (job.status.state, job.status.native_state)
            if key != last:
                rows = [_row(job.status)]
                if header:
                    rows.insert(0, [c.upper() for c in _COLUMNS])
                    header = False
                for row in rows:
                    print("  ".join(cell.ljust(width) for cell, width
                                    in zip(row, _FOLLOW_WIDTHS, strict=True)).rstrip(),
                          flush=True)
                last = key
            if job.status.state.terminal:
                return job.status
        time.sleep(0.2)
    raise CliError(f"gave up waiting for {job_id}")


if __name__ == "__main__":
    sys.exit(main())
