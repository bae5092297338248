"""functions/<f>/func.yaml: the Knative func CLI's view of each function.

func.yaml is checked against a schema written from func's documented format (only the
fields func knows, unknown fields refused, as func's own schema does), and against the
Knative Service of the same function in knative/, so that `func deploy` and
`kubectl apply -k knative/` deploy the same thing.
"""

from __future__ import annotations

import datetime
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.deploy.render import REPO

FUNCTIONS = ("submit", "poll", "cancel")

_ENV = {"type": "object", "additionalProperties": False, "required": ["value"],
        "properties": {"name": {"type": "string", "pattern": r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"},
                       "value": {"type": "string"}}}
_QUANTITY = {"type": "string", "pattern": r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"}
_RESOURCES = {"type": "object", "additionalProperties": False,
              "properties": {"cpu": _QUANTITY, "memory": _QUANTITY,
                             "concurrency": {"type": "integer", "minimum": 0}}}

# func.yaml's fields (knative/func's documented format, specVersion 0.3x); each object
# refuses fields it does not list, as func's own schema does.
FUNC_YAML_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False,
    "required": ["specVersion", "name", "runtime", "created"],
    "properties": {
        "specVersion": {"type": "string", "pattern": r"^\d+\.\d+\.\d+$"},
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "runtime": {"type": "string"},
        "registry": {"type": "string"},
        "image": {"type": "string"},
        "namespace": {"type": "string"},
        "domain": {"type": "string"},
        "created": {"type": "string", "format": "date-time"},
        "invoke": {"enum": ["http", "cloudevent"]},
        "build": {"type": "object", "additionalProperties": False, "properties": {
            "builder": {"enum": ["host", "pack", "s2i"]},
            "buildpacks": {"type": "array", "items": {"type": "string"}},
            "builderImages": {"type": "object", "additionalProperties": {"type": "string"}},
            "buildEnvs": {"type": "array", "items": _ENV},
            "git": {"type": "object"},
            "pvcSize": {"type": "string"},
        }},
        "run": {"type": "object", "additionalProperties": False, "properties": {
            "envs": {"type": "array", "items": _ENV},
            "volumes": {"type": "array", "items": {
                "type": "object", "additionalProperties": False, "required": ["path"],
                "properties": {"secret": {"type": "string"}, "configMap": {"type": "string"},
                               "path": {"type": "string"}},
                "oneOf": [{"required": ["secret"]}, {"required": ["configMap"]}]}},
        }},
        "deploy": {"type": "object", "additionalProperties": False, "properties": {
            "namespace": {"type": "string"},
            "image": {"type": "string"},
            "serviceAccountName": {"type": "string"},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            "labels": {"type": "array", "items": {
                "type": "object", "additionalProperties": False, "required": ["key"],
                "properties": {"key": {"type": "string"}, "value": {"type": "string"}}}},
            "healthEndpoints": {"type": "object", "additionalProperties": False,
                                "properties": {"liveness": {"type": "string"},
                                               "readiness": {"type": "string"}}},
            "options": {"type": "object", "additionalProperties": False, "properties": {
                "scale": {"type": "object", "additionalProperties": False, "properties": {
                    "min": {"type": "integer", "minimum": 0},
                    "max": {"type": "integer", "minimum": 0},
                    "metric": {"enum": ["concurrency", "rps"]},
                    "target": {"type": "number", "minimum": 0},
                    "utilization": {"type": "number", "minimum": 1, "maximum": 100}}},
                "resources": {"type": "object", "additionalProperties": False, "properties": {
                    "requests": _RESOURCES, "limits": _RESOURCES}},
            }},
        }},
    },
}

_TEMPLATE = re.compile(r"^\{\{\s*(secret|configMap):([-a-z0-9.]+):([-._a-zA-Z0-9]+)\s*\}\}$")


def load(function: str) -> dict[str, Any]:
    document = yaml.safe_load((REPO / "functions" / function / "func.yaml").read_text())
    created = document.get("created")
    if isinstance(created, datetime.datetime):  # YAML reads an unquoted timestamp so
        document["created"] = created.isoformat()
    return document


def ksvc(objects: list[dict[str, Any]], function: str) -> dict[str, Any]:
    (service,) = [o for o in objects if o["apiVersion"] == "serving.knative.dev/v1"
                  and o["metadata"]["name"] == f"hpc-bridge-{function}"]
    return service


@pytest.mark.parametrize("function", FUNCTIONS)
def test_func_yaml_follows_funcs_format(function: str) -> None:
    validator = jsonschema.Draft7Validator(
        FUNC_YAML_SCHEMA, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
              for e in validator.iter_errors(load(function))]
    assert errors == []


def test_func_yaml_schema_refuses_typos() -> None:
    document = load("submit")
    document["deploy"]["serviceAcountName"] = "x"
    document["run"]["envs"].append({"nam": "X", "value": "1"})
    validator = jsonschema.Draft7Validator(FUNC_YAML_SCHEMA)
    messages = [e.message for e in validator.iter_errors(document)]
    assert any("serviceAcountName" in m for m in messages)
    assert any("nam" in m for m in messages)


@pytest.mark.parametrize("function", FUNCTIONS)
def test_func_yaml_deploys_what_the_knative_service_deploys(objects: list[dict[str, Any]],
                                                           function: str) -> None:
    document = load(function)
    service = ksvc(objects, function)
    template = service["spec"]["template"]
    spec = template["spec"]
    (container,) = spec["containers"]

    assert document["name"] == service["metadata"]["name"]
    assert document["namespace"] == document["deploy"]["namespace"] \
        == service["metadata"]["namespace"]
    assert document["deploy"]["serviceAccountName"] == spec["serviceAccountName"]
    assert document["image"] == container["image"]  # the one image, as kustomize pins it

    envs = {e["name"]: e["value"] for e in document["run"]["envs"]}
    # func sets no command: the image's default command serves FUNCTION_TARGET, whose
    # main.py defines the function under that name.
    assert envs.pop("FUNCTION_TARGET") == function
    source = (REPO / "functions" / function / "main.py").read_text()
    assert re.search(rf"@functions_framework\.http\s+def {function}\(", source)
    service_env = {e["name"]: e for e in container["env"]}
    assert set(envs) == set(service_env)
    for name, value in envs.items():
        reference = _TEMPLATE.match(value)
        if reference:
            kind, object_name, key = reference.groups()
            ref = service_env[name]["valueFrom"]
            expected = ref.get("secretKeyRef") if kind == "secret" else ref.get("configMapKeyRef")
            assert expected == {"name": object_name, "key": key}, name
        else:
            assert service_env[name]["value"] == value, name

    volumes = {v["name"]: v for v in spec["volumes"]}
    mounted = set()
    for mount in container["volumeMounts"]:
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            mounted.add(("configMap", volume["configMap"]["name"], mount["mountPath"]))
        else:
            mounted.add(("secret", volume["secret"]["secretName"], mount["mountPath"]))
    declared = {("configMap" if "configMap" in v else "secret",
                 v.get("configMap") or v.get("secret"), v["path"])
                for v in document["run"]["volumes"]}
    assert declared == mounted

    annotations = template["metadata"]["annotations"]
    scale = document["deploy"]["options"]["scale"]
    assert str(scale["min"]) == annotations["autoscaling.knative.dev/min-scale"]
    assert str(scale["max"]) == annotations["autoscaling.knative.dev/max-scale"]
    if "target" in scale:
        assert str(scale["target"]) == annotations["autoscaling.knative.dev/target"]
    else:
        assert "autoscaling.knative.dev/target" not in annotations
    resources = document["deploy"]["options"]["resources"]
    limits = dict(resources["limits"])
    assert limits.pop("concurrency") == spec["containerConcurrency"]
    assert limits == container["resources"]["limits"]
    assert resources["requests"] == container["resources"]["requests"]

    health = document["deploy"]["healthEndpoints"]
    assert health["readiness"] == container["readinessProbe"]["httpGet"]["path"]
    assert health["liveness"] == container["livenessProbe"]["httpGet"]["path"]
    labels = {entry["key"]: entry["value"] for entry in document["deploy"]["labels"]}
    assert labels.items() <= {**template["metadata"]["labels"],
                              **service["metadata"]["labels"]}.items()


def test_func_yaml_volumes_and_secrets_exist_in_the_base(
        objects: list[dict[str, Any]]) -> None:
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    for function in FUNCTIONS:
        document = load(function)
        for volume in document["run"]["volumes"]:
            kind = "ConfigMap" if "configMap" in volume else "Secret"
            assert (kind, volume.get("configMap") or volume.get("secret")) in names
            assert Path(volume["path"]).is_absolute()
