"""The conformance harness of the ``flux`` adapter, against the flux-restful-api EMULATOR."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import httpx

from adapters.flux import FluxRestfulAdapter
from hpcbridge.dev import free_port
from hpcbridge.model import JobRequest
from tests.adapters import CountingTransport, build_request
from tests.emulators.flux_restful import FluxRestfulEmulator

__all__ = ["FluxHarness", "secret_file"]

_TARGET = "flux-test"


def secret_file(directory: Path, value: str) -> Path:
    """A file (mode 0600) holding ``value``, the way a mounted Secret does."""
    path = directory / f"secret-{uuid.uuid4().hex[:8]}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value)
    return path


class FluxHarness:
    """A :class:`FluxRestfulAdapter` for a private :class:`FluxRestfulEmulator`.

    The password and the shared secret are files, as mounted Secrets are; the emulator
    runs its jobs in ``tmp_path`` and kills those still running when the harness closes.
    """

    #: Flux ids are 64-bit integers; the emulator's start from milliseconds << 24.
    unknown_id = "99"
    min_time_limit_s = 1
    wait_s = 15.0

    def __init__(self, tmp_path: Path, *, transport: httpx.BaseTransport | None = None) -> None:
        self.shared_dir = tmp_path / "shared"
        self.shared_dir.mkdir()
        self._secrets = tmp_path / "secrets"
        self._secrets.mkdir(mode=0o700)
        self.emulator = FluxRestfulEmulator(tmp_path / "flux").start()
        self._counter = CountingTransport()
        self.settings: dict[str, Any] = {
            "kind": "flux",
            "url": self.emulator.url,
            "user": self.emulator.user,
            "token_file": str(secret_file(self._secrets, self.emulator.password)),
            "secret_key_file": str(secret_file(self._secrets, self.emulator.secret_key)),
        }
        self.adapter = FluxRestfulAdapter(_TARGET, self.settings,
                                          transport=transport or self._counter)

    def calls(self) -> int:
        return self._counter.count

    def unreachable(self) -> FluxRestfulAdapter:
        return FluxRestfulAdapter(_TARGET, {**self.settings,
                                            "url": f"http://127.0.0.1:{free_port()}"})

    def with_bad_credentials(self) -> tuple[FluxRestfulAdapter, str]:
        """The right user and shared secret with a password the server does not have."""
        password = f"not-the-password-{uuid.uuid4().hex}"
        settings = {**self.settings, "token_file": str(secret_file(self._secrets, password))}
        return FluxRestfulAdapter(_TARGET, settings), password

    def request(self, **overrides: Any) -> JobRequest:
        """A minimal valid request: ``true`` as a command, unless a script is given."""
        return build_request(_TARGET, overrides)

    def queued_job(self, **overrides: Any) -> str:
        """Submit a job that the emulator holds in SCHED until :meth:`release`."""
        self.emulator.hold_new_jobs = True
        try:
            return self.adapter.submit(self.request(**overrides), f"queued-{uuid.uuid4().hex}")
        finally:
            self.emulator.hold_new_jobs = False

    def release(self) -> None:
        self.emulator.release()

    def vanish(self, native_id: str) -> None:
        """Purge the job, as ``flux job purge`` does."""
        self.emulator.forget(int(native_id))

    def close(self) -> None:
        self.emulator.stop()
        self.adapter.close()
