"""A poll tick runs with Python's cyclic garbage collector paused, and gives it back."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from adapters.base import Observation
from hpcbridge import events
from hpcbridge.emitter import Emitter
from hpcbridge.service import Bridge
from hpcbridge.settings import Settings
from hpcbridge.store import Store
from hpcbridge.targets import Targets


@pytest.fixture
def bridge(store: Store, tmp_path: Path) -> Iterator[Bridge]:
    targets = Targets({"local": {"kind": "local", "workdir": str(tmp_path)}})
    bridge = Bridge(Settings(), store, targets, Emitter(None))
    yield bridge
    bridge.close()


def tick(bridge: Bridge) -> None:
    bridge.poll(events.CloudEvent({"type": events.TICK, "source": "/tests", "id": "t"}, None))


def test_the_collector_is_off_during_a_tick_and_as_it_was_after(
        bridge: Bridge, monkeypatch: pytest.MonkeyPatch) -> None:
    bridge.submit(events.CloudEvent(
        {"type": events.REQUESTED, "source": "/tests", "id": "one"},
        {"target": "local", "command": [sys.executable, "-c", "pass"]}))
    adapter = bridge.targets.adapter("local")
    answer = adapter.status_many
    during: list[bool] = []

    def watched(native_ids: Sequence[str]) -> Mapping[str, Observation]:
        during.append(gc.isenabled())
        return answer(native_ids)

    monkeypatch.setattr(adapter, "status_many", watched)
    assert gc.isenabled()
    tick(bridge)
    assert during == [False] and gc.isenabled()
    gc.disable()
    try:
        tick(bridge)
        assert during == [False, False] and not gc.isenabled(), "left off, as it was"
    finally:
        gc.enable()
