"""Adapters: one module per external manager, all speaking :class:`adapters.base.Adapter`."""

from __future__ import annotations

import importlib
from typing import Any

from adapters.base import (
    Adapter,
    AdapterError,
    AuthenticationFailed,
    Capabilities,
    ConfigError,
    ManagerRejected,
    ManagerUnavailable,
    Observation,
)

__all__ = [
    "KINDS",
    "Adapter",
    "AdapterError",
    "AuthenticationFailed",
    "Capabilities",
    "ConfigError",
    "ManagerRejected",
    "ManagerUnavailable",
    "Observation",
    "create",
]

# kind -> "module:class"; modules are imported only when a target of that kind is used,
# so a function pays the start-up cost of the managers it really talks to and no other.
KINDS: dict[str, str] = {
    "local": "adapters.local:LocalAdapter",
    "slurm": "adapters.slurm:SlurmRestAdapter",
    "lsf": "adapters.lsf:LsfAdapter",
    "slurm-ssh": "adapters.slurm_ssh:SlurmSshAdapter",
    "flux": "adapters.flux:FluxRestfulAdapter",
    "quantum": "adapters.quantum:IbmQuantumAdapter",
    "ray": "adapters.ray:RayJobsAdapter",
}


def create(kind: str, name: str, settings: dict[str, Any]) -> Adapter:
    """Build the adapter for a target of ``kind`` from its configuration."""
    try:
        module_name, class_name = KINDS[kind].split(":")
    except KeyError:
        raise ConfigError(f"target {name!r}: unknown kind {kind!r} "
                          f"(known: {', '.join(sorted(KINDS))})") from None
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(name, settings)
