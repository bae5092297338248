"""Settings from the environment, read once per process.

Every knob the bridge has is here, with its environment variable and default; the README's
configuration section lists the same table.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

from adapters.base import ConfigError
from hpcbridge.s3 import BucketConfig

__all__ = ["Settings"]


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {raw!r}") from None
    if value < 0:
        raise ConfigError(f"{name} must not be negative")
    return value


def _switch(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").lower()
    if not raw:
        return default
    if raw not in ("on", "off", "true", "false", "1", "0"):
        raise ConfigError(f"{name} must be on or off, not {raw!r}")
    return raw in ("on", "true", "1")


def _mirror_wanted(env: Mapping[str, str]) -> bool:
    """Mirror when a cluster is there (in-cluster, else KUBECONFIG) unless turned off."""
    choice = (env.get("HPCBRIDGE_MIRROR") or "auto").lower()
    if choice not in ("auto", "on", "off"):
        raise ConfigError(f"HPCBRIDGE_MIRROR must be auto, on or off, not {choice!r}")
    cluster = bool(env.get("KUBERNETES_SERVICE_HOST") or env.get("KUBECONFIG"))
    if choice == "on" and not cluster:
        raise ConfigError("HPCBRIDGE_MIRROR=on but no cluster: neither in-cluster "
                          "(KUBERNETES_SERVICE_HOST) nor KUBECONFIG")
    return cluster and choice != "off"


def _sender_auth(env: Mapping[str, str]) -> str:
    """How a request's sender is known: ``off`` (it is not) or ``tokenreview``."""
    choice = (env.get("HPCBRIDGE_SENDER_AUTH") or "off").lower()
    if choice not in ("off", "tokenreview"):
        raise ConfigError(f"HPCBRIDGE_SENDER_AUTH must be off or tokenreview, not {choice!r}")
    if choice == "tokenreview" and not (env.get("KUBERNETES_SERVICE_HOST")
                                        or env.get("KUBECONFIG")):
        raise ConfigError("HPCBRIDGE_SENDER_AUTH=tokenreview but no cluster to review tokens: "
                          "neither in-cluster (KUBERNETES_SERVICE_HOST) nor KUBECONFIG")
    return choice


def _names(env: Mapping[str, str], name: str) -> frozenset[str]:
    return frozenset(part.strip() for part in (env.get(name) or "").split(",") if part.strip())


@dataclasses.dataclass(frozen=True)
class Settings:
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "hpcbridge:"
    targets_file: str | None = None
    sink: str | None = None
    source: str = "/hpc-bridge"
    submit_claim_s: float = 120.0
    submit_wait_s: float = 20.0
    lost_after_s: float = 600.0
    poll_lease_s: float = 30.0
    max_event_bytes: int = 2 * 1024 * 1024
    namespace: str = "default"
    pod_image: str = "registry.k8s.io/pause:3.9"
    log_tail_lines: int = 20
    #: running jobs per target whose log tail one tick refreshes (least recent first)
    log_tail_jobs: int = 50
    #: output bytes per job kept in Redis when no bucket is configured
    outputs_redis_bytes: int = 1 << 20
    #: the largest output file copied to the bucket
    outputs_file_bytes: int = 64 << 20
    #: the S3-compatible bucket outputs go to (else Redis)
    bucket: BucketConfig | None = None
    mirror: bool = False
    namespace_isolation: bool = True
    sender_auth: str = "off"
    audience: str = "hpc-bridge"
    namespace_admins: frozenset[str] = frozenset()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls(
            redis_url=env.get("REDIS_URL") or cls.redis_url,
            redis_prefix=env.get("HPCBRIDGE_REDIS_PREFIX") or cls.redis_prefix,
            targets_file=env.get("HPCBRIDGE_TARGETS") or None,
            sink=env.get("K_SINK") or None,
            source=env.get("HPCBRIDGE_SOURCE") or cls.source,
            submit_claim_s=_number(env, "HPCBRIDGE_SUBMIT_CLAIM_S", cls.submit_claim_s),
            submit_wait_s=_number(env, "HPCBRIDGE_SUBMIT_WAIT_S", cls.submit_wait_s),
            lost_after_s=_number(env, "HPCBRIDGE_LOST_AFTER_S", cls.lost_after_s),
            poll_lease_s=_number(env, "HPCBRIDGE_POLL_LEASE_S", cls.poll_lease_s),
            max_event_bytes=int(_number(env, "HPCBRIDGE_MAX_EVENT_BYTES", cls.max_event_bytes)),
            namespace=env.get("HPCBRIDGE_NAMESPACE") or cls.namespace,
            pod_image=env.get("HPCBRIDGE_POD_IMAGE") or cls.pod_image,
            mirror=_mirror_wanted(env),
            namespace_isolation=_switch(env, "HPCBRIDGE_NAMESPACE_ISOLATION", True),
            sender_auth=_sender_auth(env),
            audience=env.get("HPCBRIDGE_AUDIENCE") or cls.audience,
            namespace_admins=_names(env, "HPCBRIDGE_NAMESPACE_ADMINS"),
            log_tail_lines=int(_number(env, "HPCBRIDGE_LOG_TAIL_LINES", cls.log_tail_lines)),
            log_tail_jobs=int(_number(env, "HPCBRIDGE_LOG_TAIL_JOBS", cls.log_tail_jobs)),
            outputs_redis_bytes=int(_number(env, "HPCBRIDGE_OUTPUTS_REDIS_BYTES",
                                            cls.outputs_redis_bytes)),
            outputs_file_bytes=int(_number(env, "HPCBRIDGE_OUTPUTS_FILE_BYTES",
                                           cls.outputs_file_bytes)),
            bucket=BucketConfig.from_env(env),
        )
