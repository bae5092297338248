"""Load: 1,000 requests in one minute against one submit instance, no errors, memory flat.

One submit function (one gunicorn worker, as one Knative pod) gets a request every 60 ms
for a minute, from 16 client threads, each a new job on the local target.

"Flat" memory: the worker's resident set grows by at most RSS_GROWTH_KIB (8 MiB, so
8 KiB per request) from after a warm-up of 100 requests to the end. Measured here: about
1 to 1.5 MiB per 1,000 requests, the allocator settling. A leak of 8 KiB or more per
request (about one request's event, JobRequest and reply kept alive) fails the test,
and the same worker process must serve the whole minute (a restart would hide a leak or
a crash).
"""

from __future__ import annotations

import concurrent.futures
import statistics
import threading
import time
from pathlib import Path

import httpx

from hpcbridge import events
from tests.reliability import FIGURES, Stack, local_done, post, rss_kib, tick, wait_for
from tests.reliability.conftest import SecretRedis

REQUESTS = 1000
WINDOW_S = 60.0
WARM_UP = 100
THREADS = 16
RSS_GROWTH_KIB = 8 * 1024
#: How late the last answer may come after the minute (a busy CI machine).
LATE_S = 15.0


def test_1000_requests_in_a_minute_no_errors_memory_flat(secret_redis: SecretRedis,
                                                         tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    targets = {"local": {"kind": "local", "workdir": str(workdir), "slots": 8,
                         "kill_grace_s": 1}}
    with Stack(secret_redis.url, targets, tmp_path / "stack").running() as stack:
        workers = stack.worker_pids("submit")
        assert len(workers) == 1, f"one submit instance, one worker: {workers}"
        worker = workers[0]
        with httpx.Client(timeout=60) as warm:
            for _ in range(WARM_UP):
                assert post(stack.submit_url, events.REQUESTED,
                            {"target": "local", "command": ["true"]}, client=warm).is_success
        rss_start = rss_kib(worker)
        samples = [rss_start]
        local = threading.local()
        clients: list[httpx.Client] = []
        lock = threading.Lock()
        start = time.monotonic() + 0.5

        def one(number: int) -> tuple[int, float, str]:
            if not hasattr(local, "client"):
                local.client = httpx.Client(timeout=60)
                with lock:
                    clients.append(local.client)
            due = start + number * WINDOW_S / REQUESTS
            time.sleep(max(0.0, due - time.monotonic()))
            sent = time.monotonic()
            answer = post(stack.submit_url, events.REQUESTED,
                          {"target": "local", "command": ["true"]}, client=local.client)
            if number % 100 == 0:
                samples.append(rss_kib(worker))
            return answer.status_code, time.monotonic() - sent, \
                answer.headers.get("ce-subject", "")

        try:
            with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
                results = list(pool.map(one, range(REQUESTS)))
        finally:
            for client in clients:
                client.close()
        elapsed = time.monotonic() - start
        rss_end = rss_kib(worker)
        samples.append(rss_end)
        FIGURES.add("load_requests", REQUESTS)

        errors = [status for status, _, _ in results if status != 200]
        latencies = sorted(latency for _, latency, _ in results)
        growth = rss_end - rss_start
        FIGURES.note("load", (
            f"{REQUESTS} requests in {elapsed:.1f} s, {len(errors)} errors, latency p50 "
            f"{statistics.median(latencies) * 1000:.0f} ms, p99 "
            f"{latencies[int(len(latencies) * 0.99)] * 1000:.0f} ms; worker RSS "
            f"{rss_start / 1024:.1f} -> {rss_end / 1024:.1f} MiB ({growth:+d} KiB, flat "
            f"means <= {RSS_GROWTH_KIB} KiB); samples MiB "
            f"{[round(s / 1024, 1) for s in samples]}"))
        assert errors == [], f"{len(errors)} errors: {sorted(set(errors))}"
        assert elapsed <= WINDOW_S + LATE_S, f"the minute took {elapsed:.0f} s"
        assert stack.worker_pids("submit") == [worker], "the same worker served it all"
        assert growth <= RSS_GROWTH_KIB, f"RSS grew {growth} KiB"

        job_ids = [job_id for _, _, job_id in results]
        assert len(set(job_ids)) == REQUESTS
        wait_for(lambda: all(local_done(workdir, j) for j in job_ids), 120,
                 lambda: "the jobs did not all end")
        for _ in range(2):
            tick(stack)
        assert set(stack.states(job_ids).values()) == {"SUCCEEDED"}, "none lost under load"
        FIGURES.add("jobs", REQUESTS)
