"""Names and labels of the bridge's objects in Kubernetes.

Kept apart from :mod:`hpcbridge.mirror` so that code which only needs a name (the cancel
function reading a pod's labels) does not import the Kubernetes client.
"""

from __future__ import annotations

import re

__all__ = [
    "JOB_ID_LABEL",
    "MANAGED_BY",
    "NATIVE_ID_ANNOTATION",
    "STATE_LABEL",
    "TARGET_LABEL",
    "VIRTUAL_NODE_TAINT",
    "node_name",
    "object_name",
]

MANAGED_BY = ("app.kubernetes.io/managed-by", "hpc-bridge")
JOB_ID_LABEL = "hpcbridge.io/job-id"
TARGET_LABEL = "hpcbridge.io/target"
STATE_LABEL = "hpcbridge.io/state"
NATIVE_ID_ANNOTATION = "hpcbridge.io/native-id"
VIRTUAL_NODE_TAINT = "hpcbridge.io/virtual-node"


def object_name(job_id: str) -> str:
    """The name of a job's ConfigMap and Pod (job ids are DNS-1123 labels of <= 53)."""
    return f"hpcbridge-{job_id}"


def node_name(target: str) -> str:
    """The virtual Node of a target: lower-case, other characters as ``-``."""
    return "hpcbridge-" + re.sub(r"[^a-z0-9-]", "-", target.lower()).strip("-")
