"""The conformance harness of the ``quantum`` adapter, against the IBM Quantum EMULATOR.

A quantum target runs circuits, not commands (``Capabilities.runs_commands`` is false):
the default request is an OpenQASM 3 program, and only the conformance tests that run no
commands apply to it. tests/test_quantum_adapter.py has the quantum equivalents of the
others.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import httpx

from adapters.quantum import IbmQuantumAdapter
from tests.adapters import EmulatorHarness
from tests.emulators.ibm_quantum import IbmQuantumRuntimeEmulator

__all__ = ["BELL", "QuantumHarness"]

#: A Bell pair, measured: only 00 and 11 can come out.
BELL = """OPENQASM 3.0;
include "stdgates.inc";
bit[2] c;
qubit[2] q;
h q[0];
cx q[0], q[1];
c = measure q;
"""


class QuantumHarness(EmulatorHarness[IbmQuantumAdapter, IbmQuantumRuntimeEmulator]):
    """An :class:`IbmQuantumAdapter` for a private :class:`IbmQuantumRuntimeEmulator`."""

    target = "quantum-test"
    adapter_class = IbmQuantumAdapter
    url_path = "/api"
    default_request: ClassVar[Mapping[str, Any]] = {"script": BELL}
    #: Service job ids are 20 characters of base32hex; this one never comes out.
    unknown_id = "never-submitted-xid"
    #: The service takes whole seconds of maximum execution time.
    min_time_limit_s = 1
    wait_s = 15.0

    def __init__(self, tmp_path: Path, *, transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(tmp_path)
        self.emulator = IbmQuantumRuntimeEmulator().start()
        self._connect({
            "kind": "quantum",
            "url": self.emulator.url,
            "token_file": self._secret(self.emulator.token),
            "service_crn": self.emulator.service_crn,
            "backend": self.emulator.backends[0],
            "shots": 256,
        }, transport)

    def with_bad_credentials(self) -> tuple[IbmQuantumAdapter, str]:
        token = f"not-the-token-{uuid.uuid4().hex}"
        return self.make(token_file=self._secret(token)), token

    def queued_job(self, **overrides: Any) -> str:
        """Submit a job that the emulator keeps Queued until :meth:`release`."""
        return self._submit_held("hold_queued", "queued", overrides)

    def running_job(self, **overrides: Any) -> str:
        """Submit a job that the emulator keeps Running until :meth:`release`."""
        return self._submit_held("hold_running", "running", overrides)

    def vanish(self, native_id: str) -> None:
        """Delete the job from the service."""
        self.emulator.forget(native_id)
