"""What the Kubernetes mirror shows, compared with Redis (the truth)."""

from __future__ import annotations

import json
from collections.abc import Iterable

from hpcbridge.naming import object_name
from tests.emulators.kube_apiserver import KubeApiEmulator
from tests.reliability import Stack

__all__ = ["PHASES", "mirror_disagrees"]

#: The pod phase of each state (the README's mapping).
PHASES = {"ACCEPTED": "Pending", "QUEUED": "Pending", "SUSPENDED": "Pending",
          "RUNNING": "Running", "SUCCEEDED": "Succeeded", "FAILED": "Failed",
          "CANCELLED": "Failed", "UNKNOWN": "Unknown"}


def mirror_disagrees(kube: KubeApiEmulator, stack: Stack, job_ids: Iterable[str],
                     namespace: str = "default") -> dict[str, str]:
    """Jobs whose ConfigMap or pod does not show their state in Redis, and why."""
    maps = {m["metadata"]["name"]: m for m in kube.objects("configmaps", namespace)}
    pods = {p["metadata"]["name"]: p for p in kube.objects("pods", namespace)}
    states = stack.states(job_ids)
    wrong = {}
    for job_id in job_ids:
        state = states.get(job_id)
        config_map = maps.get(object_name(job_id))
        if config_map is None:
            wrong[job_id] = f"no ConfigMap (Redis: {state})"
            continue
        shown = json.loads(config_map["data"]["status.json"])["state"]
        if shown != state:
            wrong[job_id] = f"ConfigMap shows {shown}, Redis has {state}"
            continue
        pod = pods.get(object_name(job_id))
        if pod is not None and pod["status"].get("phase") != PHASES[str(state)]:
            wrong[job_id] = f"pod phase {pod['status'].get('phase')}, Redis has {state}"
    return wrong
