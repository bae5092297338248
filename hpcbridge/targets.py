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
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

import adapters
from adapters.base import Adapter, ConfigError
from hpcbridge.model import RequestError

__all__ = ["Targets"]

_DEFAULT: dict[str, dict[str, Any]] = {"local": {"kind": "local"}}


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
                self._adapters[name] = adapters.create(entry["kind"], name, entry)
            return self._adapters[name]

    def close(self) -> None:
        with self._lock:
            for adapter in self._adapters.values():
                adapter.close()
            self._adapters.clear()
