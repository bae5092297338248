"""One kept-open SSH connection to a login node, for adapters that drive a manager's CLI.

An adapter builds an :class:`SshConnection` from its target's settings with
:meth:`SshConnection.from_settings` (the keys are :data:`SSH_SETTINGS`; the adapter
refuses the ones neither it nor this module knows) and then:

* :meth:`SshConnection.run` runs a program given as an argv list and returns its exit
  status, stdout and stderr (:class:`Completed`); a non-zero status is not an error here,
  the adapter reads it. SSH hands the remote side one command line, which the user's
  login shell parses, so every argument is quoted with :func:`shlex.quote` on our side:
  user data is never shell syntax there. The login shell must be a POSIX one (sh, bash,
  dash, ksh, zsh); csh and tcsh quote differently and are not supported.
* :meth:`SshConnection.write_file`, :meth:`SshConnection.read_file` and
  :meth:`SshConnection.make_dirs` move files over SFTP, with no shell involved;
  :meth:`SshConnection.read_confined` reads a job's output file, never one outside the
  directory it names.

Settings read here:

``host`` (required), ``port`` (default 22), ``user`` (required)
    The login node and the account the commands run as.
``key_file`` or ``key_env`` (one required)
    The private key (OpenSSH or PEM, Ed25519, ECDSA or RSA, without passphrase), as a
    mounted Secret file or an environment variable. It is read at every connect, so a
    rotated Secret is picked up at the next one, and it never appears in messages.
``known_hosts_file`` (required)
    An OpenSSH ``known_hosts`` file with the login node's host key (for a port other than
    22 the entry reads ``[host]:port``). Host keys are always checked: an unknown host or
    a different key is a :class:`~adapters.base.ConfigError` naming this file.
``timeout_s`` (default 30)
    The limit for connecting, for opening a channel and for each command or file
    operation.

Errors: a login node that cannot be reached, a dropped connection or a command that
does not finish in time is :class:`~adapters.base.ManagerUnavailable`; a refused key is
:class:`~adapters.base.AuthenticationFailed`; a missing or unreadable key or known_hosts
file, an unknown or changed host key, or a remote path the user may not write is
:class:`~adapters.base.ConfigError`.

One connection is kept per :class:`SshConnection` and shared by all threads. It is
opened on first use and opened again when it was dropped: a command whose channel could
not be opened on a dead connection is retried once on a new one (it never started), a
command that was running when the connection dropped is not (it may have run). At most
:data:`MAX_COMMANDS` commands run at once, below OpenSSH's default ``MaxSessions`` (10)
with the SFTP session counted.
"""

from __future__ import annotations

import dataclasses
import io
import os
import posixpath
import select
import shlex
import socket
import stat
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Self, TypeVar

import paramiko

from adapters import _settings
from adapters.base import (
    AuthenticationFailed,
    ConfigError,
    ManagerUnavailable,
    OutputMissing,
    OutputTooLarge,
)
from hpcbridge.credentials import Credential, CredentialError

__all__ = ["MAX_COMMANDS", "SSH_SETTINGS", "Completed", "SshConnection"]

#: The settings :meth:`SshConnection.from_settings` reads.
SSH_SETTINGS = frozenset({"host", "port", "user", "key_file", "key_env", "known_hosts_file",
                          "timeout_s"})
#: Commands running at once over one connection; more wait for a free channel.
MAX_COMMANDS = 8

_KEY_TYPES = (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey)
_CHUNK = 1 << 16
_KEEPALIVE_S = 30
_CONNECTION_ERRORS = (paramiko.SSHException, EOFError, OSError)

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, slots=True)
class Completed:
    """A remote command that ran to its end."""

    exit_status: int
    stdout: str
    stderr: str


class _UnknownHost(Exception):
    pass


class _RejectUnknownHost(paramiko.MissingHostKeyPolicy):
    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> None:
        raise _UnknownHost(hostname)


class SshConnection:
    """A lazily opened, self-repairing SSH connection to ``user@host:port``."""

    def __init__(self, target: str, *, host: str, user: str, key: Credential,
                 known_hosts_file: str, port: int = 22, timeout_s: float = 30.0) -> None:
        self.target = target
        self.where = f"{user}@{host}:{port}"
        self._host, self._port, self._user = host, port, user
        self._key = key
        self._known_hosts = known_hosts_file
        self._timeout = timeout_s
        self._lock = threading.Lock()  # guards _client
        self._sftp_lock = threading.Lock()  # one SFTP request at a time
        self._commands = threading.BoundedSemaphore(MAX_COMMANDS)
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None

    @classmethod
    def from_settings(cls, target: str, settings: Mapping[str, Any]) -> Self:
        """The connection a target's settings describe; keys outside SSH_SETTINGS are
        left to the caller."""
        key = _settings.require_credential(target, _settings.credential(target, settings, "key"),
                                           "key", " (the SSH private key)")
        port = settings.get("port", 22)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ConfigError(f"target {target!r}: port must be a TCP port number")
        timeout = _settings.positive(target, settings, "timeout_s", 30)
        known_hosts = _settings.absolute_path(target, settings, "known_hosts_file",
                                              quote_key=False)
        return cls(target, host=_settings.needed(target, settings, "host"),
                   user=_settings.needed(target, settings, "user"), key=key,
                   known_hosts_file=known_hosts, port=port, timeout_s=timeout)

    # --- commands ----------------------------------------------------------------------

    def run(self, argv: Sequence[str]) -> Completed:
        """Run ``argv`` on the remote side, each argument quoted; wait for its end."""
        if not argv or any(not isinstance(a, str) or "\0" in a for a in argv):
            raise ValueError("argv must be a non-empty list of strings without NUL")
        program = argv[0]
        if not self._commands.acquire(timeout=self._timeout):
            raise self._unavailable(f"no free channel to run {program} within "
                                    f"{self._timeout:g} s")
        try:
            channel = self._open_channel(program)
            try:
                try:
                    channel.exec_command(shlex.join(argv))
                except _CONNECTION_ERRORS as exc:
                    self._drop()
                    raise self._unavailable(f"lost the connection starting {program}: "
                                            f"{_describe(exc)}") from None
                return self._collect(channel, program)
            finally:
                channel.close()
        finally:
            self._commands.release()

    def _open_channel(self, program: str) -> paramiko.Channel:
        """A session channel. A kept connection that fails to give one is dropped and a
        new one tried once: nothing ran yet."""
        for attempt in range(2):
            client = self._connected()
            try:
                return _session(client, self._timeout)
            except paramiko.ChannelException as exc:  # the server refused this channel
                raise self._unavailable(f"cannot open a channel to run {program}: "
                                        f"{_describe(exc)}") from None
            except _CONNECTION_ERRORS as exc:
                self._drop(client)
                if attempt:
                    raise self._unavailable(f"cannot open a channel to run {program}: "
                                            f"{_describe(exc)}") from None
        raise AssertionError("unreachable")

    def _collect(self, channel: paramiko.Channel, program: str) -> Completed:
        """Read stdout and stderr together (neither may fill the window) until the end."""
        out, err = bytearray(), bytearray()
        deadline = time.monotonic() + self._timeout
        while True:
            if channel.recv_ready():
                out += channel.recv(_CHUNK)
            elif channel.recv_stderr_ready():
                err += channel.recv_stderr(_CHUNK)
            elif channel.eof_received or channel.closed:
                break
            elif time.monotonic() >= deadline:
                raise self._unavailable(f"{program} did not finish within "
                                        f"{self._timeout:g} s")
            else:
                select.select([channel], [], [], min(deadline - time.monotonic(), 1.0))
        if not channel.status_event.wait(max(deadline - time.monotonic(), 0)):
            raise self._unavailable(f"{program} did not finish within {self._timeout:g} s")
        status = channel.recv_exit_status()
        if status < 0 and not _active(self._client):
            self._drop()
            raise self._unavailable(f"the connection dropped while {program} ran")
        return Completed(status, out.decode(errors="replace"), err.decode(errors="replace"))

    # --- files -------------------------------------------------------------------------

    def write_file(self, path: str, data: str | bytes, mode: int = 0o600) -> None:
        """Create or replace the remote file ``path``; its mode is set before any byte."""
        content = data.encode() if isinstance(data, str) else data

        def write(sftp: paramiko.SFTPClient) -> None:
            with sftp.open(path, "wb") as handle:
                handle.chmod(mode)
                handle.write(content)

        self._sftp_call(write, f"write {path}")

    def read_file(self, path: str, *, tail_lines: int | None = None) -> str:
        """The remote file's text, or its last ``tail_lines`` lines (read from the end).

        Raises :class:`FileNotFoundError` when there is no such file.
        """
        def read(sftp: paramiko.SFTPClient) -> bytes:
            with sftp.open(path, "rb") as handle:
                if tail_lines is None:
                    handle.prefetch()
                    return handle.read()
                return _tail(handle, tail_lines)

        data = self._sftp_call(read, f"read {path}")
        text = data.decode(errors="replace")
        if tail_lines is None:
            return text
        return "".join(text.splitlines(keepends=True)[-tail_lines:]) if tail_lines > 0 else ""

    def read_confined(self, root: str, relative: str, limit: int) -> bytes:
        """The bytes of the remote file ``root/relative``, at most ``limit`` of them.

        ``root`` may be relative: to the directory SFTP sessions start in, the user's
        home. The server resolves both paths (SFTP realpath, symlinks included), and a
        file whose real path leaves ``root`` is refused. So is anything but a regular file
        (checked with lstat, which also refuses a symlink a server left unresolved), before
        it is opened: a FIFO would block. Raises :class:`~adapters.base.OutputMissing` and
        :class:`~adapters.base.OutputTooLarge` (past ``limit``, not read).
        """
        def read(sftp: paramiko.SFTPClient) -> bytes:
            try:
                base = sftp.normalize(root)
                full = sftp.normalize(posixpath.join(base, relative))
            except (FileNotFoundError, NotADirectoryError):
                raise OutputMissing(f"{relative}: no such file") from None
            except PermissionError:
                raise OutputMissing(f"{relative}: cannot be read (permission denied)") \
                    from None
            if not _inside(full, base):
                raise OutputMissing(f"{relative}: leads outside the job's working directory")
            try:
                info = sftp.lstat(full)
                if info.st_mode is None or not stat.S_ISREG(info.st_mode):
                    raise OutputMissing(f"{relative}: not a regular file")
                size = info.st_size or 0
                if size > limit:
                    raise OutputTooLarge(relative, size, limit)
                with sftp.open(full, "rb") as handle:
                    handle.prefetch(size)
                    data = handle.read(limit + 1)
            except FileNotFoundError:
                raise OutputMissing(f"{relative}: no such file") from None
            except PermissionError:
                raise OutputMissing(f"{relative}: cannot be read (permission denied)") \
                    from None
            if len(data) > limit:  # it grew since the lstat
                raise OutputTooLarge(relative, len(data), limit)
            return data

        return self._sftp_call(read, f"read {posixpath.join(root, relative)}")

    def make_dirs(self, path: str, mode: int = 0o700) -> None:
        """Create the remote directory ``path`` and its missing parents, like mkdir -p."""
        def make(sftp: paramiko.SFTPClient) -> None:
            missing = []
            current = path.rstrip("/") or "/"
            while not _is_dir(sftp, current):
                missing.append(current)
                parent = os.path.dirname(current)
                if parent == current:
                    break
                current = parent
            for directory in reversed(missing):
                try:
                    sftp.mkdir(directory, mode)
                except OSError:
                    if not _is_dir(sftp, directory):  # made meanwhile by someone else?
                        raise

        self._sftp_call(make, f"create directory {path}")

    def _sftp_call(self, operation: Callable[[paramiko.SFTPClient], T], what: str) -> T:
        """Run an idempotent SFTP operation, once more on a new SFTP session (and a new
        connection, if the kept one died) when the session was gone; remote file errors
        become the adapter's errors."""
        with self._sftp_lock:
            for attempt in range(2):
                try:
                    return operation(self._sftp_client())
                except FileNotFoundError:
                    raise
                except (PermissionError, IsADirectoryError, NotADirectoryError) as exc:
                    raise ConfigError(f"target {self.target!r}: cannot {what} on "
                                      f"{self.where}: {_describe(exc)}") from None
                except TimeoutError:
                    self._drop()  # silent for this long: the connection is not to be trusted
                    raise self._unavailable(f"no answer within {self._timeout:g} s to "
                                            f"{what}") from None
                except _CONNECTION_ERRORS as exc:
                    if self._sftp_alive():  # the server answered: it could not do it
                        raise self._unavailable(f"cannot {what}: {_describe(exc)}") from None
                    self._sftp = None
                    if attempt:
                        raise self._unavailable(f"lost the connection trying to {what}: "
                                                f"{_describe(exc)}") from None
        raise AssertionError("unreachable")

    def _sftp_client(self) -> paramiko.SFTPClient:
        if self._sftp is None or self._sftp.get_channel().closed:
            client = self._connected()
            try:
                self._sftp = client.open_sftp()
            except _CONNECTION_ERRORS as exc:
                raise EOFError(f"cannot start SFTP: {_describe(exc)}") from None
            self._sftp.get_channel().settimeout(self._timeout)
        return self._sftp

    def _sftp_alive(self) -> bool:
        channel = self._sftp.get_channel() if self._sftp is not None else None
        if channel is None or channel.closed:
            return False
        transport = channel.get_transport()
        return transport is not None and transport.is_active()

    # --- the connection ----------------------------------------------------------------

    def _connected(self) -> paramiko.SSHClient:
        with self._lock:
            if self._client is not None and _active(self._client):
                return self._client
            if self._client is not None:
                self._client.close()
                self._client = None
            self._client = self._connect()
            return self._client

    def _connect(self) -> paramiko.SSHClient:
        key = self._private_key()
        client = paramiko.SSHClient()
        try:
            client.load_system_host_keys(self._known_hosts)
        except OSError as exc:
            raise ConfigError(f"target {self.target!r}: cannot read known_hosts_file "
                              f"{self._known_hosts}: {_describe(exc)}") from None
        client.set_missing_host_key_policy(_RejectUnknownHost())
        try:
            sock = socket.create_connection((self._host, self._port), self._timeout)
            # Without it every command waits out the peer's delayed ACK: 47 ms, not 7.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client.connect(self._host, self._port, username=self._user, pkey=key, sock=sock,
                           timeout=self._timeout, banner_timeout=self._timeout,
                           auth_timeout=self._timeout, channel_timeout=self._timeout,
                           allow_agent=False, look_for_keys=False)
        except _UnknownHost as exc:
            client.close()
            raise ConfigError(f"target {self.target!r}: the SSH host {exc} has no entry in "
                              f"known_hosts_file {self._known_hosts}; add its host key "
                              "there (host keys are always checked)") from None
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise ConfigError(f"target {self.target!r}: the SSH host {exc.hostname} "
                              f"presented a {exc.key.get_name()} host key that differs from "
                              f"the one in known_hosts_file {self._known_hosts}: refusing "
                              "to connect") from None
        except paramiko.AuthenticationException:
            client.close()
            raise AuthenticationFailed(
                f"target {self.target!r}: the SSH server at {self.where} refused the key "
                f"from {self._key.where} for user {self._user!r} (is its public key in that "
                "user's authorized_keys?)") from None
        except TimeoutError:
            client.close()
            raise self._unavailable(f"no answer within {self._timeout:g} s") from None
        except _CONNECTION_ERRORS as exc:
            client.close()
            raise self._unavailable(_describe(exc)) from None
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(_KEEPALIVE_S)
        return client

    def _private_key(self) -> paramiko.PKey:
        try:
            text = self._key.value()
        except CredentialError as exc:
            raise ConfigError(f"target {self.target!r}: {exc}") from None
        for key_type in _KEY_TYPES:
            try:
                return key_type.from_private_key(io.StringIO(text + "\n"))
            except paramiko.PasswordRequiredException:
                raise ConfigError(f"target {self.target!r}: the private key in "
                                  f"{self._key.where} is encrypted; give one without a "
                                  "passphrase") from None
            except (paramiko.SSHException, ValueError):
                continue
        raise ConfigError(f"target {self.target!r}: {self._key.where} holds no private key "
                          "paramiko can read (OpenSSH or PEM; Ed25519, ECDSA or RSA)")

    def _drop(self, client: paramiko.SSHClient | None = None) -> None:
        """Forget the kept connection (``client``, if it is still the kept one)."""
        with self._lock:
            if self._client is not None and client in (None, self._client):
                self._client.close()
                self._client = None

    def _unavailable(self, detail: str) -> ManagerUnavailable:
        return ManagerUnavailable(f"target {self.target!r}: SSH to {self.where}: {detail}")

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
            self._sftp = None


def _active(client: paramiko.SSHClient | None) -> bool:
    transport = client.get_transport() if client is not None else None
    return transport is not None and transport.is_active()


def _session(client: paramiko.SSHClient, timeout: float) -> paramiko.Channel:
    transport = client.get_transport()
    if transport is None:
        raise EOFError("not connected")
    return transport.open_session(timeout=timeout)


def _describe(exc: BaseException) -> str:
    """An exception as words: its text, else its type (paramiko's are often bare)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _is_dir(sftp: paramiko.SFTPClient, path: str) -> bool:
    try:
        mode = sftp.stat(path).st_mode
    except FileNotFoundError:
        return False
    return mode is not None and stat.S_ISDIR(mode)


def _inside(path: str, directory: str) -> bool:
    """Whether the normalized ``path`` is ``directory`` or lies under it."""
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def _tail(handle: paramiko.SFTPFile, lines: int) -> bytes:
    """Enough of the end of an open file to hold its last ``lines`` lines."""
    if lines <= 0:
        return b""
    position = handle.stat().st_size or 0
    data = b""
    while position > 0 and data.count(b"\n") <= lines:
        step = min(_CHUNK, position)
        position -= step
        handle.seek(position)
        data = handle.read(step) + data
    return data

