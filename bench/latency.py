"""End-to-end latency: a job finishing on the real Slurm cluster -> the bridge's event
and the Kubernetes mirror showing it, as a function of the tick interval.

The whole dev stack runs (hpcbridge.dev.DevStack: the three functions, the broker, the
ticker at ``tick_s``, Redis) with the mirror on the KubeApiEmulator. Jobs are submitted
through the broker, wait RUNNING for a trigger file, write the time (``date +%s.%N``) as
their last act and exit 0: that time is the native state change. The triggers are pulled
one after the other at random offsets, so the finishes fall at random phases of the
ticker. Measured per job, polling every 10 ms on this machine's one clock:

* event: until the broker has received ``hpcbridge.job.succeeded`` for the job;
* mirror: until the proxy pod's phase reads Succeeded in the emulator.

Expected: on average half an interval, plus the tick's own work and Slurm's (a job's
end reaches slurmctld in milliseconds).
"""

from __future__ import annotations

import contextlib
import random
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from hpcbridge import events
from hpcbridge.dev import DevStack
from hpcbridge.naming import object_name
from tests.emulators.kube_apiserver import KubeApiEmulator
from tests.services.slurm import SlurmCluster

INTERVALS = (0.5, 1.0, 2.0, 5.0)
JOBS = 8
RUNNING_TIMEOUT_S = 60
NAMESPACE = "default"


def _job_script(workdir: Path, job_id: str) -> str:
    trigger, done = workdir / f"trigger-{job_id}", workdir / f"done-{job_id}"
    return (f"#!/bin/sh\nwhile [ ! -e {trigger} ]; do sleep 0.02; done\n"
            f"date +%s.%N > {done}.tmp && mv {done}.tmp {done}\n")


def _first_event(stack: DevStack, job_id: str, kind: str) -> bool:
    assert stack.broker is not None
    return any(e["type"] == kind for e in stack.broker.seen(job_id))


def measure(cluster: SlurmCluster, kube: KubeApiEmulator, base: Path, tick_s: float,
            jobs: int, rng: random.Random) -> dict[str, Any]:
    targets = base / "targets.yaml"
    stack = DevStack(targets_file=str(targets), tick_s=tick_s, log_dir=base / f"logs-{tick_s}",
                     extra_env={"KUBECONFIG": str(base / "kubeconfig"),
                                "HPCBRIDGE_NAMESPACE": NAMESPACE})
    ids = [f"lat-{uuid.uuid4().hex[:12]}" for _ in range(jobs)]
    native_at: dict[str, float] = {}
    event_at: dict[str, float] = {}
    mirror_at: dict[str, float] = {}
    with stack.running():
        assert stack.broker is not None
        for job_id in ids:
            stack.broker.publish(events.CloudEvent(
                {"type": events.REQUESTED, "source": "/bench/latency", "id": uuid.uuid4().hex,
                 "datacontenttype": "application/json"},
                {"job_id": job_id, "target": "hpc",
                 "script": _job_script(cluster.workdir, job_id)}))
        deadline = time.monotonic() + RUNNING_TIMEOUT_S + 2 * tick_s
        while not all(_first_event(stack, j, "hpcbridge.job.running") for j in ids):
            if time.monotonic() > deadline:
                raise TimeoutError(f"jobs not RUNNING after {RUNNING_TIMEOUT_S} s")
            time.sleep(0.05)

        halt = threading.Event()

        def watch() -> None:
            while not halt.is_set():
                now = time.time()
                pods = {p["metadata"]["name"]: p for p in kube.objects("pods", NAMESPACE)}
                for job_id in ids:
                    done = cluster.workdir / f"done-{job_id}"
                    if job_id not in native_at and done.exists():
                        native_at[job_id] = float(done.read_text())
                    if job_id not in event_at and _first_event(
                            stack, job_id, "hpcbridge.job.succeeded"):
                        event_at[job_id] = now
                    pod = pods.get(object_name(job_id))
                    if job_id not in mirror_at and pod is not None and \
                            (pod.get("status") or {}).get("phase") == "Succeeded":
                        mirror_at[job_id] = now
                time.sleep(0.01)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            for job_id in ids:
                time.sleep(rng.uniform(0, tick_s))
                (cluster.workdir / f"trigger-{job_id}").touch()
            deadline = time.monotonic() + 30 + 3 * tick_s
            while len(event_at) < jobs or len(mirror_at) < jobs or len(native_at) < jobs:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"tick {tick_s} s: not every finish was seen")
                time.sleep(0.05)
        finally:
            halt.set()
            watcher.join()
    event_s = [event_at[j] - native_at[j] for j in ids]
    mirror_s = [mirror_at[j] - native_at[j] for j in ids]
    return {"tick_s": tick_s, "jobs": jobs, "event_s": event_s, "mirror_s": mirror_s,
            "event_p50_s": statistics.median(event_s), "event_max_s": max(event_s),
            "mirror_p50_s": statistics.median(mirror_s), "mirror_max_s": max(mirror_s),
            "event_mean_s": statistics.mean(event_s)}


def run(intervals: Sequence[float] = INTERVALS, jobs: int = JOBS) -> dict[str, Any]:
    started = time.monotonic()
    rng = random.Random(7)  # noqa: S311 (reproducible phases)
    results = []
    with tempfile.TemporaryDirectory(prefix="hpcbridge-bench-") as tmp, \
            contextlib.ExitStack() as stack:
        base = Path(tmp)
        cluster = stack.enter_context(SlurmCluster())
        kube = stack.enter_context(KubeApiEmulator())
        kube.write_kubeconfig(base / "kubeconfig", NAMESPACE)
        token = base / "token"
        token.write_text(cluster.token(lifespan=3600))
        token.chmod(0o600)
        (base / "targets.yaml").write_text(yaml.safe_dump({"targets": {"hpc": {
            "kind": "slurm", "url": cluster.url, "user": cluster.user,
            "token_file": str(token), "output_dir": str(cluster.workdir),
            "partition": cluster.partition}}}))
        for tick_s in intervals:
            results.append(measure(cluster, kube, base, tick_s, jobs, rng))
    return {"intervals": results, "runtime_s": time.monotonic() - started}


def lines(result: dict[str, Any]) -> list[str]:
    return [f"tick every {r['tick_s']:g} s ({r['jobs']} jobs): event p50 {r['event_p50_s']:.2f} s "
            f"max {r['event_max_s']:.2f} s; mirror p50 {r['mirror_p50_s']:.2f} s "
            f"max {r['mirror_max_s']:.2f} s" for r in result["intervals"]]


def main() -> dict[str, Any]:
    result = run()
    for line in lines(result):
        print(line)
    return result


if __name__ == "__main__":
    main()
