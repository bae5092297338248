"""The dev stack: the whole bridge on one machine, no Kubernetes, no Knative.

``hpc-bridge dev`` starts the three functions with functions-framework on loopback
ports, a small in-process broker that routes events by type the way a Knative Broker
with one Trigger per function does (replies re-enter the broker, 5xx and 404/408/409/429
are retried with backoff), a ticker standing in for the PingSource, and Redis: the one
``REDIS_URL`` names, else a private redis-server when one is installed, else an embedded
fakeredis server.

The broker also keeps the last events it saw, so ``GET /events?subject=<job>`` shows a
job's event stream.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import queue
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx

from hpcbridge import events

__all__ = ["ROUTES", "Broker", "DevStack", "RedisProcess", "free_port", "state_file"]

log = logging.getLogger(__name__)

FUNCTIONS_DIR = Path(__file__).resolve().parent.parent / "functions"

#: event type -> function, as the Triggers in knative/ route them.
ROUTES: Mapping[str, str] = {
    events.REQUESTED: "submit",
    events.TICK: "poll",
    events.PING: "poll",
    events.CANCEL: "cancel",
    events.APISERVER_UPDATE: "cancel",
    events.APISERVER_DELETE: "cancel",
}
_RETRIED = {404, 408, 409, 429}


def state_file() -> Path:
    """Where a running dev stack writes its addresses for the CLI."""
    base = os.environ.get("XDG_RUNTIME_DIR") or str(Path.home() / ".cache")
    return Path(base) / "hpc-bridge" / "dev.json"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Broker:
    """An in-process stand-in for a Knative Broker with one Trigger per function."""

    def __init__(self, subscribers: Mapping[str, str], retries: int = 10,
                 backoff_s: float = 0.2, keep: int = 10_000) -> None:
        self.subscribers = dict(subscribers)
        self.retries = retries
        self.backoff_s = backoff_s
        self._seen: collections.deque[dict[str, Any]] = collections.deque(maxlen=keep)
        self._seen_lock = threading.Lock()
        self._queue: queue.Queue[events.CloudEvent | None] = queue.Queue()
        self._client = httpx.Client(timeout=60)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/"
        self._threads: list[threading.Thread] = []

    def start(self, workers: int = 8) -> Broker:
        self._threads.append(threading.Thread(target=self._server.serve_forever, daemon=True))
        self._threads += [threading.Thread(target=self._deliver_loop, daemon=True)
                          for _ in range(workers)]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        for _ in self._threads[1:]:
            self._queue.put(None)
        self._client.close()

    def seen(self, subject: str | None = None) -> list[dict[str, Any]]:
        with self._seen_lock:
            return [e for e in self._seen if subject is None or e.get("subject") == subject]

    def publish(self, event: events.CloudEvent) -> None:
        with self._seen_lock:
            self._seen.append({**event.get_attributes(), "data": event.data})
        self._queue.put(event)

    def _deliver_loop(self) -> None:
        while (event := self._queue.get()) is not None:
            function = ROUTES.get(event["type"])
            if function is None or function not in self.subscribers:
                continue
            reply = self._deliver(self.subscribers[function], event)
            if reply is not None:
                self.publish(reply)

    def _deliver(self, url: str, event: events.CloudEvent) -> events.CloudEvent | None:
        headers, body = events.encode(event)
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                answer = self._client.post(url, headers=headers, content=body)
            except httpx.HTTPError:
                answer = None
            if answer is not None and answer.is_success:
                if answer.headers.get("ce-type") or answer.content:
                    with contextlib.suppress(Exception):
                        return events.parse(answer.headers, answer.content)
                return None
            if answer is not None and answer.status_code < 500 and \
                    answer.status_code not in _RETRIED:
                return None  # a 4xx the sender must fix; Knative does not retry it either
            if attempt < self.retries:
                time.sleep(delay)
                delay *= 2
        log.warning("gave up delivering %s %s to %s", event["type"], event["id"], url)
        return None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        broker = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                url = urlparse(self.path)
                if url.path != "/events":
                    self._answer(404, b"")
                    return
                subject = parse_qs(url.query).get("subject", [None])[0]
                body = json.dumps(broker.seen(subject), default=str).encode()
                self._answer(200, body, "application/json")

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                try:
                    event = events.parse(dict(self.headers.items()), body)
                except Exception as exc:
                    self._answer(400, f"not a CloudEvent: {exc}\n".encode())
                    return
                broker.publish(event)
                self._answer(202, b"")

            def _answer(self, status: int, body: bytes, kind: str = "text/plain") -> None:
                self.send_response(status)
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler


class RedisProcess:
    """A private ``redis-server`` on a free loopback port, stopped by its pid.

    Append-only persistence is on, so :meth:`stop` then :meth:`start` (same port) keeps
    what was written, as a production Redis with AOF would.
    """

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is missing: apt-get install -y redis-server")
        self._binary = binary
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisProcess:
        log_file = self.directory / "redis.log"
        self._process = subprocess.Popen(
            [self._binary, "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.directory), "--appendonly", "yes", "--save", "",
             "--logfile", str(log_file)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), timeout=1) as probe:
                probe.sendall(b"PING\r\n")
                if probe.recv(16).startswith(b"+PONG"):
                    return self
            if self._process.poll() is not None or time.monotonic() > deadline:
                tail = log_file.read_text()[-2000:] if log_file.exists() else ""
                self.stop()
                raise RuntimeError(f"redis-server did not start: {tail}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None


class _Ticker(threading.Thread):
    def __init__(self, broker: Broker, interval_s: float) -> None:
        super().__init__(daemon=True)
        self.broker = broker
        self.interval_s = interval_s
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(self.interval_s):
            self.broker.publish(events.CloudEvent(
                {"type": events.TICK, "source": "/hpc-bridge/dev/ticker",
                 "id": uuid.uuid4().hex}, None))


class DevStack:
    """Redis, three functions, a broker and a ticker, started and stopped together."""

    def __init__(self, *, redis_url: str | None = None, targets_file: str | None = None,
                 tick_s: float = 2.0, log_dir: Path | None = None,
                 extra_env: Mapping[str, str] | None = None) -> None:
        self.redis_url = redis_url
        self.targets_file = targets_file
        self.tick_s = tick_s
        self.log_dir = log_dir or Path(tempfile.gettempdir()) / "hpc-bridge-dev"
        self.extra_env = dict(extra_env or {})
        self.functions: dict[str, str] = {}
        self.broker: Broker | None = None
        self._processes: list[subprocess.Popen[bytes]] = []
        self._fake_redis: Any = None
        self._redis_process: RedisProcess | None = None
        self._ticker: _Ticker | None = None

    def start(self) -> DevStack:
        if not FUNCTIONS_DIR.is_dir():
            raise RuntimeError(f"the functions are not at {FUNCTIONS_DIR}: run the dev stack "
                               "from a checkout (pip install -e .)")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if self.redis_url is None:
            self.redis_url = self._start_redis()
        ports = {name: free_port() for name in ("submit", "poll", "cancel")}
        self.functions = {name: f"http://127.0.0.1:{port}/" for name, port in ports.items()}
        self.broker = Broker(self.functions).start()
        env = {**os.environ, **self.extra_env, "REDIS_URL": self.redis_url,
               "K_SINK": self.broker.url, "HPCBRIDGE_SOURCE": "/hpc-bridge/dev"}
        if self.targets_file:
            env["HPCBRIDGE_TARGETS"] = str(Path(self.targets_file).resolve())
        for name, port in ports.items():
            output = (self.log_dir / f"{name}.log").open("ab")
            self._processes.append(subprocess.Popen(
                [sys.executable, "-m", "functions_framework", "--source",
                 str(FUNCTIONS_DIR / name / "main.py"), "--target", name,
                 "--host", "127.0.0.1", "--port", str(port)],
                env=env, stdout=output, stderr=subprocess.STDOUT))
            output.close()
        self._wait_ready()
        self._ticker = _Ticker(self.broker, self.tick_s)
        self._ticker.start()
        return self

    def _start_redis(self) -> str:
        """A private redis-server when one is installed, else an embedded fakeredis."""
        if shutil.which("redis-server"):
            self._redis_process = RedisProcess(self.log_dir / "redis").start()
            return self._redis_process.url
        from fakeredis import TcpFakeServer  # only the dev stack needs it

        port = free_port()
        self._fake_redis = TcpFakeServer(("127.0.0.1", port), server_type="redis")
        threading.Thread(target=self._fake_redis.serve_forever, daemon=True).start()
        return f"redis://127.0.0.1:{port}/0"

    def _wait_ready(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=2) as client:
            for name, url in self.functions.items():
                while True:
                    with contextlib.suppress(httpx.HTTPError):
                        if client.get(url).status_code == 200:
                            break
                    if time.monotonic() > deadline or any(p.poll() is not None
                                                          for p in self._processes):
                        self.stop()
                        raise RuntimeError(f"function {name} did not start; see "
                                           f"{self.log_dir / (name + '.log')}")
                    time.sleep(0.05)

    def describe(self) -> dict[str, Any]:
        assert self.broker is not None
        return {"broker": self.broker.url, "redis_url": self.redis_url,
                "functions": self.functions, "pid": os.getpid(),
                "targets_file": str(Path(self.targets_file).resolve()) if self.targets_file
                else None}

    def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.halt.set()
        for process in self._processes:
            process.terminate()
        for process in self._processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._processes.clear()
        if self.broker is not None:
            self.broker.stop()
        if self._fake_redis is not None:
            self._fake_redis.shutdown()
            self._fake_redis.server_close()
        if self._redis_process is not None:
            self._redis_process.stop()

    @contextlib.contextmanager
    def running(self) -> Iterator[DevStack]:
        self.start()
        try:
            yield self
        finally:
            self.stop()
