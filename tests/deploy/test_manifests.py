"""The kustomize base in knative/: every object valid, and wired the way the bridge needs.

Three layers, as a real cluster has them:

1. schemas, strict: Knative kinds against Knative's own CRD schemas (jsonschema, with
   unknown fields refused), core kinds with kubernetes-validate in strict mode for
   Kubernetes 1.28 and the newest version it knows;
2. the checks Knative's admission webhooks make (cron syntax, a Trigger's broker and
   subscriber, delivery durations, Knative Serving's rules on containers, ports, volumes,
   reserved environment variables and paths);
3. what only this project knows: each Trigger routes a type the bridge consumes to the
   function that consumes it, references resolve inside the base, the RBAC of each
   service account is exactly what its function needs, one image for the three functions.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import adapters
from hpcbridge import events
from hpcbridge.model import State
from hpcbridge.naming import MANAGED_BY
from hpcbridge.targets import Targets
from tests.deploy import rbac, schemas
from tests.deploy.render import (
    KNATIVE,
    REPO,
    Key,
    key,
    kubectl,
    render,
    render_kubectl,
    render_subset,
)

Obj = dict[str, Any]
NAMESPACE = "hpc-bridge"
FUNCTIONS = ("submit", "poll", "cancel")
KSVC = "serving.knative.dev/v1"
BROKER_API = "eventing.knative.dev/v1"

# Which function consumes which event type (DESIGN.md, README.md: the event contract).
ROUTES = {
    events.REQUESTED: "hpc-bridge-submit",
    events.CANCEL: "hpc-bridge-cancel",
    events.TICK: "hpc-bridge-poll",
    events.PING: "hpc-bridge-poll",
    events.APISERVER_UPDATE: "hpc-bridge-cancel",
    events.APISERVER_DELETE: "hpc-bridge-cancel",
}
EMITTED = {events.SUBMITTED, events.REJECTED} | {events.type_for_state(s) for s in State}

# What each service account is granted. The functions' rules are checked against the calls
# they really make in tests/mirror/test_rbac.py; the ApiServerSource's are Knative's.
ACCOUNTS = ("hpc-bridge-submit", "hpc-bridge-poll", "hpc-bridge-cancel",
            "hpc-bridge-pod-events")
POD_EVENTS_RULES = {("", "pods", "get"), ("", "pods", "list"), ("", "pods", "watch")}

# Knative Serving's webhook: paths a volume may not be mounted on, variables it sets.
RESERVED_PATHS = {"/", "/dev", "/dev/log", "/tmp", "/var", "/var/log"}
RESERVED_ENV = {"PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION"}
MAX_TIMEOUT_S = 600          # Knative Serving's default max-revision-timeout-seconds
MAX_CONCURRENCY = 1000       # and container-concurrency-max-limit

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_ISO_DURATION = re.compile(
    r"^P(?!$)(\d+Y)?(\d+M)?(\d+W)?(\d+D)?(T(?=\d)(\d+H)?(\d+M)?(\d+(\.\d+)?S)?)?$")
_GO_DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")
_CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding"}


# -- helpers ------------------------------------------------------------------------------


def of_kind(objects: list[Obj], kind: str, api_version: str | None = None) -> list[Obj]:
    return [o for o in objects
            if o["kind"] == kind and (api_version is None or o["apiVersion"] == api_version)]


def ksvcs(objects: list[Obj]) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in of_kind(objects, "Service", KSVC)}


def function_ksvc(objects: list[Obj], function: str) -> Obj:
    return ksvcs(objects)[f"hpc-bridge-{function}"]


def container(ksvc: Obj) -> Obj:
    (only,) = ksvc["spec"]["template"]["spec"]["containers"]
    return only


def env(ksvc: Obj) -> dict[str, Obj]:
    return {e["name"]: e for e in container(ksvc).get("env", [])}


def resolve(by_key: dict[Key, Obj], ref: Obj, namespace: str) -> Obj | None:
    """The object a Knative KReference names, if the base defines it."""
    return by_key.get((ref["apiVersion"], ref["kind"], ref.get("namespace", namespace),
                       ref["name"]))


def cron_errors(schedule: str) -> list[str]:
    """What robfig/cron's ParseStandard (Knative's PingSource webhook) says of a schedule."""
    if "@every" in schedule:
        return ["@every is not supported by PingSource"]
    if schedule.startswith("@"):
        ok = schedule in {"@yearly", "@annually", "@monthly", "@weekly", "@daily",
                          "@midnight", "@hourly"}
        return [] if ok else [f"unknown descriptor {schedule}"]
    fields = schedule.split()
    if len(fields) != 5:
        return [f"expected 5 fields, found {len(fields)}"]
    months = "JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split()
    days = "SUN MON TUE WED THU FRI SAT".split()
    bounds = [(0, 59, {}), (0, 23, {}), (1, 31, {}),
              (1, 12, {m: i + 1 for i, m in enumerate(months)}),
              (0, 6, {d: i for i, d in enumerate(days)})]
    errors = []
    for index, (field, (low, high, names)) in enumerate(zip(fields, bounds, strict=True)):
        for part in field.split(","):
            errors += _cron_part_errors(part, low, high, names, question=index in (2, 4))
    return errors


def _cron_part_errors(part: str, low: int, high: int, names: dict[str, int],
                      question: bool) -> list[str]:
    def number(text: str) -> int | None:
        if text.upper() in names:
            return names[text.upper()]
        return int(text) if text.isdigit() else None

    value, _, step = part.partition("/")
    if step and (not step.isdigit() or int(step) == 0):
        return [f"bad step in {part!r}"]
    if value == "*" or (value == "?" and question):
        return []
    start_text, _, end_text = value.partition("-")
    start, end = number(start_text), number(end_text) if end_text else number(start_text)
    if start is None or end is None:
        return [f"not a number: {part!r}"]
    if not low <= start <= end <= high:
        return [f"{part!r} is outside {low}-{high}"]
    return []


def images_entries() -> list[Obj]:
    return yaml.safe_load((KNATIVE / "kustomization.yaml").read_text())["images"]


def image_of(entry: Obj) -> str:
    if "digest" in entry:
        return f"{entry['newName']}@{entry['digest']}"
    return f"{entry['newName']}:{entry['newTag']}"


def all_containers(node: Any) -> Iterator[Obj]:
    if isinstance(node, dict):
        for name, value in node.items():
            if name in ("containers", "initContainers") and isinstance(value, list):
                yield from value
            else:
                yield from all_containers(value)
    elif isinstance(node, list):
        for item in node:
            yield from all_containers(item)


# -- rendering ----------------------------------------------------------------------------


def test_base_renders_the_whole_deployment(objects: list[Obj]) -> None:
    kinds = sorted({(o["apiVersion"], o["kind"]) for o in objects})
    assert kinds == sorted({
        ("v1", "Namespace"), ("v1", "ServiceAccount"), ("v1", "ConfigMap"), ("v1", "Secret"),
        ("v1", "PersistentVolumeClaim"), ("v1", "Service"), ("apps/v1", "Deployment"),
        ("networking.k8s.io/v1", "NetworkPolicy"),
        ("rbac.authorization.k8s.io/v1", "ClusterRole"),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
        ("rbac.authorization.k8s.io/v1", "Role"),
        ("rbac.authorization.k8s.io/v1", "RoleBinding"),
        (KSVC, "Service"), (BROKER_API, "Broker"), (BROKER_API, "Trigger"),
        ("sources.knative.dev/v1", "PingSource"), ("sources.knative.dev/v1", "ApiServerSource"),
        ("sources.knative.dev/v1", "SinkBinding"),
    })
    assert len({key(o) for o in objects}) == len(objects), "an object is defined twice"
    assert set(ksvcs(objects)) == {"hpc-bridge-submit", "hpc-bridge-poll",
                                   "hpc-bridge-cancel", "hpc-bridge-dead-letters"}


def test_subset_renderer_agrees_with_kustomize(objects: list[Obj]) -> None:
    """The fallback renderer (no kubectl) produces what kustomize produces, object for
    object; without kubectl on the machine, it must at least render the same base."""
    subset = {key(o): o for o in render_subset(KNATIVE)}
    if kubectl() is not None:
        assert subset == {key(o): o for o in render_kubectl(KNATIVE)}
    assert subset == {key(o): o for o in objects}


# -- schemas ------------------------------------------------------------------------------


def _ids(objects: list[Obj]) -> list[str]:
    return [f"{o['kind']}/{o['metadata']['name']}" for o in objects]


_BASE = render(KNATIVE)
_KNATIVE_OBJECTS = [o for o in _BASE if schemas.is_knative(o)]
_CORE_OBJECTS = [o for o in _BASE if not schemas.is_knative(o)]


@pytest.mark.parametrize("obj", _KNATIVE_OBJECTS, ids=_ids(_KNATIVE_OBJECTS))
def test_knative_object_matches_its_crd_schema_strictly(obj: Obj) -> None:
    assert schemas.knative_errors(obj) == []


@pytest.mark.parametrize("version", schemas.K8S_VERSIONS)
@pytest.mark.parametrize("obj", _CORE_OBJECTS, ids=_ids(_CORE_OBJECTS))
def test_core_object_matches_kubernetes_schema_strictly(obj: Obj, version: str) -> None:
    assert schemas.core_errors(obj, version) == []


def test_strict_validation_refuses_unknown_fields(objects: list[Obj]) -> None:
    """The validators are not vacuous: a typo anywhere a schema lists fields is an error."""
    submit = copy.deepcopy(function_ksvc(objects, "submit"))
    container(submit)["imagePullPolicyy"] = "Always"
    submit["spec"]["template"]["metadata"]["lables"] = {}
    errors = schemas.knative_errors(submit)
    assert any("imagePullPolicyy" in e for e in errors)
    assert any("lables" in e for e in errors)

    ping = copy.deepcopy(of_kind(objects, "PingSource")[0])
    ping["spec"]["schedul"] = ping["spec"].pop("schedule")
    assert any("schedul" in e for e in schemas.knative_errors(ping))

    redis = copy.deepcopy(of_kind(objects, "Deployment")[0])
    redis["spec"]["template"]["spec"]["containers"][0]["imagee"] = "redis"
    assert any("imagee" in e for e in schemas.core_errors(redis, schemas.K8S_VERSIONS[0]))

    trigger = copy.deepcopy(of_kind(objects, "Trigger")[0])
    trigger["kind"] = "Triger"
    assert schemas.knative_errors(trigger) != []


def test_no_object_carries_status(objects: list[Obj]) -> None:
    assert [key(o) for o in objects if "status" in o] == []


# -- metadata -----------------------------------------------------------------------------


def test_every_object_names_its_namespace(objects: list[Obj]) -> None:
    """No `namespace:` in the kustomization (it would move the Lease Role), so each
    namespaced object says where it goes, and only poll's Lease access is elsewhere."""
    for obj in objects:
        metadata = obj["metadata"]
        assert _DNS_SUBDOMAIN.match(metadata["name"]), metadata["name"]
        if obj["kind"] in _CLUSTER_SCOPED:
            assert "namespace" not in metadata, key(obj)
        elif obj["kind"] in ("Role", "RoleBinding"):
            assert metadata["namespace"] == "kube-node-lease", key(obj)
        else:
            assert metadata["namespace"] == NAMESPACE, key(obj)
        assert metadata["labels"]["app.kubernetes.io/part-of"] == "hpc-bridge", key(obj)


def test_namespace_opts_in_to_sink_binding_and_pod_events(by_key: dict[Key, Obj]) -> None:
    labels = by_key[("v1", "Namespace", "", NAMESPACE)]["metadata"]["labels"]
    assert labels["bindings.knative.dev/include"] == "true"
    assert labels["hpcbridge.io/jobs"] == "enabled"


# -- the functions ------------------------------------------------------------------------


@pytest.mark.parametrize("function", FUNCTIONS)
def test_function_runs_its_target_from_the_shared_image(objects: list[Obj],
                                                        function: str) -> None:
    ksvc = function_ksvc(objects, function)
    main = container(ksvc)
    assert main["command"] == ["functions-framework"]
    assert main["args"] == [f"--target={function}", f"--source=functions/{function}/main.py"]
    source = REPO / "functions" / function / "main.py"
    assert re.search(rf"@functions_framework\.http\s+def {function}\(", source.read_text())
    (bridge,) = [e for e in images_entries() if e["name"] == "hpc-bridge"]
    assert main["image"] == image_of(bridge)
    assert main["ports"] == [{"name": "http1", "containerPort": 8080}]


def test_function_sources_name_the_image_in_one_place() -> None:
    """The manifests say `hpc-bridge`; only kustomization.yaml says which image that is."""
    entries = images_entries()
    assert [e["name"] for e in entries].count("hpc-bridge") == 1
    raw = [d for path in KNATIVE.glob("*.yaml") if path.name != "kustomization.yaml"
           for d in yaml.safe_load_all(path.read_text()) if d]
    placeholders = {c["image"] for c in all_containers(raw)}
    assert placeholders == {e["name"] for e in entries}
    functions_images = {c["image"] for f in FUNCTIONS
                        for c in all_containers(function_ksvc(raw, f))}
    assert functions_images == {"hpc-bridge"}


def test_every_rendered_image_comes_from_the_images_entries(objects: list[Obj]) -> None:
    pinned = {image_of(e) for e in images_entries()}
    assert {c["image"] for c in all_containers(objects)} == pinned


@pytest.mark.parametrize("function", FUNCTIONS)
def test_function_configuration(objects: list[Obj], by_key: dict[Key, Obj],
                                function: str) -> None:
    ksvc = function_ksvc(objects, function)
    spec = ksvc["spec"]["template"]["spec"]
    main = container(ksvc)
    variables = env(ksvc)

    account = spec["serviceAccountName"]
    assert account == f"hpc-bridge-{function}"
    assert ("v1", "ServiceAccount", NAMESPACE, account) in by_key

    redis = variables["REDIS_URL"]["valueFrom"]["secretKeyRef"]
    secret = by_key[("v1", "Secret", NAMESPACE, redis["name"])]
    assert redis["key"] in secret["stringData"]

    mounts = {m["mountPath"]: m for m in main["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    targets_file = Path(variables["HPCBRIDGE_TARGETS"]["value"])
    assert targets_file == Path("/etc/hpc-bridge/targets.yaml")
    targets_mount = mounts[str(targets_file.parent)]
    config_map = volumes[targets_mount["name"]]["configMap"]["name"]
    assert targets_file.name in by_key[("v1", "ConfigMap", NAMESPACE, config_map)]["data"]

    credentials = mounts["/var/run/secrets/hpc-bridge"]
    assert credentials["readOnly"] is True
    assert volumes[credentials["name"]]["secret"]["secretName"] == "hpc-bridge-credentials"

    assert variables["HPCBRIDGE_NAMESPACE"]["value"] == ksvc["metadata"]["namespace"]
    assert int(variables["THREADS"]["value"]) == spec["containerConcurrency"] + 2

    assert main["readinessProbe"]["httpGet"]["path"] == "/"
    assert main["livenessProbe"]["httpGet"]["path"] == "/"
    requests, limits = main["resources"]["requests"], main["resources"]["limits"]
    assert set(requests) == set(limits) == {"cpu", "memory"}
    assert main["securityContext"]["runAsNonRoot"] is True
    assert main["securityContext"]["allowPrivilegeEscalation"] is False


def test_function_environment_is_read_by_someone(objects: list[Obj]) -> None:
    """Every variable set on a function is one the bridge (hpcbridge/settings.py) or
    functions-framework really reads: a misspelt name would be silently ignored."""
    import functions_framework._http.gunicorn as gunicorn

    settings = (REPO / "hpcbridge" / "settings.py").read_text()
    framework = Path(gunicorn.__file__).read_text()
    for function in FUNCTIONS:
        for name in env(function_ksvc(objects, function)):
            assert f'"{name}"' in settings or f'"{name}"' in framework, name


def test_poll_is_one_pod_and_finishes_within_a_tick(objects: list[Obj]) -> None:
    template = function_ksvc(objects, "poll")["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    assert annotations["autoscaling.knative.dev/max-scale"] == "1"
    assert annotations["autoscaling.knative.dev/min-scale"] == "1"
    assert template["spec"]["timeoutSeconds"] < 60


def test_poll_gets_the_broker_as_k_sink(objects: list[Obj], by_key: dict[Key, Obj]) -> None:
    (binding,) = of_kind(objects, "SinkBinding")
    subject = binding["spec"]["subject"]
    assert (subject["apiVersion"], subject["kind"], subject["name"]) == (
        KSVC, "Service", "hpc-bridge-poll")
    sink = resolve(by_key, binding["spec"]["sink"]["ref"], NAMESPACE)
    assert sink is not None and sink["kind"] == "Broker"
    assert "K_SINK" not in env(function_ksvc(objects, "poll"))  # the binding's to set


# -- Knative Serving's webhook ------------------------------------------------------------


@pytest.mark.parametrize("name", ["hpc-bridge-submit", "hpc-bridge-poll", "hpc-bridge-cancel",
                                  "hpc-bridge-dead-letters"])
def test_service_passes_knative_serving_admission(objects: list[Obj], name: str) -> None:
    ksvc = ksvcs(objects)[name]
    assert _DNS_LABEL.match(name) and len(name) <= 63
    template = ksvc["spec"]["template"]
    spec = template["spec"]
    (main,) = spec["containers"]
    assert len(main.get("ports", [])) <= 1
    for port in main.get("ports", []):
        assert port.get("name", "") in ("", "http1", "h2c")
    assert not RESERVED_ENV & {e["name"] for e in main.get("env", [])}
    for probe in (main.get("readinessProbe"), main.get("livenessProbe")):
        if probe and "httpGet" in probe:
            assert probe["httpGet"].get("port", 8080) == 8080
    mounted = {m["name"] for m in main.get("volumeMounts", [])}
    assert mounted == {v["name"] for v in spec.get("volumes", [])}  # no unused volume
    for mount in main.get("volumeMounts", []):
        path = mount["mountPath"]
        assert path.startswith("/") and ":" not in path and path not in RESERVED_PATHS
        assert mount["readOnly"] is True  # configMap and secret volumes must be read-only
    assert 0 <= spec.get("containerConcurrency", 0) <= MAX_CONCURRENCY
    assert 0 < spec.get("timeoutSeconds", 300) <= MAX_TIMEOUT_S
    env_refs = [e["valueFrom"] for e in main.get("env", []) if "valueFrom" in e]
    assert not [r for r in env_refs if "fieldRef" in r or "resourceFieldRef" in r], \
        "kubernetes.podspec-fieldref is disabled by default"
    annotations = template["metadata"].get("annotations", {})
    low = int(annotations.get("autoscaling.knative.dev/min-scale", "0"))
    high = int(annotations.get("autoscaling.knative.dev/max-scale", "0"))
    assert 0 <= low and (high == 0 or low <= high)
    if "autoscaling.knative.dev/target" in annotations:
        target = float(annotations["autoscaling.knative.dev/target"])
        assert 0.01 <= target <= (spec.get("containerConcurrency") or MAX_CONCURRENCY)
    retention = annotations.get("autoscaling.knative.dev/scale-to-zero-pod-retention-period")
    assert retention is None or _GO_DURATION.match(retention)
    for name_ in annotations:
        assert name_.split("/")[0] in ("autoscaling.knative.dev",), name_
    assert ksvc["metadata"]["labels"]["networking.knative.dev/visibility"] == "cluster-local"


# -- eventing -----------------------------------------------------------------------------


def _check_delivery(delivery: Obj, by_key: dict[Key, Obj]) -> None:
    assert delivery["retry"] == 10
    assert delivery["backoffPolicy"] == "exponential"
    assert delivery["backoffDelay"] == "PT0.2S"
    assert _ISO_DURATION.match(delivery["backoffDelay"])
    sink = resolve(by_key, delivery["deadLetterSink"]["ref"], NAMESPACE)
    assert sink is not None and sink["metadata"]["name"] == "hpc-bridge-dead-letters"


def test_broker_delivery_retries_then_dead_letters(objects: list[Obj],
                                                  by_key: dict[Key, Obj]) -> None:
    (broker,) = of_kind(objects, "Broker")
    assert broker["metadata"]["name"] == "hpc-bridge"
    _check_delivery(broker["spec"]["delivery"], by_key)


def test_triggers_route_each_consumed_type_to_its_function(objects: list[Obj],
                                                            by_key: dict[Key, Obj]) -> None:
    routes: dict[str, str] = {}
    for trigger in of_kind(objects, "Trigger"):
        spec = trigger["spec"]
        namespace = trigger["metadata"]["namespace"]
        # What Knative's Trigger webhook demands (the CRD schema does not).
        assert by_key.get((BROKER_API, "Broker", namespace, spec["broker"])) is not None
        attributes = spec["filter"]["attributes"]
        assert set(attributes) == {"type"}, "an exact match on the type, nothing else"
        assert all(isinstance(v, str) and v for v in attributes.values())
        subscriber = resolve(by_key, spec["subscriber"]["ref"], namespace)
        assert subscriber is not None, spec["subscriber"]
        assert attributes["type"] not in routes, f"two Triggers for {attributes['type']}"
        routes[attributes["type"]] = subscriber["metadata"]["name"]
        _check_delivery(spec["delivery"], by_key)
    assert routes == ROUTES


def test_nothing_the_bridge_emits_comes_back_to_it(objects: list[Obj]) -> None:
    """Replies re-enter the Broker: a Trigger on an emitted type would make a loop."""
    filtered = {t["spec"]["filter"]["attributes"]["type"] for t in of_kind(objects, "Trigger")}
    assert not filtered & EMITTED
    assert filtered <= set(ROUTES)


def test_ping_source_ticks_every_minute_into_the_broker(objects: list[Obj],
                                                        by_key: dict[Key, Obj]) -> None:
    (ping,) = of_kind(objects, "PingSource")
    spec = ping["spec"]
    assert cron_errors(spec["schedule"]) == []
    assert spec["schedule"] == "* * * * *"
    assert "timezone" not in spec
    assert not ("data" in spec and "dataBase64" in spec)
    assert spec["contentType"] == "application/json"
    if "data" in spec:  # Knative's webhook: JSON data must be a JSON object
        assert isinstance(json.loads(spec["data"]), dict)
    sink = resolve(by_key, spec["sink"]["ref"], NAMESPACE)
    assert sink is not None and sink["kind"] == "Broker"


@pytest.mark.parametrize(("schedule", "valid"), [
    ("* * * * *", True), ("*/5 0-6 * JAN-MAR MON,FRI", True), ("0 0 ? * ?", True),
    ("@hourly", True), ("@every 1m", False), ("* * * *", False), ("60 * * * *", False),
    ("* * * * 7", False), ("*/0 * * * *", False), ("* * * FOO *", False),
])
def test_cron_check_is_a_real_check(schedule: str, valid: bool) -> None:
    assert (cron_errors(schedule) == []) is valid


def test_api_server_source_watches_proxy_pods(objects: list[Obj],
                                              by_key: dict[Key, Obj]) -> None:
    (source,) = of_kind(objects, "ApiServerSource")
    spec = source["spec"]
    assert spec["mode"] == "Resource"
    (resource,) = spec["resources"]
    assert (resource["apiVersion"], resource["kind"]) == ("v1", "Pod")
    label, value = MANAGED_BY  # the label the mirror puts on every proxy pod
    assert resource["selector"] == {"matchLabels": {label: value}}
    sink = resolve(by_key, spec["sink"]["ref"], NAMESPACE)
    assert sink is not None and sink["kind"] == "Broker"

    # The namespaces it selects include the bridge's own, and its service account may
    # get, list and watch pods in each of them (Knative checks before it starts).
    account = spec["serviceAccountName"]
    assert ("v1", "ServiceAccount", NAMESPACE, account) in by_key
    selector = spec["namespaceSelector"]["matchLabels"]
    namespace_labels = by_key[("v1", "Namespace", "", NAMESPACE)]["metadata"]["labels"]
    assert selector.items() <= namespace_labels.items()
    granted = rbac.scoped_rules_for(account, objects)
    for verb in ("get", "list", "watch"):
        assert ("", "pods", verb, rbac.ALL_NAMESPACES) in granted


# -- RBAC ---------------------------------------------------------------------------------


def test_the_apiserversource_may_only_read_pods(objects: list[Obj]) -> None:
    assert rbac.rules_for("hpc-bridge-pod-events", objects) == POD_EVENTS_RULES


def test_leases_only_in_kube_node_lease_and_only_for_poll(objects: list[Obj]) -> None:
    for account in ACCOUNTS:
        for group, resource, verb, where in rbac.scoped_rules_for(account, objects):
            if resource == "leases":
                assert (account, group, where) == (
                    "hpc-bridge-poll", "coordination.k8s.io", "kube-node-lease"), verb
            else:
                assert where == rbac.ALL_NAMESPACES


def test_rbac_has_no_wildcards_no_secrets_and_no_dangling_references(
        objects: list[Obj], by_key: dict[Key, Obj]) -> None:
    for role in of_kind(objects, "Role") + of_kind(objects, "ClusterRole"):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], role["metadata"]["name"]
            assert "secrets" not in rule["resources"]
            assert "resourceNames" not in rule and "nonResourceURLs" not in rule
    for binding in of_kind(objects, "RoleBinding") + of_kind(objects, "ClusterRoleBinding"):
        ref = binding["roleRef"]
        namespace = binding["metadata"].get("namespace", "") if ref["kind"] == "Role" else ""
        assert ("rbac.authorization.k8s.io/v1", ref["kind"], namespace, ref["name"]) in by_key
        for subject in binding["subjects"]:
            assert subject["kind"] == "ServiceAccount"
            assert ("v1", "ServiceAccount", subject["namespace"], subject["name"]) in by_key
    accounts = {o["metadata"]["name"] for o in of_kind(objects, "ServiceAccount")}
    assert accounts == set(ACCOUNTS)


def test_rbac_helper_reads_bindings_not_names(objects: list[Obj]) -> None:
    """rules_for follows bindings: an unbound role grants nothing, a second binding adds."""
    extra = [o for o in objects if o["kind"] != "ClusterRoleBinding"
             or o["metadata"]["name"] not in ("hpc-bridge-cancel-jobs",
                                              "hpc-bridge-cancel-senders")]
    assert rbac.rules_for("hpc-bridge-cancel", extra) == set()
    binding = copy.deepcopy(next(o for o in objects if o["kind"] == "RoleBinding"))
    binding["subjects"][0]["name"] = "hpc-bridge-cancel"
    granted = rbac.scoped_rules_for("hpc-bridge-cancel", [*objects, binding])
    assert ("coordination.k8s.io", "leases", "patch", "kube-node-lease") in granted
    assert rbac.rules_for("nobody", objects) == set()


# -- configuration ------------------------------------------------------------------------


def test_targets_config_map_is_a_valid_targets_file(by_key: dict[Key, Obj]) -> None:
    document = yaml.safe_load(
        by_key[("v1", "ConfigMap", NAMESPACE, "hpc-bridge-targets")]["data"]["targets.yaml"])
    targets = Targets(document["targets"])
    credentials = by_key[("v1", "Secret", NAMESPACE, "hpc-bridge-credentials")]
    kinds = set()
    for name, settings in targets.items():
        kinds.add(settings["kind"])
        adapter = adapters.create(settings["kind"], name, dict(settings))  # refuses typos
        adapter.close()
        for setting, value in settings.items():
            if setting.endswith("_file"):
                path = Path(value)
                assert path.parent == Path("/var/run/secrets/hpc-bridge"), value
                assert path.name in credentials["stringData"], value
    assert "slurm" in kinds


def test_example_secrets_are_clearly_examples(by_key: dict[Key, Obj]) -> None:
    credentials = by_key[("v1", "Secret", NAMESPACE, "hpc-bridge-credentials")]
    assert "data" not in credentials
    assert all("REPLACE-ME" in v for v in credentials["stringData"].values())
    redis = by_key[("v1", "Secret", NAMESPACE, "hpc-bridge-redis")]
    assert redis["stringData"]["url"].startswith("redis://hpc-bridge-redis.hpc-bridge.svc")


# -- Redis --------------------------------------------------------------------------------


def test_redis_is_persistent_and_reachable_by_the_functions_only(
        objects: list[Obj], by_key: dict[Key, Obj]) -> None:
    (deployment,) = of_kind(objects, "Deployment")
    pod = deployment["spec"]["template"]
    (redis,) = pod["spec"]["containers"]
    args = redis["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    (volume,) = pod["spec"]["volumes"]
    claim = volume["persistentVolumeClaim"]["claimName"]
    assert ("v1", "PersistentVolumeClaim", NAMESPACE, claim) in by_key
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    pod_labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()

    service = by_key[("v1", "Service", NAMESPACE, "hpc-bridge-redis")]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    url = by_key[("v1", "Secret", NAMESPACE, "hpc-bridge-redis")]["stringData"]["url"]
    assert url.startswith(f"redis://{service['metadata']['name']}.{NAMESPACE}.svc")
    assert f":{service['spec']['ports'][0]['port']}/" in url

    (policy,) = of_kind(objects, "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    allowed = policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
    for function in FUNCTIONS:
        labels = function_ksvc(objects, function)["spec"]["template"]["metadata"]["labels"]
        assert allowed.items() <= labels.items()
    dead_letters = ksvcs(objects)["hpc-bridge-dead-letters"]["spec"]["template"]
    assert not allowed.items() <= dead_letters["metadata"]["labels"].items()


def test_external_redis_component_swaps_the_store(objects: list[Obj], tmp_path: Path) -> None:
    user = tmp_path / "deploy"
    user.mkdir()
    base = os.path.relpath(KNATIVE, user)
    (user / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": [base], "components": [f"{base}/overlays/external-redis"]}))
    swapped = {key(o): o for o in render(user)}
    original = {key(o): o for o in objects}
    removed = set(original) - set(swapped)
    assert removed == {
        ("apps/v1", "Deployment", NAMESPACE, "hpc-bridge-redis"),
        ("v1", "PersistentVolumeClaim", NAMESPACE, "hpc-bridge-redis"),
        ("v1", "Service", NAMESPACE, "hpc-bridge-redis"),
        ("networking.k8s.io/v1", "NetworkPolicy", NAMESPACE, "hpc-bridge-redis"),
    }
    assert set(swapped) <= set(original)
    secret_key = ("v1", "Secret", NAMESPACE, "hpc-bridge-redis")
    assert swapped[secret_key]["stringData"]["url"].startswith("rediss://")
    changed = {k for k in swapped if swapped[k] != original[k]}
    assert changed == {secret_key}
    if kubectl() is not None:  # and the fallback renderer agrees here too
        assert {key(o): o for o in render_subset(user)} == swapped
