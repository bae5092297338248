"""Prometheus metrics of one function process, served at ``GET /metrics``.

A few counters, gauges and histograms in the Prometheus text format (version 0.0.4),
kept in memory; no client library is needed for that little. The metrics:

    hpcbridge_events_total{type, outcome}                   events handled
    hpcbridge_manager_request_seconds{target, operation}    adapter calls (histogram)
    hpcbridge_manager_errors_total{target, operation, error}
    hpcbridge_transitions_total{target, state}              job state changes recorded
    hpcbridge_active_jobs{target, state}                    as seen by the last tick
    hpcbridge_poll_tick_seconds                             tick duration (histogram)
"""

from __future__ import annotations

import abc
import bisect
import threading
from collections.abc import Iterator, Sequence

__all__ = [
    "ACTIVE_JOBS",
    "EVENTS",
    "MANAGER_ERRORS",
    "MANAGER_SECONDS",
    "TICK_SECONDS",
    "TRANSITIONS",
    "Counter",
    "Gauge",
    "Histogram",
    "render",
]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    pairs = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        pairs.append(extra)
    return "{" + ",".join(pairs) + "}" if pairs else ""


class _Metric(abc.ABC):
    kind = ""

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        self.name = name
        self.help_text = help_text
        self.label_names = tuple(labels)
        self._lock = threading.Lock()
        _REGISTRY.append(self)

    def _key(self, labels: Sequence[str]) -> tuple[str, ...]:
        if len(labels) != len(self.label_names):
            raise ValueError(f"{self.name} takes labels {self.label_names}")
        return tuple(str(v) for v in labels)

    @abc.abstractmethod
    def samples(self) -> Iterator[str]:
        """The sample lines of this metric."""

    def render(self) -> str:
        lines = [f"# HELP {self.name} {self.help_text}", f"# TYPE {self.name} {self.kind}"]
        lines.extend(self.samples())
        return "\n".join(lines)


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labels)
        self._values: dict[tuple[str, ...], float] = {}

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, *labels: str) -> float:
        with self._lock:
            return self._values.get(self._key(labels), 0.0)

    def samples(self) -> Iterator[str]:
        with self._lock:
            items = sorted(self._values.items())
        for key, value in items:
            yield f"{self.name}{_labels(self.label_names, key)} {value:g}"


class Gauge(Counter):
    kind = "gauge"

    def set(self, *labels: str, value: float) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = value

    def clear(self, *prefix: str) -> None:
        """Forget every series whose first labels are ``prefix`` (a target's old states)."""
        with self._lock:
            for key in [k for k in self._values if k[:len(prefix)] == tuple(prefix)]:
                del self._values[key]


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = (),
                 buckets: Sequence[float] = _LATENCY_BUCKETS) -> None:
        super().__init__(name, help_text, labels)
        self.buckets = tuple(sorted(buckets))
        self._series: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}

    def observe(self, value: float, *labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            counts, total = self._series.setdefault(
                key, ([0] * (len(self.buckets) + 1), [0.0]))
            counts[bisect.bisect_left(self.buckets, value)] += 1
            total[0] += value

    def count(self, *labels: str) -> int:
        with self._lock:
            series = self._series.get(self._key(labels))
            return sum(series[0]) if series else 0

    def samples(self) -> Iterator[str]:
        with self._lock:
            items = sorted((k, (list(c), t[0])) for k, (c, t) in self._series.items())
        for key, (counts, total) in items:
            running = 0
            for bound, count in zip((*self.buckets, float("inf")), counts, strict=True):
                running += count
                le = "+Inf" if bound == float("inf") else f"{bound:g}"
                bucket = _labels(self.label_names, key, 'le="' + le + '"')
                yield f"{self.name}_bucket{bucket} {running}"
            yield f"{self.name}_sum{_labels(self.label_names, key)} {total:g}"
            yield f"{self.name}_count{_labels(self.label_names, key)} {running}"


_REGISTRY: list[_Metric] = []


def render() -> str:
    """Every metric of this process in the Prometheus text format."""
    return "\n".join(metric.render() for metric in _REGISTRY) + "\n"


EVENTS = Counter("hpcbridge_events_total", "CloudEvents handled, by type and outcome.",
                 ("type", "outcome"))
MANAGER_SECONDS = Histogram("hpcbridge_manager_request_seconds",
                            "Time spent in calls to an external manager.",
                            ("target", "operation"))
MANAGER_ERRORS = Counter("hpcbridge_manager_errors_total",
                         "Calls to an external manager that failed, by error.",
                         ("target", "operation", "error"))
TRANSITIONS = Counter("hpcbridge_transitions_total", "Job state changes recorded.",
                      ("target", "state"))
ACTIVE_JOBS = Gauge("hpcbridge_active_jobs", "Active jobs by state, as of the last tick.",
                    ("target", "state"))
TICK_SECONDS = Histogram("hpcbridge_poll_tick_seconds", "Duration of a poll tick.")
