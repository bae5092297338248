"""Secrets: no configured credential appears in anything the bridge produced.

The credentials of this suite: every Slurm token (a valid one, an expired one), the
Redis password (in ``REDIS_URL``, as a Secret would put it) and the mirror's Kubernetes
bearer token (in the kubeconfig). This test first walks the paths where a credential
could leak (refused credentials, a wrong Redis password, Kubernetes errors, a job that
prints its environment, an internal error), then scans everything the whole suite
produced: Redis keys and values, ConfigMaps, pods and events in the emulator, events
the brokers received, the functions' logs, job directories and outputs, and every HTTP
error answer. It runs last (see conftest).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from hpcbridge import events
from tests.emulators.kube_apiserver import KubeApiEmulator
from tests.functions.conftest import slurm_target, write_targets
from tests.reliability import (
    EVIDENCE,
    FIGURES,
    Stack,
    converge,
    deliver,
    local_done,
    post,
    secret_variants,
)
from tests.reliability.conftest import SecretRedis
from tests.reliability.slurm import SLURM_OVER
from tests.services.slurm import SlurmCluster


def provoke(mirrored: Stack, slurm_stack: Stack, redis: SecretRedis, kube: KubeApiEmulator,
            cluster: SlurmCluster, base: Path) -> None:
    """Make the bridge handle its credentials in every way it can go wrong."""
    base.mkdir(parents=True)
    printing = {stack: deliver(stack.submit_url, events.REQUESTED,
                               {"target": target, "command": ["sh", "-c", "env; set"]})
                for stack, target in ((slurm_stack, "hpc"), (mirrored, "local"))}
    expired = slurm_target(cluster, base)
    token = cluster.token(lifespan=-60)  # expired a minute ago
    Path(expired["token_file"]).write_text(token)
    EVIDENCE.credential("slurm token (expired)", token)
    targets = write_targets(base / "expired.yaml", {"expired": expired})
    with slurm_stack.one_function("submit", base / "expired", HPCBRIDGE_TARGETS=str(targets)) \
            as url:
        FIGURES.add("inputs")
        refused = post(url, events.REQUESTED, {"target": "expired", "command": ["true"]})
        assert refused.status_code == 503 and "authentication failed" in refused.text, \
            refused.text
    wrong = redis.url.replace(redis.password, "not-the-password")
    with mirrored.one_function("submit", base / "wrong-redis", REDIS_URL=wrong) as url:
        FIGURES.add("inputs")
        answer = post(url, events.REQUESTED, {"target": "local", "command": ["true"]})
        assert answer.status_code == 503, answer.text
    kube.fail_next("PATCH", "configmaps", 401)
    kube.fail_next("PATCH", "pods", 403, subresource="status")
    kube.fail_next("GET", "pods", 500)
    for stack, answer in printing.items():
        job_id = answer.headers["ce-subject"]
        job = stack.store.load(job_id)
        assert job is not None and job.status.native_id
        native_id = job.status.native_id
        if stack is mirrored:
            converge(stack, {job_id: "SUCCEEDED"},
                     lambda j, w=stack.targets["local"]["workdir"]: local_done(w, j))
        else:
            converge(stack, {job_id: "SUCCEEDED"},
                     lambda j, n=native_id: cluster.job_state(n) in SLURM_OVER)
    FIGURES.add("inputs")
    internal = httpx.post(mirrored.submit_url, content=b"\x00\x00\x00\x00\x00", timeout=60,
                          headers={"content-type": "application/json"})
    EVIDENCE.answer(mirrored.submit_url, internal)


def scan(evidence: dict[str, bytes], credentials: dict[str, str]) -> dict[str, list[str]]:
    """Which credentials (by name) appear, in any form, in which piece of evidence."""
    leaks: dict[str, list[str]] = {}
    for label, blob in evidence.items():
        for name, secret in credentials.items():
            if any(form.encode() in blob for form in secret_variants(secret)):
                leaks.setdefault(label, []).append(name)
    return leaks


@pytest.mark.slurm
def test_no_credential_appears_in_anything_the_bridge_produced(
        mirrored: Stack, slurm_stack: Stack, secret_redis: SecretRedis, kube: KubeApiEmulator,
        slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    provoke(mirrored, slurm_stack, secret_redis, kube, slurm_cluster, tmp_path / "provoke")
    evidence = EVIDENCE.collect()
    credentials = dict(EVIDENCE.credentials)
    kinds = {label.split(" ")[0] for label in credentials}
    assert {"slurm", "redis", "kubernetes"} <= kinds, credentials.keys()
    assert any("redis" in label for label in evidence) and \
        any("kubernetes" in label for label in evidence) and \
        any("broker" in label for label in evidence) and \
        any(label.endswith(".log") for label in evidence) and \
        any(label.startswith("http-error") for label in evidence), "everything was collected"
    for secret in credentials.values():  # the scan finds a credential in any of its forms
        for form in secret_variants(secret):
            assert scan({"planted": f"x{form}y".encode()}, credentials), form
    leaks = scan(evidence, credentials)
    FIGURES.add("secrets", len(credentials))
    FIGURES.add("evidence", len(evidence))
    FIGURES.add("evidence_bytes", sum(len(blob) for blob in evidence.values()))
    assert leaks == {}, f"credentials found in {leaks}"
