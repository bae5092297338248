"""The conformance harness of the ``flux`` adapter, against the flux-restful-api EMULATOR."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx

from adapters.flux import FluxRestfulAdapter
from tests.adapters import EmulatorHarness, secret_file
from tests.emulators.flux_restful import FluxRestfulEmulator

__all__ = ["FluxHarness", "secret_file"]


class FluxHarness(EmulatorHarness[FluxRestfulAdapter, FluxRestfulEmulator]):
    """A :class:`FluxRestfulAdapter` for a private :class:`FluxRestfulEmulator`.

    The password and the shared secret are files, as mounted Secrets are; the emulator
    runs its jobs in ``tmp_path`` and kills those still running when the harness closes.
    """

    target = "flux-test"
    adapter_class = FluxRestfulAdapter
    #: Flux ids are 64-bit integers; the emulator's start from milliseconds << 24.
    unknown_id = "99"
    min_time_limit_s = 1
    wait_s = 15.0

    def __init__(self, tmp_path: Path, *, transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(tmp_path)
        self.emulator = FluxRestfulEmulator(tmp_path / "flux").start()
        self._connect({
            "kind": "flux",
            "url": self.emulator.url,
            "user": self.emulator.user,
            "token_file": self._secret(self.emulator.password),
            "secret_key_file": self._secret(self.emulator.secret_key),
        }, transport)

    def with_bad_credentials(self) -> tuple[FluxRestfulAdapter, str]:
        """The right user and shared secret with a password the server does not have."""
        password = f"not-the-password-{uuid.uuid4().hex}"
        return self.make(token_file=self._secret(password)), password

    def queued_job(self, **overrides: Any) -> str:
        """Submit a job that the emulator holds in SCHED until :meth:`release`."""
        return self._submit_held("hold_new_jobs", "queued", overrides)

    def vanish(self, native_id: str) -> None:
        """Purge the job, as ``flux job purge`` does."""
        self.emulator.forget(int(native_id))
