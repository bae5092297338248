"""A running bridge for function tests: real Redis, the three functions, a broker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from hpcbridge.dev import DevStack
from hpcbridge.store import Store
from tests.services.redis_server import RedisServer

#: Settings the function processes of the shared stack run with.
STACK_ENV = {"HPCBRIDGE_SUBMIT_CLAIM_S": "2", "HPCBRIDGE_LOST_AFTER_S": "0"}


def write_targets(path: Path, targets: dict[str, dict]) -> Path:
    path.write_text(yaml.safe_dump({"targets": targets}))
    return path


@pytest.fixture(scope="module")
def local_targets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    base = tmp_path_factory.mktemp("local-target")
    return {
        "local": {"kind": "local", "workdir": str(base / "local"), "kill_grace_s": 1},
        "single": {"kind": "local", "workdir": str(base / "single"), "slots": 1,
                   "kill_grace_s": 1},
    }


@pytest.fixture(scope="module")
def targets_file(tmp_path_factory: pytest.TempPathFactory,
                 local_targets: dict[str, dict]) -> Path:
    return write_targets(tmp_path_factory.mktemp("targets") / "targets.yaml", local_targets)


@pytest.fixture(scope="module")
def stack(redis_server: RedisServer, targets_file: Path,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    """The bridge with its ticker practically off: tests send ticks themselves."""
    bridge = DevStack(redis_url=redis_server.url, targets_file=str(targets_file),
                      tick_s=3600, log_dir=tmp_path_factory.mktemp("logs"),
                      extra_env=STACK_ENV)
    with bridge.running():
        yield bridge


@pytest.fixture
def bridge(stack: DevStack, store: Store) -> DevStack:
    """The shared stack over an empty Redis."""
    return stack
