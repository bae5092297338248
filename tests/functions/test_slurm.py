"""The three functions against the real Slurm cluster, through a request-counting proxy."""

from __future__ import annotations

import concurrent.futures
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hpcbridge import events
from hpcbridge.dev import DevStack
from hpcbridge.store import Store
from tests.adapters import until
from tests.functions import reply, send, submitted, tick, tick_until
from tests.functions.conftest import new_stack, slurm_target, write_targets
from tests.services.counting_proxy import CountingProxy
from tests.services.redis_server import RedisServer
from tests.services.slurm import SlurmCluster

pytestmark = pytest.mark.slurm


@pytest.fixture(scope="module")
def proxy(slurm_cluster: SlurmCluster) -> Iterator[CountingProxy]:
    with CountingProxy(slurm_cluster.url) as counting:
        yield counting


@pytest.fixture(scope="module")
def slurm_targets(slurm_cluster: SlurmCluster, proxy: CountingProxy,
                  tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("slurm-targets")
    hpc = slurm_target(slurm_cluster, directory, proxy.url)
    held = {**hpc, "partition": slurm_cluster.held_partition}
    return write_targets(directory / "targets.yaml", {"hpc": hpc, "held": held})


@pytest.fixture(scope="module")
def hpc(redis_server: RedisServer, slurm_targets: Path,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    with new_stack(redis_server.url, slurm_targets, tmp_path_factory.mktemp("logs")).running() \
            as bridge:
        yield bridge


def named(cluster: SlurmCluster, job_id: str) -> list[str]:
    """Ids of the Slurm jobs tagged with ``job_id``."""
    return [job.job_id for job in cluster.jobs() if job.name == job_id]


def test_a_job_runs_on_slurm_to_success(hpc: DevStack, store: Store,
                                        slurm_cluster: SlurmCluster) -> None:
    job_id = submitted(hpc, {"target": "hpc", "script": "#!/bin/sh\necho hello from slurm\n"})
    status = tick_until(hpc, store, job_id, "SUCCEEDED")
    assert (status.exit_code, status.native_state) == (0, "COMPLETED")
    assert named(slurm_cluster, job_id) == [status.native_id]


def test_a_non_zero_exit_keeps_its_code(hpc: DevStack, store: Store) -> None:
    job_id = submitted(hpc, {"target": "hpc", "command": ["sh", "-c", "exit 3"]})
    status = tick_until(hpc, store, job_id, "FAILED")
    assert (status.exit_code, str(status.reason), status.native_state) == \
        (3, "exit_code", "FAILED")


def test_a_running_job_is_cancelled(hpc: DevStack, store: Store,
                                    slurm_cluster: SlurmCluster) -> None:
    job_id = submitted(hpc, {"target": "hpc", "command": ["sleep", "300"]})
    status = tick_until(hpc, store, job_id, "RUNNING")
    answer = send(hpc.functions["cancel"], events.CANCEL, {"job_id": job_id})
    assert reply(answer)["type"] == "hpcbridge.job.cancelled"
    until(lambda: slurm_cluster.job_state(status.native_id or "") == "CANCELLED", 30,
          lambda: f"slurm says {slurm_cluster.job_state(status.native_id or '')}")


def test_a_queued_job_is_cancelled(hpc: DevStack, store: Store,
                                   slurm_cluster: SlurmCluster) -> None:
    job_id = submitted(hpc, {"target": "held", "command": ["true"]})
    status = tick_until(hpc, store, job_id, "QUEUED")
    assert status.native_state == "PENDING"
    answer = send(hpc.functions["cancel"], events.CANCEL, {"job_id": job_id})
    assert reply(answer)["type"] == "hpcbridge.job.cancelled"
    until(lambda: slurm_cluster.job_state(status.native_id or "") == "CANCELLED", 30,
          lambda: f"slurm says {slurm_cluster.job_state(status.native_id or '')}")


def test_five_deliveries_at_once_make_one_slurm_job(hpc: DevStack, store: Store,
                                                     slurm_cluster: SlurmCluster) -> None:
    data = {"target": "hpc", "command": ["true"]}
    event_id = uuid.uuid4().hex
    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        answers = list(pool.map(
            lambda _: send(hpc.functions["submit"], events.REQUESTED, data,
                           event_id=event_id), range(5)))
    assert [a.status_code for a in answers] == [200] * 5
    assert len({a.content for a in answers}) == 1
    job_id = reply(answers[0])["subject"]
    assert named(slurm_cluster, job_id) == [reply(answers[0]).data["native_id"]]


def test_a_crash_between_submit_and_record_is_adopted_by_tag(
        redis_server: RedisServer, store: Store, slurm_targets: Path,
        slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    data = {"target": "hpc", "command": ["true"], "job_id": f"crash-{uuid.uuid4().hex[:8]}"}
    event_id = uuid.uuid4().hex
    crashing = new_stack(redis_server.url, slurm_targets, tmp_path / "logs-1",
                      HPCBRIDGE_FAULT="submit.after_manager")
    with crashing.running(), pytest.raises(httpx.HTTPError):
        send(crashing.functions["submit"], events.REQUESTED, data, event_id=event_id)
    first = named(slurm_cluster, data["job_id"])
    assert len(first) == 1, "Slurm got the job before the function died"
    stored = store.load(data["job_id"])
    assert stored is not None and stored.status.native_id is None

    with new_stack(redis_server.url, slurm_targets, tmp_path / "logs-2").running() as healthy:
        answer = send(healthy.functions["submit"], events.REQUESTED, data, event_id=event_id)
    assert answer.status_code == 200
    assert reply(answer).data["native_id"] == first[0], "adopted, not submitted again"
    assert named(slurm_cluster, data["job_id"]) == first


def test_slurmrestd_down_answers_503_and_submits_nothing(
        redis_server: RedisServer, store: Store, slurm_targets: Path,
        slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    data = {"target": "hpc", "command": ["true"], "job_id": f"down-{uuid.uuid4().hex[:8]}"}
    event_id = uuid.uuid4().hex
    # Production's patience: a released submission is not "lost" for ten minutes.
    with new_stack(redis_server.url, slurm_targets, tmp_path / "logs",
                   HPCBRIDGE_LOST_AFTER_S="600").running() as hpc:
        slurm_cluster.stop_slurmrestd()
        try:
            down = send(hpc.functions["submit"], events.REQUESTED, data, event_id=event_id)
            assert down.status_code == 503
            assert "Traceback" not in down.text
        finally:
            slurm_cluster.start_slurmrestd()
        assert named(slurm_cluster, data["job_id"]) == []
        tick(hpc)  # before Knative's redelivery arrives: the job waits for it
        waiting = store.load(data["job_id"])
        assert waiting is not None and str(waiting.status.state) == "ACCEPTED"
        up = send(hpc.functions["submit"], events.REQUESTED, data, event_id=event_id)
        assert up.status_code == 200
    assert named(slurm_cluster, data["job_id"]) == [reply(up).data["native_id"]]


def test_a_tick_over_50_active_jobs_makes_one_request_to_slurmrestd(
        hpc: DevStack, store: Store, proxy: CountingProxy) -> None:
    job_ids = [submitted(hpc, {"target": "held", "command": ["true"]}) for _ in range(50)]
    try:
        for _ in range(2):  # a full answer, then (nothing changed) a 304
            proxy.reset()
            answer = send(hpc.functions["poll"], events.TICK, {"targets": ["held"]})
            assert answer.status_code == 200
            assert proxy.count() == 1, dict(proxy.counts)
            assert proxy.count("GET", "/jobs") == 1
        states = {str(job.status.state) for job in store.load_many(job_ids).values()}
        assert states == {"QUEUED"}
    finally:
        for job_id in job_ids:
            send(hpc.functions["cancel"], events.CANCEL, {"job_id": job_id})
    tick(hpc)
