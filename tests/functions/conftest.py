"""A running bridge for function tests: real Redis, the three functions, a broker."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from hpcbridge.dev import DevStack
from hpcbridge.store import Store
from tests.services.redis_server import RedisServer
from tests.services.slurm import SlurmCluster

#: Settings the function processes of the shared stack run with.
STACK_ENV = {"HPCBRIDGE_SUBMIT_CLAIM_S": "2", "HPCBRIDGE_LOST_AFTER_S": "0"}


def new_stack(redis_url: str, targets: Path, logs: Path, **env: str) -> DevStack:
    """A dev stack for tests: ticks only when a test sends one, ``env`` on top of
    :data:`STACK_ENV` for the function processes."""
    return DevStack(redis_url=redis_url, targets_file=str(targets), tick_s=3600, log_dir=logs,
                    extra_env={**STACK_ENV, **env})


def write_targets(path: Path, targets: dict[str, dict]) -> Path:
    path.write_text(yaml.safe_dump({"targets": targets}))
    return path


def slurm_target(cluster: SlurmCluster, directory: Path, url: str | None = None,
                 **settings: str) -> dict[str, str]:
    """Settings of a target on ``cluster``, its token in a 0600 file as a mounted Secret."""
    token = directory / f"token-{uuid.uuid4().hex[:8]}"
    fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(cluster.token(lifespan=4 * 3600))
    return {"kind": "slurm", "url": url or cluster.url, "user": cluster.user,
            "token_file": str(token), "output_dir": str(cluster.workdir),
            "partition": cluster.partition, **settings}


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
    with new_stack(redis_server.url, targets_file, tmp_path_factory.mktemp("logs")).running() \
            as running:
        yield running


@pytest.fixture
def bridge(stack: DevStack, store: Store) -> DevStack:
    """The shared stack over an empty Redis."""
    return stack
