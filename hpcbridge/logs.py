"""Structured JSON logs on stderr, one object per line, credentials scrubbed."""

from __future__ import annotations

import json
import logging
import sys
import time

from hpcbridge.credentials import RedactingFilter

__all__ = ["configure"]

_EXTRA = ("job_id", "event_id", "event_type", "target", "outcome")


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in _EXTRA:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        return json.dumps(entry, separators=(",", ":"))


def configure(level: str = "INFO") -> None:
    """Send the ``hpcbridge`` and ``adapters`` loggers to stderr as JSON, once."""
    for name in ("hpcbridge", "adapters"):
        logger = logging.getLogger(name)
        if any(isinstance(h.formatter, _JsonFormatter) for h in logger.handlers):
            continue
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_JsonFormatter())
        handler.addFilter(RedactingFilter())
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False
