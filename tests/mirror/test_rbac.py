"""The RBAC in knative/ is exactly what each function really calls, measured on the wire.

Each function runs its flows against the Kubernetes API emulator, one function at a
time, so every request the emulator records belongs to the function just called. The
union over the flows must equal what the deployment grants that function's service
account: a missing rule would be a 403 in a cluster, an extra one a needless privilege.
The functions run with sender authentication on (each reviews its senders' tokens), as
the deployment lets an operator turn it on without changing the RBAC.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client

from hpcbridge import events
from hpcbridge.dev import DevStack
from hpcbridge.store import Store
from tests.deploy.rbac import rules_for, scoped_rules_for
from tests.emulators.kube_apiserver import KubeApiEmulator
from tests.functions import send, submitted, tick, tick_until
from tests.functions.conftest import new_stack, slurm_target, write_targets
from tests.services.redis_server import RedisServer
from tests.services.slurm import SlurmCluster

pytestmark = pytest.mark.slurm
NAMESPACE = "jobs"
SENDER = "pipeline"  # a service account of NAMESPACE, and a namespace admin (pod events)
Rule = tuple[str, str, str]


@pytest.fixture(scope="module")
def kube() -> Iterator[KubeApiEmulator]:
    with KubeApiEmulator() as emulator:
        core = client.CoreV1Api(emulator.api_client())
        core.create_namespace({"metadata": {"name": NAMESPACE}})
        core.create_namespaced_service_account(NAMESPACE, {"metadata": {"name": SENDER}})
        yield emulator


def bearer(kube: KubeApiEmulator) -> dict[str, str]:
    """A fresh token of the sender, for the bridge's audience (not reviewed yet)."""
    core = client.CoreV1Api(kube.api_client())
    answer = core.create_namespaced_service_account_token(
        SENDER, NAMESPACE, {"spec": {"audiences": ["hpc-bridge"]}})
    return {"Authorization": f"Bearer {answer.status.token}"}


@pytest.fixture(scope="module")
def stack(redis_server: RedisServer, slurm_cluster: SlurmCluster, kube: KubeApiEmulator,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    base = tmp_path_factory.mktemp("rbac")
    targets = write_targets(base / "targets.yaml", {"hpc": slurm_target(slurm_cluster, base)})
    kubeconfig = kube.write_kubeconfig(base / "kubeconfig")
    with new_stack(redis_server.url, targets, base / "logs", KUBECONFIG=str(kubeconfig),
                   HPCBRIDGE_NAMESPACE=NAMESPACE, HPCBRIDGE_SENDER_AUTH="tokenreview",
                   HPCBRIDGE_NAMESPACE_ADMINS=f"system:serviceaccount:{NAMESPACE}:{SENDER}",
                   ).running() as bridge:
        yield bridge


def recorded(kube: KubeApiEmulator, action: Callable[[], object]) -> set[Rule]:
    kube.reset_calls()
    action()
    return {call.rbac for call in kube.calls()}


def test_each_function_is_granted_exactly_what_it_calls(
        stack: DevStack, store: Store, kube: KubeApiEmulator, tmp_path: Path) -> None:
    core = client.CoreV1Api(kube.api_client())
    used: dict[str, set[Rule]] = {"submit": set(), "poll": set(), "cancel": set()}
    job = {"target": "hpc", "command": ["sleep", "300"], "namespace": NAMESPACE}
    auth = bearer(kube)

    def cancel(job_id: str) -> None:
        send(stack.functions["cancel"], events.CANCEL, {"job_id": job_id, "namespace": NAMESPACE},
             headers=auth)

    # A first submit: the node, the ConfigMap and the pod are all new.
    first = ""

    def submit_first() -> None:
        nonlocal first
        first = submitted(stack, job, auth)

    used["submit"] |= recorded(kube, submit_first)
    # Ticks: the lease is created then renewed, the job moves, the node is reported.
    used["poll"] |= recorded(kube, lambda: tick_until(stack, store, first, "RUNNING",
                                                      headers=auth))
    used["poll"] |= recorded(kube, lambda: tick(stack, auth))
    # A pod someone deletes: the tick cancels the job and finishes the pod.
    core.delete_namespaced_pod(f"hpcbridge-{first}", NAMESPACE)
    used["poll"] |= recorded(kube, lambda: tick(stack, auth))
    # A pod that vanished: the tick recreates it.
    second = submitted(stack, job, auth)
    core.delete_namespaced_pod(f"hpcbridge-{second}", NAMESPACE, grace_period_seconds=0)
    used["poll"] |= recorded(kube, lambda: tick(stack, auth))
    # The cancel function, by event and for a deleted pod (ApiServerSource).
    used["cancel"] |= recorded(kube, lambda: cancel(second))
    third = submitted(stack, job, auth)
    core.delete_namespaced_pod(f"hpcbridge-{third}", NAMESPACE)
    pod = client.ApiClient().sanitize_for_serialization(
        core.read_namespaced_pod(f"hpcbridge-{third}", NAMESPACE))
    used["cancel"] |= recorded(kube, lambda: send(stack.functions["cancel"],
                                                  events.APISERVER_UPDATE, pod, headers=auth))
    # Jobs submitted while the cluster was down: the tick, or a cancel, writes what is
    # missing (ConfigMaps and pods are created there, not only patched). The submit
    # function reviews a fresh token first: the cached answer carries it through.
    fresh = bearer(kube)
    assert send(stack.functions["submit"], events.TICK, None, headers=fresh).status_code == 400
    kube.stop()
    try:
        fourth = submitted(stack, job, fresh)
        fifth = submitted(stack, job, fresh)
    finally:
        kube.start()
    used["cancel"] |= recorded(kube, lambda: cancel(fifth))
    used["poll"] |= recorded(kube, lambda: tick(stack, auth))
    cancel(fourth)

    for function, rules in used.items():
        granted = rules_for(f"hpc-bridge-{function}")
        assert rules - granted == set(), f"{function} would be refused these in a cluster"
        assert granted - rules == set(), f"{function} is granted these and never uses them"


def test_leases_are_the_only_namespace_bound_grant() -> None:
    for group, resource, _, where in scoped_rules_for("hpc-bridge-poll"):
        assert (where == "kube-node-lease") == (resource == "leases"), (group, resource)
