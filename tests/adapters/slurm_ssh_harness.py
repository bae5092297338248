"""The conformance harness of the ``slurm-ssh`` adapter: the session's real Slurm cluster,
driven over a real sshd (its "login node") with the cluster's job user."""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path
from typing import Any

from adapters._ssh import SshConnection
from adapters.slurm_ssh import SlurmSshAdapter
from hpcbridge.dev import free_port
from hpcbridge.model import JobRequest
from tests.adapters import build_request
from tests.adapters.counting_connection import CountingConnection
from tests.adapters.slurm_harness import ClusterHarness
from tests.services.slurm import SlurmCluster
from tests.services.sshd import SshServer, generate_key

__all__ = ["CountingConnection", "SlurmSshHarness"]

_TARGET = "slurm-ssh-test"


class SlurmSshHarness(ClusterHarness):
    """A :class:`SlurmSshAdapter` logging in to ``sshd`` as the cluster's job user.

    ``remote_dir`` is a fresh directory inside the cluster's work directory, left for the
    adapter to create. The cluster keeps no accounting, and the target says so
    (``accounting: false``).
    """

    target = _TARGET

    def __init__(self, cluster: SlurmCluster, sshd: SshServer) -> None:
        super().__init__(cluster)
        self.sshd = sshd
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
