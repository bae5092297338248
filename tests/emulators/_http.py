"""What the EMULATORS of HTTP services share: a real HTTP server on 127.0.0.1 and a free
port, served from a thread of its own, that hands each request to the emulator's
:meth:`HttpEmulator.handle` and records it for :meth:`HttpEmulator.calls`.

An answer is JSON, text (a ``str``) or, for 204, empty; a route refuses a request by
raising :class:`Refused`.
"""

from __future__ import annotations

import abc
import json
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

__all__ = ["HttpEmulator", "Refused"]

#: How often the serving thread checks whether it is to shut down.
_SHUTDOWN_POLL_S = 0.02


class Refused(Exception):
    """An error answer, raised by a route and sent by the handler."""

    def __init__(self, status: int, body: Any, headers: Mapping[str, str] | None = None):
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = dict(headers or {})


class HttpEmulator(abc.ABC):
    """An emulated HTTP service; a subclass answers in :meth:`handle`.

    Its ``start`` calls :meth:`_serve` and its ``stop`` :meth:`_shut_down`.
    """

    #: The name of the serving thread.
    thread_name: str
    #: The path of the API's base URL, which :attr:`url` ends with.
    url_path = ""

    def __init__(self) -> None:
        self._server: ThreadingHTTPServer | None = None
        self._calls: list[tuple[str, str, int]] = []
        self._calls_lock = threading.Lock()

    @abc.abstractmethod
    def start(self) -> Self:
        """Start serving (a subclass sets up its state, then calls :meth:`_serve`)."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop serving (a subclass calls :meth:`_shut_down`)."""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The API's base URL, as an adapter's ``url`` setting names it."""
        assert self._server is not None, "not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}{self.url_path}"

    def calls(self) -> list[tuple[str, str, int]]:
        """(method, path, status) of every request served so far."""
        with self._calls_lock:
            return list(self._calls)

    @abc.abstractmethod
    def handle(self, method: str, path: str, query: Mapping[str, list[str]],
               headers: Mapping[str, str], body: bytes) -> tuple[int, Any]:
        """(status, JSON body or text) of one request; :class:`Refused` for errors.

        ``headers`` have lower-case names.
        """

    def _serve(self) -> None:
        emulator = self

        class Handler(_Handler):
            owner = emulator

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(_SHUTDOWN_POLL_S,),
                         name=self.thread_name, daemon=True).start()

    def _shut_down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _record_call(self, method: str, path: str, status: int) -> None:
        with self._calls_lock:
            self._calls.append((method, path, status))


class _Handler(BaseHTTPRequestHandler):
    owner: HttpEmulator
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read :meth:`HttpEmulator.calls` instead."""

    def _serve(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            status, answer = self.owner.handle(self.command, url.path, parse_qs(url.query),
                                               headers, body)
            extra: Mapping[str, str] = {}
        except Refused as refused:
            status, answer, extra = refused.status, refused.body, refused.headers
        self.owner._record_call(self.command, url.path, status)
        if status == 204:
            data, kind = b"", None
        elif isinstance(answer, str):
            data, kind = answer.encode(), "text/plain; charset=utf-8"
        else:
            data, kind = json.dumps(answer).encode(), "application/json"
        self.send_response(status)
        if kind:
            self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        for key, value in extra.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = _serve
