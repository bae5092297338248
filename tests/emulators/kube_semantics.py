"""Object semantics of the Kubernetes API (1.28), for :mod:`tests.emulators.kube_apiserver`.

Pure functions, no I/O: label and field selectors, the three patch formats, metadata
validation, the defaults and admission changes a Pod gets, QoS class, and taint
toleration. Each follows the Kubernetes API reference and conventions; where the real
code path is more elaborate the docstring says what is left out. Errors are
:class:`ApiError`, which the emulator renders as a ``Status`` object.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import secrets
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

Obj = dict[str, Any]

_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN_RE = re.compile(rf"{_DNS_LABEL}(\.{_DNS_LABEL})*")
_LABEL_RE = re.compile(_DNS_LABEL)
_QUALIFIED_RE = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_CONFIG_KEY_RE = re.compile(r"[-._a-zA-Z0-9]+")
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # what the apiserver's name generator uses


class ApiError(Exception):
    """A refused request; :meth:`status` is the ``Status`` body the apiserver sends."""

    def __init__(self, code: int, reason: str, message: str,
                 details: Obj | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> Obj:
        body: Obj = {"kind": "Status", "apiVersion": "v1", "metadata": {},
                     "status": "Failure", "message": self.message, "reason": self.reason,
                     "code": self.code}
        if self.details is not None:
            body["details"] = self.details
        return body


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


@dataclasses.dataclass(frozen=True, slots=True)
class FieldError:
    """One entry of an Invalid (422) answer, as ``field.Error`` renders it."""

    field: str
    kind: str  # Invalid, Required, Forbidden, Duplicate, NotSupported
    detail: str = ""
    value: Any = None

    def message(self) -> str:
        if self.kind in ("Invalid", "Duplicate", "NotSupported"):
            shown = f'"{self.value}"' if isinstance(self.value, str) else repr(self.value)
            head = {"Invalid": "Invalid value", "Duplicate": "Duplicate value",
                    "NotSupported": "Unsupported value"}[self.kind]
            return f"{head}: {shown}" + (f": {self.detail}" if self.detail else "")
        head = "Required value" if self.kind == "Required" else "Forbidden"
        return head + (f": {self.detail}" if self.detail else "")


def invalid(kind: str, name: str, group: str, errors: list[FieldError]) -> ApiError:
    """422 Invalid, with the causes the real apiserver lists in ``details``."""
    parts = [f"{e.field}: {e.message()}" for e in errors]
    summary = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    details: Obj = {"name": name, "kind": kind,
                    "causes": [{"reason": f"FieldValue{e.kind}", "message": e.message(),
                                "field": e.field} for e in errors]}
    if group:
        details["group"] = group
    return ApiError(422, "Invalid", f'{kind} "{name}" is invalid: {summary}', details)


# -- validation -------------------------------------------------------------------------

def name_errors(name: str, *, label: bool = False) -> list[str]:
    """DNS-1123 subdomain (most kinds) or label (namespaces, container names) rules."""
    if label:
        if len(name) > 63:
            return ["must be no more than 63 characters"]
        if not _LABEL_RE.fullmatch(name):
            return ["a lowercase RFC 1123 label must consist of lower case alphanumeric "
                    "characters or '-', and must start and end with an alphanumeric character"]
        return []
    if len(name) > 253:
        return ["must be no more than 253 characters"]
    if not _SUBDOMAIN_RE.fullmatch(name):
        return ["a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                "characters, '-' or '.', and must start and end with an alphanumeric character"]
    return []


def qualified_name_errors(key: str) -> list[str]:
    """Label and annotation keys: an optional DNS subdomain prefix, '/', a 63-char name."""
    prefix, _, name = key.rpartition("/")
    errors = []
    if prefix and name_errors(prefix):
        errors.append("prefix part " + name_errors(prefix)[0])
    if not name or len(name) > 63 or not _QUALIFIED_RE.fullmatch(name):
        errors.append("name part must consist of alphanumeric characters, '-', '_' or '.', "
                      "and must start and end with an alphanumeric character")
    return errors


def label_value_errors(value: str) -> list[str]:
    if value and (len(value) > 63 or not _QUALIFIED_RE.fullmatch(value)):
        return ["a valid label must be an empty string or consist of alphanumeric "
                "characters, '-', '_' or '.', and must start and end with an alphanumeric "
                "character"]
    return []


def metadata_errors(meta: Mapping[str, Any], *, label_name: bool = False) -> list[FieldError]:
    errors: list[FieldError] = []
    name = meta.get("name") or ""
    if not name:
        errors.append(FieldError("metadata.name", "Required",
                                 "name or generateName is required"))
    errors += [FieldError("metadata.name", "Invalid", m, name)
               for m in (name_errors(name, label=label_name) if name else [])]
    for key, value in (meta.get("labels") or {}).items():
        errors += [FieldError("metadata.labels", "Invalid", m, key)
                   for m in qualified_name_errors(key)]
        errors += [FieldError("metadata.labels", "Invalid", m, value)
                   for m in label_value_errors(value)]
    for key in meta.get("annotations") or {}:
        errors += [FieldError("metadata.annotations", "Invalid", m, key)
                   for m in qualified_name_errors(key.lower())]
    return errors


def config_map_errors(obj: Mapping[str, Any]) -> list[FieldError]:
    errors: list[FieldError] = []
    data, binary = obj.get("data") or {}, obj.get("binaryData") or {}
    for key in [*data, *binary]:
        if len(key) > 253 or not _CONFIG_KEY_RE.fullmatch(key):
            errors.append(FieldError("data", "Invalid", "a valid config key must consist of "
                                     "alphanumeric characters, '-', '_' or '.'", key))
    errors += [FieldError("data", "Invalid", "duplicate of key present in binaryData", key)
               for key in data if key in binary]
    return errors


def string_map_error(kind: str, obj: Mapping[str, Any], paths: Iterable[str]) -> ApiError | None:
    """A map[string]string field holding a non-string: a decoding error, so 400, not 422."""
    for path in paths:
        value = dig(obj, path)
        if value is None:
            continue
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            return bad_request(f'{kind} in version "v1" cannot be handled as a {kind}: '
                               f"{path} must be a map of string to string")
    return None


# -- selectors --------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, slots=True)
class Requirement:
    """One term of a label selector (``labels.Requirement``)."""

    key: str
    op: str  # =, !=, in, notin, exists, !, gt, lt
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key, "")
        if self.op in ("=", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            return not present or value not in self.values
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        try:  # gt / lt compare integers; a non-integer label value does not match
            number = int(value)
        except ValueError:
            return False
        limit = int(self.values[0])
        return present and (number > limit if self.op == "gt" else number < limit)


_TERM_RE = re.compile(
    r"\s*(?P<not>!)?\s*(?P<key>[^\s!=<>(),]+)\s*"
    r"(?:(?P<op>==|=|!=|<|>)\s*(?P<value>[^\s,()]*)"
    r"|\s+(?P<set>in|notin)\s*\((?P<values>[^()]*)\))?\s*")


def _split_terms(text: str) -> list[str]:
    terms, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            terms.append(text[start:i])
            start = i + 1
    terms.append(text[start:])
    return terms


def parse_label_selector(text: str) -> list[Requirement]:
    """``labels.Parse``: =, ==, !=, in, notin, exists, !key, and the rarer > and <."""
    if not text.strip():
        return []
    requirements = []
    for term in _split_terms(text):
        match = _TERM_RE.fullmatch(term)
        if not match or (match["not"] and (match["op"] or match["set"])):
            raise bad_request(f"unable to parse requirement: {term.strip()!r}")
        key = match["key"]
        if qualified_name_errors(key):
            raise bad_request(f"unable to parse requirement: invalid label key {key!r}")
        if match["set"]:
            values = tuple(v.strip() for v in match["values"].split(",") if v.strip())
            op = match["set"]
        elif match["op"]:
            values = (match["value"],)
            op = {"==": "=", "<": "lt", ">": "gt"}.get(match["op"], match["op"])
            if op in ("gt", "lt") and not re.fullmatch(r"-?\d+", match["value"]):
                raise bad_request(f"unable to parse requirement: {match['value']!r} "
                                  "is not an integer")
        else:
            values, op = (), "!" if match["not"] else "exists"
        for value in values:
            if op not in ("gt", "lt") and label_value_errors(value):
                raise bad_request(f"unable to parse requirement: invalid label value {value!r}")
        requirements.append(Requirement(key, op, values))
    return requirements


def parse_field_selector(text: str, supported: Mapping[str, str]) -> list[tuple[str, bool, str]]:
    """``fields.Parse`` restricted to the labels a resource supports: (path, equal, value)."""
    terms = []
    for term in (t.strip() for t in text.split(",") if t.strip()):
        match = re.fullmatch(r"([^=!]+?)\s*(==|=|!=)\s*(.*)", term)
        if not match:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{term}'")
        label, op, value = match.groups()
        if label not in supported:
            raise bad_request(f'"{label}" is not a known field selector: only '
                              + ", ".join(f'"{k}"' for k in supported))
        terms.append((supported[label], op != "!=", value))
    return terms


def field_value(obj: Mapping[str, Any], path: str) -> str:
    """The string a field selector compares: booleans as true/false, missing as empty."""
    value = dig(obj, path)
    if isinstance(value, bool) or path in ("spec.unschedulable", "spec.hostNetwork"):
        return "true" if value else "false"
    return "" if value is None else str(value)


def dig(obj: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


# -- patches ----------------------------------------------------------------------------

def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: maps merge, null deletes, everything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _merge_keys() -> dict[str, str]:
    """``patchMergeKey`` of the lists of the kinds emulated; paths skip list indices."""
    keys = {"metadata.ownerReferences": "uid", "spec.volumes": "name",
            "spec.imagePullSecrets": "name", "spec.hostAliases": "ip",
            "spec.topologySpreadConstraints": "topologyKey", "spec.resourceClaims": "name",
            "spec.schedulingGates": "name", "status.conditions": "type",
            "status.podIPs": "ip", "status.hostIPs": "ip", "status.addresses": "type",
            "secrets": "name"}
    for containers in ("containers", "initContainers", "ephemeralContainers"):
        base = f"spec.{containers}"
        keys.update({base: "name", f"{base}.env": "name", f"{base}.ports": "containerPort",
                     f"{base}.volumeMounts": "mountPath", f"{base}.volumeDevices": "devicePath"})
    return keys


MERGE_KEYS = _merge_keys()
# Lists of scalars with patchStrategy "merge": a patch adds to them (set union).
MERGED_SCALAR_LISTS = frozenset({"metadata.finalizers", "spec.podCIDRs"})
_DELETE = object()


def strategic_merge_patch(original: Any, patch: Any, path: str = "") -> Any:
    """Strategic merge patch for the built-in kinds emulated here.

    Maps merge and ``null`` deletes. A list whose field has a ``patchMergeKey`` (see
    :data:`MERGE_KEYS`: containers by name, conditions by type, ...) is merged item by
    item on that key, items new to it appended; ``{"$patch": "delete", key: ...}``
    removes an item and a ``{"$patch": "replace"}`` item replaces the whole list. Lists
    in :data:`MERGED_SCALAR_LISTS` get the patch's values added, and
    ``$deleteFromPrimitiveList/<field>`` removes values. Every other list, e.g.
    ``spec.tolerations`` and ``status.containerStatuses``, which the API marks atomic, is
    replaced. ``$patch: replace|delete`` on a map works; ``$setElementOrder`` and
    ``$retainKeys`` directives are accepted and ignored, so merged items keep their stored
    order.
    """
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "delete":
        return _DELETE
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    result = dict(original) if isinstance(original, dict) else {}
    for key, values in patch.items():
        field = key.partition("/")[2]
        if key.startswith("$deleteFromPrimitiveList/") and field in result:
            result[field] = [v for v in result[field] if v not in values]
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        where = f"{path}.{key}" if path else key
        if isinstance(value, list):
            result[key] = _merge_list(result.get(key), value, where)
            continue
        merged = None if value is None else strategic_merge_patch(result.get(key), value, where)
        if merged is None or merged is _DELETE:
            result.pop(key, None)
        else:
            result[key] = merged
    return result


def _merge_list(original: Any, patch: list[Any], path: str) -> list[Any]:
    if path in MERGED_SCALAR_LISTS:
        merged = list(original or [])
        return merged + [v for v in patch if v not in merged]
    key = MERGE_KEYS.get(path)
    if key is None or {"$patch": "replace"} in patch:
        return [strategic_merge_patch(None, item, path) for item in patch
                if item != {"$patch": "replace"}]
    merged = [copy.deepcopy(item) for item in original or []]
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            raise ApiError(500, "InternalError",
                           f"map: {item} does not contain declared merge key: {key}")
        at = next((i for i, old in enumerate(merged) if old.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if at is not None:
                del merged[at]
        elif at is None:
            merged.append(strategic_merge_patch({}, item, path))
        else:
            merged[at] = strategic_merge_patch(merged[at], item, path)
    return merged


def json_patch(document: Obj, operations: Any) -> Obj:
    """RFC 6902: add, remove, replace, move, copy, test. A failed operation is 422."""
    if not isinstance(operations, list):
        raise bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    doc: Any = copy.deepcopy(document)
    for operation in operations:
        if not isinstance(operation, dict) or "path" not in operation:
            raise bad_request(f"invalid JSON patch operation: {operation}")
        op = operation.get("op")
        path = _pointer(operation["path"])
        if op == "test":
            if _resolve(doc, path) != operation.get("value"):
                raise _unprocessable(f"testing value {operation['path']} failed: test failed")
        elif op == "remove":
            _remove(doc, path)
        elif op == "add":
            doc = _add(doc, path, copy.deepcopy(operation.get("value")))
        elif op == "replace":
            _remove(doc, path)
            doc = _add(doc, path, copy.deepcopy(operation.get("value")))
        elif op in ("move", "copy"):
            source = _pointer(operation.get("from", ""))
            value = copy.deepcopy(_resolve(doc, source))
            if op == "move":
                _remove(doc, source)
            doc = _add(doc, path, value)
        else:
            raise bad_request(f"Unexpected kind: {op}")
    return doc


def _unprocessable(message: str) -> ApiError:
    return ApiError(422, "Invalid", message)


def _pointer(text: str) -> list[str]:
    if text == "":
        return []
    if not text.startswith("/"):
        raise bad_request(f"invalid JSON pointer {text!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in text[1:].split("/")]


def _resolve(doc: Any, path: list[str]) -> Any:
    for part in path:
        if isinstance(doc, dict) and part in doc:
            doc = doc[part]
        elif isinstance(doc, list) and part.isdigit() and int(part) < len(doc):
            doc = doc[int(part)]
        else:
            raise _unprocessable(f"doc is missing path: /{'/'.join(path)}")
    return doc


def _remove(doc: Any, path: list[str]) -> None:
    if not path:
        raise _unprocessable("cannot remove the whole document")
    parent, last = _resolve(doc, path[:-1]), path[-1]
    _resolve(parent, [last])
    if isinstance(parent, list):
        del parent[int(last)]
    else:
        del parent[last]


def _add(doc: Any, path: list[str], value: Any) -> Any:
    if not path:
        return value
    parent, last = _resolve(doc, path[:-1]), path[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list) and (last == "-" or (last.isdigit()
                                                        and int(last) <= len(parent))):
        parent.insert(len(parent) if last == "-" else int(last), value)
    else:
        raise _unprocessable(f"add operation does not apply: doc is missing path: "
                             f"/{'/'.join(path)}")
    return doc


# -- pods -------------------------------------------------------------------------------

SERVICE_ACCOUNT_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
NOT_READY = "node.kubernetes.io/not-ready"
UNREACHABLE = "node.kubernetes.io/unreachable"


def generated_suffix() -> str:
    return "".join(secrets.choice(_NAME_ALPHABET) for _ in range(5))


def _containers(spec: Obj) -> list[Obj]:
    return [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]


def default_pod(pod: Obj) -> None:
    """``SetDefaults_Pod`` and friends: applied to every Pod the apiserver decodes."""
    spec = pod.setdefault("spec", {})
    for field, value in (("restartPolicy", "Always"), ("terminationGracePeriodSeconds", 30),
                         ("dnsPolicy", "ClusterFirst"), ("securityContext", {}),
                         ("schedulerName", "default-scheduler"), ("enableServiceLinks", True)):
        spec.setdefault(field, value)
    account = spec.get("serviceAccountName") or spec.get("serviceAccount")
    if account:  # v1 mirrors the name into the deprecated field
        spec["serviceAccountName"] = spec["serviceAccount"] = account
    for container in _containers(spec):
        image = container.get("image") or ""
        tag = image.rpartition(":")[2] if ":" in image.rpartition("/")[2] else ""
        container.setdefault("imagePullPolicy", "Always" if "@" not in image
                             and tag in ("", "latest") else "IfNotPresent")
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
        resources = container.setdefault("resources", {})
        if resources.get("limits"):  # requests default to limits
            requests = resources.setdefault("requests", {})
            for name, quantity in resources["limits"].items():
                requests.setdefault(name, quantity)
        for port in container.get("ports") or []:
            port.setdefault("protocol", "TCP")


def admit_pod(pod: Obj, account: Obj) -> None:
    """What the admission plugins of a default 1.28 apiserver add to a new Pod.

    ServiceAccount (the account and its ``kube-api-access-*`` token volume, unless
    automount is off on the pod or the account), Priority (priority 0,
    PreemptLowerPriority) and DefaultTolerationSeconds (300 s for not-ready and
    unreachable, unless the pod tolerates those NoExecute taints already).
    """
    spec = pod["spec"]
    spec["serviceAccountName"] = spec["serviceAccount"] = account["metadata"]["name"]
    automount = spec.get("automountServiceAccountToken",
                         account.get("automountServiceAccountToken", True))
    mounted = any(m.get("mountPath") == SERVICE_ACCOUNT_MOUNT
                  for c in _containers(spec) for m in c.get("volumeMounts") or [])
    if automount is not False and not mounted:
        volume = f"kube-api-access-{generated_suffix()}"
        spec.setdefault("volumes", []).append({"name": volume, "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt",
                               "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {
                    "apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ]}})
        for container in _containers(spec):
            container.setdefault("volumeMounts", []).append(
                {"name": volume, "mountPath": SERVICE_ACCOUNT_MOUNT, "readOnly": True})
    spec.setdefault("priority", 0)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    tolerations = spec.get("tolerations") or []
    for key in (NOT_READY, UNREACHABLE):
        if not any(t.get("key") in (key, None, "") and t.get("effect") in ("NoExecute", None, "")
                   for t in tolerations):
            tolerations.append({"key": key, "operator": "Exists", "effect": "NoExecute",
                                "tolerationSeconds": 300})
    spec["tolerations"] = tolerations


def pod_errors(pod: Obj) -> list[FieldError]:
    """The checks of ``ValidatePod`` a client is likely to trip over; not all of them."""
    spec = pod.get("spec") or {}
    errors: list[FieldError] = []
    if not spec.get("containers"):
        errors.append(FieldError("spec.containers", "Required"))
    seen: set[str] = set()
    for group in ("initContainers", "containers"):
        for i, container in enumerate(spec.get(group) or []):
            where, name = f"spec.{group}[{i}]", container.get("name") or ""
            if not name:
                errors.append(FieldError(f"{where}.name", "Required"))
            errors += [FieldError(f"{where}.name", "Invalid", m, name)
                       for m in (name_errors(name, label=True) if name else [])]
            if name in seen:
                errors.append(FieldError(f"{where}.name", "Duplicate", value=name))
            seen.add(name)
            if not container.get("image"):
                errors.append(FieldError(f"{where}.image", "Required"))
    if spec.get("restartPolicy") not in ("Always", "OnFailure", "Never"):
        errors.append(FieldError("spec.restartPolicy", "NotSupported",
                                 'supported values: "Always", "OnFailure", "Never"',
                                 spec.get("restartPolicy")))
    return errors


def pod_update_errors(old: Obj, new: Obj) -> list[FieldError]:
    """``ValidatePodUpdate``: a pod's spec is immutable but for a few fields."""
    def frozen(spec: Obj) -> Obj:
        spec = copy.deepcopy(spec)
        for container in _containers(spec):
            container.pop("image", None)
        spec.pop("activeDeadlineSeconds", None)
        spec.pop("tolerations", None)
        return spec

    old_spec, new_spec = old.get("spec") or {}, new.get("spec") or {}
    kept = all(t in (new_spec.get("tolerations") or []) for t in old_spec.get("tolerations") or [])
    if frozen(old_spec) == frozen(new_spec) and kept:
        return []
    return [FieldError("spec", "Forbidden", "pod updates may not change fields other than "
                       "`spec.containers[*].image`,`spec.initContainers[*].image`,"
                       "`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to "
                       "existing tolerations),`spec.terminationGracePeriodSeconds` (allow it "
                       "to be set to 1 if it was previously negative)")]


def pod_status_errors(old: Obj, new: Obj) -> list[FieldError]:
    """``ValidateContainerStateTransition``: no way back from terminated unless restarting."""
    policy = old["spec"].get("restartPolicy")
    if policy == "Always":
        return []
    errors = []
    for group in ("containerStatuses", "initContainerStatuses"):
        fresh = (new.get("status") or {}).get(group) or []
        for i, before in enumerate((old.get("status") or {}).get(group) or []):
            ended = (before.get("state") or {}).get("terminated")
            if ended is None or (policy == "OnFailure" and ended.get("exitCode") != 0):
                continue
            if any(s.get("name") == before.get("name")
                   and "terminated" not in (s.get("state") or {}) for s in fresh):
                errors.append(FieldError(f"status.{group}[{i}].state", "Forbidden",
                                         "may not be transitioned to non-terminated state"))
    return errors


_SUFFIXES = {"m": Decimal("0.001"), "": Decimal(1), "k": Decimal(10) ** 3,
             "M": Decimal(10) ** 6, "G": Decimal(10) ** 9, "T": Decimal(10) ** 12,
             "P": Decimal(10) ** 15, "E": Decimal(10) ** 18, "Ki": Decimal(2) ** 10,
             "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30, "Ti": Decimal(2) ** 40,
             "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60}


def quantity(text: Any) -> Decimal:
    """A resource.Quantity as a number ("100m", "1Gi", "1e3")."""
    match = re.fullmatch(r"([+-]?[0-9.]+(?:[eE][+-]?\d+)?)([a-zA-Z]*)", str(text).strip())
    if not match or match[2] not in _SUFFIXES:
        raise bad_request(f"quantities must match the regular expression: {text!r}")
    try:
        return Decimal(match[1]) * _SUFFIXES[match[2]]
    except InvalidOperation:
        raise bad_request(f"quantities must match the regular expression: {text!r}") from None


def qos_class(spec: Obj) -> str:
    """``GetPodQOS`` over cpu and memory, after requests were defaulted from limits."""
    requests: dict[str, Decimal] = {}
    limits: dict[str, Decimal] = {}
    guaranteed = True
    for container in _containers(spec):
        resources = container.get("resources") or {}
        for into, field in ((requests, "requests"), (limits, "limits")):
            for name in ("cpu", "memory"):
                value = (resources.get(field) or {}).get(name)
                if value is not None and quantity(value) != 0:
                    into[name] = into.get(name, Decimal(0)) + quantity(value)
        if not all((resources.get("limits") or {}).get(n) for n in ("cpu", "memory")):
            guaranteed = False
    if not requests and not limits:
        return "BestEffort"
    return "Guaranteed" if guaranteed and requests == limits else "Burstable"


def tolerates(toleration: Mapping[str, Any], taint: Mapping[str, Any]) -> bool:
    """``Toleration.ToleratesTaint``."""
    effect = toleration.get("effect") or ""
    if effect and effect != taint.get("effect"):
        return False
    key = toleration.get("key") or ""
    if key and key != taint.get("key"):
        return False
    if toleration.get("operator") == "Exists":
        return True
    return (toleration.get("value") or "") == (taint.get("value") or "")


def toleration_seconds(tolerations: list[Obj], taints: list[Obj]) -> float | None:
    """How long a pod may stay under these NoExecute taints: None forever, 0 not at all.

    As the taint manager does: per taint the first toleration that matches counts, and
    the shortest ``tolerationSeconds`` among those wins.
    """
    shortest: float | None = None
    for taint in taints:
        match = next((t for t in tolerations if tolerates(t, taint)), None)
        if match is None:
            return 0
        seconds = match.get("tolerationSeconds")
        if seconds is not None:
            if seconds <= 0:
                return 0
            shortest = seconds if shortest is None else min(shortest, seconds)
    return shortest
