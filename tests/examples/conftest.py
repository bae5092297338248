"""A bridge for the examples: real Redis, the three functions, the dev broker, local targets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hpcbridge.dev import DevStack
from tests.functions.conftest import new_stack, write_targets
from tests.services.redis_server import RedisServer

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
DOCS = REPO / "docs"


@pytest.fixture(scope="module")
def local_stack(redis_server: RedisServer,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    """The bridge with one ``local`` target; tests send the poll ticks themselves."""
    base = tmp_path_factory.mktemp("examples")
    targets = write_targets(base / "targets.yaml", {
        "local": {"kind": "local", "workdir": str(base / "local"), "kill_grace_s": 1}})
    with new_stack(redis_server.url, targets, base / "logs").running() as stack:
        yield stack
