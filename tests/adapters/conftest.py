"""The harnesses the conformance suite runs against: one per adapter kind.

Every test that takes the ``harness`` fixture runs once per entry of ``HARNESSES``.
The slow variants can be deselected by marks, e.g. ``-m "not (slurm and time_limit)"``.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Iterator
from typing import Any

import pytest

from tests.adapters import Harness, RemoteHarness, VanishingHarness


@dataclasses.dataclass(frozen=True)
class _Kind:
    harness: str  # "module:Class" in tests.adapters
    fixtures: tuple[str, ...]  # the fixtures whose values the harness is built from
    marks: tuple[pytest.MarkDecorator, ...] = ()
    remote: bool = True  # a RemoteHarness: a manager over the network, with credentials
    vanish: bool = False  # a VanishingHarness: the test can make the manager forget a job
    # The manager runs commands and shell scripts (the suite's jobs are such); a quantum
    # service runs circuits instead: its equivalents are in tests/test_quantum_adapter.py.
    runs_commands: bool = True
    # The adapter reads a finished job's files (Capabilities.collect_outputs).
    collect_outputs: bool = False


# Adding a kind is one line here: its harness, the fixtures it is built from, its marks,
# and whether it is remote (test_conformance_remote) and can make a job vanish.
HARNESSES: dict[str, _Kind] = {
    "local": _Kind("local_harness:LocalHarness", ("tmp_path",), remote=False, vanish=True,
                   collect_outputs=True),
    # Slurm without accounting forgets a job MinJobAge (300 s) after it ends, and nothing
    # purges one sooner: a vanished Slurm job is an unknown id (test_unknown_native_id...).
    "slurm": _Kind("slurm_harness:SlurmHarness", ("slurm_cluster",), (pytest.mark.slurm,),
                   collect_outputs=True),
    # LSF cannot run here: both transports drive an emulator (tests/emulators/lsf.py) that
    # forgets a finished job CLEAN_PERIOD (seconds here) after it ended. lsf-ssh logs in to
    # the session's sshd, which comes with the Slurm cluster, hence its mark.
    "lsf-web": _Kind("lsf_harness:LsfWebHarness", ("tmp_path",), vanish=True),
    "lsf-ssh": _Kind("lsf_harness:LsfSshHarness", ("sshd",), (pytest.mark.slurm,),
                     vanish=True, collect_outputs=True),
    "slurm-ssh": _Kind("slurm_ssh_harness:SlurmSshHarness", ("slurm_cluster", "sshd"),
                       (pytest.mark.slurm,), collect_outputs=True),
    "flux": _Kind("flux_harness:FluxHarness", ("tmp_path",), vanish=True),
    "ray": _Kind("ray_harness:RayHarness", ("ray_head", "tmp_path"), (pytest.mark.ray,),
                 vanish=True),
    "quantum": _Kind("quantum_harness:QuantumHarness", ("tmp_path",), vanish=True,
                     runs_commands=False),
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "time_limit: waits for a job's time limit (harness.min_time_limit_s)")


def _params(**wanted: bool) -> list[Any]:
    return [pytest.param(name, marks=kind.marks, id=name) for name, kind in HARNESSES.items()
            if all(getattr(kind, feature) == value for feature, value in wanted.items())]


def _build(request: pytest.FixtureRequest) -> Iterator[Harness]:
    kind = HARNESSES[request.param]
    module, _, cls = kind.harness.partition(":")
    factory = getattr(importlib.import_module(f"tests.adapters.{module}"), cls)
    built: Harness = factory(*(request.getfixturevalue(name) for name in kind.fixtures))
    try:
        yield built
    finally:
        built.close()


@pytest.fixture(params=_params(runs_commands=True))
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    """Every kind whose manager runs the suite's command and script jobs."""
    yield from _build(request)


@pytest.fixture(params=_params())
def any_harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    """Every kind, for what holds whatever a manager runs."""
    yield from _build(request)


@pytest.fixture(params=_params(collect_outputs=True))
def outputs_harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    """Every kind whose adapter reads a finished job's files."""
    yield from _build(request)


@pytest.fixture(params=_params(remote=True))
def remote_harness(request: pytest.FixtureRequest) -> Iterator[RemoteHarness]:
    yield from _build(request)  # type: ignore[misc]


@pytest.fixture(params=_params(vanish=True))
def vanishing_harness(request: pytest.FixtureRequest) -> Iterator[VanishingHarness]:
    yield from _build(request)  # type: ignore[misc]
