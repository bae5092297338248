"""What the test services that run real daemons share.

A service owns one private directory and the daemons it starts there, as children of
this process, each in a session of its own. :meth:`Daemon.start` makes the directory
and launches; if anything fails on the way, it stops what already runs before it
re-raises. Daemons are stopped by their pids only (and, where a service asks, by the
process group such a pid leads), never by name.
"""

from __future__ import annotations

import abc
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["Daemon", "require_root", "spawn", "stop_process", "tail", "wait_until"]


class Daemon(abc.ABC):
    """A service of daemons in a private directory, used as a context manager.

    Subclasses set :attr:`name` and :attr:`dir_prefix` and implement :meth:`_launch`
    and :meth:`_halt`; :meth:`_prepare` is for what must happen before the directory
    exists (checks, system accounts).
    """

    #: How errors name the service: "<name> is not started".
    name: str
    #: The prefix of the private directory's name.
    dir_prefix: str

    def __init__(self, parent: Path | None, startup_timeout: float) -> None:
        """The private directory is made in ``parent`` (default: the system's temporary
        directory)."""
        self._parent = parent
        self._timeout = startup_timeout
        self._root: Path | None = None

    @property
    def root(self) -> Path:
        if self._root is None:
            raise RuntimeError(f"{self.name} is not started")
        return self._root

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        self._prepare()
        self._root = Path(tempfile.mkdtemp(prefix=self.dir_prefix, dir=self._parent))
        try:
            self._launch()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the daemons (:meth:`_halt`), then remove the private directory."""
        self._halt()
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

    def _prepare(self) -> None:  # noqa: B027 (optional: most daemons need nothing)
        """What must be checked or set up before the private directory is made."""

    @abc.abstractmethod
    def _launch(self) -> None:
        """Start the daemons in :attr:`root` and wait until they serve."""

    @abc.abstractmethod
    def _halt(self) -> None:
        """Stop whatever :meth:`_launch` started, by pid; also after a partial launch."""


def require_root(why: str) -> None:
    if os.geteuid() != 0:
        raise RuntimeError(why)


def spawn(args: Sequence[str], log: Path, env: Mapping[str, str] | None = None,
          cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Start a daemon in the foreground, in a session of its own, its stdout and stderr
    appended to ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen(list(args), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT,
                                env=None if env is None else dict(env), cwd=cwd,
                                start_new_session=True)


def wait_until(ready: Callable[[], bool], timeout: float, what: str, log: Path | None = None,
               proc: subprocess.Popen[bytes] | None = None, interval: float = 0.05) -> None:
    """Poll ``ready`` until it holds; fail with the end of ``log`` when ``proc`` exits
    first or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}{tail(log)}")
        if ready():
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready after {timeout:.0f} s{tail(log)}")
        time.sleep(interval)


def tail(log: Path | None, lines: int = 30) -> str:
    """The last ``lines`` of ``log``, to append to an error message ("" without a log)."""
    if log is None or not log.exists():
        return ""
    text = log.read_text(errors="replace").splitlines()[-lines:]
    return f"\n--- last lines of {log} ---\n" + "\n".join(text)


def stop_process(proc: subprocess.Popen[bytes], grace: float = 10.0, *,
                 group: bool = False) -> None:
    """SIGTERM to ``proc``, SIGKILL if it outlives ``grace`` seconds; with ``group``, then
    SIGKILL to what is left of the process group it leads (its own session's)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if group:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
