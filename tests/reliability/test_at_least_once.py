"""At-least-once delivery: every request delivered three times, in random order and from
many threads at once, makes exactly one native job, which ends once and is watched once.

Knative delivers at least once: a retry after a lost answer, two Broker replicas, a
redelivery racing the first attempt. Here each of 200 requests (a quarter named by the
caller's ``job_id``, the rest by the event's identity) is delivered three times, the 600
deliveries shuffled and sent by 12 threads; a smaller batch goes to the real Slurm
cluster. Each job appends its own id to a file, so "ran exactly once" is read from the
jobs themselves, not from the bridge.
"""

from __future__ import annotations

import collections
import concurrent.futures
import random
import threading
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from hpcbridge import events
from tests.reliability import (
    FIGURES,
    Stack,
    assert_watched_once,
    converge,
    deliver,
    local_done,
)
from tests.reliability.slurm import SLURM_OVER, tagged
from tests.services.slurm import SlurmCluster

LOCAL_REQUESTS = 200
SLURM_REQUESTS = 24
COPIES = 3
THREADS = 12


def deliver_copies(url: str, requests: Mapping[str, dict[str, Any]], *, copies: int,
                   seed: int) -> dict[str, list[httpx.Response]]:
    """Deliver each request (by event id) ``copies`` times, shuffled, from many threads."""
    deliveries = [event_id for event_id in requests for _ in range(copies)]
    random.Random(seed).shuffle(deliveries)
    local = threading.local()
    clients: list[httpx.Client] = []
    lock = threading.Lock()

    def one(event_id: str) -> tuple[str, httpx.Response]:
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=60)
            with lock:
                clients.append(local.client)
        return event_id, deliver(url, events.REQUESTED, requests[event_id],
                                 event_id=event_id, client=local.client)

    answers: dict[str, list[httpx.Response]] = collections.defaultdict(list)
    try:
        with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
            for event_id, answer in pool.map(one, deliveries):
                answers[event_id].append(answer)
    finally:
        for client in clients:
            client.close()
    FIGURES.add("duplicates", len(deliveries) - len(requests))
    return answers


def one_job_per_request(answers: Mapping[str, list[httpx.Response]]) -> dict[str, str]:
    """Every copy answered 200 with the same reply, byte for byte; event id -> job id."""
    job_ids = {}
    for event_id, copies in answers.items():
        assert [a.status_code for a in copies] == [200] * len(copies), \
            [(a.status_code, a.text) for a in copies]
        assert len({a.content for a in copies}) == 1, "duplicates get the same reply"
        assert len({a.headers["ce-id"] for a in copies}) == 1
        assert copies[0].headers["ce-type"] == events.SUBMITTED
        job_ids[event_id] = copies[0].headers["ce-subject"]
    assert len(set(job_ids.values())) == len(answers), "one job id per request"
    return job_ids


def one_event_per_transition(stack: Stack, job_ids: list[str]) -> None:
    """The broker heard each transition of each job once."""
    broker = stack.dev.broker
    assert broker is not None
    wanted = set(job_ids)
    seen: dict[str, list[str]] = collections.defaultdict(list)
    for event in broker.seen():
        if event.get("subject") in wanted:
            seen[event["subject"]].append(event["type"])
    for job_id in job_ids:
        assert seen[job_id], f"no event about {job_id}"
        assert len(seen[job_id]) == len(set(seen[job_id])), f"{job_id}: {seen[job_id]}"


def test_200_requests_delivered_three_times_make_200_local_jobs(
        plain: Stack, tmp_path: Path) -> None:
    local_stack = plain
    runs = tmp_path / "runs"
    requests: dict[str, dict[str, Any]] = {}
    for number in range(LOCAL_REQUESTS):
        data: dict[str, Any] = {"target": "local", "environment": {"RUNS": str(runs)},
                                "command": ["sh", "-c", 'echo "$HPCBRIDGE_JOB_ID" >> "$RUNS"']}
        if number % 4 == 0:
            data["job_id"] = f"alo-{number}-{uuid.uuid4().hex[:8]}"
        requests[uuid.uuid4().hex] = data
    answers = deliver_copies(local_stack.submit_url, requests, copies=COPIES, seed=20261123)
    job_ids = sorted(one_job_per_request(answers).values())

    jobs = Path(local_stack.targets["local"]["workdir"]) / "jobs"
    mine = set(job_ids)
    assert sorted(p.name for p in jobs.iterdir() if p.name.lstrip(".").split(".")[0] in mine) \
        == job_ids, "exactly one job directory per request, and no staging left behind"
    workdir = local_stack.targets["local"]["workdir"]
    ticks = converge(local_stack, dict.fromkeys(job_ids, "SUCCEEDED"),
                     lambda job_id: local_done(workdir, job_id), timeout_s=120)
    assert sorted(runs.read_text().split()) == job_ids, "every job ran exactly once"
    assert_watched_once(local_stack, job_ids)
    one_event_per_transition(local_stack, job_ids)
    FIGURES.add("jobs", len(job_ids))
    FIGURES.note("at-least-once (local)", f"{LOCAL_REQUESTS} requests x {COPIES} copies "
                 f"-> {len(job_ids)} jobs, all SUCCEEDED {ticks} tick(s) after the runs ended")


@pytest.mark.slurm
def test_a_batch_delivered_three_times_makes_one_slurm_job_each(
        slurm_stack: Stack, slurm_cluster: SlurmCluster) -> None:
    stack = slurm_stack
    runs = slurm_cluster.workdir / f"runs-{uuid.uuid4().hex[:8]}"
    requests = {uuid.uuid4().hex: {
        "target": "hpc", "environment": {"RUNS": str(runs)},
        "command": ["sh", "-c", 'echo "$SLURM_JOB_NAME" >> "$RUNS"']}
        for _ in range(SLURM_REQUESTS)}
    answers = deliver_copies(stack.submit_url, requests, copies=COPIES, seed=7)
    job_ids = sorted(one_job_per_request(answers).values())
    native = {job_id: tagged(slurm_cluster, job_id) for job_id in job_ids}
    assert all(len(ids) == 1 for ids in native.values()), \
        {j: ids for j, ids in native.items() if len(ids) != 1}
    replies = {a[0].headers["ce-subject"]: a[0].json()["native_id"] for a in answers.values()}
    assert replies == {job_id: ids[0] for job_id, ids in native.items()}

    def over(job_id: str) -> bool:
        return slurm_cluster.job_state(native[job_id][0]) in SLURM_OVER

    ticks = converge(stack, dict.fromkeys(job_ids, "SUCCEEDED"), over, timeout_s=120)
    assert sorted(runs.read_text().split()) == job_ids, "every job ran exactly once"
    assert_watched_once(stack, job_ids)
    one_event_per_transition(stack, job_ids)
    FIGURES.add("jobs", len(job_ids))
    FIGURES.note("at-least-once (slurm)", f"{SLURM_REQUESTS} requests x {COPIES} copies "
                 f"-> {len(job_ids)} Slurm jobs, all SUCCEEDED {ticks} tick(s) after "
                 "Slurm finished them")
