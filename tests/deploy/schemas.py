"""Strict schema validation: Knative CRD schemas with jsonschema, core kinds with
kubernetes-validate.

Knative's CustomResourceDefinitions (../shared/knative-crds, unmodified copies of
knative/serving and knative/eventing) carry structural OpenAPI v3 schemas. Kubernetes
rejects unknown fields under strict field validation; plain JSON Schema allows them, so
:func:`strict` adds ``additionalProperties: false`` to every object schema that lists
``properties`` and does not preserve unknown fields, and pins ``apiVersion`` and ``kind``.
Where Knative preserves unknown fields (all of Trigger's and ApiServerSource's ``spec``,
Broker's ``delivery``) a typo cannot be caught by a schema: the semantic tests in
test_manifests.py cover those objects field by field.

``metadata`` (a bare ``type: object`` in every CRD) is validated against Kubernetes'
ObjectMeta schema from kubernetes-validate, strict.
"""

from __future__ import annotations

import copy
import functools
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import referencing
import yaml

from tests.deploy.render import REPO

# The Kubernetes version of the core schemas: the oldest supported here (1.28, as the
# kube-apiserver in REFERENCE.md) and the newest kubernetes-validate knows.
K8S_VERSIONS = ("1.28.0", kubernetes_validate.latest_version() + ".0")

PRESERVE = "x-kubernetes-preserve-unknown-fields"


def crd_directory() -> Path:
    override = os.environ.get("HPCBRIDGE_KNATIVE_CRDS")
    return Path(override) if override else REPO.parent / "shared" / "knative-crds"


def is_knative(obj: dict[str, Any]) -> bool:
    return obj["apiVersion"].split("/")[0].endswith(".knative.dev")


def strict(schema: Any) -> Any:
    """A copy of ``schema`` in which every object refuses properties it does not list."""
    schema = copy.deepcopy(schema)
    _tighten(schema)
    return schema


def _tighten(node: Any) -> None:
    if isinstance(node, list):
        for item in node:
            _tighten(item)
        return
    if not isinstance(node, dict):
        return
    if "properties" in node and not node.get(PRESERVE) \
            and "additionalProperties" not in node:
        node["additionalProperties"] = False
    for name in ("properties", "patternProperties"):
        for child in (node.get(name) or {}).values():
            _tighten(child)
    for name in ("items", "additionalProperties", "not"):
        if isinstance(node.get(name), dict | list):
            _tighten(node[name])
    for name in ("allOf", "anyOf", "oneOf"):
        if name in node:
            _tighten(node[name])


@functools.cache
def knative_validators() -> dict[tuple[str, str], jsonschema.protocols.Validator]:
    """``(apiVersion, kind)`` -> a strict validator, for every served version of every CRD."""
    directory = crd_directory()
    if not directory.is_dir():
        raise FileNotFoundError(
            f"Knative CRD schemas not found at {directory}: they come with the project's "
            "shared/ directory beside the repository (or set HPCBRIDGE_KNATIVE_CRDS)")
    validators = {}
    for path in sorted(directory.glob("*/*.yaml")):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if not version.get("served", True):
                continue
            api_version = f"{group}/{version['name']}"
            schema = strict(version["schema"]["openAPIV3Schema"])
            # Every object has metadata (validated below); some CRDs do not declare it.
            schema["properties"].setdefault("metadata", {"type": "object"})
            schema["properties"]["apiVersion"] = {"const": api_version}
            schema["properties"]["kind"] = {"const": kind}
            schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind",
                                         "metadata"})
            validators[(api_version, kind)] = jsonschema.Draft7Validator(schema)
    return validators


def _schema_file(version: str, name: str) -> Any:
    path = resources.files("kubernetes_validate").joinpath(
        f"kubernetes-json-schema/v{version}-local-strict/{name}")
    return json.loads(path.read_text())


@functools.cache
def object_meta_validator(version: str = K8S_VERSIONS[0]) -> jsonschema.protocols.Validator:
    """Kubernetes' ObjectMeta, strict, as kubernetes-validate ships it."""
    definitions = referencing.Resource.from_contents(_schema_file(version, "_definitions.json"))
    schema = _schema_file(version, "objectmeta-meta-v1.json")
    registry = referencing.Registry().with_resource(definitions.id() or "", definitions)
    schema.setdefault("$id", "https://kubernetes.io/api/objectmeta-meta-v1.json")
    return jsonschema.Draft202012Validator(schema, registry=registry)


def knative_errors(obj: dict[str, Any]) -> list[str]:
    """Everything the strict CRD schema and ObjectMeta have against ``obj``."""
    validator = knative_validators().get((obj["apiVersion"], obj["kind"]))
    if validator is None:
        return [f"no CRD schema for {obj['apiVersion']} {obj['kind']}"]
    errors = [_describe(e) for e in validator.iter_errors(obj)]
    metas = [("metadata", obj.get("metadata", {}))]
    template = (obj.get("spec") or {}).get("template")
    if isinstance(template, dict) and "metadata" in template:
        metas.append(("spec.template.metadata", template["metadata"]))
    for where, metadata in metas:
        errors += [f"{where}: {_describe(e)}"
                   for e in object_meta_validator().iter_errors(metadata)]
    return sorted(errors)


def core_errors(obj: dict[str, Any], version: str) -> list[str]:
    """What kubernetes-validate, strict, has against a core (non-Knative) object."""
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [f"{version}: {_describe(error)}"]
    return []


def _describe(error: jsonschema.ValidationError) -> str:
    path = ".".join(str(p) for p in error.absolute_path) or "(top)"
    return f"{path}: {error.message}"
