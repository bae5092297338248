"""The Redis store against a real redis-server: claims, versions, leases, history."""

from __future__ import annotations

import threading

import pytest
import redis

from hpcbridge.model import JobStatus, Reason, State
from hpcbridge.store import Change, Store, StoreUnavailable

REQUEST = {"target": "t", "command": ["true"]}


def accepted(job_id: str = "j1", at: float = 100.0) -> JobStatus:
    return JobStatus(job_id=job_id, target="t", state=State.ACCEPTED, submitted_at=at,
                     updated_at=at)


def test_exactly_one_of_many_concurrent_claims_wins(store: Store) -> None:
    wins: list[str] = []
    barrier = threading.Barrier(10)

    def claim(token: str) -> None:
        barrier.wait()
        if store.claim(accepted(), REQUEST, token, 200.0):
            wins.append(token)

    threads = [threading.Thread(target=claim, args=(f"t{i}",)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(wins) == 1
    job = store.load("j1")
    assert job is not None and job.claim == wins[0] and job.version == 1
    assert store.active("t") == {"j1"}
    assert store.recent() == ["j1"]
    assert [e["state"] for e in store.history("j1")] == ["ACCEPTED"]


def test_native_id_is_recorded_only_by_the_owner(store: Store) -> None:
    store.claim(accepted(), REQUEST, "owner", 200.0)
    assert store.record_native("j1", "intruder", "55") is None
    recorded = store.record_native("j1", "owner", "55")
    job = store.load("j1")
    assert job is not None and recorded == job, "the record, read in the same round trip"
    assert (job.status.native_id, job.claim, job.claim_until, job.version) == \
        ("55", None, None, 2)
    assert not store.record_native("j1", "owner", "56"), "a claim is spent once"


def test_take_over_needs_an_expired_claim_and_no_native_id(store: Store) -> None:
    store.claim(accepted(), REQUEST, "first", 200.0)
    assert not store.take_over("j1", "first", "second", now=150.0, claim_until=400.0)
    assert not store.take_over("j1", "wrong", "second", now=250.0, claim_until=400.0)
    assert store.take_over("j1", "first", "second", now=250.0, claim_until=400.0)
    assert not store.record_native("j1", "first", "77"), "the old owner lost its claim"
    assert store.record_native("j1", "second", "77")
    assert not store.take_over("j1", "", "third", now=10**9, claim_until=10**9 + 1)


def test_release_lets_a_redelivery_take_over_at_once(store: Store) -> None:
    store.claim(accepted(), REQUEST, "first", 10**9)
    store.release_claim("j1", "first", 100.5)
    assert store.take_over("j1", "first", "second", now=101.0, claim_until=300.0)


def test_apply_is_guarded_by_version_and_keeps_history(store: Store) -> None:
    store.claim(accepted(), REQUEST, "o", 200.0)
    store.record_native("j1", "o", "5")
    job = store.load("j1")
    assert job is not None
    running = job.status.replace(state=State.RUNNING, native_state="RUNNING", updated_at=101.0)
    done = job.status.replace(state=State.SUCCEEDED, exit_code=0, updated_at=102.0)
    assert store.apply([Change(job, running)]) == {"j1"}
    assert store.apply([Change(job, done)]) == set(), "stale version must not win"
    fresh = store.load("j1")
    assert fresh is not None and fresh.status.state is State.RUNNING
    assert store.apply([Change(fresh, fresh.status.replace(state=State.SUCCEEDED,
                                                           exit_code=0))]) == {"j1"}
    assert store.active("t") == set()
    assert [e["state"] for e in store.history("j1")] == ["ACCEPTED", "RUNNING", "SUCCEEDED"]


def test_apply_writes_a_whole_batch_in_one_call(store: Store) -> None:
    ids = [f"j{i}" for i in range(50)]
    for i, job_id in enumerate(ids):
        store.claim(accepted(job_id, 100.0 + i), REQUEST, "o", 200.0)
    jobs = store.load_many(ids)
    changes = [Change(job, job.status.replace(state=State.QUEUED, native_state="PENDING"))
               for job in jobs.values()]
    assert store.apply(changes) == set(ids)
    assert {j.status.state for j in store.load_many(ids).values()} == {State.QUEUED}
    assert store.recent(3) == ["j49", "j48", "j47"]


def test_a_lease_admits_one_poller_at_a_time(store: Store) -> None:
    token = store.acquire_lease("t", 30)
    assert token is not None
    assert store.acquire_lease("t", 30) is None
    store.release_lease("t", "not-mine")
    assert store.acquire_lease("t", 30) is None
    store.release_lease("t", token)
    assert store.acquire_lease("t", 30) is not None


def test_an_unreachable_redis_is_reported_as_unavailable() -> None:
    dead = Store.from_url("redis://127.0.0.1:1/0")
    with pytest.raises(StoreUnavailable, match="unreachable"):
        dead.load("j1")
    with pytest.raises(StoreUnavailable):
        dead.claim(accepted(), REQUEST, "o", 1.0)


def test_a_record_reads_back_as_it_was_written(store: Store) -> None:
    trace = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    store.claim(accepted(), {**REQUEST, "labels": {"team": "physics"}}, "o", 200.0, trace)
    store.record_native("j1", "o", "5")
    job = store.load("j1")
    assert job is not None
    ended = job.status.replace(state=State.FAILED, reason=Reason.OUT_OF_MEMORY, exit_code=137,
                               native_state="OUT_OF_MEMORY", started_at=101.5,
                               finished_at=102.25, updated_at=102.25)
    assert store.apply([Change(job, ended)]) == {"j1"}
    jobs = store.load_many(["j1", "missing"])
    assert list(jobs) == ["j1"], "a missing id is absent"
    again = jobs["j1"]
    assert again.status == ended.replace(native_id="5")
    assert (again.version, again.claim, again.claim_until, again.trace) == (3, None, None, trace)
    assert again.request == {**REQUEST, "labels": {"team": "physics"}}
    assert store.load_many([]) == {}


def test_marking_mirrored_clears_only_jobs_still_at_the_version_shown(
        redis_client: redis.Redis) -> None:
    store = Store(redis_client, track_mirror=True)
    for job_id in ("j1", "j2", "j3"):
        store.claim(accepted(job_id), REQUEST, "o", 200.0)
    assert set(store.unmirrored()) == {"j1", "j2", "j3"}
    job = store.load("j2")
    assert job is not None
    store.apply([Change(job, job.status.replace(state=State.QUEUED))])
    store.mark_mirrored([("j1", 1), ("j2", 1), ("j3", 1)])
    assert store.unmirrored() == ["j2"], "j2 changed after the mirror showed version 1"
    store.mark_mirrored([("j2", 2)])
    store.mark_mirrored([])
    assert store.unmirrored() == []
