"""The harnesses the conformance suite runs against: one per adapter kind.

Every test that takes the ``harness`` fixture runs once per entry of ``HARNESSES``.
The slow variants can be deselected by marks, e.g. ``-m "not (slurm and time_limit)"``.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Iterator

import pytest

from tests.adapters import Harness


@dataclasses.dataclass(frozen=True)
class _Kind:
    harness: str  # "module:Class" in tests.adapters
    fixtures: tuple[str, ...]  # the fixtures whose values the harness is built from
    marks: tuple[pytest.MarkDecorator, ...] = ()


# Adding a kind is one line here, for instance:
#     "slurm": _Kind("slurm_harness:SlurmHarness", ("slurm_cluster",), (pytest.mark.slurm,)),
HARNESSES: dict[str, _Kind] = {
    "local": _Kind("local_harness:LocalHarness", ("tmp_path",)),
    "slurm": _Kind("slurm_harness:SlurmHarness", ("slurm_cluster",), (pytest.mark.slurm,)),
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "time_limit: waits for a job's time limit (harness.min_time_limit_s)")


@pytest.fixture(params=[pytest.param(name, marks=kind.marks, id=name)
                        for name, kind in HARNESSES.items()])
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    kind = HARNESSES[request.param]
    module, _, cls = kind.harness.partition(":")
    factory = getattr(importlib.import_module(f"tests.adapters.{module}"), cls)
    built: Harness = factory(*(request.getfixturevalue(name) for name in kind.fixtures))
    try:
        yield built
    finally:
        built.close()
