"""Submission overhead: submits through the submit function vs straight to slurmrestd,
against the same real Slurm cluster in the same run: one client submitting one job after
another, then ``CLIENTS`` clients at once (as many pipeline steps submit together).

Both paths submit the same job with the same slurmrestd request body (built by the
adapter's own ``slurm_api.submission``: name, comment, output file, environment). The
direct path is one POST per job to ``/slurm/v0.0.38/job/submit``; the bridge path is one
CloudEvent per job to the submit function (functions-framework, real Redis), which
claims the id, makes that same POST and records the native id. Rounds alternate
between the two paths so both see the same cluster load; every job is cancelled at the
end.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from adapters import slurm_api
from hpcbridge import events
from tests.services.redis_server import RedisServer, free_port
from tests.services.slurm import SlurmCluster

ROOT = Path(__file__).resolve().parent.parent
#: clients submitting at once in the second measurement
CLIENTS = 8
SCRIPT = "#!/bin/sh\ntrue\n"


def _direct(client: httpx.Client, cluster: SlurmCluster, token: str, count: int) -> list[float]:
    headers = {"X-SLURM-USER-NAME": cluster.user, "X-SLURM-USER-TOKEN": token}
    latencies = []
    for _ in range(count):
        job_id = f"j-{uuid.uuid4().hex[:24]}"
        body = slurm_api.submission("v0.0.38", slurm_api.JobSpec(
            script=SCRIPT, name=job_id, comment=f"hpcbridge:{job_id}",
            working_dir=str(cluster.workdir),
            environment={"PATH": "/usr/local/bin:/usr/bin:/bin"},
            output=f"{cluster.workdir}/%j.out", partition=cluster.partition))
        started = time.perf_counter()
        answer = client.post(f"{cluster.url}/slurm/v0.0.38/job/submit", json=body,
                             headers=headers)
        latencies.append(time.perf_counter() - started)
        if answer.status_code != 200 or not answer.json().get("job_id"):
            raise RuntimeError(f"direct submit failed: {answer.status_code} {answer.text}")
    return latencies


def _bridge(client: httpx.Client, url: str, count: int) -> list[float]:
    latencies = []
    for _ in range(count):
        event = events.CloudEvent({"type": events.REQUESTED, "source": "/bench",
                                   "id": uuid.uuid4().hex,
                                   "datacontenttype": "application/json"},
                                  {"target": "hpc", "script": SCRIPT})
        headers, body = events.encode(event)
        started = time.perf_counter()
        answer = client.post(url, headers=headers, content=body)
        latencies.append(time.perf_counter() - started)
        if answer.status_code != 200 or answer.headers.get("ce-type") != events.SUBMITTED:
            raise RuntimeError(f"bridge submit failed: {answer.status_code} {answer.text}")
    return latencies


def _at_once(submit: Callable[[httpx.Client, int], list[float]], count: int
             ) -> tuple[float, list[float]]:
    """``count`` submissions by :data:`CLIENTS` clients at once: wall time, latencies."""
    share = [count // CLIENTS + (i < count % CLIENTS) for i in range(CLIENTS)]
    clients = [httpx.Client(timeout=60) for _ in range(CLIENTS)]
    try:
        started = time.perf_counter()
        with ThreadPoolExecutor(CLIENTS) as pool:
            results = list(pool.map(submit, clients, share))
        wall = time.perf_counter() - started
    finally:
        for client in clients:
            client.close()
    return wall, [latency for result in results for latency in result]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(jobs: int = 200, rounds: int = 4) -> dict[str, Any]:
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp, SlurmCluster() as cluster:
        redis = RedisServer(Path(tmp) / "redis").start()
        token_file = Path(tmp) / "token"
        token_file.write_text(cluster.token(lifespan=3600))
        token_file.chmod(0o600)
        targets = Path(tmp) / "targets.yaml"
        targets.write_text(
            "targets:\n  hpc:\n    kind: slurm\n"
            f"    url: {cluster.url}\n    user: {cluster.user}\n"
            f"    token_file: {token_file}\n    partition: {cluster.partition}\n"
            f"    output_dir: {cluster.workdir}\n")
        port = free_port()
        env = {**os.environ, "REDIS_URL": redis.url, "HPCBRIDGE_TARGETS": str(targets)}
        function = subprocess.Popen(
            [sys.executable, "-m", "functions_framework", "--source",
             str(ROOT / "functions" / "submit" / "main.py"), "--target", "submit",
             "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}/"
        try:
            with httpx.Client(timeout=60) as client:
                while True:
                    try:
                        client.get(url)
                        break
                    except httpx.TransportError:
                        time.sleep(0.05)
                _bridge(client, url, 5)  # warm: first adapter use, version discovery
                direct, bridged = [], []
                per_round = jobs // rounds
                token = cluster.token()
                for _ in range(rounds):
                    direct += _direct(client, cluster, token, per_round)
                    bridged += _bridge(client, url, per_round)
                walls = {"direct": 0.0, "bridge": 0.0}
                concurrent: dict[str, list[float]] = {"direct": [], "bridge": []}
                for _ in range(rounds):
                    for path, submit in (
                            ("direct", lambda c, n: _direct(c, cluster, token, n)),
                            ("bridge", lambda c, n: _bridge(c, url, n))):
                        wall, latencies = _at_once(submit, per_round)
                        walls[path] += wall
                        concurrent[path] += latencies
        finally:
            function.terminate()
            function.wait()
            redis.stop()
    direct_rate = len(direct) / sum(direct)
    bridge_rate = len(bridged) / sum(bridged)
    return {"jobs_each": len(direct), "direct_per_s": direct_rate,
            "bridge_per_s": bridge_rate, "ratio": bridge_rate / direct_rate,
            "bridge_p50_ms": 1000 * statistics.median(bridged),
            "bridge_p99_ms": 1000 * _percentile(bridged, 0.99),
            "direct_p50_ms": 1000 * statistics.median(direct),
            "direct_p99_ms": 1000 * _percentile(direct, 0.99),
            "direct_ms": [1000 * v for v in direct], "bridge_ms": [1000 * v for v in bridged],
            "clients": CLIENTS,
            "concurrent_direct_per_s": len(concurrent["direct"]) / walls["direct"],
            "concurrent_bridge_per_s": len(concurrent["bridge"]) / walls["bridge"],
            "concurrent_ratio": (len(concurrent["bridge"]) / walls["bridge"])
            / (len(concurrent["direct"]) / walls["direct"]),
            "concurrent_bridge_p50_ms": 1000 * statistics.median(concurrent["bridge"]),
            "concurrent_bridge_p99_ms": 1000 * _percentile(concurrent["bridge"], 0.99),
            "concurrent_direct_p50_ms": 1000 * statistics.median(concurrent["direct"]),
            "concurrent_direct_p99_ms": 1000 * _percentile(concurrent["direct"], 0.99),
            "runtime_s": time.monotonic() - started}


def lines(r: dict[str, Any]) -> list[str]:
    return [f"sequential submits, {r['jobs_each']} jobs each, real Slurm slurmrestd: "
            f"direct {r['direct_per_s']:.0f}/s, through the submit function "
            f"{r['bridge_per_s']:.0f}/s, ratio {r['ratio']:.2f}",
            f"latency event -> native id: p50 {r['bridge_p50_ms']:.1f} ms, "
            f"p99 {r['bridge_p99_ms']:.1f} ms (direct p50 {r['direct_p50_ms']:.1f} ms, "
            f"p99 {r['direct_p99_ms']:.1f} ms)",
            f"{r['clients']} clients at once: direct {r['concurrent_direct_per_s']:.0f}/s, "
            f"through the submit function {r['concurrent_bridge_per_s']:.0f}/s, ratio "
            f"{r['concurrent_ratio']:.2f} (p50 {r['concurrent_bridge_p50_ms']:.1f} ms, "
            f"p99 {r['concurrent_bridge_p99_ms']:.1f} ms; direct p50 "
            f"{r['concurrent_direct_p50_ms']:.1f} ms)"]


def main() -> dict[str, Any]:
    result = run()
    for line in lines(result):
        print(line)
    return result


if __name__ == "__main__":
    main()
