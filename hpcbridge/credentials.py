"""Credentials, read from mounted files or the environment and never shown.

A :class:`Credential` reads its value when asked (a rotated Secret file is picked up)
and registers it with the redactor, so that any log line or error text that would
carry it is scrubbed before it leaves the process.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["Credential", "CredentialError", "RedactingFilter", "redact"]

_known: set[str] = set()
_lock = threading.Lock()
_MASK = "***"


class CredentialError(Exception):
    """A credential is configured but cannot be read; the message names where, not what."""


def redact(text: str) -> str:
    """``text`` with every credential this process has read replaced by ``***``."""
    with _lock:
        secrets = sorted(_known, key=len, reverse=True)
    for secret in secrets:
        text = text.replace(secret, _MASK)
    return text


class RedactingFilter(logging.Filter):
    """A logging filter that scrubs credentials from every record's final message."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message or record.exc_info:
            record.msg, record.args = cleaned, None
        if record.exc_info:
            # Tracebacks are formatted later from exc_info; keep the type, drop the text.
            kind = record.exc_info[0].__name__ if record.exc_info[0] else "Exception"
            record.msg = f"{record.msg} ({kind})"
            record.exc_info = None
            record.exc_text = None
        return True


class Credential:
    """A secret named in a target's settings as ``<name>_file`` or ``<name>_env``."""

    __slots__ = ("_env", "_file", "_where")

    def __init__(self, *, file: str | None = None, env: str | None = None) -> None:
        if (file is None) == (env is None):
            raise CredentialError("give exactly one of a file or an environment variable")
        self._file = file
        self._env = env
        self._where = f"file {file}" if file else f"environment variable {env}"

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], name: str) -> Credential | None:
        """The credential ``name`` of a target's settings, or None when not configured."""
        file, env = settings.get(f"{name}_file"), settings.get(f"{name}_env")
        if file is None and env is None:
            if name in settings:
                raise CredentialError(
                    f"'{name}' must not be written into the targets file; "
                    f"name a '{name}_file' or '{name}_env' instead")
            return None
        return cls(file=file, env=env)

    @property
    def where(self) -> str:
        return self._where

    def value(self) -> str:
        if self._file is not None:
            try:
                value = Path(self._file).read_text().strip()
            except OSError as exc:
                raise CredentialError(f"cannot read credential {self._where}: "
                                      f"{exc.strerror}") from None
        else:
            value = os.environ.get(self._env or "", "").strip()
        if not value:
            raise CredentialError(f"credential {self._where} is empty")
        with _lock:
            _known.add(value)
        return value

    def __repr__(self) -> str:
        return f"Credential({self._where})"
