"""The Kubernetes mirror: every job as a ConfigMap and a proxy Pod on a virtual Node.

Redis is the truth; this is a view people and workflow engines can watch with the tools
they have (``kubectl get pods``, Argo's resource templates, informers). Per job, in the
job's namespace, a ConfigMap ``hpcbridge-<job id>`` holds the JobStatus and a log tail,
and a Pod of the same name is bound by ``spec.nodeName`` to the target's virtual Node
``hpcbridge-<target>``. The bridge plays that Node's kubelet: it writes the pod's status
through ``/status``, renews the Node's Lease, records Events on transitions and finishes
pods that are being deleted, after cancelling their job.

Every write is a patch or a create that treats AlreadyExists as done, so two writers
never lose each other's update; a failure is logged by the caller and the next tick
repairs the mirror from Redis. This module imports the ``kubernetes`` client, which is
slow to load: the bridge imports it only when :attr:`Settings.mirror` says a cluster is
there.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from hpcbridge.model import JobStatus, State
from hpcbridge.naming import (
    JOB_ID_LABEL,
    MANAGED_BY,
    NATIVE_ID_ANNOTATION,
    STATE_LABEL,
    TARGET_LABEL,
    VIRTUAL_NODE_TAINT,
    node_name,
    object_name,
)

__all__ = ["DeletedPod", "Mirror", "MirrorError"]

LEASE_NAMESPACE = "kube-node-lease"
LEASE_DURATION_S = 40
CONTAINER = "job"

_PHASE = {
    State.ACCEPTED: "Pending",
    State.QUEUED: "Pending",
    State.SUSPENDED: "Pending",
    State.RUNNING: "Running",
    State.SUCCEEDED: "Succeeded",
    State.FAILED: "Failed",
    State.CANCELLED: "Failed",
    State.UNKNOWN: "Unknown",
}


class MirrorError(Exception):
    """The Kubernetes API refused or could not be reached; the mirror is repaired later."""


_METADATA_ONLY = ("application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,"
                  "application/json")


def _write(call: Callable[..., Any], *args: Any) -> None:
    """Make one write through the client and read its answer without turning it into
    the client's model objects: the mirror never looks at them, and building them is a
    large part of the client's computing per write. A refusal still raises ApiException
    with its status."""
    call(*args, _preload_content=False).read()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _micro_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _rfc3339(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _labels(status: JobStatus, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    labels = dict(extra or {})
    labels.update({MANAGED_BY[0]: MANAGED_BY[1], JOB_ID_LABEL: status.job_id,
                   TARGET_LABEL: status.target[:63], STATE_LABEL: str(status.state)})
    return labels


def _camel(word: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", word) if part)


@dataclasses.dataclass(frozen=True, slots=True)
class DeletedPod:
    namespace: str
    name: str
    job_id: str


@dataclasses.dataclass(frozen=True, slots=True)
class _View:
    status: JobStatus
    namespace: str
    labels: Mapping[str, str]
    log_tail: str | None


class Mirror:
    """Writes the mirror of jobs and targets through the official Kubernetes client."""

    def __init__(self, api: client.ApiClient, *, namespace: str = "default",
                 pod_image: str = "registry.k8s.io/pause:3.9") -> None:
        self.namespace = namespace
        self.pod_image = pod_image
        self._core = client.CoreV1Api(api)
        self._coordination = client.CoordinationV1Api(api)
        self._known_nodes: set[str] = set()

    @classmethod
    def from_environment(cls, namespace: str, pod_image: str) -> Mirror:
        """In-cluster configuration, else the ``KUBECONFIG`` file."""
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config()
        else:
            config.load_kube_config(config_file=os.environ["KUBECONFIG"])
        return cls(client.ApiClient(), namespace=namespace, pod_image=pod_image)

    # -- jobs ---------------------------------------------------------------------------

    def show(self, status: JobStatus, request: Mapping[str, Any], *, transition: bool,
             log_tail: str | None = None, create_pod: bool = True) -> None:
        """Bring the job's ConfigMap and Pod up to ``status``; an Event if it moved.

        ``request`` is the stored JobRequest: its ``namespace`` and ``labels`` say where
        and how the job is shown. Without ``create_pod`` a missing pod stays missing (a
        finished job's pod that someone deleted is not brought back).
        """
        job = _View(status, request.get("namespace") or self.namespace,
                    request.get("labels") or {}, log_tail)
        try:
            self._upsert_config_map(job)
            if not self._ensure_pod(job, create=create_pod):
                return
            _write(self._core.patch_namespaced_pod_status, object_name(status.job_id),
                   job.namespace, {"status": self._pod_status(status)})
            if transition:
                self._record_event(job)
        except ApiException as exc:
            raise MirrorError(f"mirror of {status.job_id}: {exc.status} {exc.reason}") from None

    def show_log_tail(self, job_id: str, namespace: str | None, tail: str) -> None:
        """Refresh only the log tail in a job's ConfigMap; a missing one is left to the
        repair that writes it whole."""
        try:
            self._core.patch_namespaced_config_map(
                object_name(job_id), namespace or self.namespace, {"data": {"log_tail": tail}})
        except ApiException as exc:
            if exc.status != 404:
                raise MirrorError(f"log tail of {job_id}: {exc.status} {exc.reason}") from None

    def pods(self) -> list[dict[str, Any]]:
        """The metadata of every proxy pod not in phase Succeeded or Failed, in every
        namespace, in one list call.

        The tick needs the pods being deleted and the pods of active jobs. A pod in a
        finished phase is neither: the API server deletes it at once, without waiting for
        its kubelet, and its phase says its job ended. Leaving them out keeps the list
        as long as the active jobs, not as long as the history of finished ones. Only
        metadata is asked for (a PartialObjectMetadataList, as client-go's metadata
        client asks; an API server without it answers a PodList, whose items have the
        same ``metadata``): labels, names and deletion marks are all the tick reads.
        """
        try:
            answer = self._core.list_pod_for_all_namespaces(
                label_selector=f"{MANAGED_BY[0]}={MANAGED_BY[1]}",
                field_selector="status.phase!=Succeeded,status.phase!=Failed",
                _headers={"Accept": _METADATA_ONLY}, _preload_content=False)
        except ApiException as exc:
            raise MirrorError(f"listing proxy pods: {exc.status} {exc.reason}") from None
        return json.loads(answer.data)["items"]

    def deleted(self, pods: list[dict[str, Any]]) -> list[DeletedPod]:
        """The proxy pods someone is deleting (they carry a deletionTimestamp)."""
        found = []
        for pod in pods:
            metadata = pod["metadata"]
            job_id = (metadata.get("labels") or {}).get(JOB_ID_LABEL)
            if metadata.get("deletionTimestamp") and job_id:
                found.append(DeletedPod(metadata["namespace"], metadata["name"], job_id))
        return found

    def finish_pod(self, namespace: str, name: str) -> None:
        """Delete a proxy pod for good, as its kubelet does once the containers stopped."""
        try:
            self._core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
        except ApiException as exc:
            if exc.status != 404:
                raise MirrorError(f"deleting pod {namespace}/{name}: {exc.status}") from None

    def _upsert_config_map(self, job: _View) -> None:
        status = job.status
        data = {"status.json": json.dumps(status.to_dict(), sort_keys=True),
                "native_id": status.native_id or ""}
        if job.log_tail is not None:
            data["log_tail"] = job.log_tail
        body = {"metadata": {"name": object_name(status.job_id),
                             "labels": _labels(status, job.labels),
                             "annotations": {NATIVE_ID_ANNOTATION: status.native_id or ""}},
                "data": data}
        name = object_name(status.job_id)
        try:
            _write(self._core.patch_namespaced_config_map, name, job.namespace, body)
        except ApiException as exc:
            if exc.status != 404:
                raise
            try:
                _write(self._core.create_namespaced_config_map, job.namespace, body)
            except ApiException as again:
                if again.status != 409:
                    raise
                _write(self._core.patch_namespaced_config_map, name, job.namespace, body)

    def _ensure_pod(self, job: _View, *, create: bool) -> bool:
        """Label the pod with the job's state, creating it if it is not there and
        ``create`` allows; whether the pod is there now."""
        status = job.status
        name = object_name(status.job_id)
        try:
            _write(self._core.patch_namespaced_pod, name, job.namespace,
                   {"metadata": {"labels": {STATE_LABEL: str(status.state)}}})
            return True
        except ApiException as exc:
            if exc.status != 404:
                raise
        if not create:
            return False
        self.ensure_node(status.target)
        body = {
            "metadata": {"name": name, "labels": _labels(status, job.labels),
                         "annotations": {NATIVE_ID_ANNOTATION: status.native_id or ""}},
            "spec": {
                "nodeName": node_name(status.target),
                "restartPolicy": "Never",
                "automountServiceAccountToken": False,
                "containers": [{"name": CONTAINER, "image": self.pod_image,
                                "resources": {"requests": {"cpu": "1m", "memory": "1Mi"}}}],
                # No tolerationSeconds: a NotReady virtual node must never evict (and so
                # cancel) a job that is still running on the HPC system.
                "tolerations": [
                    {"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                     "effect": "NoExecute"},
                    {"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                     "effect": "NoExecute"},
                    {"key": VIRTUAL_NODE_TAINT, "operator": "Exists", "effect": "NoSchedule"},
                ],
            },
        }
        try:
            _write(self._core.create_namespaced_pod, job.namespace, body)
        except ApiException as exc:
            if exc.status != 409:
                raise
        return True

    def _pod_status(self, status: JobStatus) -> dict[str, Any]:
        state = status.state
        if state in (State.ACCEPTED, State.QUEUED, State.SUSPENDED, State.UNKNOWN):
            reason = "Suspended" if state is State.SUSPENDED else "Queued"
            container_state: dict[str, Any] = {"waiting": {"reason": reason,
                                                           "message": self._native(status)}}
        elif state is State.RUNNING:
            container_state = {"running": {"startedAt": _rfc3339(status.started_at)}}
        else:
            container_state = {"terminated": {
                "exitCode": status.exit_code if status.exit_code is not None else
                (0 if state is State.SUCCEEDED else 1),
                "reason": _camel(str(status.reason)) if status.reason else "Completed",
                "message": self._native(status),
                "startedAt": _rfc3339(status.started_at or status.finished_at),
                "finishedAt": _rfc3339(status.finished_at),
            }}
        running = state is State.RUNNING
        condition = "True" if running else "False"
        stamp = _now()
        return {
            "phase": _PHASE[state],
            "reason": _camel(str(status.reason)) if status.reason else None,
            "message": self._native(status),
            "startTime": _rfc3339(status.submitted_at),
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": stamp},
                {"type": "Initialized", "status": "True", "lastTransitionTime": stamp},
                {"type": "ContainersReady", "status": condition, "lastTransitionTime": stamp},
                {"type": "Ready", "status": condition, "lastTransitionTime": stamp},
            ],
            "containerStatuses": [{
                "name": CONTAINER, "image": self.pod_image, "imageID": "", "ready": running,
                "started": running, "restartCount": 0, "state": container_state,
            }],
        }

    @staticmethod
    def _native(status: JobStatus) -> str:
        native = status.native_state or "-"
        return f"{status.target} job {status.native_id or '(not yet submitted)'}: {native}"

    def _record_event(self, job: _View) -> None:
        status = job.status
        name = object_name(status.job_id)
        warning = status.state in (State.FAILED, State.UNKNOWN)
        stamp = _now()
        message = f"{status.state}: {self._native(status)}"
        if status.reason:
            message += f" (reason {status.reason}"
            message += f", exit code {status.exit_code})" if status.exit_code is not None \
                else ")"
        _write(self._core.create_namespaced_event, job.namespace, {
            # Named as client-go's recorder names events: object name and nanoseconds.
            "metadata": {"name": f"{name}.{time.time_ns():x}"},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": name,
                               "namespace": job.namespace},
            "reason": _camel(str(status.state).lower()),
            "message": message,
            "type": "Warning" if warning else "Normal",
            "source": {"component": "hpc-bridge", "host": node_name(status.target)},
            "reportingComponent": "hpc-bridge",
            "reportingInstance": node_name(status.target),
            "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
        })

    # -- targets ------------------------------------------------------------------------

    def ensure_node(self, target: str, capacity: Mapping[str, Any] | None = None) -> None:
        """Create the target's virtual Node once; later calls in this process are free."""
        name = node_name(target)
        if name in self._known_nodes:
            return
        body = {
            "metadata": {"name": name,
                         "labels": {MANAGED_BY[0]: MANAGED_BY[1], TARGET_LABEL: target[:63],
                                    "type": "virtual-kubelet", "kubernetes.io/role": "agent",
                                    "kubernetes.io/hostname": name}},
            "spec": {"taints": [{"key": VIRTUAL_NODE_TAINT, "value": target[:63],
                                 "effect": "NoSchedule"}]},
        }
        try:
            self._core.create_node(body)
            created = True
        except ApiException as exc:
            if exc.status != 409:
                raise MirrorError(f"node of {target}: {exc.status} {exc.reason}") from None
            created = False
        self._known_nodes.add(name)
        if created:
            self.node_ready(target, True, capacity)

    def node_ready(self, target: str, ready: bool,
                   capacity: Mapping[str, Any] | None = None) -> None:
        """Write the Node's Ready condition (and capacity, when the adapter knows it)."""
        stamp = _now()
        status: dict[str, Any] = {
            "conditions": [{
                "type": "Ready", "status": "True" if ready else "False",
                "reason": "ManagerReachable" if ready else "ManagerUnreachable",
                "message": f"{target} {'answers' if ready else 'does not answer'} the bridge",
                "lastHeartbeatTime": stamp, "lastTransitionTime": stamp,
            }],
            "nodeInfo": {"kubeletVersion": "hpc-bridge", "operatingSystem": "linux",
                         "architecture": "amd64", "containerRuntimeVersion": "hpc-bridge",
                         "kernelVersion": "", "osImage": target, "kubeProxyVersion": "",
                         "machineID": "", "systemUUID": "", "bootID": ""},
        }
        if capacity:
            resources = {"pods": "1000000"}
            if capacity.get("cpus"):
                resources["cpu"] = str(capacity["cpus"])
            if capacity.get("memory_mb"):
                resources["memory"] = f"{capacity['memory_mb']}Mi"
            if capacity.get("gpus"):
                resources["nvidia.com/gpu"] = str(capacity["gpus"])
            status["capacity"] = status["allocatable"] = resources
        try:
            self._core.patch_node_status(node_name(target), {"status": status})
        except ApiException as exc:
            raise MirrorError(f"node of {target}: {exc.status} {exc.reason}") from None

    def renew_lease(self, target: str) -> None:
        """The Node's heartbeat: renew its Lease in ``kube-node-lease``."""
        name = node_name(target)
        spec = {"holderIdentity": name, "leaseDurationSeconds": LEASE_DURATION_S,
                "renewTime": _micro_now()}
        try:
            try:
                self._coordination.patch_namespaced_lease(name, LEASE_NAMESPACE, {"spec": spec})
            except ApiException as exc:
                if exc.status != 404:
                    raise
                self._coordination.create_namespaced_lease(
                    LEASE_NAMESPACE, {"metadata": {"name": name}, "spec": spec})
        except ApiException as exc:
            raise MirrorError(f"lease of {target}: {exc.status} {exc.reason}") from None
