"""Poll scaling: one tick over N active jobs, against the pod-per-job design, same manager.

The manager is the real Slurm 22.05 slurmrestd of tests/services (one node, a ``held``
partition whose jobs stay PENDING), behind tests/services' counting proxy, for every N:
it holds 10,000 held jobs comfortably (MaxJobCount raised above Slurm's default 10,000,
since cancelled jobs stay listed for MinJobAge). Redis is a real redis-server, Kubernetes
is the KubeApiEmulator of tests/emulators, and events go to a sink that counts them; the
three run in child processes so that they do not share the bridge's GIL.

The bridge is :class:`hpcbridge.service.Bridge`, called in-process on a tick event with
the mirror on, with meters on its three clients (see ``bench._instruments``); the poll
function is also called over HTTP (functions-framework) for the steady tick. Jobs are
submitted straight to slurmrestd (8 threads) with the body the adapter would send, then
recorded in Redis and shown in the Kubernetes API as a bridge that has watched them for a
while leaves them (QUEUED, mirror up to date; the objects are those Mirror.show builds,
sent in bulk). Per N:

* steady: no job changed; slurmrestd answers ``update_time`` with 304 (3 ticks, median);
* full list: no job changed, but the adapter is new (a fresh function instance), so
  slurmrestd sends every job (3 ticks, median);
* 10% change: 10% of the jobs are cancelled with scancel, then one tick;
* pod-per-job: one polling interval of the IBM Bridge Operator's per-job pod, for the same
  N jobs against the same slurmrestd and emulator. Its pod (pods/slurm/main.go) does, per
  interval: GET its ConfigMap, ``GET /slurm/v0.0.38/job/{id}``, and updates the ConfigMap
  when the state changed. Simulated by 8 concurrent loops with kept-alive connections
  (which favours it: real pods each hold their own connection; more loops only queue
  longer, slurmrestd answers them one after the other); the update is a merge patch of
  one annotation on the job's ConfigMap. KNoC, also pod-per-job, polls per pod as well.

At the largest N, a steady tick, a full-list tick and a second 10% change tick are run
again under cProfile to show where the bridge's own time goes.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import pstats
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import kubernetes.client
import yaml

from adapters import slurm_api
from bench import _instruments as meters
from bench._servers import ServerProcess, write_kubeconfig
from hpcbridge import events
from hpcbridge.mirror import Mirror
from hpcbridge.model import JobRequest, JobStatus, State
from hpcbridge.naming import object_name
from hpcbridge.service import Bridge
from hpcbridge.settings import Settings
from hpcbridge.store import Store
from hpcbridge.targets import Targets
from tests.services.redis_server import RedisServer, free_port
from tests.services.slurm import SlurmCluster

ROOT = Path(__file__).resolve().parent.parent
STEPS = (100, 1_000, 10_000)
CHANGE = 0.10
POD_LOOPS = 8
POD_INTERVAL_LIMIT_S = 240
SUBMIT_THREADS = 8
NAMESPACE = "default"
TARGET = "hpc"
SCRIPT = "#!/bin/sh\ntrue\n"
API = "v0.0.38"
#: bounds on every wait in this benchmark
SUBMIT_TIMEOUT_S = 180
CANCEL_TIMEOUT_S = 120


class BenchCluster(SlurmCluster):
    """The test cluster, allowed more than Slurm's default MaxJobCount of 10,000."""

    def _slurm_conf(self) -> str:
        return super()._slurm_conf() + "MaxJobCount=50000\n"


def slurm_version() -> str:
    try:
        return subprocess.run(["slurmctld", "-V"], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# --- jobs ---------------------------------------------------------------------------------

def submit_held(cluster: SlurmCluster, job_ids: Sequence[str]) -> list[tuple[str, str]]:
    """Submit ``job_ids`` to the held partition straight to slurmrestd; (job id, native)."""
    headers = {"X-SLURM-USER-NAME": cluster.user, "X-SLURM-USER-TOKEN": cluster.token(7200)}
    local = threading.local()
    deadline = time.monotonic() + SUBMIT_TIMEOUT_S
    clients: list[httpx.Client] = []

    def submit(job_id: str) -> tuple[str, str]:
        if time.monotonic() > deadline:
            raise TimeoutError("submitting held jobs took too long")
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(base_url=cluster.url, timeout=60)
            clients.append(client)
        body = slurm_api.submission(API, slurm_api.JobSpec(
            script=SCRIPT, name=job_id, comment=f"hpcbridge:{job_id}",
            working_dir=str(cluster.workdir),
            environment={"PATH": "/usr/local/bin:/usr/bin:/bin"},
            output=f"{cluster.workdir}/%j.out", partition=cluster.held_partition))
        answer = client.post(f"/slurm/{API}/job/submit", json=body, headers=headers)
        native = answer.json().get("job_id") if answer.status_code == 200 else None
        if not native:
            raise RuntimeError(f"submit failed: {answer.status_code} {answer.text[:300]}")
        return job_id, str(native)

    try:
        with ThreadPoolExecutor(SUBMIT_THREADS) as pool:
            return list(pool.map(submit, job_ids))
    finally:
        for client in clients:
            client.close()


_TEMPLATE_ID = "jobidplaceholder"
_TEMPLATE_NATIVE = "nativeidplaceholder"


class _Captured:
    """What the kubernetes client answers when nothing exists yet; records the requests.

    Plugged in as the client's HTTP layer, it lets :meth:`Mirror.show` build the exact
    ConfigMap, Pod and Pod status it writes for a new job, without a server.
    """

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str, Any]] = []

    def request(self, method: str, url: str, headers: Any = None, body: Any = None,
                *args: Any, **kwargs: Any) -> Any:
        path = httpx.URL(url).path
        kind = (headers or {}).get("Content-Type", "")
        if kind == "application/json-patch+json" and not isinstance(body, list):
            kind = "application/strategic-merge-patch+json"  # as the client's rest layer does
        self.requests.append((method, path, kind, body))
        if method == "PATCH" and not path.endswith("/status"):
            return _Answer(404, {"kind": "Status", "code": 404, "reason": "NotFound"})
        if method == "POST" and path.endswith("/nodes"):
            return _Answer(409, {"kind": "Status", "code": 409, "reason": "AlreadyExists"})
        return _Answer(201 if method == "POST" else 200, body)


class _Answer(io.IOBase):
    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.reason = "captured"
        self.data = json.dumps(body).encode()

    def read(self) -> bytes:
        return self.data

    @property
    def response(self) -> _Answer:
        """The raw answer, which the client returns when asked not to decode it."""
        return self

    @property
    def headers(self) -> dict[str, str]:
        return {"content-type": "application/json"}

    def getheaders(self) -> dict[str, str]:
        return self.headers

    def getheader(self, name: str, default: str | None = None) -> str | None:
        return self.getheaders().get(name.lower(), default)


def mirror_template(request: dict[str, Any], now: float) -> list[tuple[str, str, str, str]]:
    """The requests hpcbridge.mirror makes to show a new QUEUED job, with placeholders."""
    captured = _Captured()
    api = kubernetes.client.ApiClient(kubernetes.client.Configuration(host="http://capture"))
    api.rest_client.request = captured.request
    status = JobStatus(job_id=_TEMPLATE_ID, target=TARGET, state=State.QUEUED,
                       native_state="PENDING", native_id=_TEMPLATE_NATIVE,
                       submitted_at=now, updated_at=now)
    Mirror(api, namespace=NAMESPACE).show(status, request, transition=False)
    return [(method, path, kind, json.dumps(body)) for method, path, kind, body
            in captured.requests
            if (method == "POST" and not path.endswith("/nodes")) or path.endswith("/status")]


def seed(store: Store, kube_url: str, jobs: Sequence[tuple[str, str]]) -> None:
    """Record ``jobs`` as queued and mirrored, as after their first tick.

    Redis gets what the submit function and a first tick leave (claim, native id, state
    QUEUED/PENDING, mirror up to date); the Kubernetes API gets the objects Mirror.show
    builds for them (captured once, sent in bulk), so that the ticks measured next find
    the state of a bridge that has watched these jobs for a while.
    """
    now = time.time()
    request = JobRequest.from_dict({"target": TARGET, "script": SCRIPT, "job_id": _TEMPLATE_ID,
                                    "queue": "held"}).to_dict()
    template = mirror_template(request, now)
    for job_id, native in jobs:
        token = uuid.uuid4().hex
        status = JobStatus(job_id=job_id, target=TARGET, state=State.QUEUED,
                           native_state="PENDING", native_id=native, submitted_at=now,
                           updated_at=now)
        if not store.claim(status, {**request, "job_id": job_id}, token, now + 3600):
            raise RuntimeError(f"{job_id} already recorded")
        store.record_native(job_id, token, native)
    store.mark_mirrored((job_id, 2) for job_id, _ in jobs)
    local = threading.local()
    clients: list[httpx.Client] = []
    lock = threading.Lock()

    def show(job: tuple[str, str]) -> None:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(base_url=kube_url, timeout=60)
            with lock:
                clients.append(client)
        job_id, native = job
        for method, path, kind, body in template:
            answer = client.request(
                method, path.replace(_TEMPLATE_ID, job_id),
                content=body.replace(_TEMPLATE_ID, job_id).replace(_TEMPLATE_NATIVE, native),
                headers={"content-type": kind or "application/json"})
            answer.raise_for_status()

    try:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(show, jobs))
    finally:
        for client in clients:
            client.close()


def cancel_in_slurm(cluster: SlurmCluster, natives: Sequence[str]) -> None:
    """scancel ``natives`` as root; wait until Slurm reports every one CANCELLED."""
    for start in range(0, len(natives), 500):
        subprocess.run(["scancel", *natives[start:start + 500]], env=cluster.env, check=True,
                       capture_output=True, timeout=60)
    wanted = set(natives)
    deadline = time.monotonic() + CANCEL_TIMEOUT_S
    while True:
        done = {job.job_id for job in cluster.jobs() if job.state == "CANCELLED"}
        if wanted <= done:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(wanted - done)} jobs not cancelled after "
                               f"{CANCEL_TIMEOUT_S} s")
        time.sleep(0.2)


# --- ticks ----------------------------------------------------------------------------------

def _tick_event() -> events.CloudEvent:
    return events.CloudEvent({"type": events.TICK, "source": "/bench/poll-scaling",
                              "id": uuid.uuid4().hex}, None)


class Rig:
    """Everything a tick needs, and the meters around it."""

    def __init__(self, cluster: SlurmCluster, redis_url: str, proxy: ServerProcess,
                 kube: ServerProcess, sink: ServerProcess, base: Path) -> None:
        self.cluster = cluster
        self.proxy = proxy
        self.kube = kube
        self.sink = sink
        token = base / "token"
        fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(cluster.token(lifespan=4 * 3600))
        self.target = {"kind": meters.TIMED_SLURM_KIND, "url": proxy.url, "user": cluster.user,
                       "token_file": str(token), "output_dir": str(cluster.workdir),
                       "partition": cluster.held_partition, "api_version": API}
        meters.register_timed_slurm()
        self.settings = Settings(redis_url=redis_url, sink=sink.url, source="/bench/poll",
                                 lost_after_s=86_400, poll_lease_s=600, mirror=True,
                                 namespace=NAMESPACE)
        self.store = Store(meters.redis_client(redis_url), track_mirror=True)
        api = meters.instrument_kube(kubernetes.client.ApiClient(
            kubernetes.client.Configuration(host=kube.url)))
        self.bridge = Bridge(self.settings, self.store, self.fresh_targets(),
                             meters.TimedEmitter(sink.url), Mirror(api, namespace=NAMESPACE))
        self.manager_pids = [p for p in meters.pids_with_argument(str(cluster.conf_path))
                             if _comm(p) in ("slurmctld", "slurmrestd")]
        # the poll function over HTTP, with the same Redis, manager, cluster and sink
        targets_file = base / "targets.yaml"
        targets_file.write_text(yaml.safe_dump({"targets": {TARGET: {**self.target,
                                                                      "kind": "slurm"}}}))
        kubeconfig = write_kubeconfig(base / "kubeconfig", kube.url, NAMESPACE)
        port = free_port()
        self.function_url = f"http://127.0.0.1:{port}/"
        env = {**os.environ, "REDIS_URL": redis_url, "HPCBRIDGE_TARGETS": str(targets_file),
               "K_SINK": sink.url, "KUBECONFIG": str(kubeconfig),
               "HPCBRIDGE_NAMESPACE": NAMESPACE, "HPCBRIDGE_LOST_AFTER_S": "86400",
               "HPCBRIDGE_POLL_LEASE_S": "600", "HPCBRIDGE_SOURCE": "/bench/poll-http"}
        self._function_log = open(base / "poll-function.log", "ab")
        self.function = subprocess.Popen(
            [sys.executable, "-m", "functions_framework", "--source",
             str(ROOT / "functions" / "poll" / "main.py"), "--target", "poll",
             "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=self._function_log, stderr=subprocess.STDOUT)
        self.http = httpx.Client(timeout=600)
        deadline = time.monotonic() + 60
        try:
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if self.http.get(self.function_url).status_code == 200:
                        break
                if time.monotonic() > deadline or self.function.poll() is not None:
                    raise RuntimeError(f"the poll function did not start; see {base}")
                time.sleep(0.05)
        except BaseException:
            self.close()
            raise

    def fresh_targets(self) -> Targets:
        return Targets({TARGET: dict(self.target)})

    def close(self) -> None:
        self.http.close()
        self.function.terminate()
        try:
            self.function.wait(10)
        except subprocess.TimeoutExpired:
            self.function.kill()
            self.function.wait()
        self._function_log.close()
        self.bridge.close()

    def _reset(self) -> None:
        for meter in (meters.MANAGER, meters.REDIS, meters.KUBE, meters.EMIT):
            meter.reset()
        self.proxy.reset()
        self.sink.reset()

    def _wire(self) -> dict[str, Any]:
        rows = self.proxy.counts()
        return {"requests": sum(r[3] for r in rows),
                "by_status": {str(s): sum(r[3] for r in rows if r[2] == s)
                              for s in sorted({r[2] for r in rows})},
                "events": sum(r[1] for r in self.sink.counts())}

    def tick(self, kind: str, profile: cProfile.Profile | None = None) -> dict[str, Any]:
        """One in-process tick, measured."""
        self._reset()
        cpu = meters.cpu_seconds(self.manager_pids)
        own_cpu = time.process_time()
        started = time.perf_counter()
        if profile is not None:
            profile.enable()
        try:
            with meters.GcTimer() as collector:
                reply = self.bridge.poll(_tick_event())
        finally:
            if profile is not None:
                profile.disable()
        wall = time.perf_counter() - started
        own_cpu = time.process_time() - own_cpu
        cpu = meters.cpu_seconds(self.manager_pids) - cpu
        manager, redis_, kube, emit = (m.snapshot() for m in (
            meters.MANAGER, meters.REDIS, meters.KUBE, meters.EMIT))
        transitions = re.search(r"transitions=(\d+)", reply.detail or "")
        waits = manager["seconds"] + redis_["seconds"] + kube["seconds"] + emit["seconds"]
        return {
            "kind": kind, "wall_s": wall, "own_s": wall - waits, "cpu_s": own_cpu,
            "gc_s": collector.seconds, "gc_full": collector.full,
            "manager_s": manager["seconds"], "redis_s": redis_["seconds"],
            "kube_s": kube["seconds"], "emit_s": emit["seconds"],
            "manager_cpu_s": cpu,
            "manager_requests": manager["calls"], "manager_statuses": manager["statuses"],
            "manager_bytes": manager["received"], "kube_bytes": kube["received"],
            "redis_round_trips": redis_["calls"],
            "kube_writes": kube["writes"], "kube_reads": kube["calls"] - kube["writes"],
            "events": emit["calls"],
            "transitions": int(transitions.group(1)) if transitions else None,
            "wire": self._wire(),
            "profiled": profile is not None,
        }

    def http_tick(self) -> dict[str, Any]:
        """One tick through the poll function over HTTP, as the Broker delivers it."""
        self._reset()
        headers, body = events.encode(_tick_event())
        started = time.perf_counter()
        answer = self.http.post(self.function_url, headers=headers, content=body)
        wall = time.perf_counter() - started
        if answer.status_code != 200:
            raise RuntimeError(f"poll function answered {answer.status_code}: {answer.text}")
        return {"wall_s": wall, "wire": self._wire()}

    def pod_per_job(self, jobs: Sequence[tuple[str, str]], known: dict[str, str],
                    loops: int = POD_LOOPS) -> dict[str, Any]:
        """One polling interval of one pod per job (IBM Bridge Operator's pod loop)."""
        self._reset()
        headers = {"X-SLURM-USER-NAME": self.cluster.user,
                   "X-SLURM-USER-TOKEN": self.cluster.token(3600)}
        local = threading.local()
        lock = threading.Lock()
        clients: list[httpx.Client] = []
        totals = {"manager_s": 0.0, "kube_s": 0.0, "kube_reads": 0, "kube_writes": 0,
                  "manager_requests": 0}
        latencies: list[float] = []

        deadline = time.monotonic() + POD_INTERVAL_LIMIT_S

        def one_pod(job: tuple[str, str]) -> None:
            if time.monotonic() > deadline:
                return  # bounded: the rest is extrapolated from the rate so far
            job_id, native = job
            pair = getattr(local, "pair", None)
            if pair is None:
                pair = local.pair = (httpx.Client(base_url=self.proxy.url, headers=headers,
                                                  timeout=60),
                                     httpx.Client(base_url=self.kube.url, timeout=60))
                with lock:
                    clients.extend(pair)
            manager, kube = pair
            config_map = f"/api/v1/namespaces/{NAMESPACE}/configmaps/{object_name(job_id)}"
            t0 = time.perf_counter()
            kube.get(config_map).raise_for_status()
            t1 = time.perf_counter()
            answer = manager.get(f"/slurm/{API}/job/{native}")
            t2 = time.perf_counter()
            found = answer.json().get("jobs") if answer.status_code == 200 else None
            state = slurm_api.job_states(found[0].get("job_state"))[0] if found else "MISSING"
            wrote = 0
            if state != known.get(native):
                kube.patch(config_map, content=json.dumps(
                    {"metadata": {"annotations": {"bench.hpcbridge.io/pod-state": state}}}),
                    headers={"content-type": "application/merge-patch+json"}
                ).raise_for_status()
                known[native] = state
                wrote = 1
            t3 = time.perf_counter()
            with lock:
                totals["kube_s"] += (t1 - t0) + (t3 - t2)
                totals["manager_s"] += t2 - t1
                totals["kube_reads"] += 1
                totals["kube_writes"] += wrote
                totals["manager_requests"] += 1
                latencies.append(t2 - t1)

        cpu = meters.cpu_seconds(self.manager_pids)
        started = time.perf_counter()
        try:
            with ThreadPoolExecutor(loops) as pool:
                list(pool.map(one_pod, jobs))
        finally:
            for client in clients:
                client.close()
        wall = time.perf_counter() - started
        cpu = meters.cpu_seconds(self.manager_pids) - cpu
        done = totals["manager_requests"]
        if done < len(jobs):  # cut by the time bound: scale to the whole interval
            scale = len(jobs) / max(1, done)
            wall, cpu = wall * scale, cpu * scale
        return {"pods": len(jobs), "polled": done, "extrapolated": done < len(jobs),
                "loops": loops, "wall_s": wall, "manager_cpu_s": cpu,
                "manager_p50_ms": 1000 * statistics.median(latencies),
                **totals, "wire": self._wire()}


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


# --- profile --------------------------------------------------------------------------------

_WAIT_MARKERS = ("_socket.socket", "select.", "'poll'", "<built-in method select",
                 "<method 'poll'", "<built-in method time.sleep", "acquire")


def _category(filename: str, name: str) -> str | None:
    """Where a profiled function belongs; None for waits (measured separately)."""
    text = f"{filename}:{name}"
    if any(marker in text for marker in _WAIT_MARKERS):
        return None
    if "/kubernetes/" in filename or "pydantic" in text:
        return "kubernetes client: building, validating, (de)serializing models"
    if any(part in filename for part in ("/urllib3/", "/http/client.py", "/httpx/",
                                         "/httpcore/", "/h11/", "/email/", "/ssl.py")):
        return "HTTP client libraries (urllib3, httpx)"
    if "/json/" in filename or "_json" in text or "json.decoder" in text:
        return "JSON encode/decode"
    if "/redis/" in filename:
        return "redis-py: encoding commands, parsing replies"
    if "/hpcbridge/store.py" in filename:
        return "hpcbridge.store: decoding job records"
    if "/hpcbridge/mirror.py" in filename:
        return "hpcbridge.mirror: building objects"
    if "/hpcbridge/" in filename:
        return "hpcbridge service, states, events"
    if "/adapters/" in filename:
        return "slurm adapter: reading job records"
    if "/cloudevents/" in filename:
        return "cloudevents"
    return "other (stdlib: dataclasses, datetime, copy, ...)"


def profile_summary(profile: cProfile.Profile, cpu_s: float) -> list[dict[str, Any]]:
    """The bridge's computing time by category: profiled seconds, share (waits left out),
    and the share of ``cpu_s``, the CPU time of the same tick measured without profiler.

    A built-in (``str.encode``, ``isinstance``, ...) has no file of its own: its time is
    given to the categories of its callers, in proportion to what each caller spent in it.
    """
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    totals: dict[str, float] = {}

    def add(key: tuple[str, int, str], seconds: float) -> None:
        category = _category(key[0], key[2])
        if category is not None:
            totals[category] = totals.get(category, 0.0) + seconds

    for key, (_cc, _nc, tottime, _ct, callers) in stats.items():
        if key[0] != "~" or not callers or _category(key[0], key[2]) is None:
            add(key, tottime)
            continue
        for caller, edge in callers.items():
            add(caller, edge[2])
    whole = sum(totals.values()) or 1.0
    return [{"category": c, "profiled_s": s, "share": s / whole, "of_cpu_s": cpu_s * s / whole}
            for c, s in sorted(totals.items(), key=lambda item: -item[1])]


def top_functions(profile: cProfile.Profile, limit: int = 12) -> list[dict[str, Any]]:
    stats = pstats.Stats(profile)
    rows = []
    for (filename, line, name), (_cc, ncalls, tottime, _ct, _callers) in \
            stats.stats.items():  # type: ignore[attr-defined]
        if _category(filename, name) is None:
            continue
        short = "/".join(Path(filename).parts[-2:]) if filename != "~" else ""
        rows.append({"function": f"{short}:{line}({name})" if short else name,
                     "calls": ncalls, "tottime_s": tottime})
    rows.sort(key=lambda r: -r["tottime_s"])
    return rows[:limit]


# --- the run -----------------------------------------------------------------------------------

@contextlib.contextmanager
def _rig(base: Path) -> Iterator[Rig]:
    with contextlib.ExitStack() as stack:
        cluster = stack.enter_context(BenchCluster())
        redis = RedisServer(base / "redis").start()
        stack.callback(redis.stop)
        proxy = stack.enter_context(ServerProcess("proxy", cluster.url,
                                                  log=base / "proxy.log"))
        kube = stack.enter_context(ServerProcess("kube", log=base / "kube.log"))
        sink = stack.enter_context(ServerProcess("sink", log=base / "sink.log"))
        rig = Rig(cluster, redis.url, proxy, kube, sink, base)
        stack.callback(rig.close)
        yield rig


def _median(ticks: list[dict[str, Any]]) -> dict[str, Any]:
    ordered = sorted(ticks, key=lambda t: t["wall_s"])
    return {**ordered[len(ordered) // 2], "runs": len(ticks),
            "wall_all_s": [t["wall_s"] for t in ticks]}


def run(steps: Sequence[int] = STEPS, *, steady_ticks: int = 3, full_ticks: int = 3,
        http_ticks: int = 3, pod_per_job: bool = True, profile: bool = True,
        log: Any = print) -> dict[str, Any]:
    rng = random.Random(42)  # noqa: S311 (reproducible sample)
    started = time.monotonic()
    results: dict[str, Any] = {"steps": [], "manager": "real slurmrestd",
                               "slurm": slurm_version(), "pod_loops": POD_LOOPS,
                               "change": CHANGE}
    with tempfile.TemporaryDirectory(prefix="hpcbridge-bench-") as tmp, _rig(Path(tmp)) as rig:
        active: list[tuple[str, str]] = []
        serial = 0
        for n in steps:
            step: dict[str, Any] = {"n": n}
            new_ids = [f"b{serial + i:06d}-{uuid.uuid4().hex[:8]}" for i in range(n - len(active))]
            serial += len(new_ids)
            t0 = time.perf_counter()
            new = submit_held(rig.cluster, new_ids)
            step["submit_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            seed(rig.store, rig.kube.url, new)
            step["seed_s"] = time.perf_counter() - t0
            submitted_at = time.monotonic()
            active += new
            log(f"  N={n}: {len(new)} held jobs submitted in {step['submit_s']:.1f} s, "
                f"recorded and mirrored in {step['seed_s']:.1f} s")
            # Let Slurm's update_time pass the last submission (the adapter asks with a
            # 5 s margin), so that unchanged jobs get 304 as between real ticks.
            rig.tick("settle")
            time.sleep(max(0.0, 6.5 - (time.monotonic() - submitted_at)))
            rig.tick("settle")
            time.sleep(1.1)
            step["steady"] = _median([rig.tick("steady") for _ in range(steady_ticks)])
            if http_ticks:
                rig.http_tick()  # the function's first tick after new jobs: a full answer
                time.sleep(1.1)
            step["http_steady"] = [rig.http_tick() for _ in range(http_ticks)]
            fulls = []
            for _ in range(full_ticks):
                rig.bridge.targets.close()
                rig.bridge.targets = rig.fresh_targets()
                fulls.append(rig.tick("full list"))
            step["full"] = _median(fulls)

            changed = rng.sample(active, round(CHANGE * len(active)))
            cancel_in_slurm(rig.cluster, [native for _, native in changed])
            cancelled_at = time.monotonic()
            step["change"] = rig.tick("10% change")
            if pod_per_job:
                known = {native: "PENDING" for _, native in active}
                step["pod_per_job"] = rig.pod_per_job(active, known)
            gone = set(changed)
            active = [job for job in active if job not in gone]
            log(f"  N={n}: steady {step['steady']['wall_s']:.3f} s, full list "
                f"{step['full']['wall_s']:.3f} s, 10% change {step['change']['wall_s']:.2f} s"
                + (f"; pod-per-job interval {step['pod_per_job']['wall_s']:.2f} s"
                   if pod_per_job else ""))

            if profile and n == max(steps):
                time.sleep(max(0.0, 6.5 - (time.monotonic() - cancelled_at)))
                rig.tick("settle")  # past the cancellations: the next answer is a 304
                time.sleep(1.1)
                prof = cProfile.Profile()
                tick = rig.tick("steady (profiled)", prof)
                results["profile_steady"] = {"tick": tick, "categories": profile_summary(
                    prof, step["steady"]["cpu_s"]), "top": top_functions(prof)}
                rig.bridge.targets.close()
                rig.bridge.targets = rig.fresh_targets()
                prof = cProfile.Profile()
                tick = rig.tick("full list (profiled)", prof)
                results["profile_full"] = {"tick": tick, "categories": profile_summary(
                    prof, step["full"]["cpu_s"]), "top": top_functions(prof)}
                changed = rng.sample(active, round(CHANGE * len(active)))
                cancel_in_slurm(rig.cluster, [native for _, native in changed])
                prof = cProfile.Profile()
                tick = rig.tick("10% change (profiled)", prof)
                results["profile_change"] = {"tick": tick, "categories": profile_summary(
                    prof, step["change"]["cpu_s"]), "top": top_functions(prof)}
                gone = set(changed)
                active = [job for job in active if job not in gone]
            results["steps"].append(step)
        log("  stopping the cluster (cancelling every job)")
    results["runtime_s"] = time.monotonic() - started
    return results


def describe(results: dict[str, Any]) -> str:
    return (f"manager: the real slurmrestd of {results['slurm']} for every N (no emulated "
            "manager: the test cluster holds 10,000 held jobs comfortably), through the "
            "counting proxy")


def table(results: dict[str, Any]) -> str:
    """The per-tick table, as Markdown."""
    lines = ["| N | tick | wall s | own s | bridge CPU s | of which GC s (full collections) "
             "| manager wait s | Redis wait s "
             "| Kubernetes wait s | events wait s | manager requests | Redis round trips "
             "| Kubernetes writes | Kubernetes reads | transitions |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for step in results["steps"]:
        for key in ("steady", "full", "change"):
            t = step[key]
            statuses = ",".join(f"{n}x{s}" for s, n in sorted(t["manager_statuses"].items()))
            lines.append(
                f"| {step['n']:,} | {t['kind']} | {t['wall_s']:.3f} | {t['own_s']:.3f} | "
                f"{t['cpu_s']:.3f} | "
                + (f"{t['gc_s']:.3f} ({t['gc_full']})" if "gc_s" in t else "-")
                + f" | "
                f"{t['manager_s']:.3f} | {t['redis_s']:.3f} | "
                f"{t['kube_s']:.3f} | "
                f"{t['emit_s']:.3f} | {t['manager_requests']} ({statuses}) | "
                f"{t['redis_round_trips']} | {t['kube_writes']} | {t['kube_reads']} | "
                f"{t['transitions']} |")
    return "\n".join(lines)


def comparison(results: dict[str, Any]) -> str:
    """Bridge vs pod-per-job, per polling interval, as Markdown."""
    lines = ["| N | pods | manager requests per interval: pod per job | bridge (any tick) "
             "| ratio | manager CPU s: pod per job | bridge steady | bridge full list "
             "| bridge 10% change | CPU ratio: pod per job / bridge full list "
             "| manager answer ms: pod per job (p50) "
             "| bridge steady | bridge full list | pod-per-job interval, wall s "
             "| Kubernetes reads per interval: pod per job | bridge "
             "| Kubernetes writes at 10% change: pod per job | bridge |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:"
             "|---:|---:|"]
    for step in results["steps"]:
        p, s, f, c = step["pod_per_job"], step["steady"], step["full"], step["change"]
        bridge = max(s["wire"]["requests"], f["wire"]["requests"], c["wire"]["requests"])
        note = " (extrapolated)" if p.get("extrapolated") else ""
        lines.append(
            f"| {step['n']:,} | {p['pods']:,} | {p['pods']:,} | {bridge} | "
            f"{p['pods'] / max(1, bridge):,.0f}x | {p['manager_cpu_s']:.2f}{note} | "
            f"{s['manager_cpu_s']:.2f} | {f['manager_cpu_s']:.2f} | {c['manager_cpu_s']:.2f} | "
            f"{p['manager_cpu_s'] / max(f['manager_cpu_s'], 0.01):,.0f}x | "
            f"{p['manager_p50_ms']:.1f} | {1000 * s['manager_s']:.1f} | "
            f"{1000 * f['manager_s']:.0f} | {p['wall_s']:.2f}{note} | {p['kube_reads']:,} | "
            f"{s['kube_reads']} | "
            f"{p['kube_writes']:,} | {c['kube_writes']:,} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``python -m bench.poll_scaling [N ...] [--quick]``: the ticks of the given N only;
    ``--quick`` leaves out the poll function over HTTP and the pod-per-job interval, and
    prints where the profiled ticks spent their time instead."""
    parser = argparse.ArgumentParser(prog="python -m bench.poll_scaling")
    parser.add_argument("steps", nargs="*", type=int, metavar="N", default=list(STEPS))
    parser.add_argument("--quick", action="store_true",
                        help="only the bridge's in-process ticks (and their profiles)")
    args = parser.parse_args(argv)
    results = run(args.steps, http_ticks=0 if args.quick else 3, pod_per_job=not args.quick)
    print(table(results))
    print()
    if args.quick:
        for key in ("profile_steady", "profile_full", "profile_change"):
            if key in results:
                print(f"{key}:")
                for row in results[key]["categories"]:
                    print(f"  {row['share']:4.0%}  {row['profiled_s']:6.3f} s  {row['category']}")
                for row in results[key]["top"]:
                    print(f"  {row['calls']:>9,}  {row['tottime_s']:6.3f} s  {row['function']}")
    else:
        print(comparison(results))
    return results


if __name__ == "__main__":
    main()
