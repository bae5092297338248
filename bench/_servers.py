"""Servers the benchmarks run in child processes, so that they do not share the GIL
with the bridge being measured, and a handle to start and stop them by pid.

    python -m bench._servers kube            the Kubernetes API emulator (tests/emulators)
    python -m bench._servers proxy URL       tests/services' CountingProxy in front of URL
    python -m bench._servers sink            a broker stand-in that accepts and counts events

Each prints its base URL on its first line of output and serves until its stdin closes
or it gets SIGTERM. The proxy and the sink answer ``GET /_bench/counts`` (and
``POST /_bench/reset``) themselves instead of forwarding them.
"""

from __future__ import annotations

import collections
import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent

__all__ = ["ServerProcess", "write_kubeconfig"]


def write_kubeconfig(path: Path, url: str, namespace: str = "default") -> Path:
    """A kubeconfig for the emulator at ``url``, as ``KUBECONFIG`` for a function."""
    import yaml

    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "emulator", "cluster": {"server": url}}],
        "users": [{"name": "emulator", "user": {"token": "emulator"}}],
        "contexts": [{"name": "emulator", "context": {
            "cluster": "emulator", "user": "emulator", "namespace": namespace}}],
        "current-context": "emulator"}))
    return path


class ServerProcess:
    """One of the servers above in a child process; :meth:`stop` ends it by its pid."""

    def __init__(self, kind: str, *args: str, log: Path | None = None) -> None:
        self.kind = kind
        self._log = open(log, "ab") if log else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench._servers", kind, *args], cwd=ROOT,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log)
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode().strip()
        if not line.startswith("http://"):
            self.stop()
            raise RuntimeError(f"bench server {kind} did not start (said {line!r})")
        self.url = line
        self._client = httpx.Client(timeout=30)

    @property
    def pid(self) -> int:
        return self.process.pid

    def counts(self) -> list[list[Any]]:
        """``[method, path, status, count]`` rows (proxy) or ``[type, count]`` rows (sink)."""
        return self._client.get(f"{self.url}/_bench/counts").json()

    def reset(self) -> None:
        self._client.post(f"{self.url}/_bench/reset")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if hasattr(self, "_client"):
            self._client.close()
        if self._log is not subprocess.DEVNULL:
            self._log.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


# --- the child side ---------------------------------------------------------------------

def _serve_kube() -> None:
    import time

    from tests.emulators import kube_apiserver
    from tests.emulators.kube_apiserver import KubeApiEmulator

    class KeepAlive(kube_apiserver._Handler):
        """HTTP/1.1 with kept-alive connections, as a real API server keeps them (the
        emulator's HTTP/1.0 makes every client connect anew for every request), and
        TCP_NODELAY, which kept-alive connections need (see the proxy below)."""

        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

    kube_apiserver._Handler = KeepAlive  # type: ignore[misc]

    class Emulator(KubeApiEmulator):
        """Expires Events at most once a second instead of on every request.

        The emulator scans every Event on every request to expire those over an hour
        old; with tens of thousands of Events that scan, not the request, is the cost.
        A benchmark lasts minutes, so no Event expires either way.
        """

        _expired_at = 0.0

        def _expire_events(self) -> None:
            now = time.monotonic()
            if now - self._expired_at >= 1.0:
                self._expired_at = now
                super()._expire_events()

    emulator = Emulator().start()
    _announce(emulator.url)
    emulator.stop()


def _serve_proxy(upstream: str) -> None:
    from tests.services.counting_proxy import CountingProxy

    class Proxy(CountingProxy):
        """Counts by method, path and answer status; answers /_bench/ itself.

        With TCP_NODELAY: the handler writes the head and the body separately, and
        Nagle's algorithm against the client's delayed ACK would add 40 ms to every small
        answer, a cost slurmrestd itself does not have.
        """

        def __init__(self, upstream: str) -> None:
            super().__init__(upstream)
            self.statuses: collections.Counter[tuple[str, str, int]] = collections.Counter()

        def _handler(self) -> type[BaseHTTPRequestHandler]:
            base = super()._handler()
            return type("NoDelayHandler", (base,), {"disable_nagle_algorithm": True})

        def _forward(self, method: str, path: str, headers: dict[str, str],
                     body: bytes) -> httpx.Response:
            if path.startswith("/_bench/counts"):
                with self._lock:
                    rows = [[m, p, s, n] for (m, p, s), n in self.statuses.items()]
                return httpx.Response(200, json=rows)
            if path.startswith("/_bench/reset"):
                with self._lock:
                    self.statuses.clear()
                    self.counts.clear()
                return httpx.Response(204)
            answer = super()._forward(method, path, headers, body)
            with self._lock:
                self.statuses[(method, path.split("?")[0], answer.status_code)] += 1
            return answer

    with Proxy(upstream) as proxy:
        _announce(proxy.url)


def _serve_sink() -> None:
    counts: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self, status: int, body: bytes = b"") -> None:
            self.send_response(status)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            with lock:
                rows = [[kind, n] for kind, n in counts.items()]
            self._answer(200, json.dumps(rows).encode())

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)
            if self.path.startswith("/_bench/reset"):
                with lock:
                    counts.clear()
                self._answer(204)
                return
            with lock:
                counts[self.headers.get("ce-type") or "-"] += 1
            self._answer(202)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _announce(f"http://127.0.0.1:{server.server_address[1]}")
    server.shutdown()
    server.server_close()


def _announce(url: str) -> None:
    """Say where we listen, then serve until the parent closes our stdin."""
    sys.stdout.write(url + "\n")
    sys.stdout.flush()
    sys.stdin.read()


if __name__ == "__main__":
    kind = sys.argv[1]
    if kind == "kube":
        _serve_kube()
    elif kind == "proxy":
        _serve_proxy(sys.argv[2])
    elif kind == "sink":
        _serve_sink()
    else:
        raise SystemExit(f"unknown server {kind!r}")
