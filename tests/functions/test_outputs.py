"""Output files named in a request, collected when the job ends (into Redis here; into a
bucket in tests/functions/test_outputs_bucket.py), and log tails kept while jobs run."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpcbridge import events
from hpcbridge.client import Client, ClientError
from hpcbridge.dev import DevStack
from hpcbridge.outputs import REDIS
from hpcbridge.store import Store
from tests.adapters import until
from tests.functions import emitted, reply, send, submitted, tick, tick_until
from tests.functions.conftest import new_stack, write_targets
from tests.services.redis_server import RedisServer

#: a program that writes a text file, a binary file in a subdirectory, and exits with $1
WRITER = ("import os, sys\n"
          "open('result.txt', 'w').write('the answer is 42\\n')\n"
          "os.makedirs('sub/dir')\n"
          "open('sub/dir/data.bin', 'wb').write(bytes(range(256)) * 4)\n"
          "sys.exit(int(sys.argv[1]))\n")


def writer(exit_code: int = 0) -> list[str]:
    return [sys.executable, "-c", WRITER, str(exit_code)]


def test_named_files_are_collected_into_redis_when_the_job_ends(
        bridge: DevStack, store: Store) -> None:
    job_id = submitted(bridge, {"target": "local", "command": writer(),
                                "outputs": ["result.txt", "sub/dir/data.bin", "absent.txt"]})
    status = tick_until(bridge, store, job_id, "SUCCEEDED")
    binary = bytes(range(256)) * 4
    assert status.outputs == {
        "result.txt": {"location": REDIS, "bytes": 17,
                       "sha256": hashlib.sha256(b"the answer is 42\n").hexdigest()},
        "sub/dir/data.bin": {"location": REDIS, "bytes": 1024,
                             "sha256": hashlib.sha256(binary).hexdigest()},
        "absent.txt": {"error": "absent.txt: no such file"},
    }
    assert store.output(job_id, "sub/dir/data.bin") == binary
    until(lambda: any(e["type"] == "hpcbridge.job.succeeded" for e in emitted(bridge, job_id)), 10,
          lambda: f"events: {emitted(bridge, job_id)}")
    succeeded = next(e for e in emitted(bridge, job_id) if e["type"] == "hpcbridge.job.succeeded")
    assert succeeded["data"]["outputs"] == status.outputs, "the event names where each is"
    with Client(redis_url=bridge.redis_url, broker=bridge.broker.url) as client:
        assert client.output(job_id, "sub/dir/data.bin") == binary
        assert client.outputs(job_id) == status.outputs
        with pytest.raises(ClientError, match=r"absent\.txt of .* was not collected: "
                                              r"absent\.txt: no such file"):
            client.output(job_id, "absent.txt")
        with pytest.raises(ClientError, match=r"has no output .other\.txt."):
            client.output(job_id, "other.txt")


def test_a_failed_jobs_files_are_collected_too(bridge: DevStack, store: Store) -> None:
    job_id = submitted(bridge, {"target": "local", "command": writer(3),
                                "outputs": ["result.txt"]})
    status = tick_until(bridge, store, job_id, "FAILED")
    assert status.exit_code == 3
    assert status.outputs is not None and status.outputs["result.txt"]["location"] == REDIS
    assert store.output(job_id, "result.txt") == b"the answer is 42\n"


def test_a_job_without_outputs_has_none_and_a_cancelled_one_collects_nothing(
        bridge: DevStack, store: Store, tmp_path: Path) -> None:
    plain = submitted(bridge, {"target": "local", "command": ["true"]})
    assert tick_until(bridge, store, plain, "SUCCEEDED").outputs is None
    gate = tmp_path / "go"
    held = submitted(bridge, {"target": "local", "outputs": ["result.txt"], "command": [
        "sh", "-c", f"echo x > result.txt; while [ ! -e {gate} ]; do sleep 0.05; done"]})
    tick_until(bridge, store, held, "RUNNING")
    assert send(bridge.functions["cancel"], events.CANCEL, {"job_id": held}).status_code == 200
    tick(bridge)
    job = store.load(held)
    assert job is not None and str(job.status.state) == "CANCELLED"
    assert job.status.outputs is None and store.output(held, "result.txt") is None


@pytest.mark.parametrize(("outputs", "field", "message"), [
    ("result.txt", "outputs", "must be a list"),
    (["/etc/passwd"], "outputs[0]", "must be relative"),
    (["ok.txt", "../../etc/passwd"], "outputs[1]", "'..'"),
    (["a\nb"], "outputs[0]", "control characters"),
    (["a", "a"], "outputs[1]", "already named"),
    ([f"f{i}" for i in range(33)], "outputs", "at most 32"),
])
def test_bad_output_paths_are_refused_naming_the_field(
        bridge: DevStack, store: Store, outputs: object, field: str, message: str) -> None:
    answer = send(bridge.functions["submit"], events.REQUESTED,
                  {"target": "local", "command": ["true"], "outputs": outputs})
    assert answer.status_code == 400
    rejected = reply(answer)
    assert rejected["type"] == events.REJECTED and rejected.data["field"] == field
    assert message in rejected.data["error"]
    assert store.recent() == [], "nothing stored"


@pytest.fixture(scope="module")
def small_budget(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[DevStack]:
    """A bridge that keeps at most 300 output bytes per job in Redis, with a target that
    cannot read files (Flux: its REST API has no file access)."""
    base = tmp_path_factory.mktemp("budget")
    targets = write_targets(base / "targets.yaml", {
        "local": {"kind": "local", "workdir": str(base / "local"), "kill_grace_s": 1},
        "flux": {"kind": "flux", "url": "http://127.0.0.1:9"},
    })
    with new_stack(redis_server.url, targets, base / "logs",
                   HPCBRIDGE_OUTPUTS_REDIS_BYTES="300").running() as stack:
        yield stack


def test_files_past_the_redis_budget_are_named_with_their_size_not_kept(
        small_budget: DevStack, store: Store) -> None:
    job_id = submitted(small_budget, {
        "target": "local", "outputs": ["a.bin", "b.bin", "c.bin"], "command": [
            "sh", "-c", "head -c 200 /dev/zero > a.bin; head -c 200 /dev/zero > b.bin; "
                        "head -c 100 /dev/zero > c.bin"]})
    outputs = tick_until(small_budget, store, job_id, "SUCCEEDED").outputs
    assert outputs is not None
    assert outputs["a.bin"]["location"] == REDIS and outputs["c.bin"]["location"] == REDIS
    assert outputs["b.bin"]["bytes"] == 200
    assert "more than the limit of 100" in outputs["b.bin"]["error"]
    assert store.output(job_id, "b.bin") is None


def test_outputs_for_a_target_that_cannot_read_files_are_refused(
        small_budget: DevStack, store: Store) -> None:
    answer = send(small_budget.functions["submit"], events.REQUESTED,
                  {"target": "flux", "command": ["true"], "outputs": ["result.txt"]})
    assert answer.status_code == 400
    assert reply(answer).data["field"] == "outputs"
    assert "cannot collect a job's files" in reply(answer).data["error"]
    assert store.recent() == []


# -- log tails -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tailing(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[DevStack]:
    """A bridge that refreshes the last 3 lines of at most 2 running jobs per tick."""
    base = tmp_path_factory.mktemp("tails")
    targets = write_targets(base / "targets.yaml", {
        "local": {"kind": "local", "workdir": str(base / "local"), "kill_grace_s": 1,
                  "slots": 3}})
    with new_stack(redis_server.url, targets, base / "logs", HPCBRIDGE_LOG_TAIL_LINES="3",
                   HPCBRIDGE_LOG_TAIL_JOBS="2").running() as stack:
        yield stack


def counting(gate: Path) -> list[str]:
    """A job that prints 'line 1', 'line 2', ... until ``gate`` exists, then 'done'."""
    return ["sh", "-c", f"i=0; while [ ! -e {gate} ]; do i=$((i+1)); echo line $i; "
                        "sleep 0.05; done; echo done"]


def test_running_jobs_log_tails_are_refreshed_a_bounded_number_per_tick(
        tailing: DevStack, store: Store, tmp_path: Path) -> None:
    gate = tmp_path / "go"
    try:
        jobs = [submitted(tailing, {"target": "local", "command": counting(gate)})
                for _ in range(3)]
        for job_id in jobs:
            tick_until(tailing, store, job_id, "RUNNING")
        refreshed: set[str] = set()
        for _ in range(2):
            tick(tailing)
            scores = dict(store._redis.zrange("hpcbridge:tailed:local", 0, -1,
                                              withscores=True))
            latest = max(scores.values())
            this_tick = {job_id for job_id, score in scores.items() if score == latest}
            assert len(this_tick) <= 2, "at most HPCBRIDGE_LOG_TAIL_JOBS per tick"
            refreshed |= this_tick
        assert refreshed == set(jobs), "the least recently refreshed go first"
        first = store.tail(jobs[0])
        assert first is not None
        lines = first.splitlines()
        assert len(lines) == 3 and all(line.startswith("line ") for line in lines)
        numbers = [int(line.split()[1]) for line in lines]
        assert numbers == list(range(numbers[0], numbers[0] + 3)), "the last 3 lines"

        def moved_on() -> bool:
            tick(tailing)
            now = store.tail(jobs[0]) or ""
            return now != first and int(now.splitlines()[-1].split()[1]) > numbers[-1]

        until(moved_on, 30, lambda: f"tail stayed {store.tail(jobs[0])!r}")
    finally:
        gate.touch()
    for job_id in jobs:
        tick_until(tailing, store, job_id, "SUCCEEDED")
    final = store.tail(jobs[0])
    assert final is not None and final.splitlines()[-1] == "done", "the final tail is kept"
    assert store._redis.zcard("hpcbridge:tailed:local") == 0, "ended jobs leave the rotation"
    with Client(redis_url=tailing.redis_url, broker=tailing.broker.url) as client:
        assert client.log_tail(jobs[0]) == final
