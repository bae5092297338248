"""The conformance harness of the ``slurm`` adapter, on the session's real Slurm cluster,
and what it shares with the ``slurm-ssh`` one."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from adapters.base import Adapter
from adapters.slurm import SlurmRestAdapter
from hpcbridge.model import JobRequest
from tests.adapters import HttpHarness, cancel_until_gone, secret_file
from tests.services.slurm import SlurmCluster, hs256_token

__all__ = ["ClusterHarness", "SlurmHarness"]

_ACTIVE = frozenset({"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED",
                     "REQUEUED", "RESIZING", "STAGE_OUT", "SIGNALING"})


class ClusterHarness:
    """What the harnesses on ``cluster`` share: a shared directory the job user owns, jobs
    held in a partition that is DOWN, and the cancelling of their jobs at :meth:`close`.

    Jobs submitted while the harness lives are cancelled by :meth:`close`, however they
    were submitted.
    """

    #: Slurm ids count up from 1 and never reach MaxJobId's default of 67043328.
    unknown_id = "999999999"
    #: Slurm's time limits are whole minutes, and slurmctld enforces them every 30 s.
    min_time_limit_s = 60
    wait_s = 30.0
    adapter: Adapter
    request: Callable[..., JobRequest]

    def __init__(self, cluster: SlurmCluster) -> None:
        self.cluster = cluster
        self.shared_dir = cluster.workdir / f"shared-{uuid.uuid4().hex[:8]}"
        self.shared_dir.mkdir()
        owner = cluster.workdir.stat()
        os.chown(self.shared_dir, owner.st_uid, owner.st_gid)
        self._known = {job.job_id for job in cluster.jobs()}
        self._held: list[str] = []

    def queued_job(self, **overrides: Any) -> str:
        """Submit ``request(**overrides)`` so that it stays QUEUED; return its native id.

        It goes to the cluster's partition that is DOWN: Slurm accepts jobs there and never
        starts them, so nothing else is blocked. :meth:`release` moves them to the
        partition that runs jobs.
        """
        request = self.request(**{**overrides, "queue": self.cluster.held_partition})
        native_id = self.adapter.submit(request, f"queued-{uuid.uuid4().hex[:16]}")
        self._held.append(native_id)
        return native_id

    def release(self) -> None:
        """Let the held jobs that still wait run, in the order they were submitted."""
        for native_id in self._held:
            if self.cluster.job_state(native_id) == "PENDING":
                self.cluster.scontrol("update", f"JobId={native_id}",
                                      f"Partition={self.cluster.partition}")
        self._held.clear()

    def close(self) -> None:
        """Cancel the jobs that appeared since the harness was made; wait until they end."""
        def active() -> list[str]:
            return [job.job_id for job in self.cluster.jobs()
                    if job.job_id not in self._known and job.state in _ACTIVE]

        cancel_until_gone(self.adapter, active, self.wait_s)
        self.adapter.close()


class SlurmHarness(ClusterHarness, HttpHarness[SlurmRestAdapter]):
    """A :class:`SlurmRestAdapter` for ``cluster``, with requests that fit it.

    The token is written to a file (mode 0600) in ``directory`` and named as
    ``token_file``, the way a mounted Secret is.
    """

    target = "slurm-test"
    adapter_class = SlurmRestAdapter

    def __init__(self, cluster: SlurmCluster, directory: Path | None = None, *,
                 transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(cluster)
        self._token_dir = directory or Path(tempfile.mkdtemp(prefix="harness-",
                                                             dir=cluster.root))
        self.token_file = self._token_file(cluster.token(lifespan=4 * 3600))
        self._connect({
            "kind": "slurm",
            "url": cluster.url,
            "user": cluster.user,
            "token_file": str(self.token_file),
            "output_dir": str(cluster.workdir),
            "outputs_root": str(cluster.workdir),
            "partition": cluster.partition,
        }, transport)

    def _token_file(self, token: str) -> Path:
        return secret_file(self._token_dir, token, prefix="slurm-token")

    def with_bad_credentials(self) -> tuple[SlurmRestAdapter, str]:
        """A token for the right user, signed with a key slurmctld does not have."""
        token = hs256_token(b"not the cluster's key" * 2, self.cluster.user, 3600)
        return self.make(token_file=str(self._token_file(token))), token
