"""A real OpenSSH server (Debian's openssh-server) on 127.0.0.1, started for a test session.

It stands in for a cluster's login node. Everything is private to one directory: its
``sshd_config``, a host key generated for it, the ``known_hosts`` file a client needs to
trust that key (``[127.0.0.1]:<port>``), a client key pair whose public half is the only
authorized key, the pid file and the log. It accepts only public-key logins of one
ordinary account; the listener runs in the foreground as a child of this process and is
stopped by its pid.

What differs from a production sshd, and why:

* ``UsePAM no``: without PAM, sshd refuses a locked account, so the user's password
  field is set to ``*`` (no password can match, but the account is not locked).
* ``StrictModes no``: the authorized keys live in a temporary directory under ``/tmp``,
  which is world-writable; a real login node keeps them in the user's ``~/.ssh``.
* ``MaxSessions`` and ``MaxStartups`` are raised, so tests can open many channels and
  connections at once.
* ``SetEnv`` sets the variables a login node's environment would have, e.g.
  ``SLURM_CONF`` for the test cluster (a real login node has its slurm.conf in the
  default place and needs none).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path

from hpcbridge.dev import free_port
from tests.services._daemon import Daemon, require_root, spawn, stop_process, wait_until

__all__ = ["SshServer", "generate_key"]

_SSHD = "/usr/sbin/sshd"
_PRIVSEP_DIR = Path("/run/sshd")


def generate_key(path: Path, comment: str = "hpcbridge-test") -> str:
    """Write a new Ed25519 key pair to ``path`` and ``path.pub``; return the public line."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f",
                    str(path)], check=True, capture_output=True)
    return path.with_suffix(path.suffix + ".pub").read_text().strip()


class SshServer(Daemon):
    """sshd on a free loopback port, letting ``user`` in with :attr:`key_file`."""

    name = "sshd"
    dir_prefix = "hpcbridge-sshd-"
    host = "127.0.0.1"

    def __init__(self, user: str, *, environment: Mapping[str, str] | None = None,
                 startup_timeout: float = 15.0) -> None:
        super().__init__(None, startup_timeout)
        self.user = user
        self._environment = dict(environment or {})
        self._proc: subprocess.Popen[bytes] | None = None
        self._made_home: Path | None = None
        self.port = 0

    @property
    def key_file(self) -> Path:
        """The private key of the one authorized key pair."""
        return self.root / "client_ed25519"

    @property
    def host_key_file(self) -> Path:
        return self.root / "ssh_host_ed25519_key"

    @property
    def known_hosts_file(self) -> Path:
        return self.root / "known_hosts"

    @property
    def log_file(self) -> Path:
        return self.root / "sshd.log"

    def known_hosts_line(self, port: int | None = None) -> str:
        """The known_hosts entry of this server's host key, for ``port`` (default: its own)."""
        key = self.host_key_file.with_suffix(".pub").read_text().split()
        return f"[{self.host}]:{port or self.port} {key[0]} {key[1]}"

    def _prepare(self) -> None:
        require_root("the test sshd must be started as root: it switches to the user of "
                     "each login")
        missing = [tool for tool in (_SSHD, "ssh-keygen") if shutil.which(tool) is None]
        if missing:
            raise RuntimeError("the test sshd needs Debian packages that are missing; "
                               "install them with: apt-get install -y "
                               "--no-install-recommends openssh-server openssh-client")
        self._prepare_account()
        _PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)

    def _launch(self) -> None:
        self.root.chmod(0o755)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "test-host",
                        "-f", str(self.host_key_file)], check=True, capture_output=True)
        authorized = self.root / "authorized_keys"
        authorized.write_text(generate_key(self.key_file) + "\n")
        authorized.chmod(0o644)
        self.port = free_port()
        self.known_hosts_file.write_text(self.known_hosts_line() + "\n")
        config = self.root / "sshd_config"
        config.write_text(self._config(authorized))
        self._proc = spawn([_SSHD, "-D", "-e", "-f", str(config)], self.log_file)
        wait_until(self._greets, self._timeout, "sshd", self.log_file, self._proc)

    def drop_connections(self) -> None:
        """Kill every connection's sshd processes, as a network cut or a restart would;
        the listener keeps accepting new ones."""
        if self._proc is None:
            return
        for pid in _descendants(self._proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _halt(self) -> None:
        if self._proc is not None:
            self.drop_connections()
            stop_process(self._proc)
            self._proc = None
        if self._made_home is not None:
            shutil.rmtree(self._made_home, ignore_errors=True)
            self._made_home = None

    def _prepare_account(self) -> None:
        """Unlock the account for key logins without PAM; give it its home directory."""
        subprocess.run(["usermod", "-p", "*", self.user], check=True, capture_output=True)
        account = pwd.getpwnam(self.user)
        home = Path(account.pw_dir)
        if not home.exists():
            home.mkdir(mode=0o755, parents=True)
            os.chown(home, account.pw_uid, account.pw_gid)
            self._made_home = home

    def _config(self, authorized: Path) -> str:
        lines = [
            f"Port {self.port}",
            f"ListenAddress {self.host}",
            f"HostKey {self.host_key_file}",
            f"PidFile {self.root / 'sshd.pid'}",
            f"AuthorizedKeysFile {authorized}",
            "AuthenticationMethods publickey",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "PermitRootLogin no",
            f"AllowUsers {self.user}",
            "StrictModes no",
            "MaxSessions 64",
            "MaxStartups 64:30:128",
            "LoginGraceTime 30",
            "PrintMotd no",
            "X11Forwarding no",
            "AllowTcpForwarding no",
            "Subsystem sftp internal-sftp",
            "LogLevel VERBOSE",
        ]
        if self._environment:
            lines.append("SetEnv " + " ".join(f'"{name}={value}"' for name, value
                                              in self._environment.items()))
        return "\n".join(lines) + "\n"

    def _greets(self) -> bool:
        """Whether the listener answers a connection with its SSH banner."""
        try:
            with socket.create_connection((self.host, self.port), timeout=2) as conn:
                return conn.recv(64).startswith(b"SSH-2.0-")
        except OSError:
            return False


def _descendants(pid: int) -> list[int]:
    """The pids of every process below ``pid``, children first."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(parent, []).append(int(entry))
    found: list[int] = []
    pending = list(parents.get(pid, []))
    while pending:
        child = pending.pop(0)
        found.append(child)
        pending.extend(parents.get(child, []))
    return found
