"""The Kubernetes API access each service account of the deployment is granted.

Reads the RBAC objects of the rendered base in knative/ back per service account, so a
test can compare them with an expected set, or with the calls a function really makes
against a Kubernetes API emulator::

    from tests.deploy.rbac import rules_for
    assert ("", "pods", "delete") in rules_for("hpc-bridge-cancel")

A rule is ``(api_group, resource, verb)``, the core group being ``""`` and a subresource
written ``pods/status``. :func:`scoped_rules_for` adds where it holds: a namespace for a
RoleBinding, ``"*"`` (every namespace and the cluster-scoped resources) for a
ClusterRoleBinding. Wildcards in a role are kept as ``"*"``, not expanded.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

from tests.deploy.render import KNATIVE, render

__all__ = ["ALL_NAMESPACES", "NAMESPACE", "Rule", "ScopedRule", "rules_for",
           "scoped_rules_for"]

NAMESPACE = "hpc-bridge"  # where the service accounts live
ALL_NAMESPACES = "*"

Rule = tuple[str, str, str]
ScopedRule = tuple[str, str, str, str]  # api_group, resource, verb, namespace or "*"


@functools.cache
def _base() -> tuple[dict[str, Any], ...]:
    return tuple(render(KNATIVE))


def scoped_rules_for(service_account: str, objects: Iterable[dict[str, Any]] | None = None,
                     namespace: str = NAMESPACE) -> set[ScopedRule]:
    """Every ``(api_group, resource, verb, where)`` granted to the service account."""
    objects = list(_base() if objects is None else objects)
    roles = {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o
             for o in objects if o["kind"] in ("Role", "ClusterRole")}
    granted: set[ScopedRule] = set()
    for binding in objects:
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if not any(s.get("kind") == "ServiceAccount" and s.get("name") == service_account
                   and s.get("namespace") == namespace for s in binding.get("subjects", [])):
            continue
        ref = binding["roleRef"]
        where = binding["metadata"].get("namespace", "") \
            if binding["kind"] == "RoleBinding" else ALL_NAMESPACES
        role_namespace = where if ref["kind"] == "Role" else ""
        role = roles.get((ref["kind"], role_namespace, ref["name"]))
        if role is None:
            raise LookupError(f"{binding['kind']} {binding['metadata']['name']} refers to "
                              f"the missing {ref['kind']} {ref['name']}")
        for rule in role.get("rules", []):
            for group in rule.get("apiGroups", []):
                for resource in rule.get("resources", []):
                    for verb in rule.get("verbs", []):
                        granted.add((group, resource, verb, where))
    return granted


def rules_for(service_account: str, objects: Iterable[dict[str, Any]] | None = None,
              namespace: str = NAMESPACE) -> set[Rule]:
    """Every ``(api_group, resource, verb)`` granted to the service account, anywhere."""
    return {rule[:3] for rule in scoped_rules_for(service_account, objects, namespace)}
