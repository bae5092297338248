"""Fixtures shared by the whole test session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from hpcbridge.store import Store
from tests.services.ray_head import RayHead
from tests.services.redis_server import RedisServer
from tests.services.slurm import SlurmCluster
from tests.services.sshd import SshServer


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """A real single-node Slurm cluster with slurmrestd, stopped when the session ends."""
    with SlurmCluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def sshd(slurm_cluster: SlurmCluster) -> Iterator[SshServer]:
    """A real sshd on 127.0.0.1 letting the cluster's job user in by key: a login node
    whose sessions run Slurm's commands against ``slurm_cluster`` (SLURM_CONF is set by
    the server, as a site would)."""
    with SshServer(slurm_cluster.user,
                   environment={"SLURM_CONF": str(slurm_cluster.conf_path)}) as server:
        yield server


@pytest.fixture(scope="session")
def ray_head() -> Iterator[RayHead]:
    """A real single-node Ray head with token authentication, stopped when the session ends."""
    with RayHead() as head:
        yield head


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis_server.client()
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def store(redis_client: redis.Redis) -> Store:
    return Store(redis_client)
