"""Render the kustomize base in knative/ into a list of Kubernetes objects.

``kubectl kustomize`` (kustomize v5 built into kubectl) renders when ``kubectl`` is on
PATH; this machine's image ships it. Otherwise :func:`render_subset` renders with a small
reimplementation of exactly the kustomize features knative/ uses, and refuses any other
field, so it cannot silently render something different. When both are available, a
test checks that they agree object for object.

Subset: ``resources`` (YAML files and directories holding a kustomization), ``components``
(directories holding a Component), ``labels`` (``pairs`` on ``metadata.labels`` only: no
selectors, no templates), ``images`` (``newName``/``newTag``/``digest`` on every
``containers``/``initContainers`` entry) and ``patches`` (strategic-merge patches, inline or
by path, that delete an object with ``$patch: delete`` or merge maps into one).
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
KNATIVE = REPO / "knative"

Object = dict[str, Any]
Key = tuple[str, str, str, str]  # apiVersion, kind, namespace, name

_KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
_SUBSET_FIELDS = {"apiVersion", "kind", "resources", "components", "labels", "images",
                  "patches"}


class UnsupportedKustomization(Exception):
    """The subset renderer met a kustomize feature it does not implement."""


def kubectl() -> str | None:
    return shutil.which("kubectl")


def renderer_name() -> str:
    """What :func:`render` uses here, for the test report's header."""
    tool = kubectl()
    if tool is None:
        return "tests/deploy/render.py subset renderer (kubectl not found)"
    version = subprocess.run([tool, "version", "--client"], capture_output=True, text=True,
                             check=False, timeout=60).stdout
    kustomize = next((line.split(":", 1)[1].strip() for line in version.splitlines()
                      if line.startswith("Kustomize Version")), "unknown")
    return f"kubectl kustomize (kustomize {kustomize})"


def render(directory: Path = KNATIVE) -> list[Object]:
    """The objects that ``kubectl apply -k directory`` would send."""
    if kubectl() is not None:
        return render_kubectl(directory)
    return render_subset(directory)


def render_kubectl(directory: Path) -> list[Object]:
    tool = kubectl()
    if tool is None:
        raise FileNotFoundError("kubectl")
    result = subprocess.run([tool, "kustomize", str(directory)], capture_output=True,
                            text=True, check=False, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {directory} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def key(obj: Object) -> Key:
    metadata = obj.get("metadata") or {}
    return (obj["apiVersion"], obj["kind"], metadata.get("namespace", ""), metadata["name"])


# -- the subset ---------------------------------------------------------------------------


def _kustomization(directory: Path) -> Object:
    for name in _KUSTOMIZATION_FILES:
        path = directory / name
        if path.is_file():
            document = yaml.safe_load(path.read_text())
            unknown = set(document) - _SUBSET_FIELDS
            if unknown:
                raise UnsupportedKustomization(f"{path}: {sorted(unknown)}")
            return document
    raise UnsupportedKustomization(f"{directory} has no kustomization")


def _documents(path: Path) -> Iterator[Object]:
    for document in yaml.safe_load_all(path.read_text()):
        if document:
            yield document


def render_subset(directory: Path) -> list[Object]:
    objects: dict[Key, Object] = {}
    _accumulate(directory.resolve(), objects, expect="Kustomization")
    return list(objects.values())


def _accumulate(directory: Path, objects: dict[Key, Object], expect: str) -> None:
    kustomization = _kustomization(directory)
    kind = kustomization.get("kind", "Kustomization")
    if kind != expect:
        raise UnsupportedKustomization(f"{directory}: a {kind} where a {expect} belongs")
    # A component transforms what its parent accumulated so far; a kustomization renders
    # its own objects, then adds them to its parent's.
    own: dict[Key, Object] = objects if kind == "Component" else {}
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            _accumulate(path, own, expect="Kustomization")
        else:
            for document in _documents(path):
                if key(document) in own:
                    raise UnsupportedKustomization(f"{key(document)} defined twice")
                own[key(document)] = copy.deepcopy(document)
    for entry in kustomization.get("components", []):
        _accumulate((directory / entry).resolve(), own, expect="Component")
    for patch in kustomization.get("patches", []):
        _patch(directory, own, patch)
    for label in kustomization.get("labels", []):
        _label(own.values(), label)
    for image in kustomization.get("images", []):
        _image(own.values(), image)
    if own is not objects:
        for object_key, obj in own.items():
            if object_key in objects:
                raise UnsupportedKustomization(f"{object_key} defined twice")
            objects[object_key] = obj


def _patch(directory: Path, objects: dict[Key, Object], patch: Object) -> None:
    if set(patch) - {"path", "patch"} or len(patch) != 1:
        raise UnsupportedKustomization(f"patch fields {sorted(patch)}")
    text = (directory / patch["path"]).read_text() if "path" in patch else patch["patch"]
    documents = [d for d in yaml.safe_load_all(text) if d]
    if len(documents) != 1:
        raise UnsupportedKustomization("one object per strategic-merge patch")
    document = documents[0]
    action = document.pop("$patch", "merge")
    target = key(document)
    if target not in objects:
        raise UnsupportedKustomization(f"patch target {target} not found")
    if action == "delete":
        del objects[target]
    elif action == "merge":
        _merge(objects[target], document)
    else:
        raise UnsupportedKustomization(f"$patch: {action}")


def _merge(into: Object, patch: Object) -> None:
    for name, value in patch.items():
        if isinstance(value, list):
            raise UnsupportedKustomization("list merges (strategic-merge keys) not implemented")
        if isinstance(value, dict) and isinstance(into.get(name), dict):
            _merge(into[name], value)
        else:
            into[name] = copy.deepcopy(value)


def _label(objects: Iterable[Object], label: Object) -> None:
    if set(label) - {"pairs", "includeSelectors", "includeTemplates"} \
            or label.get("includeSelectors") or label.get("includeTemplates"):
        raise UnsupportedKustomization(f"labels entry {label}")
    for obj in objects:
        obj.setdefault("metadata", {}).setdefault("labels", {}).update(label["pairs"])


def _image(objects: Iterable[Object], image: Object) -> None:
    if set(image) - {"name", "newName", "newTag", "digest"}:
        raise UnsupportedKustomization(f"images entry {image}")
    for container in _containers(list(objects)):
        name, tag = _split_image(container.get("image", ""))
        if name != image["name"]:
            continue
        new = image.get("newName", name)
        if "digest" in image:
            container["image"] = f"{new}@{image['digest']}"
        elif "newTag" in image:
            container["image"] = f"{new}:{image['newTag']}"
        else:
            container["image"] = new + tag


def _split_image(image: str) -> tuple[str, str]:
    """``name`` and the rest (``:tag``, ``@digest`` or nothing)."""
    if "@" in image:
        name, digest = image.split("@", 1)
        return name, "@" + digest
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        return image[:colon], image[colon:]
    return image, ""


def _containers(node: Any) -> Iterator[Object]:
    """Every entry of a ``containers`` or ``initContainers`` list, at any depth."""
    if isinstance(node, dict):
        for name, value in node.items():
            if name in ("containers", "initContainers") and isinstance(value, list):
                yield from (c for c in value if isinstance(c, dict))
            else:
                yield from _containers(value)
    elif isinstance(node, list):
        for item in node:
            yield from _containers(item)
