"""Reading a target's settings: the checks every adapter makes, with one wording each.

Every failure is a :class:`ConfigError` that names the target.
"""

from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping, Set
from typing import Any

from adapters.base import ConfigError, ManagerRejected
from hpcbridge.credentials import Credential, CredentialError
from hpcbridge.model import RequestError, validate_job_id

__all__ = [
    "Submissions",
    "absolute_path",
    "check_known",
    "credential",
    "needed",
    "positive",
    "require_credential",
    "string",
]


def check_known(name: str, settings: Mapping[str, Any], known: Set[str], *,
                context: str = "") -> None:
    """Refuse the first unknown key; ``context`` follows the key, e.g. `` for transport web``."""
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ConfigError(f"target {name!r}: unknown setting {unknown[0]!r}{context} "
                          f"(known: {', '.join(sorted(set(known) - {'kind'}))})")


def credential(name: str, settings: Mapping[str, Any], prefix: str) -> Credential | None:
    """The credential ``<prefix>_file`` or ``<prefix>_env`` names, if any."""
    try:
        return Credential.from_settings(settings, prefix)
    except CredentialError as exc:
        raise ConfigError(f"target {name!r}: {exc}") from None


def require_credential(name: str, found: Credential | None, prefix: str,
                       hint: str = "") -> Credential:
    """``found`` (from :func:`credential`), which the target cannot do without."""
    if found is None:
        raise ConfigError(f"target {name!r} needs '{prefix}_file' or '{prefix}_env'{hint}")
    return found


def needed(name: str, settings: Mapping[str, Any], key: str, *, detail: str = "") -> str:
    """A non-empty string the target needs: ``target 'x' needs 'key'<detail>`` otherwise."""
    value = settings.get(key)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"target {name!r} needs '{key}'{detail}")
    return value


def string(name: str, settings: Mapping[str, Any], key: str,
           default: str | None = None) -> str:
    """A non-empty string: ``target 'x': key must be a non-empty string`` otherwise."""
    value = settings.get(key, default)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"target {name!r}: {key} must be a non-empty string")
    return value


def absolute_path(name: str, settings: Mapping[str, Any], key: str, *,
                  quote_key: bool = True, detail: str = "") -> str:
    """A needed absolute path (``detail`` as in :func:`needed`)."""
    value = needed(name, settings, key, detail=detail)
    if not os.path.isabs(value):
        label = f"'{key}'" if quote_key else key
        raise ConfigError(f"target {name!r}: {label} must be an absolute path")
    return value


def positive(name: str, settings: Mapping[str, Any], key: str, default: float, *,
             finite: bool = False) -> float:
    """A number above 0 (and, with ``finite``, not infinite), as a float."""
    value = settings.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0 \
            or (finite and not math.isfinite(value)):
        raise ConfigError(f"target {name!r}: {key} must be a positive number")
    return float(value)


class Submissions:
    """What an adapter submitted, by the bridge's job id: the latest ``limit`` ones.

    For managers that do not refuse a second job with the same tag: submitting a job id
    again returns the first job.
    """

    def __init__(self, limit: int = 100_000) -> None:
        self._limit = limit
        self._lock = threading.Lock()
        self._native: OrderedDict[str, str] = OrderedDict()

    def get(self, job_id: str) -> str | None:
        with self._lock:
            return self._native.get(job_id)

    def checked(self, target: str, job_id: str) -> str | None:
        """:meth:`get` for a job id that reaches the cluster as a file or job name: one
        that is not a job id of ours is refused (ManagerRejected) before anything runs."""
        try:
            validate_job_id(job_id)
        except RequestError as exc:
            raise ManagerRejected(f"target {target!r}: {exc}") from None
        return self.get(job_id)

    def remember(self, job_id: str, native_id: str) -> None:
        with self._lock:
            self._native[job_id] = native_id
            if len(self._native) > self._limit:
                self._native.popitem(last=False)
