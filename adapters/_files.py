"""Reading a job's output file from a directory this process can see.

The file is read with the bridge's own rights, so its real path (symlinks resolved)
must stay inside the job's working directory, and only a regular file is read: a FIFO
would block the poll and a device would never end.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from adapters.base import OutputMissing, OutputTooLarge

__all__ = ["read_confined"]


def read_confined(root: Path, relative: str, limit: int) -> bytes:
    """The bytes of ``root/relative``, at most ``limit`` of them, never outside ``root``."""
    try:
        base = root.resolve(strict=True)
        full = (base / relative).resolve(strict=True)
    except (FileNotFoundError, NotADirectoryError):
        raise OutputMissing(f"{relative}: no such file") from None
    except RuntimeError:  # a symlink loop
        raise OutputMissing(f"{relative}: a symlink loop") from None
    if not full.is_relative_to(base):
        raise OutputMissing(f"{relative}: leads outside the job's working directory")
    try:
        descriptor = os.open(full, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise OutputMissing(f"{relative}: no such file") from None
    except OSError as exc:
        raise OutputMissing(f"{relative}: cannot be read ({exc.strerror})") from None
    # Checked before fdopen, which refuses a directory with an OSError of its own.
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise OutputMissing(f"{relative}: not a regular file")
        if info.st_size > limit:
            raise OutputTooLarge(relative, info.st_size, limit)
    except BaseException:
        os.close(descriptor)
        raise
    with os.fdopen(descriptor, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:  # it grew while being read
        raise OutputTooLarge(relative, len(data), limit)
    return data
