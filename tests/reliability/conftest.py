"""Fixtures of the reliability suite, and its figures at the end of the session.

The suite's Redis asks for a password and the mirror's kubeconfig carries a bearer
token: with the Slurm tokens, these are the credentials ``test_secrets`` looks for in
everything the suite produced. ``test_secrets`` runs last, whatever the order asked.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.emulators.kube_apiserver import KubeApiEmulator
from tests.reliability import EVIDENCE, FIGURES, Stack, register_redis
from tests.reliability.slurm import slurm_stack_targets
from tests.services.redis_server import RedisServer
from tests.services.slurm import SlurmCluster

_SPENT = {"s": 0.0}
_KUBE_RESOURCES = ("namespaces", "configmaps", "pods", "events", "nodes", "leases",
                   "serviceaccounts")


class SecretRedis:
    """A redis-server (AOF on) that asks for a password, as a production one does."""

    def __init__(self, server: RedisServer, password: str) -> None:
        self.server = server
        self.password = password
        self.url = server.url.replace("redis://", f"redis://:{password}@", 1)


@pytest.fixture(scope="package")
def secret_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecretRedis]:
    server = RedisServer(tmp_path_factory.mktemp("reliability-redis")).start()
    password = EVIDENCE.credential("redis password", "rp-" + secrets.token_urlsafe(24))
    client = server.client()
    client.config_set("requirepass", password)
    client.close()
    store = SecretRedis(server, password)
    register_redis("redis (suite)", store.url)
    yield store
    EVIDENCE.freeze("redis (suite)")
    server.stop()


@pytest.fixture(scope="package")
def kube() -> Iterator[KubeApiEmulator]:
    with KubeApiEmulator() as emulator:
        EVIDENCE.source("kubernetes objects", lambda: json.dumps(
            {resource: emulator.objects(resource) for resource in _KUBE_RESOURCES},
            default=str))
        yield emulator
        EVIDENCE.freeze("kubernetes objects")


@pytest.fixture(scope="package")
def kubeconfig(kube: KubeApiEmulator, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kubeconfig for the emulator whose user has a bearer token, as a service
    account's would (the emulator accepts any)."""
    path = kube.write_kubeconfig(tmp_path_factory.mktemp("kube") / "kubeconfig")
    config = yaml.safe_load(path.read_text())
    token = EVIDENCE.credential("kubernetes token", "kt-" + secrets.token_urlsafe(32))
    config["users"][0]["user"]["token"] = token
    path.write_text(yaml.safe_dump(config))
    return path


# -- the bridges most tests share (one stack start each, for the whole package) ------------

#: The size limit of the shared stacks' events (small, so that 413 is cheap to reach).
MAX_EVENT_BYTES = 64 * 1024


@pytest.fixture(scope="package")
def plain(secret_redis: SecretRedis,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A bridge with two local targets: ``local`` (8 slots) and ``fuzz`` (4)."""
    base = tmp_path_factory.mktemp("plain")
    targets = {name: {"kind": "local", "workdir": str(base / name), "slots": slots,
                      "kill_grace_s": 1} for name, slots in (("local", 8), ("fuzz", 4))}
    with Stack(secret_redis.url, targets, base,
               HPCBRIDGE_MAX_EVENT_BYTES=str(MAX_EVENT_BYTES)).running() as stack:
        yield stack


@pytest.fixture(scope="package")
def mirrored(secret_redis: SecretRedis, kubeconfig: Path,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A bridge mirrored into the Kubernetes API emulator: target ``local`` (4 slots)."""
    base = tmp_path_factory.mktemp("mirrored")
    targets = {"local": {"kind": "local", "workdir": str(base / "work"), "slots": 4,
                         "kill_grace_s": 1}}
    with Stack(secret_redis.url, targets, base, KUBECONFIG=str(kubeconfig),
               HPCBRIDGE_NAMESPACE="default").running() as stack:
        yield stack


@pytest.fixture(scope="package")
def slurm_stack(secret_redis: SecretRedis, slurm_cluster: SlurmCluster,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A bridge with target ``hpc`` on the real Slurm cluster.

    Its submit claim is 5 s, not the function tests' 2 s: a claim must outlast a
    manager's answer to a submission (120 s against slurmrestd's 30 s timeout in
    production), or a duplicate delivery takes over a submission still in flight and
    submits a second job; a loaded CI machine can make slurmrestd take 2 s."""
    base = tmp_path_factory.mktemp("slurm-stack")
    with Stack(secret_redis.url, slurm_stack_targets(slurm_cluster, base), base,
               HPCBRIDGE_SUBMIT_CLAIM_S="5").running() as stack:
        yield stack


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``test_secrets`` scans what every other test here produced: it goes last in the
    package (not last in the session, so that the package's fixtures are not set up twice)."""
    last = [item for item in items if item.nodeid.startswith("tests/reliability/test_secrets")]
    others = [item for item in items if item not in last]
    ours = [n for n, item in enumerate(others) if item.nodeid.startswith("tests/reliability/")]
    if last and ours:
        items[:] = others[:ours[-1] + 1] + last + others[ours[-1] + 1:]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.nodeid.startswith("tests/reliability/"):
        _SPENT["s"] += report.duration


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if not FIGURES.counts and not FIGURES.notes:
        return
    counts = FIGURES.counts
    write = terminalreporter.write_line
    terminalreporter.section("hpc-bridge reliability and security suite")
    rows = [
        ("deliveries made (HTTP posts of job events)", counts["deliveries"]),
        ("  of which redeliveries after 5xx/no answer", counts["redeliveries"]),
        ("  duplicate deliveries (at-least-once)", counts["duplicates"]),
        ("native jobs checked", counts["jobs"]),
        ("poll ticks sent", counts["ticks"]),
        ("faults injected", counts["faults"]),
        ("  process kills at fault points", counts["kills"]),
        ("  outages (Redis, slurmrestd, Kubernetes API)", counts["outages"]),
        ("hostile inputs tried", counts["inputs"]),
        ("  injection payloads run as jobs", counts["injections"]),
        ("secrets scanned for", counts["secrets"]),
        ("  pieces of evidence scanned", counts["evidence"]),
        ("  bytes scanned", counts["evidence_bytes"]),
        ("requests under load", counts["load_requests"]),
    ]
    for label, value in rows:
        write(f"{label:<48} {value:>10}")
    for name, text in sorted(FIGURES.notes.items()):
        write(f"{name}: {text}")
    gaps = [report for report in terminalreporter.stats.get("xfailed", [])
            if report.nodeid.startswith("tests/reliability/")]
    if gaps:
        write(f"known gaps (strict xfail, they fail the suite once fixed): {len(gaps)}")
        for report in gaps:
            write(f"  {report.nodeid.split('::', 1)[1]}: {report.wasxfail}")
    write(f"time in this suite's tests (setup, call, teardown): {_SPENT['s']:.0f} s")
