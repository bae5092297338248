"""Targets: named external managers, read from the YAML file ``HPCBRIDGE_TARGETS``.

    targets:
      hpc:
        kind: slurm
        url: http://slurm-login:6820
        user: alice
        token_file: /var/run/secrets/hpc/token
      laptop:
        kind: local

Without the file there is one target, ``local``, running jobs on the bridge's own machine.
Adapters are built on first use and kept for the life of the process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

import adapters
from adapters.base import Adapter, ConfigError, Observation
from hpcbridge import metrics
from hpcbridge.model import JobRequest, RequestError

T = TypeVar("T")

__all__ = ["Targets"]

_DEFAULT: dict[str, dict[str, Any]] = {"local": {"kind": "local"}}


class _Measured:
    """An adapter whose protocol calls are timed and their failures counted, per target.

    Wrapping here, where adapters are made, measures every manager call in one place
    instead of at each call site.
    """

    def __init__(self, adapter: Adapter, target: str) -> None:
        self._adapter = adapter
        self._target = target

    def __getattr__(self, name: str) -> Any:
        return getattr(self._adapter, name)

    def _timed(self, operation: str, call: Callable[..., T], *args: Any) -> T:
        started = time.perf_counter()
        try:
            return call(*args)
        except Exception as exc:
            metrics.MANAGER_ERRORS.inc(self._target, operation, type(exc).__name__)
            raise
        finally:
            metrics.MANAGER_SECONDS.observe(time.perf_counter() - started, self._target,
                                            operation)

    def submit(self, request: JobRequest, job_id: str) -> str:
        return self._timed("submit", self._adapter.submit, request, job_id)

    def status_many(self, native_ids: Sequence[str]) -> Mapping[str, Observation]:
        return self._timed("status", self._adapter.status_many, native_ids)

    def cancel(self, native_id: str) -> None:
        self._timed("cancel", self._adapter.cancel, native_id)

    def logs(self, native_id: str, tail: int | None = None) -> str:
        return self._timed("logs", self._adapter.logs, native_id, tail)

    def find_by_tag(self, job_id: str) -> str | None:
        return self._timed("find_by_tag", self._adapter.find_by_tag, job_id)

    def capacity(self) -> Mapping[str, Any]:
        return self._timed("capacity", self._adapter.capacity)


class Targets(Mapping[str, Mapping[str, Any]]):
    """The configured targets and, lazily, one adapter per target."""

    def __init__(self, settings: Mapping[str, Mapping[str, Any]]) -> None:
        for name, entry in settings.items():
            if not isinstance(entry, Mapping) or not isinstance(entry.get("kind"), str):
                raise ConfigError(f"target {name!r} needs a 'kind'")
            if entry["kind"] not in adapters.KINDS:
                raise ConfigError(f"target {name!r}: unknown kind {entry['kind']!r}")
        self._settings = {name: dict(entry) for name, entry in settings.items()}
        self._adapters: dict[str, Adapter] = {}
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: str | None) -> Targets:
        if not path:
            return cls(_DEFAULT)
        try:
            document = yaml.safe_load(Path(path).read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read targets file {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"targets file {path} is not valid YAML: {exc}") from None
        if not isinstance(document, Mapping) or not isinstance(document.get("targets"), Mapping):
            raise ConfigError(f"targets file {path} needs a 'targets' mapping")
        return cls(document["targets"])

    def __getitem__(self, name: str) -> Mapping[str, Any]:
        return self._settings[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._settings)

    def __len__(self) -> int:
        return len(self._settings)

    def adapter(self, name: str) -> Adapter:
        """The adapter of target ``name``; an unknown name is the client's error."""
        if name not in self._settings:
            raise RequestError("target", f"unknown target {name!r} "
                               f"(configured: {', '.join(sorted(self._settings))})")
        with self._lock:
            if name not in self._adapters:
                entry = self._settings[name]
                adapter = adapters.create(entry["kind"], name, entry)
                self._adapters[name] = _Measured(adapter, name)  # type: ignore[assignment]
            return self._adapters[name]

    def close(self) -> None:
        with self._lock:
            for adapter in self._adapters.values():
                adapter.close()
            self._adapters.clear()
