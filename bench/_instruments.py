"""Meters for the benchmarks: time spent waiting on each external system, round trips,
CPU time of other processes, resident memory.

Each wait is timed from the request leaving the bridge to the whole answer being read, in
the bridge's own process, so that ``tick time - waits`` is the time the bridge spends
computing (decoding, building objects, deciding), its "own time".
"""

from __future__ import annotations

import dataclasses
import gc
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
import redis

from adapters.slurm import SlurmRestAdapter
from hpcbridge.emitter import Emitter

__all__ = [
    "EMIT",
    "KUBE",
    "MANAGER",
    "REDIS",
    "TIMED_SLURM_KIND",
    "GcTimer",
    "Meter",
    "TimedEmitter",
    "TimedSlurmAdapter",
    "children",
    "cpu_seconds",
    "instrument_kube",
    "pids_with_argument",
    "redis_client",
    "register_timed_slurm",
    "rss_kib",
]

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclasses.dataclass
class Meter:
    """Calls, seconds waited and, for HTTP, answers by status, since the last reset."""

    name: str
    calls: int = 0
    seconds: float = 0.0
    writes: int = 0
    received: int = 0
    statuses: dict[int, int] = dataclasses.field(default_factory=dict)
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False)

    def add(self, seconds: float, status: int | None = None, *, write: bool = False,
            received: int = 0) -> None:
        with self._lock:
            self.calls += 1
            self.seconds += seconds
            self.writes += write
            self.received += received
            if status is not None:
                self.statuses[status] = self.statuses.get(status, 0) + 1

    def reset(self) -> None:
        with self._lock:
            self.calls, self.seconds, self.writes, self.received = 0, 0.0, 0, 0
            self.statuses = {}

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"calls": self.calls, "seconds": self.seconds, "writes": self.writes,
                    "received": self.received, "statuses": dict(self.statuses)}


MANAGER = Meter("manager")
REDIS = Meter("redis")
KUBE = Meter("kube")
EMIT = Meter("emit")


# --- the manager: slurmrestd, timed on the wire ------------------------------------------

class _TimedTransport(httpx.HTTPTransport):
    def handle_request(self, request: httpx.Request) -> httpx.Response:
        started = time.perf_counter()
        response = super().handle_request(request)
        response.read()  # the whole body, inside the measured wait
        MANAGER.add(time.perf_counter() - started, response.status_code,
                    write=request.method != "GET", received=len(response.content))
        return response


class TimedSlurmAdapter(SlurmRestAdapter):
    """The real Slurm adapter, its HTTP waits measured (adapters.base allows a transport)."""

    def __init__(self, name: str, settings: Any) -> None:
        super().__init__(name, settings, transport=_TimedTransport())


#: The kind under which :func:`register_timed_slurm` makes :class:`TimedSlurmAdapter`
#: known to ``adapters.KINDS`` (in the benchmark's own process only).
TIMED_SLURM_KIND = "bench-slurm"


def register_timed_slurm() -> None:
    import adapters

    adapters.KINDS[TIMED_SLURM_KIND] = f"{__name__}:TimedSlurmAdapter"


# --- Redis: every round trip counted and timed -----------------------------------------

class _CountingConnection(redis.Connection):
    """A round trip is one send (a pipeline or a script is one) and its replies."""

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        started = time.perf_counter()
        try:
            super().send_packed_command(command, check_health)
        finally:
            REDIS.add(time.perf_counter() - started)

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return super().read_response(*args, **kwargs)
        finally:
            elapsed = time.perf_counter() - started
            with REDIS._lock:
                REDIS.seconds += elapsed


def redis_client(url: str) -> redis.Redis:
    """A client like the Store's own, whose round trips go to :data:`REDIS`.

    No health-check pings: they would be round trips the bridge does not ask for.
    """
    pool = redis.ConnectionPool.from_url(url, connection_class=_CountingConnection,
                                         decode_responses=True, socket_timeout=60,
                                         socket_connect_timeout=5)
    return redis.Redis(connection_pool=pool)


# --- Kubernetes: the official client's HTTP calls ------------------------------------------

def instrument_kube(api: Any) -> Any:
    """Time every request ``api`` (a kubernetes ApiClient) makes, body read included."""
    rest = api.rest_client
    request = rest.request

    def timed(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        status = None
        size = 0
        try:
            response = request(method, url, *args, **kwargs)
            size = len(response.read() or b"")
            status = response.status
            return response
        except Exception as exc:
            status = getattr(exc, "status", 0)
            raise
        finally:
            KUBE.add(time.perf_counter() - started, status, write=method != "GET",
                     received=size)

    rest.request = timed
    return api


# --- events: the emitter's POSTs ------------------------------------------------------------

class TimedEmitter(Emitter):
    """Time spent handing events to the sink (one HTTP POST each)."""

    def emit(self, events: Iterable[Any]) -> Any:
        batch = list(events)
        started = time.perf_counter()
        try:
            return super().emit(batch)
        finally:
            with EMIT._lock:
                EMIT.calls += len(batch)
                EMIT.seconds += time.perf_counter() - started


# --- the garbage collector ------------------------------------------------------------------

class GcTimer:
    """Time this process's cyclic garbage collector takes inside a ``with`` block.

    Its pauses land in whatever code happens to run, so a profile spreads them over
    unrelated functions; ``gc.callbacks`` adds them up.
    """

    def __init__(self) -> None:
        self.seconds = 0.0
        #: collections of the oldest generation (the whole heap)
        self.full = 0
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        self.seconds += time.perf_counter() - self._started
        self.full += info["generation"] == 2

    def __enter__(self) -> GcTimer:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)


# --- other processes ----------------------------------------------------------------------

def pids_with_argument(argument: str) -> list[int]:
    """Processes whose command line contains ``argument`` (e.g. a private slurm.conf)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argument.encode() in args:
            found.append(int(entry.name))
    return found


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU time of ``pids`` (their threads included), in seconds."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / _CLOCK_TICKS


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` from /proc/<pid>/status, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def children(pid: int) -> list[int]:
    """Direct children of ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found
