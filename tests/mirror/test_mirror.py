"""The Kubernetes mirror, end to end: functions with a kubeconfig, the Kubernetes API
emulator in place of a cluster, and the real Slurm cluster behind them."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from hpcbridge import events
from hpcbridge.dev import DevStack
from hpcbridge.mirror import Mirror
from hpcbridge.model import JobStatus
from hpcbridge.naming import JOB_ID_LABEL, MANAGED_BY, VIRTUAL_NODE_TAINT
from hpcbridge.store import Store
from tests.adapters import until
from tests.emulators.kube_apiserver import KubeApiEmulator
from tests.functions import reply, send, submitted, tick, tick_until
from tests.functions.conftest import new_stack, slurm_target, write_targets
from tests.services.redis_server import RedisServer
from tests.services.slurm import SlurmCluster

pytestmark = pytest.mark.slurm
NAMESPACE = "default"


@pytest.fixture(scope="module")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeApiEmulator]:
    with KubeApiEmulator() as emulator:
        yield emulator


@pytest.fixture(scope="module")
def core(kube: KubeApiEmulator) -> client.CoreV1Api:
    return client.CoreV1Api(kube.api_client())


@pytest.fixture(scope="module")
def mirrored(redis_server: RedisServer, slurm_cluster: SlurmCluster, kube: KubeApiEmulator,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    base = tmp_path_factory.mktemp("mirror")
    targets = write_targets(base / "targets.yaml", {"hpc": slurm_target(slurm_cluster, base)})
    kubeconfig = kube.write_kubeconfig(base / "kubeconfig", NAMESPACE)
    with new_stack(redis_server.url, targets, base / "logs", KUBECONFIG=str(kubeconfig),
                   HPCBRIDGE_NAMESPACE=NAMESPACE).running() as stack:
        yield stack


def pod(core: client.CoreV1Api, job_id: str) -> dict[str, Any]:
    answer = core.read_namespaced_pod(f"hpcbridge-{job_id}", NAMESPACE,
                                      _preload_content=False)
    return json.loads(answer.data)


def config_map(core: client.CoreV1Api, job_id: str) -> dict[str, Any]:
    answer = core.read_namespaced_config_map(f"hpcbridge-{job_id}", NAMESPACE,
                                             _preload_content=False)
    return json.loads(answer.data)


def pod_exists(kube: KubeApiEmulator, job_id: str) -> bool:
    return any(p["metadata"]["name"] == f"hpcbridge-{job_id}"
               for p in kube.objects("pods", NAMESPACE))


def test_a_slurm_job_is_mirrored_from_submission_to_success(
        mirrored: DevStack, store: Store, kube: KubeApiEmulator,
        core: client.CoreV1Api, slurm_cluster: SlurmCluster) -> None:
    go = slurm_cluster.workdir / f"go-{uuid.uuid4().hex[:8]}"  # the job ends once it exists
    job_id = submitted(mirrored, {
        "target": "hpc", "labels": {"team": "physics"},
        "script": f"#!/bin/sh\nwhile [ ! -e {go} ]; do sleep 0.1; done\n"
                  "echo the answer is 42\n"})
    proxy = pod(core, job_id)
    labels = proxy["metadata"]["labels"]
    assert labels[MANAGED_BY[0]] == MANAGED_BY[1] and labels[JOB_ID_LABEL] == job_id
    assert labels["team"] == "physics" and labels["hpcbridge.io/target"] == "hpc"
    assert proxy["spec"]["nodeName"] == "hpcbridge-hpc"
    forever = {t["key"]: t for t in proxy["spec"]["tolerations"]}
    for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
        assert "tolerationSeconds" not in forever[key], "no eviction, ever"
    assert proxy["status"]["phase"] == "Pending"
    assert proxy["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "Queued"

    tick_until(mirrored, store, job_id, "RUNNING")
    running = pod(core, job_id)["status"]
    assert running["phase"] == "Running"
    assert running["containerStatuses"][0]["state"]["running"]["startedAt"]
    go.touch()

    status = tick_until(mirrored, store, job_id, "SUCCEEDED")
    done = pod(core, job_id)
    terminated = done["status"]["containerStatuses"][0]["state"]["terminated"]
    assert done["status"]["phase"] == "Succeeded"
    assert terminated["exitCode"] == 0 and terminated["finishedAt"]
    assert done["metadata"]["labels"]["hpcbridge.io/state"] == "SUCCEEDED"
    assert status.native_id in done["status"]["message"]
    data = config_map(core, job_id)["data"]
    assert json.loads(data["status.json"])["state"] == "SUCCEEDED"
    assert data["native_id"] == status.native_id
    assert "the answer is 42" in data["log_tail"]
    reasons = [e["reason"] for e in kube.objects("events", NAMESPACE)
               if e["involvedObject"]["name"] == f"hpcbridge-{job_id}"]
    assert reasons[0] == "Accepted" and reasons[-1] == "Succeeded"
    assert "Running" in reasons


def test_a_running_jobs_log_tail_is_kept_fresh_in_its_config_map(
        mirrored: DevStack, store: Store, core: client.CoreV1Api,
        slurm_cluster: SlurmCluster) -> None:
    go = slurm_cluster.workdir / f"go-{uuid.uuid4().hex[:8]}"
    job_id = submitted(mirrored, {
        "target": "hpc",
        "script": f"#!/bin/sh\necho first line\nwhile [ ! -e {go} ]; do sleep 0.1; done\n"
                  "echo last line\n"})
    try:
        tick_until(mirrored, store, job_id, "RUNNING")

        def shown() -> str:
            tick(mirrored)
            return config_map(core, job_id)["data"].get("log_tail", "")

        until(lambda: shown() == "first line\n", 60,
              lambda: f"ConfigMap log_tail: {shown()!r}")
        assert store.tail(job_id) == "first line\n", "Redis has it too"
    finally:
        go.touch()
    tick_until(mirrored, store, job_id, "SUCCEEDED")
    assert config_map(core, job_id)["data"]["log_tail"] == "first line\nlast line\n"


def test_a_failed_job_shows_its_exit_code_and_reason(mirrored: DevStack, store: Store,
                                                     core: client.CoreV1Api) -> None:
    job_id = submitted(mirrored, {"target": "hpc", "command": ["sh", "-c", "exit 3"]})
    tick_until(mirrored, store, job_id, "FAILED")
    status = pod(core, job_id)["status"]
    terminated = status["containerStatuses"][0]["state"]["terminated"]
    assert (status["phase"], terminated["exitCode"], terminated["reason"]) == \
        ("Failed", 3, "ExitCode")


def test_the_target_is_a_tainted_ready_node_with_a_renewed_lease(
        mirrored: DevStack, kube: KubeApiEmulator, store: Store) -> None:
    submitted(mirrored, {"target": "hpc", "command": ["true"]})
    tick(mirrored)
    node = next(n for n in kube.objects("nodes") if n["metadata"]["name"] == "hpcbridge-hpc")
    assert {"key": VIRTUAL_NODE_TAINT, "value": "hpc", "effect": "NoSchedule"} in \
        [{k: t.get(k) for k in ("key", "value", "effect")} for t in node["spec"]["taints"]]
    ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"

    def renew_time() -> str:
        lease = next(item for item in kube.objects("leases", "kube-node-lease")
                     if item["metadata"]["name"] == "hpcbridge-hpc")
        return lease["spec"]["renewTime"]

    before = renew_time()
    until(lambda: tick(mirrored) is not None and renew_time() != before, 10,
          lambda: "the lease was not renewed")


def test_a_tick_without_transitions_writes_nothing_but_leases(
        mirrored: DevStack, store: Store, kube: KubeApiEmulator) -> None:
    job_id = submitted(mirrored, {"target": "hpc", "command": ["sleep", "300"]})
    tick_until(mirrored, store, job_id, "RUNNING")
    tick(mirrored)
    kube.reset_calls()
    tick(mirrored)
    writes = [c.rbac for c in kube.calls() if c.is_write]
    assert writes and {resource for _, resource, _ in writes} == {"leases"}, writes
    send(mirrored.functions["cancel"], events.CANCEL, {"job_id": job_id})


def test_deleting_the_pod_cancels_the_slurm_job_at_the_next_tick(
        mirrored: DevStack, store: Store, core: client.CoreV1Api, kube: KubeApiEmulator,
        slurm_cluster: SlurmCluster) -> None:
    job_id = submitted(mirrored, {"target": "hpc", "command": ["sleep", "300"]})
    status = tick_until(mirrored, store, job_id, "RUNNING")
    core.delete_namespaced_pod(f"hpcbridge-{job_id}", NAMESPACE)  # as kubectl delete does
    assert pod(core, job_id)["metadata"]["deletionTimestamp"], "bound pods wait for kubelet"
    tick(mirrored)
    job = store.load(job_id)
    assert job is not None and str(job.status.state) == "CANCELLED"
    until(lambda: slurm_cluster.job_state(status.native_id or "") == "CANCELLED", 30,
          lambda: f"slurm says {slurm_cluster.job_state(status.native_id or '')}")
    assert not pod_exists(kube, job_id)


def test_an_apiserversource_event_for_a_deleted_pod_cancels_at_once(
        mirrored: DevStack, store: Store, core: client.CoreV1Api, kube: KubeApiEmulator,
        slurm_cluster: SlurmCluster) -> None:
    job_id = submitted(mirrored, {"target": "hpc", "command": ["sleep", "300"]})
    status = tick_until(mirrored, store, job_id, "RUNNING")
    core.delete_namespaced_pod(f"hpcbridge-{job_id}", NAMESPACE)
    answer = send(mirrored.functions["cancel"], events.APISERVER_UPDATE, pod(core, job_id))
    assert reply(answer)["type"] == "hpcbridge.job.cancelled"
    assert not pod_exists(kube, job_id)
    until(lambda: slurm_cluster.job_state(status.native_id or "") == "CANCELLED", 30,
          lambda: f"slurm says {slurm_cluster.job_state(status.native_id or '')}")


def test_a_pod_that_vanished_is_recreated_from_redis(
        mirrored: DevStack, store: Store, core: client.CoreV1Api, kube: KubeApiEmulator) -> None:
    job_id = submitted(mirrored, {"target": "hpc", "command": ["sleep", "300"]})
    tick_until(mirrored, store, job_id, "RUNNING")
    core.delete_namespaced_pod(f"hpcbridge-{job_id}", NAMESPACE, grace_period_seconds=0)
    assert not pod_exists(kube, job_id)
    tick(mirrored)
    assert pod(core, job_id)["status"]["phase"] == "Running"
    job = store.load(job_id)
    assert job is not None and str(job.status.state) == "RUNNING", "no cancel without a delete"
    send(mirrored.functions["cancel"], events.CANCEL, {"job_id": job_id})


@pytest.mark.parametrize("failure", [409, 500, "drop"])
def test_a_failed_mirror_write_is_repaired_at_the_next_tick(
        mirrored: DevStack, store: Store, core: client.CoreV1Api, kube: KubeApiEmulator,
        failure: int | str) -> None:
    job_id = submitted(mirrored, {"target": "hpc", "command": ["sleep", "300"]})
    tick_until(mirrored, store, job_id, "RUNNING")
    kube.fail_next("PATCH", "pods", failure, subresource="status")
    answer = send(mirrored.functions["cancel"], events.CANCEL, {"job_id": job_id})
    assert reply(answer)["type"] == "hpcbridge.job.cancelled", "the mirror cannot fail it"
    assert pod(core, job_id)["status"]["phase"] == "Running", "the write failed"
    tick(mirrored)
    assert pod(core, job_id)["status"]["phase"] == "Failed", "and the tick repaired it"


def test_the_mirror_being_down_never_fails_a_submit(
        mirrored: DevStack, store: Store, core: client.CoreV1Api, kube: KubeApiEmulator) -> None:
    kube.stop()
    try:
        job_id = submitted(mirrored, {"target": "hpc", "command": ["sleep", "300"]})
        tick(mirrored)
    finally:
        kube.start()
    job = store.load(job_id)
    assert job is not None and job.status.native_id
    tick(mirrored)
    assert pod(core, job_id)["metadata"]["labels"][JOB_ID_LABEL] == job_id
    send(mirrored.functions["cancel"], events.CANCEL, {"job_id": job_id})



@pytest.mark.parametrize(
    ("state", "extra", "phase", "container"),
    [
        ("ACCEPTED", {}, "Pending", {"waiting": "Queued"}),
        ("QUEUED", {"native_state": "PENDING"}, "Pending", {"waiting": "Queued"}),
        ("RUNNING", {"started_at": 1.0}, "Running", {"running": None}),
        ("SUSPENDED", {"started_at": 1.0}, "Pending", {"waiting": "Suspended"}),
        ("UNKNOWN", {}, "Unknown", {"waiting": "Queued"}),
        ("SUCCEEDED", {"exit_code": 0, "finished_at": 2.0}, "Succeeded",
         {"terminated": "Completed"}),
        ("FAILED", {"exit_code": 137, "reason": "out_of_memory", "finished_at": 2.0},
         "Failed", {"terminated": "OutOfMemory"}),
        ("FAILED", {"reason": "timeout", "finished_at": 2.0}, "Failed",
         {"terminated": "Timeout"}),
        ("CANCELLED", {"reason": "cancelled", "finished_at": 2.0}, "Failed",
         {"terminated": "Cancelled"}),
    ],
)
def test_every_state_has_its_phase_and_container_state(
        kube: KubeApiEmulator, core: client.CoreV1Api, state: str, extra: dict[str, Any],
        phase: str, container: dict[str, str | None]) -> None:
    job_id = f"state-{state.lower()}-{len(extra)}"
    status = JobStatus.from_dict({"job_id": job_id, "target": "hpc", "state": state,
                                  "native_id": "7", "submitted_at": 1.0, **extra})
    mirror = Mirror(kube.api_client(), namespace=NAMESPACE)
    mirror.show(status, {}, transition=True)
    shown = pod(core, job_id)["status"]
    assert shown["phase"] == phase
    (kind, reason), = container.items()
    observed = shown["containerStatuses"][0]["state"][kind]
    if reason is not None:
        assert observed["reason"] == reason
    if kind == "terminated":
        assert observed["exitCode"] == (extra.get("exit_code") or
                                        (0 if state == "SUCCEEDED" else 1))
