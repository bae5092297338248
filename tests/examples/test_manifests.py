"""The pipeline examples (Argo, Tekton, Knative) against the schemas of their kinds.

Where each schema comes from:

- Argo's Workflow: the types Argo Workflows generates from its own OpenAPI spec, as
  shipped in its official Python SDK (the ``argo-workflows`` package on PyPI). The SDK
  checks types and required fields; it lets unknown fields through, so :func:`unknown_fields`
  walks the same generated types and refuses any field they do not list (what
  ``kubectl apply`` with strict field validation does against a full Workflow CRD).
- Tekton's Task: no package on PyPI or npm ships Tekton's schemas (npm's tekton-lint is a
  linter without them, PyPI's tekton-pipeline SDK stops at v1beta1), so the Task is held to
  the fields documented in Tekton's API reference for tekton.dev/v1 (TASK_FIELDS below),
  and the container part of each step to Kubernetes' Container schema (kubernetes-validate,
  strict).
- Knative's Trigger and Service: Knative's CRD schemas in shared/knative-crds, strictly,
  with the helpers of tests/deploy/schemas.py.
- ServiceAccount, Role, RoleBinding: kubernetes-validate, strict.

Beyond the schemas, what the engines' own validation checks: every template, parameter,
result and variable a manifest refers to is declared, and the step's code embedded in the
Argo and Tekton files is examples/pipeline-step/submit_and_wait.py, byte for byte.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import referencing
import yaml
from argo_workflows.configuration import Configuration
from argo_workflows.model.io_argoproj_workflow_v1alpha1_workflow import (
    IoArgoprojWorkflowV1alpha1Workflow,
)
from argo_workflows.model_utils import ModelNormal, ModelSimple, validate_and_convert_types

from hpcbridge import events
from hpcbridge.dev import DevStack
from hpcbridge.model import State, validate_job_id
from hpcbridge.store import Store
from tests.deploy import schemas
from tests.examples.conftest import EXAMPLES
from tests.functions import send, tick_until

Obj = dict[str, Any]
ARGO = EXAMPLES / "argo" / "submit-and-wait.yaml"
TEKTON = EXAMPLES / "tekton" / "hpc-job-task.yaml"
KNATIVE = EXAMPLES / "knative" / "follow-up-trigger.yaml"
STEP = EXAMPLES / "pipeline-step" / "submit_and_wait.py"
CORE_KINDS = {"ServiceAccount", "Role", "RoleBinding"}


def documents(path: Path) -> list[Obj]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def one(path: Path, kind: str) -> Obj:
    (found,) = [d for d in documents(path) if d["kind"] == kind]
    return found


def core_objects() -> Iterator[Any]:
    for path in (ARGO, TEKTON):
        for obj in documents(path):
            if obj["kind"] in CORE_KINDS:
                yield pytest.param(obj, id=f"{path.parent.name}-{obj['kind']}")


@pytest.mark.parametrize("version", schemas.K8S_VERSIONS)
@pytest.mark.parametrize("obj", list(core_objects()))
def test_service_accounts_and_rbac_match_the_kubernetes_schema(obj: Obj, version: str) -> None:
    assert schemas.core_errors(obj, version) == []


@pytest.mark.parametrize("path", [ARGO, TEKTON], ids=["argo", "tekton"])
def test_the_step_may_read_configmaps_in_its_own_namespace_only(path: Path) -> None:
    objects = {d["kind"]: d for d in documents(path)}
    main = objects["Workflow" if path == ARGO else "Task"]
    namespace = main["metadata"]["namespace"]
    account, role, binding = (objects[k] for k in ("ServiceAccount", "Role", "RoleBinding"))
    assert {account["metadata"]["namespace"], role["metadata"]["namespace"],
            binding["metadata"]["namespace"]} == {namespace}
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "namespace": namespace,
                                    "name": account["metadata"]["name"]}]
    granted = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"]
               for r in rule["resources"] for v in rule["verbs"]}
    assert ("", "configmaps", "get") in granted
    assert not [g for g in granted if g[1] != "configmaps" and g[0] == ""], \
        "nothing of the core API but reading ConfigMaps"


# -- the step's code, embedded -------------------------------------------------------------


def step_env(container: Obj) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"]}


def read_by_step() -> tuple[set[str], set[str]]:
    """Environment variables the step's code requires, and those it may read."""
    source = STEP.read_text()
    optional = set(re.findall(r'(?:env(?:iron)?\.get|write_result)\("([A-Z_]+)"', source))
    required = set(re.findall(r'env\["([A-Z_]+)"\]', source)) - optional
    return required, optional


def argo_script() -> Obj:
    workflow = one(ARGO, "Workflow")
    (template,) = [t for t in workflow["spec"]["templates"] if "script" in t]
    return template["script"]


def tekton_step() -> Obj:
    (step,) = one(TEKTON, "Task")["spec"]["steps"]
    return step


def test_the_embedded_step_is_the_example_file() -> None:
    source = STEP.read_text()
    assert argo_script()["source"] == source
    assert tekton_step()["script"] == source
    assert source.startswith("#!/usr/bin/env python3\n"), "Tekton runs a script by its #!"
    # Argo would substitute {{...}} and Tekton $(...) inside the code itself.
    assert "{{" not in source and "$(" not in source


@pytest.mark.parametrize("container", [argo_script(), tekton_step()], ids=["argo", "tekton"])
def test_the_step_gets_every_variable_it_needs_and_no_other(container: Obj) -> None:
    required, optional = read_by_step()
    given = set(step_env(container))
    assert required <= given
    # KUBERNETES_SERVICE_HOST comes from the cluster, the others are optional.
    assert given <= required | optional
    assert "KUBERNETES_SERVICE_HOST" not in given


# -- Argo ----------------------------------------------------------------------------------


def unknown_fields(value: Any, types: tuple[Any, ...], path: str) -> list[str]:
    """Fields of ``value`` that the generated types ``types`` do not declare, recursively."""
    found: list[str] = []
    for kind in types:
        if isinstance(kind, list) and isinstance(value, list):
            for index, item in enumerate(value):
                found += unknown_fields(item, tuple(kind), f"{path}[{index}]")
        elif isinstance(kind, dict) and isinstance(value, dict):
            for key, item in value.items():
                found += unknown_fields(item, kind[str], f"{path}.{key}")
        elif isinstance(kind, type) and issubclass(kind, ModelSimple):
            found += unknown_fields(value, kind.openapi_types["value"], path)
        elif isinstance(kind, type) and issubclass(kind, ModelNormal) and \
                isinstance(value, dict):
            fields = {json_name: name for name, json_name in kind.attribute_map.items()}
            for key, item in value.items():
                if key not in fields:
                    found.append(f"{path}.{key}: not a field of {kind.__name__}")
                else:
                    found += unknown_fields(item, kind.openapi_types[fields[key]],
                                            f"{path}.{key}")
    return found


def argo_errors(workflow: Obj) -> list[str]:
    """What Argo's generated types have against ``workflow``: types, required fields,
    unknown fields; and its kind."""
    errors = []
    if (workflow.get("apiVersion"), workflow.get("kind")) != ("argoproj.io/v1alpha1",
                                                              "Workflow"):
        errors.append("not an argoproj.io/v1alpha1 Workflow")
    try:
        # The SDK turns the dicts it checks into models: give it a copy.
        validate_and_convert_types(json.loads(json.dumps(workflow)),
                                   (IoArgoprojWorkflowV1alpha1Workflow,), ["workflow"],
                                   True, True, Configuration())
    except Exception as exc:  # ApiTypeError, ApiValueError, TypeError for a missing field
        errors.append(f"{type(exc).__name__}: {exc}")
    return errors + unknown_fields(workflow, (IoArgoprojWorkflowV1alpha1Workflow,), "workflow")


def test_the_workflow_matches_argos_types_strictly() -> None:
    workflow = one(ARGO, "Workflow")
    assert argo_errors(workflow) == []
    assert [f"metadata: {e.message}"
            for e in schemas.object_meta_validator().iter_errors(workflow["metadata"])] == []


@pytest.mark.parametrize(("change", "complaint"), [
    (lambda w: w["spec"]["templates"][1]["script"].update(imagee="x"), "imagee"),
    (lambda w: w["spec"]["templates"][1]["script"].pop("image"), "image"),
    (lambda w: w["spec"]["templates"][1].update(retryStrategy={"limit": 3}), "limit"),
    (lambda w: w["spec"]["templates"][0]["steps"][0][0].update(templat="x"), "templat"),
    (lambda w: w["spec"].update(entryPoint="main"), "entryPoint"),
    (lambda w: w["metadata"].update(generatename="x-"), "generatename"),
    (lambda w: w.update(kind="Workflows"), "Workflow"),
])
def test_the_argo_check_is_a_real_check(change: Any, complaint: str) -> None:
    workflow = json.loads(json.dumps(one(ARGO, "Workflow")))
    change(workflow)
    errors = argo_errors(workflow) + [
        e.message for e in schemas.object_meta_validator().iter_errors(workflow["metadata"])]
    assert any(complaint in error for error in errors), errors


def argo_references(text: str, prefix: str) -> set[str]:
    return set(re.findall(r"\{\{" + re.escape(prefix) + r"([A-Za-z0-9_.-]+)\}\}", text))


def test_the_workflow_refers_only_to_what_it_declares() -> None:
    """What ``argo lint`` checks of references: templates, parameters, step outputs."""
    workflow = one(ARGO, "Workflow")
    spec = workflow["spec"]
    templates = {t["name"]: t for t in spec["templates"]}
    assert spec["entrypoint"] in templates
    assert spec["serviceAccountName"] == one(ARGO, "ServiceAccount")["metadata"]["name"]
    declared = {p["name"] for p in spec["arguments"]["parameters"]}
    assert argo_references(json.dumps(spec), "workflow.parameters.") <= declared
    for template in templates.values():
        inputs = {p["name"]: p for p in template.get("inputs", {}).get("parameters", [])}
        body = json.dumps({k: v for k, v in template.items() if k != "inputs"})
        assert argo_references(body, "inputs.parameters.") == set(inputs), template["name"]
        done: dict[str, Obj] = {}
        for group in template.get("steps", []):
            for step in group:
                called = templates[step["template"]]
                wanted = {p["name"] for p in called.get("inputs", {}).get("parameters", [])}
                passed = {p["name"] for p in step.get("arguments", {}).get("parameters", [])}
                assert passed == wanted, step["name"]
                for ref in argo_references(json.dumps(step), "steps."):
                    name, _, what = ref.partition(".outputs.parameters.")
                    outputs = done[name].get("outputs", {}).get("parameters", [])
                    assert what in {p["name"] for p in outputs}, ref
            done.update({s["name"]: templates[s["template"]] for s in group})


def test_the_step_writes_the_outputs_it_declares() -> None:
    workflow = one(ARGO, "Workflow")
    (template,) = [t for t in workflow["spec"]["templates"] if "script" in t]
    env = step_env(template["script"])
    paths = {p["name"]: p["valueFrom"]["path"] for p in template["outputs"]["parameters"]}
    assert paths == {"job-id": env["RESULT_JOB_ID_FILE"], "state": env["RESULT_STATE_FILE"]}
    assert template["retryStrategy"]["retryPolicy"] == "OnError", \
        "a failed job is the step's answer, not a reason to run it again"


# -- Tekton --------------------------------------------------------------------------------

# The fields of tekton.dev/v1 Task, from Tekton's API reference (docs/pipeline-api.md,
# "TaskSpec", "ParamSpec", "TaskResult", "Step"): no package ships Tekton's schemas.
TASK_FIELDS = {
    "Task": {"apiVersion", "kind", "metadata", "spec"},
    "TaskSpec": {"params", "displayName", "description", "steps", "volumes", "stepTemplate",
                 "sidecars", "workspaces", "results"},
    "ParamSpec": {"name", "type", "description", "properties", "default", "enum"},
    "TaskResult": {"name", "type", "properties", "description", "value"},
    "Step": {"name", "displayName", "image", "command", "args", "workingDir", "env",
             "envFrom", "computeResources", "volumeMounts", "volumeDevices",
             "imagePullPolicy", "securityContext", "script", "timeout", "workspaces",
             "onError", "stdoutConfig", "stderrConfig", "ref", "params", "results", "when"},
}
# Step fields that are Tekton's own; the others are a Kubernetes Container's, with
# computeResources in place of Container's resources.
TEKTON_STEP_ONLY = {"displayName", "script", "timeout", "workspaces", "onError",
                    "stdoutConfig", "stderrConfig", "ref", "params", "results", "when"}
# Variables Tekton substitutes in a Task (docs/variables.md), besides params and results.
TEKTON_CONTEXT = {"context.taskRun.name", "context.taskRun.namespace", "context.taskRun.uid",
                  "context.task.name", "context.task.retry-count"}
_TEKTON_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_.-]*$")  # param and result names
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@functools.cache
def container_validator() -> jsonschema.protocols.Validator:
    """Kubernetes' Container, strict, as kubernetes-validate ships it (as tests/deploy
    reads its ObjectMeta)."""
    version = schemas.K8S_VERSIONS[0]
    definitions = referencing.Resource.from_contents(
        schemas._schema_file(version, "_definitions.json"))
    schema = schemas._schema_file(version, "container-v1.json")
    registry = referencing.Registry().with_resource(definitions.id() or "", definitions)
    schema.setdefault("$id", "https://kubernetes.io/api/container-v1.json")
    return jsonschema.Draft202012Validator(schema, registry=registry)


def tekton_errors(task: Obj) -> list[str]:
    errors = []

    def fields(obj: Obj, kind: str, where: str) -> None:
        errors.extend(f"{where}.{k}: not a field of {kind}" for k in set(obj) - TASK_FIELDS[kind])

    if (task.get("apiVersion"), task.get("kind")) != ("tekton.dev/v1", "Task"):
        errors.append("not a tekton.dev/v1 Task")
    fields(task, "Task", "task")
    errors += [f"metadata: {e.message}"
               for e in schemas.object_meta_validator().iter_errors(task.get("metadata", {}))]
    spec = task.get("spec", {})
    fields(spec, "TaskSpec", "spec")
    for kind, key in (("ParamSpec", "params"), ("TaskResult", "results")):
        for index, item in enumerate(spec.get(key, [])):
            fields(item, kind, f"spec.{key}[{index}]")
            if not _TEKTON_NAME.match(item.get("name", "")):
                errors.append(f"spec.{key}[{index}].name: not a valid name")
            if item.get("type", "string") not in ("string", "array", "object"):
                errors.append(f"spec.{key}[{index}].type: not string, array or object")
            if "default" in item and not isinstance(item["default"], str):
                errors.append(f"spec.{key}[{index}].default: a string param needs a string")
    if not spec.get("steps"):
        errors.append("spec.steps: a Task needs a step")
    for index, step in enumerate(spec.get("steps", [])):
        fields(step, "Step", f"spec.steps[{index}]")
        if not _DNS_LABEL.match(step.get("name", "")):
            errors.append(f"spec.steps[{index}].name: not a DNS label")
        if "script" in step and "command" in step:
            errors.append(f"spec.steps[{index}]: script and command exclude each other")
        container = {k: v for k, v in step.items() if k not in TEKTON_STEP_ONLY}
        if "computeResources" in container:
            container["resources"] = container.pop("computeResources")
        errors += [f"spec.steps[{index}].{'.'.join(map(str, e.absolute_path))}: {e.message}"
                   for e in container_validator().iter_errors(container)]
    return errors


def test_the_task_matches_the_documented_tekton_fields() -> None:
    assert tekton_errors(one(TEKTON, "Task")) == []


@pytest.mark.parametrize(("change", "complaint"), [
    (lambda t: t["spec"]["steps"][0].update(imagee="x"), "imagee"),
    (lambda t: t["spec"]["steps"][0].update(resources={}), "resources"),
    (lambda t: t["spec"]["steps"][0]["env"].append({"name": "A", "valu": "b"}), "valu"),
    (lambda t: t["spec"]["params"][0].update(defaults="x"), "defaults"),
    (lambda t: t["spec"]["results"].append({"name": "bad name"}), "name"),
    (lambda t: t["spec"].update(step=[]), "step"),
    (lambda t: t.update(apiVersion="tekton.dev/v1beta1"), "tekton.dev/v1"),
])
def test_the_tekton_check_is_a_real_check(change: Any, complaint: str) -> None:
    task = json.loads(json.dumps(one(TEKTON, "Task")))
    change(task)
    assert any(complaint in error for error in tekton_errors(task)), tekton_errors(task)


def test_the_task_refers_only_to_what_it_declares() -> None:
    """What Tekton's webhook checks of variables: params, results and context."""
    spec = one(TEKTON, "Task")["spec"]
    text = json.dumps(spec["steps"])
    used = set(re.findall(r"\$\(([^)]+)\)", text))
    params = {p["name"] for p in spec["params"]}
    results = {r["name"] for r in spec["results"]}
    for ref in used:
        if ref.startswith("params."):
            assert ref.removeprefix("params.") in params, ref
        elif ref.startswith("results."):
            name, _, what = ref.removeprefix("results.").rpartition(".")
            assert name in results and what == "path", ref
        else:
            assert ref in TEKTON_CONTEXT, ref
    assert {f"params.{p}" for p in params} <= used, "every param is used"
    env = step_env(tekton_step())
    assert env["RESULT_JOB_ID_FILE"] == "$(results.job-id.path)"
    assert env["RESULT_STATE_FILE"] == "$(results.state.path)"
    # The job id: "tr-" and a 36-character uid is a valid job id.
    validate_job_id(env["JOB_ID"].replace("$(context.taskRun.uid)", "0" * 36))


# -- Knative -------------------------------------------------------------------------------


@pytest.mark.parametrize("obj", documents(KNATIVE), ids=lambda o: o["kind"])
def test_knative_objects_match_the_crd_schemas_strictly(obj: Obj) -> None:
    assert schemas.is_knative(obj)
    assert schemas.knative_errors(obj) == []


def trigger() -> Obj:
    return one(KNATIVE, "Trigger")


def test_the_trigger_subscribes_the_follow_up_on_the_bridges_broker() -> None:
    spec = trigger()["spec"]
    bridge = yaml.safe_load_all((EXAMPLES.parent / "knative" / "eventing.yaml").read_text())
    (broker,) = [o for o in bridge if o and o["kind"] == "Broker"]
    # What Knative's Trigger webhook demands: a broker in the Trigger's namespace and a
    # subscriber; the follow-up Service is the one in the file.
    assert (spec["broker"], trigger()["metadata"]["namespace"]) == (
        broker["metadata"]["name"], broker["metadata"]["namespace"])
    service = one(KNATIVE, "Service")
    ref = spec["subscriber"]["ref"]
    assert (ref["apiVersion"], ref["kind"], ref["name"]) == (
        service["apiVersion"], service["kind"], service["metadata"]["name"])
    assert service["metadata"]["namespace"] == trigger()["metadata"]["namespace"]
    assert re.match(r"^PT\d+(\.\d+)?S$", spec["delivery"]["backoffDelay"])
    attributes = spec["filter"]["attributes"]
    assert set(attributes) == {"type", "subject"}
    assert attributes["type"] == events.type_for_state(State.SUCCEEDED)
    validate_job_id(attributes["subject"])


def test_the_follow_up_passes_knative_servings_rules() -> None:
    service = one(KNATIVE, "Service")
    (container,) = service["spec"]["template"]["spec"]["containers"]
    assert [p["containerPort"] for p in container["ports"]] == [8080]
    assert container["ports"][0]["name"] in ("http1", "h2c")
    assert service["metadata"]["labels"]["networking.knative.dev/visibility"] == \
        "cluster-local"


def matches(filter_attributes: dict[str, str], event: dict[str, Any]) -> bool:
    """A Knative Trigger's ``filter.attributes``: every attribute equal, exactly."""
    return all(event.get(name) == value for name, value in filter_attributes.items())


def test_the_trigger_picks_exactly_the_success_of_its_job(local_stack: DevStack,
                                                         store: Store) -> None:
    """The filter against the events the bridge really emits about that job and another."""
    attributes = trigger()["spec"]["filter"]["attributes"]
    job_id = attributes["subject"]
    for request in ({"target": "local", "job_id": job_id, "command": ["true"]},
                    {"target": "local", "job_id": "another-job", "command": ["true"]}):
        answer = send(local_stack.broker.url, events.REQUESTED, request)
        assert answer.status_code == 202
    tick_until(local_stack, store, job_id, "SUCCEEDED")
    tick_until(local_stack, store, "another-job", "SUCCEEDED")
    seen = local_stack.broker.seen()
    assert {e["type"] for e in seen if e.get("subject") == job_id} >= {
        events.SUBMITTED, events.type_for_state(State.SUCCEEDED)}
    picked = [e for e in seen if matches(attributes, e)]
    assert [(e["type"], e["subject"]) for e in picked] == [
        (events.type_for_state(State.SUCCEEDED), job_id)]
    assert picked[0]["data"]["exit_code"] == 0
