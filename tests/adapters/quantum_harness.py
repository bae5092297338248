"""The conformance harness of the ``quantum`` adapter, against the IBM Quantum EMULATOR.

A quantum target runs circuits, not commands (``Capabilities.runs_commands`` is false):
the default request is an OpenQASM 3 program, and only the conformance tests that run no
commands apply to it. tests/test_quantum_adapter.py has the quantum equivalents of the
others.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx

from adapters.quantum import IbmQuantumAdapter
from hpcbridge.dev import free_port
from hpcbridge.model import JobRequest
from tests.adapters import CountingTransport, build_request
from tests.adapters.flux_harness import secret_file
from tests.emulators.ibm_quantum import IbmQuantumRuntimeEmulator

__all__ = ["BELL", "QuantumHarness"]

_TARGET = "quantum-test"

#: A Bell pair, measured: only 00 and 11 can come out.
BELL = """OPENQASM 3.0;
include "stdgates.inc";
bit[2] c;
qubit[2] q;
h q[0];
cx q[0], q[1];
c = measure q;
"""


class QuantumHarness:
    """An :class:`IbmQuantumAdapter` for a private :class:`IbmQuantumRuntimeEmulator`."""

    #: Service job ids are 20 characters of base32hex; this one never comes out.
    unknown_id = "never-submitted-xid"
    #: The service takes whole seconds of maximum execution time.
    min_time_limit_s = 1
    wait_s = 15.0

    def __init__(self, tmp_path: Path, *, transport: httpx.BaseTransport | None = None) -> None:
        self.shared_dir = tmp_path / "shared"
        self.shared_dir.mkdir()
        self._secrets = tmp_path / "secrets"
        self._secrets.mkdir(mode=0o700)
        self.emulator = IbmQuantumRuntimeEmulator().start()
        self._counter = CountingTransport()
        self.settings: dict[str, Any] = {
            "kind": "quantum",
            "url": self.emulator.url,
            "token_file": str(secret_file(self._secrets, self.emulator.token)),
            "service_crn": self.emulator.service_crn,
            "backend": self.emulator.backends[0],
            "shots": 256,
        }
        self.adapter = IbmQuantumAdapter(_TARGET, self.settings,
                                         transport=transport or self._counter)

    def calls(self) -> int:
        return self._counter.count

    def unreachable(self) -> IbmQuantumAdapter:
        return IbmQuantumAdapter(_TARGET, {**self.settings,
                                           "url": f"http://127.0.0.1:{free_port()}/api"})

    def with_bad_credentials(self) -> tuple[IbmQuantumAdapter, str]:
        token = f"not-the-token-{uuid.uuid4().hex}"
        settings = {**self.settings, "token_file": str(secret_file(self._secrets, token))}
        return IbmQuantumAdapter(_TARGET, settings), token

    def request(self, **overrides: Any) -> JobRequest:
        """A minimal valid request: the Bell circuit, unless a script or command is given."""
        return build_request(_TARGET, overrides, {"script": BELL})

    def queued_job(self, **overrides: Any) -> str:
        """Submit a job that the emulator keeps Queued until :meth:`release`."""
        self.emulator.hold_queued = True
        try:
            return self.adapter.submit(self.request(**overrides), f"queued-{uuid.uuid4().hex}")
        finally:
            self.emulator.hold_queued = False

    def running_job(self, **overrides: Any) -> str:
        """Submit a job that the emulator keeps Running until :meth:`release`."""
        self.emulator.hold_running = True
        try:
            return self.adapter.submit(self.request(**overrides), f"running-{uuid.uuid4().hex}")
        finally:
            self.emulator.hold_running = False

    def release(self) -> None:
        self.emulator.release()

    def vanish(self, native_id: str) -> None:
        """Delete the job from the service."""
        self.emulator.forget(native_id)

    def close(self) -> None:
        self.emulator.stop()
        self.adapter.close()
