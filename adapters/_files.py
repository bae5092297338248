"""Reading a job's output file from a directory this process can see.

The file is read with the bridge's own rights, so its real path (symlinks resolved)
must stay inside the job's working directory, and only a regular file is read: a FIFO
would block the poll and a device would never end.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path

from adapters.base import OutputMissing, OutputTooLarge

__all__ = ["read_confined"]


def read_confined(root: Path, relative: str, limit: int,
                  allow: Callable[[Path], None] | None = None) -> bytes:
    """The bytes of ``root/relative``, at most ``limit`` of them, never outside ``root``.

    ``allow`` is given the real path of ``root`` and may refuse it (:class:`OutputMissing`):
    a caller's own bound is checked against the very resolution the file is opened by.
    The file is then opened one directory at a time without following any link, so a
    directory swapped for a symlink after the check cannot lead the read elsewhere.
    """
    try:
        base = root.resolve(strict=True)
        if allow is not None:
            allow(base)
        full = (base / relative).resolve(strict=True)
    except (FileNotFoundError, NotADirectoryError):
        raise OutputMissing(f"{relative}: no such file") from None
    except RuntimeError:  # a symlink loop
        raise OutputMissing(f"{relative}: a symlink loop") from None
    if not full.is_relative_to(base):
        raise OutputMissing(f"{relative}: leads outside the job's working directory")
    try:
        descriptor = _open_without_links(full)
    except FileNotFoundError:
        raise OutputMissing(f"{relative}: no such file") from None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise OutputMissing(f"{relative}: its path changed while being read (a "
                                "symlink appeared)") from None
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


def _open_without_links(path: Path) -> int:
    """Open the resolved ``path`` from ``/`` one component at a time, none followed if it
    is a symlink (``O_NOFOLLOW``): ELOOP or ENOTDIR if one appeared since it was resolved."""
    directory = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in path.parts[1:-1]:
            inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW,
                            dir_fd=directory)
            os.close(directory)
            directory = inner
        return os.open(path.name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW,
                       dir_fd=directory)
    finally:
        os.close(directory)
