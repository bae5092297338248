"""The conformance harness of the ``slurm-ssh`` adapter: the session's real Slurm cluster,
driven over a real sshd (its "login node") with the cluster's job user."""

from __future__ import annotations

import os
import tempfile
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from adapters._ssh import Completed, SshConnection
from adapters.slurm_ssh import SlurmSshAdapter
from hpcbridge.dev import free_port
from hpcbridge.model import JobRequest
from tests.adapters import build_request, cancel_until_gone
from tests.services.slurm import SlurmCluster
from tests.services.sshd import SshServer, generate_key

__all__ = ["CountingConnection", "SlurmSshHarness"]

_TARGET = "slurm-ssh-test"
_ACTIVE = frozenset({"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED",
                     "REQUEUED", "RESIZING", "STAGE_OUT", "SIGNALING"})


class CountingConnection(SshConnection):
    """An :class:`SshConnection` that counts and records the commands it runs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands: list[list[str]] = []
        self._count_lock = threading.Lock()

    def run(self, argv: Sequence[str]) -> Completed:
        with self._count_lock:
            self.commands.append(list(argv))
        return super().run(argv)


class SlurmSshHarness:
    """A :class:`SlurmSshAdapter` logging in to ``sshd`` as the cluster's job user.

    ``remote_dir`` is a fresh directory inside the cluster's work directory, left for the
    adapter to create. The cluster keeps no accounting, and the target says so
    (``accounting: false``). Jobs that appear while the harness lives are cancelled by
    :meth:`close`.
    """

    target = _TARGET
    unknown_id = "999999999"
    #: Slurm's time limits are whole minutes, and slurmctld enforces them every 30 s.
    min_time_limit_s = 60
    wait_s = 30.0

    def __init__(self, cluster: SlurmCluster, sshd: SshServer) -> None:
        self.cluster = cluster
        self.sshd = sshd
        self.shared_dir = cluster.workdir / f"shared-{uuid.uuid4().hex[:8]}"
        self.shared_dir.mkdir()
        owner = cluster.workdir.stat()
        os.chown(self.shared_dir, owner.st_uid, owner.st_gid)
        self.remote_dir = cluster.workdir / f"ssh-{uuid.uuid4().hex[:8]}"
        self.settings: dict[str, Any] = {
            "kind": "slurm-ssh",
            "host": sshd.host,
            "port": sshd.port,
            "user": cluster.user,
            "key_file": str(sshd.key_file),
            "known_hosts_file": str(sshd.known_hosts_file),
            "remote_dir": str(self.remote_dir),
            "partition": cluster.partition,
            "accounting": False,
        }
        self.connection = CountingConnection.from_settings(_TARGET, self.settings)
        self.adapter = self.make(connection=self.connection)
        self._known = {job.job_id for job in cluster.jobs()}
        self._held: list[str] = []

    def make(self, connection: SshConnection | None = None,
             **changes: Any) -> SlurmSshAdapter:
        """An adapter for this target with ``changes`` to its settings (None drops one)."""
        settings = {k: v for k, v in {**self.settings, **changes}.items() if v is not None}
        return SlurmSshAdapter(_TARGET, settings, connection=connection)

    def calls(self) -> int:
        return len(self.connection.commands)

    def unreachable(self) -> SlurmSshAdapter:
        return self.make(port=free_port())

    def with_bad_credentials(self) -> tuple[SlurmSshAdapter, str]:
        """A key of the right format that is in no authorized_keys file."""
        key = self.new_key()
        return self.make(key_file=str(key)), key.read_text()

    def new_key(self) -> Path:
        directory = Path(tempfile.mkdtemp(prefix="key-", dir=self.cluster.root))
        key = directory / "id_ed25519"
        generate_key(key)
        return key

    def request(self, **overrides: Any) -> JobRequest:
        """A minimal valid request: ``true`` as a command, unless a script is given."""
        return build_request(_TARGET, overrides)

    def queued_job(self, **overrides: Any) -> str:
        """Submit to the cluster's DOWN partition, where Slurm keeps a job waiting;
        :meth:`release` moves the held jobs to the partition that runs them."""
        request = self.request(**{**overrides, "queue": self.cluster.held_partition})
        native_id = self.adapter.submit(request, f"queued-{uuid.uuid4().hex[:16]}")
        self._held.append(native_id)
        return native_id

    def release(self) -> None:
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
