"""The SSH connection of the harnesses that log in to the session's sshd.

Apart from :mod:`tests.adapters` so that only they import the SSH client.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from adapters._ssh import Completed, SshConnection

__all__ = ["CountingConnection"]


class CountingConnection(SshConnection):
    """An :class:`SshConnection` that counts and records the commands it runs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands: list[list[str]] = []
        self._count_lock = threading.Lock()

    def run(self, argv: Sequence[str]) -> Completed:
        with self._count_lock:
            self.commands.append(list(argv))
        return super().run(argv)
