"""KubeApiEmulator behaves like a 1.28 kube-apiserver for what it covers.

Every test drives it through the official ``kubernetes`` client, as the product does,
and checks the behaviours listed in shared/REFERENCE.md and the API reference.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import urllib3
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from tests.emulators.kube_apiserver import KubeApiEmulator

START = 1_700_000_000.0  # 2023-11-14T22:13:20Z
IMAGE = "registry.k8s.io/pause:3.9"


class Clock:
    """An injected clock the tests move by hand."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def kube(clock: Clock) -> Iterator[KubeApiEmulator]:
    with KubeApiEmulator(clock=clock) as emulator:
        yield emulator


@pytest.fixture
def api(kube: KubeApiEmulator) -> Iterator[client.ApiClient]:
    api_client = kube.api_client()
    yield api_client
    api_client.close()


@pytest.fixture
def core(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


def status_of(error: ApiException) -> dict[str, Any]:
    return json.loads(error.body)


def refused(call: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """The Status body of a call that must fail."""
    with pytest.raises(ApiException) as caught:
        call(*args, **kwargs)
    body = status_of(caught.value)
    assert caught.value.status == body["code"]
    return body


def raw(kube: KubeApiEmulator, method: str, path: str, body: Any = None) -> dict[str, Any]:
    """The Status of a request that must fail, sent without the official client."""
    data = None if body is None else json.dumps(body).encode()
    answer = urllib3.request(method, kube.url + path, body=data, timeout=5, retries=False)
    assert answer.status >= 400
    return json.loads(answer.data)


def pod(name: str, node: str | None = "vn-slurm", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"metadata": {"name": name, "labels": {"app": "proxy"}},
                            "spec": {"containers": [{"name": "job", "image": IMAGE}], **spec}}
    if node:
        body["spec"]["nodeName"] = node
    return body


def version(obj: dict[str, Any]) -> int:
    return int(obj["metadata"]["resourceVersion"])


def stored(kube: KubeApiEmulator, resource: str, name: str,
           namespace: str | None = None) -> dict[str, Any]:
    return next(o for o in kube.objects(resource, namespace) if o["metadata"]["name"] == name)


def names(listing: Any) -> list[str]:
    return [item.metadata.name for item in listing.items]


# -- create, get, list ----------------------------------------------------------------

def test_create_sets_system_metadata_and_supports_generate_name(
        kube: KubeApiEmulator, core: client.CoreV1Api) -> None:
    created = core.create_namespaced_config_map(
        "default", {"metadata": {"name": "job-1", "labels": {"job": "1"}}, "data": {"a": "b"}})
    assert created.metadata.uid and created.metadata.resource_version
    assert created.metadata.creation_timestamp.timestamp() == START
    assert created.metadata.generation is None  # ConfigMaps do not track generation
    assert core.read_namespaced_config_map("job-1", "default") == created

    generated = core.create_namespaced_config_map(
        "default", {"metadata": {"generateName": "job-"}, "data": {}})
    assert generated.metadata.name.startswith("job-") and len(generated.metadata.name) == 9
    assert generated.metadata.uid != created.metadata.uid
    assert int(generated.metadata.resource_version) > int(created.metadata.resource_version)


def test_list_filters_by_label_selectors(core: client.CoreV1Api) -> None:
    for name, labels in (("a", {"state": "RUNNING", "target": "slurm"}),
                         ("b", {"state": "QUEUED", "target": "slurm"}),
                         ("c", {"state": "FAILED"})):
        core.create_namespaced_config_map("default", {"metadata": {"name": name,
                                                                   "labels": labels}})

    def select(selector: str) -> list[str]:
        return [n for n in names(core.list_namespaced_config_map(
            "default", label_selector=selector)) if n != "kube-root-ca.crt"]

    assert select("state=RUNNING") == ["a"]
    assert select("state==QUEUED") == ["b"]
    assert select("state!=RUNNING") == ["b", "c"]
    assert select("state in (RUNNING, FAILED)") == ["a", "c"]
    assert select("state notin (RUNNING),target") == ["b"]
    assert select("target") == ["a", "b"]
    assert select("!target") == ["c"]
    assert select("target=slurm,state!=QUEUED") == ["a"]
    assert refused(core.list_namespaced_config_map, "default",
                   label_selector="state in RUNNING")["reason"] == "BadRequest"


def test_list_filters_by_field_selectors_across_namespaces(kube: KubeApiEmulator,
                                                           core: client.CoreV1Api) -> None:
    core.create_namespace({"metadata": {"name": "jobs"}})
    core.create_namespaced_pod("default", pod("p1", node="vn-slurm"))
    core.create_namespaced_pod("jobs", pod("p2", node="vn-ray"))
    core.create_namespaced_pod("jobs", pod("p3", node="vn-slurm"))
    core.patch_namespaced_pod_status("p3", "jobs", {"status": {"phase": "Running"}})

    def select(selector: str) -> list[str]:
        return names(core.list_pod_for_all_namespaces(field_selector=selector))

    assert select("spec.nodeName=vn-slurm") == ["p1", "p3"]
    assert select("spec.nodeName!=vn-slurm") == ["p2"]
    assert select("metadata.namespace=jobs,status.phase=Pending") == ["p2"]
    assert select("metadata.name=p1") == ["p1"]
    listing = core.list_pod_for_all_namespaces(label_selector="app=proxy")
    assert listing.metadata.resource_version == str(max(version(o) for o in kube.objects("pods")))
    body = refused(core.list_pod_for_all_namespaces, field_selector="spec.hostname=x")
    assert body["reason"] == "BadRequest" and "spec.hostname" in body["message"]


def test_list_items_carry_no_kind_but_the_list_does(core: client.CoreV1Api) -> None:
    answer = core.list_namespaced_service_account("default", _preload_content=False)
    listing = json.loads(answer.data)
    assert (listing["kind"], listing["apiVersion"]) == ("ServiceAccountList", "v1")
    assert [item["metadata"]["name"] for item in listing["items"]] == ["default"]
    assert "kind" not in listing["items"][0]


def test_a_list_in_metadata_only_form_has_each_items_metadata_alone(
        core: client.CoreV1Api) -> None:
    core.create_namespaced_pod("default", pod("a"))
    accept = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
    answer = json.loads(core.list_pod_for_all_namespaces(
        label_selector="app=proxy", _headers={"Accept": accept}, _preload_content=False).data)
    assert (answer["kind"], answer["apiVersion"]) == ("PartialObjectMetadataList",
                                                      "meta.k8s.io/v1")
    (item,) = answer["items"]
    assert set(item) == {"kind", "apiVersion", "metadata"}
    assert item["kind"] == "PartialObjectMetadata" and item["metadata"]["name"] == "a"
    assert item["metadata"]["labels"] == {"app": "proxy"}
    plain = json.loads(core.list_pod_for_all_namespaces(
        label_selector="app=proxy", _preload_content=False).data)
    assert plain["kind"] == "PodList" and "spec" in plain["items"][0]


def test_create_conflicts_and_missing_namespace(core: client.CoreV1Api) -> None:
    core.create_namespaced_config_map("default", {"metadata": {"name": "job-1"}})
    body = refused(core.create_namespaced_config_map, "default", {"metadata": {"name": "job-1"}})
    assert body == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": 'configmaps "job-1" already exists', "reason": "AlreadyExists",
                    "details": {"name": "job-1", "kind": "configmaps"}, "code": 409}
    body = refused(core.create_namespaced_config_map, "nowhere", {"metadata": {"name": "x"}})
    assert (body["code"], body["reason"], body["message"]) == (
        404, "NotFound", 'namespaces "nowhere" not found')
    body = refused(core.read_namespaced_pod, "ghost", "default")
    assert (body["code"], body["reason"], body["details"]) == (
        404, "NotFound", {"name": "ghost", "kind": "pods"})


def test_validation_errors_are_invalid_or_bad_request(kube: KubeApiEmulator,
                                                     core: client.CoreV1Api) -> None:
    body = refused(core.create_namespaced_config_map, "default", {"metadata": {"name": "Job_1"}})
    assert (body["code"], body["reason"]) == (422, "Invalid")
    assert body["message"].startswith('ConfigMap "Job_1" is invalid: metadata.name: Invalid value')
    assert body["details"]["causes"][0]["field"] == "metadata.name"
    body = refused(core.create_namespaced_config_map, "default", {"metadata": {}})
    assert "name or generateName is required" in body["message"]
    body = refused(core.create_namespaced_config_map, "default",
                   {"metadata": {"name": "x", "labels": {"state": "not ok!"}}})
    assert (body["code"], body["details"]["causes"][0]["field"]) == (422, "metadata.labels")
    # The client refuses a non-string value itself; another client would reach the server.
    body = raw(kube, "POST", "/api/v1/namespaces/default/configmaps",
               {"metadata": {"name": "x"}, "data": {"exit_code": 3}})
    assert (body["code"], body["reason"]) == (400, "BadRequest")
    body = refused(core.create_namespaced_pod, "default", {"metadata": {"name": "x"},
                                                           "spec": {"containers": []}})
    assert body["details"]["causes"][0]["field"] == "spec.containers"


# -- resourceVersion --------------------------------------------------------------------

def test_replace_with_a_stale_resource_version_conflicts(core: client.CoreV1Api) -> None:
    first = core.create_namespaced_config_map("default", {"metadata": {"name": "job-1"},
                                                          "data": {"state": "QUEUED"}})
    first.data = {"state": "RUNNING"}
    second = core.replace_namespaced_config_map("job-1", "default", first)
    assert int(second.metadata.resource_version) > int(first.metadata.resource_version)

    first.data = {"state": "FAILED"}  # still carries the first resourceVersion
    body = refused(core.replace_namespaced_config_map, "job-1", "default", first)
    assert (body["code"], body["reason"]) == (409, "Conflict")
    assert body["message"] == ('Operation cannot be fulfilled on configmaps "job-1": the object '
                               "has been modified; please apply your changes to the latest "
                               "version and try again")

    first.metadata.resource_version = None  # no resourceVersion: unconditional
    third = core.replace_namespaced_config_map("job-1", "default", first)
    assert third.data == {"state": "FAILED"}
    stale_patch = {"metadata": {"resourceVersion": second.metadata.resource_version},
                   "data": {"state": "x"}}
    assert refused(core.patch_namespaced_config_map, "job-1", "default",
                   stale_patch)["code"] == 409


def test_writes_that_change_nothing_keep_the_resource_version(kube: KubeApiEmulator,
                                                              core: client.CoreV1Api) -> None:
    created = core.create_namespaced_config_map(
        "default", {"metadata": {"name": "job-1", "labels": {"state": "QUEUED"}},
                    "data": {"a": "b"}})
    before = created.metadata.resource_version
    patched = core.patch_namespaced_config_map("job-1", "default",
                                               {"metadata": {"labels": {"state": "QUEUED"}}})
    replaced = core.replace_namespaced_config_map("job-1", "default", created)
    assert patched.metadata.resource_version == replaced.metadata.resource_version == before
    listed = core.list_namespaced_config_map("default").metadata.resource_version
    core.patch_namespaced_config_map("job-1", "default", {"data": {"a": "b"}})
    assert core.list_namespaced_config_map("default").metadata.resource_version == listed

    changed = core.patch_namespaced_config_map("job-1", "default", {"data": {"a": "c"}})
    assert int(changed.metadata.resource_version) == int(listed) + 1
    core.delete_namespaced_config_map("job-1", "default")
    assert int(core.list_namespaced_config_map("default").metadata.resource_version) == \
        int(listed) + 2


# -- status subresource -----------------------------------------------------------------

def test_status_sent_to_the_main_resource_is_ignored(kube: KubeApiEmulator,
                                                     core: client.CoreV1Api) -> None:
    created = core.create_namespaced_pod("default", {**pod("p1"),
                                                     "status": {"phase": "Running"}})
    assert created.status.phase == "Pending"
    before = version(stored(kube, "pods", "p1"))
    patched = core.patch_namespaced_pod("p1", "default", {"status": {"phase": "Succeeded"}})
    assert patched.status.phase == "Pending"
    assert int(patched.metadata.resource_version) == before  # nothing changed at all
    created.status.phase = "Failed"
    created.metadata.labels["state"] = "FAILED"
    replaced = core.replace_namespaced_pod("p1", "default", created)
    assert (replaced.status.phase, replaced.metadata.labels["state"]) == ("Pending", "FAILED")


def test_status_subresource_ignores_spec_but_not_labels(kube: KubeApiEmulator,
                                                        core: client.CoreV1Api) -> None:
    core.create_namespaced_pod("default", pod("p1"))
    written = core.patch_namespaced_pod_status("p1", "default", {
        "metadata": {"labels": {"state": "RUNNING"}},
        "spec": {"activeDeadlineSeconds": 5, "nodeName": "elsewhere"},
        "status": {"phase": "Running"}})
    assert written.status.phase == "Running"
    assert written.metadata.labels["state"] == "RUNNING"  # the status strategy keeps metadata
    assert written.spec.active_deadline_seconds is None
    assert written.spec.node_name == "vn-slurm"
    assert written.status.qos_class == "BestEffort"

    current = core.read_namespaced_pod("p1", "default")
    current.status.phase = "Succeeded"
    current.status.qos_class = None  # backfilled: it is immutable
    replaced = core.replace_namespaced_pod_status("p1", "default", current)
    assert (replaced.status.phase, replaced.status.qos_class) == ("Succeeded", "BestEffort")


def test_node_status_only_through_the_subresource(core: client.CoreV1Api) -> None:
    core.create_node({"metadata": {"name": "vn-slurm"},
                      "status": {"capacity": {"cpu": "4"}}})  # kept: kubelets register so
    patched = core.patch_node("vn-slurm", {"status": {"capacity": {"cpu": "8"}}})
    assert patched.status.capacity == {"cpu": "4"}
    patched = core.patch_node_status("vn-slurm", {"status": {"capacity": {"cpu": "8"}},
                                                  "spec": {"unschedulable": True}})
    assert patched.status.capacity == {"cpu": "8"} and not patched.spec.unschedulable


# -- patch formats ----------------------------------------------------------------------

def test_dict_patches_are_strategic_merge_and_merge_lists_by_key(
        kube: KubeApiEmulator, core: client.CoreV1Api) -> None:
    core.create_namespaced_pod("default", pod("p1"))
    core.patch_namespaced_pod_status("p1", "default", {"status": {
        "conditions": [{"type": "PodScheduled", "status": "True"},
                       {"type": "Ready", "status": "False"}],
        "containerStatuses": [{"name": "job", "image": IMAGE, "imageID": "", "ready": False,
                               "restartCount": 0, "state": {"waiting": {"reason": "Queued"}}}]}})
    written = core.patch_namespaced_pod_status("p1", "default", {"status": {
        "conditions": [{"type": "Ready", "status": "True"}],
        "containerStatuses": [{"name": "job", "ready": True, "restartCount": 0,
                               "image": IMAGE, "imageID": "",
                               "state": {"running": {"startedAt": "2023-11-14T22:13:20Z"}}}]}})
    assert [(c.type, c.status) for c in written.status.conditions] == [
        ("PodScheduled", "True"), ("Ready", "True")]  # merged on "type"
    state = stored(kube, "pods", "p1")["status"]["containerStatuses"][0]["state"]
    assert state == {"running": {"startedAt": "2023-11-14T22:13:20Z"}}  # atomic: replaced
    assert kube.calls(verb="patch")[-1].content_type == "application/strategic-merge-patch+json"

    # Containers merge on "name": only the image changes, which a pod update allows.
    patched = core.patch_namespaced_pod("p1", "default", {"spec": {"containers": [
        {"name": "job", "image": "registry.k8s.io/pause:3.10"}]}})
    assert [(c.name, c.image) for c in patched.spec.containers] == [
        ("job", "registry.k8s.io/pause:3.10")]
    assert patched.spec.containers[0].termination_message_path == "/dev/termination-log"

    core.patch_namespaced_pod("p1", "default", {"metadata": {"finalizers": ["a"]}})
    finalizers = core.patch_namespaced_pod("p1", "default", {"metadata": {"finalizers": ["b"]}})
    assert finalizers.metadata.finalizers == ["a", "b"]  # a merged list of strings
    dropped = core.patch_namespaced_pod(
        "p1", "default", {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a", "b"]}})
    assert not dropped.metadata.finalizers


def test_merge_patch_replaces_lists_and_json_patch_applies_operations(
        kube: KubeApiEmulator, core: client.CoreV1Api) -> None:
    core.create_node({"metadata": {"name": "vn-slurm"}})
    core.patch_node_status("vn-slurm", {"status": {"conditions": [
        {"type": "Ready", "status": "True"}, {"type": "MemoryPressure", "status": "False"}]}})
    merged = core.patch_node_status(
        "vn-slurm", {"status": {"conditions": [{"type": "Ready", "status": "False"}]}},
        _content_type="application/merge-patch+json")
    assert [(c.type, c.status) for c in merged.status.conditions] == [("Ready", "False")]
    removed = core.patch_node("vn-slurm", {"metadata": {"annotations": None}},
                              _content_type="application/merge-patch+json")
    assert removed.metadata.annotations is None

    patched = core.patch_node("vn-slurm", [
        {"op": "add", "path": "/metadata/labels", "value": {"target": "slurm"}},
        {"op": "add", "path": "/spec/taints/-", "value": {"key": "hpc", "effect": "NoSchedule"}},
        {"op": "test", "path": "/metadata/labels/target", "value": "slurm"}])
    assert patched.metadata.labels == {"target": "slurm"}
    assert [t.key for t in patched.spec.taints] == ["node.kubernetes.io/not-ready", "hpc"]
    assert kube.calls(verb="patch")[-1].content_type == "application/json-patch+json"
    body = refused(core.patch_node, "vn-slurm",
                   [{"op": "test", "path": "/metadata/labels/target", "value": "ray"}])
    assert (body["code"], body["reason"]) == (422, "Invalid")
    assert refused(core.patch_node, "vn-slurm", [{"op": "replace", "path": "/spec/nope/x",
                                                  "value": 1}])["code"] == 422


# -- pods -------------------------------------------------------------------------------

def test_pod_gets_the_apiserver_defaults(kube: KubeApiEmulator, core: client.CoreV1Api) -> None:
    core.create_namespaced_pod("default", pod("p1"))
    created = stored(kube, "pods", "p1")
    spec = created["spec"]
    assert {k: spec[k] for k in ("serviceAccountName", "serviceAccount", "restartPolicy",
                                 "terminationGracePeriodSeconds", "dnsPolicy", "schedulerName",
                                 "priority", "enableServiceLinks", "preemptionPolicy")} == {
        "serviceAccountName": "default", "serviceAccount": "default", "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
        "schedulerName": "default-scheduler", "priority": 0, "enableServiceLinks": True,
        "preemptionPolicy": "PreemptLowerPriority"}
    assert spec["tolerations"] == [
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
         "tolerationSeconds": 300},
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute",
         "tolerationSeconds": 300}]
    [volume] = spec["volumes"]
    assert volume["name"].startswith("kube-api-access-")
    assert spec["containers"][0]["volumeMounts"] == [
        {"name": volume["name"], "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
         "readOnly": True}]
    assert spec["containers"][0]["imagePullPolicy"] == "IfNotPresent"
    assert created["status"] == {"phase": "Pending", "qosClass": "BestEffort"}


def test_pod_defaults_respect_what_the_pod_says(kube: KubeApiEmulator,
                                                core: client.CoreV1Api) -> None:
    forever = [{"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                "effect": "NoExecute"},
               {"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                "effect": "NoExecute"}]
    body = pod("p1", restartPolicy="Never", automountServiceAccountToken=False,
               tolerations=forever, containers=[{
                   "name": "job", "image": "busybox",
                   "resources": {"requests": {"cpu": "1m", "memory": "1Mi"}}}])
    created = core.create_namespaced_pod("default", body)
    assert created.spec.volumes is None and created.spec.containers[0].volume_mounts is None
    assert [t.toleration_seconds for t in created.spec.tolerations] == [None, None]
    assert created.spec.restart_policy == "Never"
    assert created.spec.containers[0].image_pull_policy == "Always"  # no tag means latest
    assert created.status.qos_class == "Burstable"
    guaranteed = core.create_namespaced_pod("default", pod("p2", containers=[{
        "name": "job", "image": IMAGE, "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]))
    assert guaranteed.spec.containers[0].resources.requests == {"cpu": "1", "memory": "1Gi"}
    assert guaranteed.status.qos_class == "Guaranteed"


def test_pod_creation_is_forbidden_without_a_default_service_account(clock: Clock) -> None:
    with KubeApiEmulator(clock=clock, populate_namespaces=False) as kube:
        api_client = kube.api_client()
        core = client.CoreV1Api(api_client)
        core.create_namespace({"metadata": {"name": "fresh"}})
        body = refused(core.create_namespaced_pod, "fresh", pod("p1"))
        assert body == {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": 'pods "p1" is forbidden: error looking up service account fresh/default: '
                       'serviceaccount "default" not found',
            "reason": "Forbidden", "details": {"name": "p1", "kind": "pods"}, "code": 403}
        core.create_namespaced_service_account("fresh", {"metadata": {"name": "default"}})
        assert core.create_namespaced_pod("fresh", pod("p1")).status.phase == "Pending"
        api_client.close()


def test_the_default_service_account_comes_back(core: client.CoreV1Api) -> None:
    core.create_namespace({"metadata": {"name": "jobs"}})
    first = core.read_namespaced_service_account("default", "jobs")
    core.delete_namespaced_service_account("default", "jobs")
    again = core.read_namespaced_service_account("default", "jobs")
    assert again.metadata.uid != first.metadata.uid
    assert names(core.list_namespaced_config_map("jobs")) == ["kube-root-ca.crt"]


def test_pod_spec_is_immutable_but_for_images_and_added_tolerations(
        core: client.CoreV1Api) -> None:
    created = core.create_namespaced_pod("default", pod("p1"))
    created.spec.restart_policy = "Never"
    body = refused(core.replace_namespaced_pod, "p1", "default", created)
    assert (body["code"], body["details"]["causes"][0]["field"]) == (422, "spec")
    assert "pod updates may not change fields" in body["message"]
    current = core.read_namespaced_pod("p1", "default")
    current.spec.tolerations.append(client.V1Toleration(key="hpc", operator="Exists"))
    assert len(core.replace_namespaced_pod("p1", "default", current).spec.tolerations) == 3
    body = refused(core.patch_namespaced_pod, "p1", "default", {"spec": {"tolerations": []}})
    assert body["code"] == 422  # tolerations are atomic: the patch would remove them


def test_a_terminated_container_stays_terminated_without_restarts(
        core: client.CoreV1Api) -> None:
    core.create_namespaced_pod("default", pod("p1", restartPolicy="Never"))
    ended = {"name": "job", "image": IMAGE, "imageID": "", "ready": False, "restartCount": 0,
             "state": {"terminated": {"exitCode": 0}}}
    core.patch_namespaced_pod_status("p1", "default", {"status": {"containerStatuses": [ended]}})
    back = {**ended, "state": {"running": {}}}
    body = refused(core.patch_namespaced_pod_status, "p1", "default",
                   {"status": {"containerStatuses": [back]}})
    assert body["details"]["causes"] == [{
        "reason": "FieldValueForbidden", "field": "status.containerStatuses[0].state",
        "message": "Forbidden: may not be transitioned to non-terminated state"}]


# -- deletion ---------------------------------------------------------------------------

def test_a_node_bound_pod_stays_until_deleted_with_grace_period_zero(
        kube: KubeApiEmulator, core: client.CoreV1Api, clock: Clock) -> None:
    core.create_namespaced_pod("default", pod("p1"))
    clock.advance(5)
    deleting = core.delete_namespaced_pod("p1", "default")
    assert deleting.metadata.deletion_grace_period_seconds == 30
    assert deleting.metadata.deletion_timestamp.timestamp() == START + 5 + 30
    assert core.read_namespaced_pod("p1", "default") == deleting

    again = core.delete_namespaced_pod("p1", "default")  # pending: nothing changes
    assert again.metadata.resource_version == deleting.metadata.resource_version
    shorter = core.delete_namespaced_pod("p1", "default", grace_period_seconds=10)
    assert shorter.metadata.deletion_grace_period_seconds == 10
    assert shorter.metadata.deletion_timestamp.timestamp() == START + 5 + 10
    longer = core.delete_namespaced_pod("p1", "default", body=client.V1DeleteOptions(
        grace_period_seconds=60))
    assert longer.metadata.deletion_grace_period_seconds == 10  # only ever shortened

    gone = core.delete_namespaced_pod("p1", "default", grace_period_seconds=0)
    assert gone.metadata.deletion_grace_period_seconds == 0  # answered with the last state
    assert refused(core.read_namespaced_pod, "p1", "default")["code"] == 404
    assert kube.objects("pods") == []


def test_unbound_and_finished_pods_are_deleted_at_once(kube: KubeApiEmulator,
                                                       core: client.CoreV1Api) -> None:
    core.create_namespaced_pod("default", pod("unbound", node=None))
    core.create_namespaced_pod("default", pod("done"))
    core.create_namespaced_pod("default", pod("custom", terminationGracePeriodSeconds=5))
    core.patch_namespaced_pod_status("done", "default", {"status": {"phase": "Succeeded"}})
    core.delete_namespaced_pod("unbound", "default")
    core.delete_namespaced_pod("done", "default")
    custom = core.delete_namespaced_pod("custom", "default")
    assert custom.metadata.deletion_grace_period_seconds == 5
    assert [p["metadata"]["name"] for p in kube.objects("pods")] == ["custom"]


def test_finalizers_hold_an_object_until_they_are_removed(kube: KubeApiEmulator,
                                                          core: client.CoreV1Api) -> None:
    core.create_namespaced_config_map("default", {"metadata": {
        "name": "job-1", "finalizers": ["hpc-bridge.io/cancel"]}})
    marked = core.delete_namespaced_config_map("job-1", "default", _preload_content=False)
    assert json.loads(marked.data)["kind"] == "ConfigMap"  # the object, not a Status
    held = stored(kube, "configmaps", "job-1")
    assert held["metadata"]["deletionTimestamp"] == "2023-11-14T22:13:20Z"
    assert held["metadata"]["deletionGracePeriodSeconds"] == 0
    core.patch_namespaced_config_map("job-1", "default", {"metadata": {"finalizers": None}})
    assert [c["metadata"]["name"] for c in kube.objects("configmaps", "default")] == [
        "kube-root-ca.crt"]


def test_deleting_without_finalizers_answers_a_success_status(core: client.CoreV1Api) -> None:
    created = core.create_namespaced_config_map("default", {"metadata": {"name": "job-1"}})
    answer = core.delete_namespaced_config_map("job-1", "default", _preload_content=False)
    assert json.loads(answer.data) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
        "details": {"name": "job-1", "kind": "configmaps", "uid": created.metadata.uid}}
    core.create_namespaced_config_map("default", {"metadata": {"name": "job-2"}})
    stale = client.V1DeleteOptions(preconditions=client.V1Preconditions(uid="other"))
    body = refused(core.delete_namespaced_config_map, "job-2", "default", body=stale)
    assert body["code"] == 409 and "Precondition failed" in body["message"]


def test_a_deleted_namespace_stays_terminating(kube: KubeApiEmulator,
                                               core: client.CoreV1Api) -> None:
    core.create_namespace({"metadata": {"name": "jobs"}})
    terminating = core.delete_namespace("jobs", _preload_content=False)
    assert json.loads(terminating.data)["status"]["phase"] == "Terminating"
    body = refused(core.create_namespaced_config_map, "jobs", {"metadata": {"name": "x"}})
    assert (body["code"], body["reason"]) == (403, "Forbidden")
    assert refused(core.delete_namespace, "jobs")["code"] == 409
    assert refused(core.delete_namespace, "default")["code"] == 403
    assert stored(kube, "namespaces", "jobs")["metadata"]["labels"] == {
        "kubernetes.io/metadata.name": "jobs"}


# -- nodes and leases -------------------------------------------------------------------

def test_new_node_is_tainted_and_annotated_so_a_creation_time_write_conflicts(
        core: client.CoreV1Api) -> None:
    created = core.create_node({"metadata": {"name": "vn-slurm"}})
    assert [(t.key, t.effect) for t in created.spec.taints] == [
        ("node.kubernetes.io/not-ready", "NoSchedule")]
    created.status = client.V1NodeStatus(conditions=[client.V1NodeCondition(
        type="Ready", status="True")])
    body = refused(core.replace_node_status, "vn-slurm", created)
    assert (body["code"], body["reason"]) == (409, "Conflict")

    current = core.read_node("vn-slurm")
    assert current.metadata.annotations == {"node.alpha.kubernetes.io/ttl": "0"}
    current.status = created.status
    assert core.replace_node_status("vn-slurm", current).status.conditions[0].status == "True"
    patched = core.patch_node_status("vn-slurm", {"status": {"conditions": [
        {"type": "Ready", "status": "False"}]}})
    assert patched.status.conditions[0].status == "False"


def test_lease_create_renew_and_conflict(kube: KubeApiEmulator, api: client.ApiClient) -> None:
    leases = client.CoordinationV1Api(api)
    created = leases.create_namespaced_lease("kube-node-lease", {
        "metadata": {"name": "vn-slurm"},
        "spec": {"holderIdentity": "vn-slurm", "leaseDurationSeconds": 40,
                 "renewTime": "2023-11-14T22:13:20.000000Z"}})
    renewed = leases.patch_namespaced_lease("vn-slurm", "kube-node-lease", {
        "spec": {"renewTime": "2023-11-14T22:13:30.000000Z"}})
    assert renewed.spec.holder_identity == "vn-slurm"
    assert renewed.spec.renew_time.timestamp() == START + 10
    body = refused(leases.replace_namespaced_lease, "vn-slurm", "kube-node-lease", created)
    assert body["details"] == {"name": "vn-slurm", "group": "coordination.k8s.io",
                               "kind": "leases"}
    assert body["message"].startswith(
        'Operation cannot be fulfilled on leases.coordination.k8s.io "vn-slurm"')
    made = leases.replace_namespaced_lease("vn-ray", "kube-node-lease", {
        "metadata": {"name": "vn-ray"}, "spec": {"holderIdentity": "vn-ray"}})
    assert made.metadata.uid  # a PUT creates a missing Lease
    assert kube.calls()[-1].rbac == ("coordination.k8s.io", "leases", "update")
    assert kube.calls()[-1].code == 201


def test_node_lifecycle_marks_silent_nodes_and_evicts_intolerant_pods(
        kube: KubeApiEmulator, core: client.CoreV1Api, api: client.ApiClient,
        clock: Clock) -> None:
    leases = client.CoordinationV1Api(api)
    core.create_node({"metadata": {"name": "vn-slurm"}})
    core.patch_node_status("vn-slurm", {"status": {"conditions": [
        {"type": "Ready", "status": "True", "lastHeartbeatTime": "2023-11-14T22:13:20Z"}]}})
    forever = [{"key": k, "operator": "Exists", "effect": "NoExecute"}
               for k in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")]
    core.create_namespaced_pod("default", pod("defaulted"))
    core.create_namespaced_pod("default", pod("proxy", tolerations=forever))
    for name in ("defaulted", "proxy"):
        core.patch_namespaced_pod_status(name, "default", {"status": {
            "phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}})
    kube.node_lifecycle()
    assert "taints" not in stored(kube, "nodes", "vn-slurm")["spec"]  # Ready: not-ready lifted

    clock.advance(30)
    leases.create_namespaced_lease("kube-node-lease", {
        "metadata": {"name": "vn-slurm"}, "spec": {"renewTime": "2023-11-14T22:13:50.000000Z"}})
    clock.advance(30)  # 60 s since the Ready heartbeat, 30 s since the lease renewal
    kube.node_lifecycle()
    assert stored(kube, "nodes", "vn-slurm")["status"]["conditions"][0]["status"] == "True"

    clock.advance(11)
    kube.node_lifecycle()
    node = stored(kube, "nodes", "vn-slurm")
    assert (node["status"]["conditions"][0]["status"],
            node["status"]["conditions"][0]["reason"]) == ("Unknown", "NodeStatusUnknown")
    assert [(t["key"], t["effect"]) for t in node["spec"]["taints"]] == [
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoSchedule")]
    ready = {p["metadata"]["name"]: p["status"]["conditions"][0]["status"]
             for p in kube.objects("pods")}
    assert ready == {"defaulted": "False", "proxy": "False"}

    clock.advance(299)
    kube.node_lifecycle()
    assert not any(p["metadata"].get("deletionTimestamp") for p in kube.objects("pods"))
    clock.advance(1)
    kube.node_lifecycle()
    evicted = stored(kube, "pods", "defaulted")
    assert evicted["metadata"]["deletionGracePeriodSeconds"] == 30  # bound: graceful
    assert evicted["status"]["conditions"][-1]["reason"] == "DeletionByTaintManager"
    assert "deletionTimestamp" not in stored(kube, "pods", "proxy")["metadata"]

    core.patch_node_status("vn-slurm", {"status": {"conditions": [
        {"type": "Ready", "status": "True", "lastHeartbeatTime": "2023-11-14T22:19:00Z"}]}})
    kube.node_lifecycle()
    assert "taints" not in stored(kube, "nodes", "vn-slurm")["spec"]


# -- events -----------------------------------------------------------------------------

def test_events_are_listable_and_expire_an_hour_after_their_last_write(
        kube: KubeApiEmulator, core: client.CoreV1Api, clock: Clock) -> None:
    def event(name: str) -> dict[str, Any]:
        return {"metadata": {"name": name}, "reason": "Running", "type": "Normal",
                "involvedObject": {"kind": "Pod", "name": "p1", "namespace": "default"},
                "source": {"component": "hpc-bridge"}}

    core.create_namespaced_event("default", event("p1.a"))
    clock.advance(1800)
    core.create_namespaced_event("default", event("p1.b"))
    listed = core.list_namespaced_event("default", field_selector="involvedObject.name=p1,"
                                                                 "source=hpc-bridge")
    assert names(listed) == ["p1.a", "p1.b"]
    clock.advance(1800)
    assert names(core.list_namespaced_event("default")) == ["p1.b"]
    core.patch_namespaced_event("p1.b", "default", {"count": 2})  # a write renews the TTL
    clock.advance(3599)
    assert names(core.list_event_for_all_namespaces()) == ["p1.b"]
    clock.advance(1)
    assert names(core.list_event_for_all_namespaces()) == []
    body = refused(core.create_namespaced_event, "kube-system", event("p1.c"))
    assert body["details"]["causes"][0]["field"] == "involvedObject.namespace"


# -- observability, faults, restarts, kubeconfig ------------------------------------------

def test_every_request_is_recorded_with_its_rbac_attributes(
        kube: KubeApiEmulator, core: client.CoreV1Api) -> None:
    core.create_namespaced_pod("default", pod("p1"))
    kube.reset_calls()
    core.patch_namespaced_pod_status("p1", "default", {"status": {"phase": "Running"}})
    core.list_pod_for_all_namespaces(label_selector="app=proxy")
    core.delete_namespaced_pod("p1", "default", grace_period_seconds=0)
    assert [c.rbac for c in kube.calls()] == [
        ("", "pods/status", "patch"), ("", "pods", "list"), ("", "pods", "delete")]
    [patch, listing, delete] = kube.calls()
    assert (patch.namespace, patch.name, patch.code, patch.is_write) == (
        "default", "p1", 200, True)
    assert (listing.namespace, listing.query, listing.is_write) == (
        "", {"labelSelector": "app=proxy"}, False)
    assert delete.query == {"gracePeriodSeconds": "0"}
    assert len(kube.calls(is_write=True)) == 2  # filters match any ApiCall field


def test_unknown_paths_and_unimplemented_verbs(kube: KubeApiEmulator,
                                               core: client.CoreV1Api) -> None:
    core.create_namespaced_config_map("default", {"metadata": {"name": "x"}})
    kube.reset_calls()
    assert raw(kube, "GET", "/api/v1/secrets")["code"] == 404
    assert raw(kube, "GET", "/api/v1/namespaces/default/pods/p1/log")["code"] == 404
    assert raw(kube, "GET", "/api/v1/namespaces/default/pods?watch=true")["reason"] == \
        "MethodNotAllowed"
    assert raw(kube, "POST", "/api/v1/namespaces/default/pods/p1", {})["code"] == 405
    assert raw(kube, "PATCH", "/api/v1/namespaces/default/configmaps/x", {})["code"] == 415
    assert [c.verb for c in kube.calls()] == ["", "", "watch", "create", "patch"]


def test_injected_failures_fail_once_and_change_nothing(kube: KubeApiEmulator,
                                                        core: client.CoreV1Api) -> None:
    kube.fail_next("POST", "configmaps", 500)
    body = refused(core.create_namespaced_config_map, "default", {"metadata": {"name": "a"}})
    assert (body["reason"], body["details"]) == (
        "InternalError", {"name": "", "kind": "configmaps"})
    assert refused(core.read_namespaced_config_map, "a", "default")["code"] == 404
    core.create_namespaced_config_map("default", {"metadata": {"name": "a"}})

    core.create_namespaced_pod("default", pod("p1"))
    kube.fail_next("PATCH", "pods", 409, subresource="status")
    status = {"status": {"phase": "Running"}}
    assert refused(core.patch_namespaced_pod_status, "p1", "default", status)["code"] == 409
    assert core.patch_namespaced_pod_status("p1", "default", status).status.phase == "Running"

    kube.fail_next("POST", "configmaps", "drop")
    with pytest.raises(urllib3.exceptions.HTTPError):
        core.create_namespaced_config_map("default", {"metadata": {"name": "b"}})
    assert [c["metadata"]["name"] for c in kube.objects("configmaps", "default")] == [
        "a", "kube-root-ca.crt"]
    kube.fail_next("GET", "configmaps", "drop")  # urllib3 retries an idempotent request
    assert core.read_namespaced_config_map("a", "default").metadata.name == "a"
    assert [c.code for c in kube.calls(method="GET", resource="configmaps")][-2:] == [0, 200]


def test_stop_and_start_keep_the_port_and_the_objects(kube: KubeApiEmulator,
                                                      core: client.CoreV1Api) -> None:
    core.create_namespaced_config_map("default", {"metadata": {"name": "a"}})
    url = kube.url
    kube.stop()
    with pytest.raises(urllib3.exceptions.MaxRetryError):
        core.read_namespaced_config_map("a", "default")
    kube.start()
    assert kube.url == url
    assert core.read_namespaced_config_map("a", "default").metadata.name == "a"


def test_the_client_loads_the_kubeconfig_it_writes(kube: KubeApiEmulator,
                                                   tmp_path: Any) -> None:
    path = kube.write_kubeconfig(tmp_path / "kubeconfig")
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(path), client_configuration=configuration)
    assert configuration.host == kube.url
    with client.ApiClient(configuration) as api_client:
        namespaces = names(client.CoreV1Api(api_client).list_namespace())
    assert namespaces == ["default", "kube-node-lease", "kube-public", "kube-system"]
    assert not any(c.path in ("/api", "/apis", "/version") for c in kube.calls())


# -- service-account tokens: TokenRequest and TokenReview ---------------------------------


def token_for(core: client.CoreV1Api, namespace: str, name: str, *audiences: str,
              seconds: int = 3600) -> str:
    spec: dict[str, Any] = {"expirationSeconds": seconds}
    if audiences:
        spec["audiences"] = list(audiences)
    answer = core.create_namespaced_service_account_token(name, namespace, {"spec": spec})
    return answer.status.token


def review(api: client.ApiClient, token: str, *audiences: str) -> client.V1TokenReviewStatus:
    spec: dict[str, Any] = {"token": token}
    if audiences:
        spec["audiences"] = list(audiences)
    return client.AuthenticationV1Api(api).create_token_review({"spec": spec}).status


def test_token_request_issues_a_token_for_an_existing_account(
        kube: KubeApiEmulator, core: client.CoreV1Api, clock: Clock) -> None:
    core.create_namespaced_service_account("default", {"metadata": {"name": "sender"}})
    answer = core.create_namespaced_service_account_token(
        "sender", "default", {"spec": {"audiences": ["hpc-bridge"], "expirationSeconds": 600}})
    assert answer.status.token and answer.spec.audiences == ["hpc-bridge"]
    assert answer.status.expiration_timestamp.timestamp() == START + 600
    defaulted = core.create_namespaced_service_account_token("sender", "default", {"spec": {}})
    assert defaulted.spec.audiences == ["https://kubernetes.default.svc.cluster.local"]
    assert defaulted.spec.expiration_seconds == 3600
    assert defaulted.status.token != answer.status.token
    missing = refused(core.create_namespaced_service_account_token, "nobody", "default",
                      {"spec": {}})
    assert (missing["code"], missing["reason"]) == (404, "NotFound")
    short = refused(core.create_namespaced_service_account_token, "sender", "default",
                    {"spec": {"expirationSeconds": 60}})
    assert (short["code"], short["reason"]) == (422, "Invalid")
    assert "may not specify a duration less than 10 minutes" in short["message"]
    assert raw(kube, "GET", "/api/v1/namespaces/default/serviceaccounts/sender/token")[
        "code"] == 405
    assert {c.rbac for c in kube.calls(subresource="token")} == {
        ("", "serviceaccounts/token", "create"), ("", "serviceaccounts/token", "get")}


def test_token_review_authenticates_only_live_tokens_for_its_audiences(
        kube: KubeApiEmulator, core: client.CoreV1Api, api: client.ApiClient,
        clock: Clock) -> None:
    core.create_namespace({"metadata": {"name": "team-a"}})
    core.create_namespaced_service_account("team-a", {"metadata": {"name": "pipeline"}})
    token = token_for(core, "team-a", "pipeline", "hpc-bridge", "other", seconds=600)
    kube.reset_calls()
    good = review(api, token, "hpc-bridge", "elsewhere")
    assert good.authenticated is True and good.error is None
    assert good.audiences == ["hpc-bridge"], "the intersection"
    assert good.user.username == "system:serviceaccount:team-a:pipeline"
    assert good.user.groups == ["system:serviceaccounts", "system:serviceaccounts:team-a",
                                "system:authenticated"]
    assert [c.rbac for c in kube.calls()] == [("authentication.k8s.io", "tokenreviews",
                                               "create")]
    assert kube.calls()[0].code == 201
    for status in (review(api, token, "elsewhere"),  # not issued for it
                   review(api, token),  # the API server's own audience
                   review(api, "not-a-token-we-issued", "hpc-bridge")):
        assert not status.authenticated and status.error and status.audiences is None
        assert token not in status.error
    clock.advance(600)
    expired = review(api, token, "hpc-bridge")
    assert not expired.authenticated and "expired" in expired.error


def test_token_review_forgets_tokens_of_a_deleted_account(
        kube: KubeApiEmulator, core: client.CoreV1Api, api: client.ApiClient) -> None:
    core.create_namespaced_service_account("default", {"metadata": {"name": "gone"}})
    token = token_for(core, "default", "gone")
    assert review(api, token).authenticated is True, "default audience: the API server's"
    core.delete_namespaced_service_account("gone", "default")
    core.create_namespaced_service_account("default", {"metadata": {"name": "gone"}})
    assert not review(api, token).authenticated, "another account of the same name"


def test_token_review_is_create_only_and_needs_a_token(kube: KubeApiEmulator) -> None:
    assert raw(kube, "GET", "/apis/authentication.k8s.io/v1/tokenreviews")["code"] == 405
    assert raw(kube, "POST", "/apis/authentication.k8s.io/v1/namespaces/default/tokenreviews",
               {"spec": {"token": "x"}})["code"] == 404, "cluster-scoped"
    empty = raw(kube, "POST", "/apis/authentication.k8s.io/v1/tokenreviews", {"spec": {}})
    assert (empty["code"], empty["reason"]) == (400, "BadRequest")
    assert kube.objects("tokenreviews") == [], "nothing is stored"
