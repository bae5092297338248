"""Cold start and memory: the three functions beside a no-op function, in the same run.

Every function runs under functions-framework (gunicorn, one worker) on loopback, in a
virtual environment that holds only what the image installs (``pip install .``, see the
Containerfile): the test tools installed beside the bridge here (Ray's OpenTelemetry,
which redis-py imports when it finds it) would otherwise be imported too.

* Cold start: process start to the first answered event, median of several starts, the
  four functions alternating so that all see the same machine. Twice: with the
  Kubernetes mirror off (no cluster configured) and on (a kubeconfig pointing at the
  KubeApiEmulator, as in a cluster, where the mirror is on by default: the ``kubernetes``
  client is imported on the first event). The target is ``local``: submit runs ``true``,
  poll ticks, cancel gets a job id it does not know.
* Memory: resident set size (VmRSS from /proc) of the gunicorn worker after its first
  answer and after 1,000 events, with the mirror on, against the real Slurm cluster:
  submit gets 1,000 job requests (held partition: the jobs stay queued), cancel gets
  1,000 cancels (900 jobs, then 100 redeliveries), poll gets 1,000 ticks over the 100
  jobs left, the no-op gets 1,000 events; 4 senders at once, but one for the ticks.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench._instruments import children, rss_kib
from bench._servers import ServerProcess, write_kubeconfig
from hpcbridge import events
from tests.services.redis_server import RedisServer, free_port
from tests.services.slurm import SlurmCluster

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS = ("noop", "submit", "poll", "cancel")
ROUNDS = 7
EVENTS = 1000
START_TIMEOUT_S = 60
#: per function: stop sending events after this long (the report says how many were sent)
EVENTS_LIMIT_S = 150


def _source(name: str) -> Path:
    if name == "noop":
        return ROOT / "bench" / "noop" / "main.py"
    return ROOT / "functions" / name / "main.py"


class Function:
    """One function under functions-framework; stopped by its pid."""

    def __init__(self, name: str, env: Mapping[str, str], python: str) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            [python, "-m", "functions_framework", "--source", str(_source(name)),
             "--target", name, "--host", "127.0.0.1", "--port", str(self.port)],
            env=dict(env), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.client = httpx.Client(timeout=120)

    def first_answer(self, event: events.CloudEvent) -> tuple[float, httpx.Response]:
        """Send ``event`` as soon as the port answers; seconds since the process started."""
        headers, body = events.encode(event)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                answer = self.client.post(self.url, headers=headers, content=body)
                return time.perf_counter() - self.started, answer
            except httpx.TransportError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"{self.name} did not start") from None
                time.sleep(0.005)

    def send(self, event: events.CloudEvent) -> httpx.Response:
        headers, body = events.encode(event)
        return self.client.post(self.url, headers=headers, content=body)

    def worker_rss_kib(self) -> int:
        """VmRSS of the gunicorn worker (the master's child that serves requests)."""
        workers = children(self.process.pid)
        if not workers:
            raise RuntimeError(f"{self.name}: no gunicorn worker under {self.process.pid}")
        return sum(rss_kib(pid) for pid in workers)

    def stop(self) -> None:
        self.client.close()
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextlib.contextmanager
def running(name: str, env: Mapping[str, str], python: str) -> Iterator[Function]:
    function = Function(name, env, python)
    try:
        yield function
    finally:
        function.stop()


def _event(kind: str, data: Any = None) -> events.CloudEvent:
    attributes = {"type": kind, "source": "/bench/cold-start", "id": uuid.uuid4().hex}
    if data is not None:
        attributes["datacontenttype"] = "application/json"
    return events.CloudEvent(attributes, data)


def _first_event(name: str, target: str) -> events.CloudEvent:
    if name == "submit":
        return _event(events.REQUESTED, {"target": target, "command": ["true"]})
    if name == "poll":
        return _event(events.TICK)
    if name == "cancel":
        return _event(events.CANCEL, {"job_id": f"j-unknown-{uuid.uuid4().hex[:12]}"})
    return _event("bench.noop")


def cold_starts(env: Mapping[str, str], rounds: int, python: str
                ) -> dict[str, dict[str, Any]]:
    """Median seconds to the first answer per function, rounds alternating."""
    seen: dict[str, list[float]] = {name: [] for name in FUNCTIONS}
    for _ in range(rounds):
        for name in FUNCTIONS:
            with running(name, env, python) as function:
                elapsed, answer = function.first_answer(_first_event(name, "local"))
                if answer.status_code != 200:
                    raise RuntimeError(f"{name} answered {answer.status_code}: {answer.text}")
                seen[name].append(elapsed)
    noop = statistics.median(seen["noop"])
    return {name: {"median_s": statistics.median(values), "all_s": values,
                   "ratio": statistics.median(values) / noop}
            for name, values in seen.items()}


def memory(env: Mapping[str, str], target: str, events_count: int, python: str
           ) -> dict[str, dict[str, Any]]:
    """Worker RSS after the first answer and after ``events_count`` events, per function."""
    results: dict[str, dict[str, Any]] = {}
    job_ids = [f"m-{i:05d}-{uuid.uuid4().hex[:8]}" for i in range(events_count)]
    script = "#!/bin/sh\ntrue\n"

    def measure(name: str, make: Any, senders: int = 4) -> None:
        """Event 0, then the rest from ``senders`` concurrent clients (as Knative
        delivers), until ``events_count`` or :data:`EVENTS_LIMIT_S`."""
        with running(name, env, python) as function:
            started = time.perf_counter()
            _, answer = function.first_answer(make(0))
            first = function.worker_rss_kib()
            statuses = {answer.status_code: 1}
            deadline = time.monotonic() + EVENTS_LIMIT_S
            lock = threading.Lock()

            def send(i: int) -> None:
                if time.monotonic() > deadline:
                    return
                code = function.send(make(i)).status_code
                with lock:
                    statuses[code] = statuses.get(code, 0) + 1

            with ThreadPoolExecutor(senders) as pool:
                list(pool.map(send, range(1, events_count)))
            results[name] = {"rss_first_kib": first, "rss_after_kib": function.worker_rss_kib(),
                             "events": sum(statuses.values()), "senders": senders,
                             "seconds": time.perf_counter() - started, "statuses": statuses}

    measure("noop", lambda i: _event("bench.noop"))
    measure("submit", lambda i: _event(events.REQUESTED, {
        "target": target, "job_id": job_ids[i], "script": script, "queue": "held"}))
    cancelled = int(events_count * 0.9)
    measure("cancel", lambda i: _event(events.CANCEL, {
        "job_id": job_ids[events_count - cancelled + (i if i < cancelled else i % cancelled)]}))
    measure("poll", lambda i: _event(events.TICK), senders=1)  # ticks come one at a time
    noop = results["noop"]["rss_after_kib"]
    for entry in results.values():
        entry["ratio"] = entry["rss_after_kib"] / noop
    return results


def import_seconds(module: str, python: str, rounds: int = 3) -> float:
    """Median time for a fresh interpreter to import ``module`` (startup subtracted)."""
    def once(code: str) -> float:
        started = time.perf_counter()
        subprocess.run([python, "-c", code], cwd="/", check=True, timeout=60)
        return time.perf_counter() - started

    base = statistics.median(once("pass") for _ in range(rounds))
    return statistics.median(once(f"import {module}") for _ in range(rounds)) - base


def runtime_python(directory: Path) -> str:
    """The interpreter of a new virtual environment holding the bridge as the image does."""
    subprocess.run([sys.executable, "-m", "venv", str(directory)], check=True, timeout=120)
    python = str(directory / "bin" / "python")
    done = subprocess.run([python, "-m", "pip", "install", "--quiet",
                           "--disable-pip-version-check", str(ROOT)],
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"pip install into {directory} failed: {done.stderr[-2000:]}")
    return python


def run(rounds: int = ROUNDS, events_count: int = EVENTS) -> dict[str, Any]:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="hpcbridge-bench-") as tmp, \
            contextlib.ExitStack() as stack:
        base = Path(tmp)
        python = runtime_python(base / "runtime")
        redis = RedisServer(base / "redis").start()
        stack.callback(redis.stop)
        kube = stack.enter_context(ServerProcess("kube"))
        local = base / "targets-local.yaml"
        local.write_text(yaml.safe_dump({"targets": {"local": {
            "kind": "local", "workdir": str(base / "local")}}}))
        env = {**os.environ, "REDIS_URL": redis.url, "HPCBRIDGE_TARGETS": str(local),
               "HPCBRIDGE_MIRROR": "off"}
        env.pop("KUBECONFIG", None)
        mirrored = {**env, "HPCBRIDGE_MIRROR": "auto",
                    "KUBECONFIG": str(write_kubeconfig(base / "kubeconfig", kube.url))}
        result: dict[str, Any] = {
            "cold_mirror_off": cold_starts(env, rounds, python),
            "cold_mirror_on": cold_starts(mirrored, rounds, python),
            "imports_s": {module: import_seconds(module, python) for module in (
                "flask, functions_framework", "hpcbridge.service",
                "hpcbridge.mirror")},
        }
        cluster = stack.enter_context(SlurmCluster())
        token = base / "token"
        fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(cluster.token(lifespan=3600))
        hpc = base / "targets-hpc.yaml"
        hpc.write_text(yaml.safe_dump({"targets": {"hpc": {
            "kind": "slurm", "url": cluster.url, "user": cluster.user,
            "token_file": str(token), "output_dir": str(cluster.workdir),
            "partition": cluster.partition}}}))
        result["memory"] = memory({**mirrored, "HPCBRIDGE_TARGETS": str(hpc)}, "hpc",
                                  events_count, python)
    result["runtime_s"] = time.monotonic() - started
    return result


def lines(result: dict[str, Any]) -> list[str]:
    out = []
    for key, label in (("cold_mirror_off", "mirror off"), ("cold_mirror_on", "mirror on")):
        cold = result[key]
        out.append(f"cold start to first answer ({label}, median of "
                   f"{len(cold['noop']['all_s'])}): " + ", ".join(
                       f"{name} {cold[name]['median_s']:.3f} s"
                       + ("" if name == "noop" else f" ({cold[name]['ratio']:.2f}x)")
                       for name in FUNCTIONS))
    mem = result["memory"]
    out.append("worker RSS after its events (mirror on, Slurm): " +
               ", ".join(f"{name} {mem[name]['rss_after_kib'] / 1024:.0f} MiB after "
                         f"{mem[name]['events']:,}"
                         + ("" if name == "noop" else f" ({mem[name]['ratio']:.2f}x)")
                         for name in FUNCTIONS))
    return out


def main() -> dict[str, Any]:
    result = run()
    for line in lines(result):
        print(line)
    return result


if __name__ == "__main__":
    main()
