"""The conformance harnesses of the ``lsf`` adapter, one per transport, on the LSF EMULATOR.

No LSF can run here: both drive :class:`tests.emulators.lsf.LsfEmulator`, whose jobs
are real local processes. ``lsf-web`` speaks to its Application Center web services;
``lsf-ssh`` logs in to the session's real sshd as its user and runs the emulator's LSF
commands there, with the emulator's ``profile.lsf`` as the target's ``profile``.

Each harness has an emulator of its own with two queues: ``normal`` (the default) and
``held``, which is inactive, so a job sent there waits until :meth:`release` switches it
to ``normal`` (``bswitch``). The emulator forgets a finished job after a CLEAN_PERIOD of
:data:`CLEAN_PERIOD_S` seconds; :meth:`vanish` waits for that.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from adapters.lsf import LsfAdapter
from hpcbridge.dev import free_port
from hpcbridge.model import JobRequest
from tests.adapters import CountingTransport, build_request, secret_file, until
from tests.adapters.counting_connection import CountingConnection
from tests.emulators.lsf import LsfEmulator
from tests.services.sshd import SshServer, generate_key

__all__ = ["CLEAN_PERIOD_S", "CountingConnection", "LsfSshHarness", "LsfWebHarness"]

#: Long enough for a test to see its finished jobs, short enough for vanish() to wait.
CLEAN_PERIOD_S = 6.0
_QUEUES = {"normal": True, "held": False}


class _LsfHarness:
    """What both transports share: the emulator, requests, held jobs, vanishing."""

    target = "lsf-test"
    #: MAX_JOBID: the emulator numbers jobs from 1 and never gets there in a test.
    unknown_id = "999999"
    #: LSF run limits are whole minutes.
    min_time_limit_s = 60
    wait_s = 20.0
    adapter: LsfAdapter
    settings: dict[str, Any]

    def __init__(self, emulator: LsfEmulator) -> None:
        self.emulator = emulator
        self._held: list[str] = []

    def request(self, **overrides: Any) -> JobRequest:
        """A minimal valid request: ``true`` as a command, unless a script is given."""
        return build_request(self.target, overrides)

    def queued_job(self, **overrides: Any) -> str:
        native_id = self.adapter.submit(self.request(**{**overrides, "queue": "held"}),
                                        f"queued-{uuid.uuid4().hex[:16]}")
        self._held.append(native_id)
        return native_id

    def release(self) -> None:
        for native_id in self._held:
            if self.emulator.job_state(native_id) == "PEND":
                self.emulator.switch(native_id, "normal")
        self._held.clear()

    def vanish(self, native_id: str) -> None:
        """Wait until LSF forgets the finished job, CLEAN_PERIOD after it ended."""
        until(lambda: not self.emulator.known(native_id), CLEAN_PERIOD_S + self.wait_s,
              lambda: f"the emulator still knows job {native_id}")

    def make(self, **changes: Any) -> LsfAdapter:
        """An adapter of this target with ``changes`` to its settings (None drops one)."""
        settings = {k: v for k, v in {**self.settings, **changes}.items() if v is not None}
        return LsfAdapter(self.target, settings)

    def close(self) -> None:
        self.adapter.close()
        self.emulator.close()


class LsfWebHarness(_LsfHarness):
    """An :class:`LsfAdapter` with ``transport: web``; jobs run as this process's user."""

    def __init__(self, tmp_path: Path) -> None:
        self.user = pwd.getpwuid(os.getuid()).pw_name
        self.password = secrets.token_urlsafe(16)
        super().__init__(LsfEmulator({self.user: self.password}, queues=_QUEUES,
                                     clean_period_s=CLEAN_PERIOD_S, terminate_interval_s=1))
        self._dir = tmp_path
        self.shared_dir = tmp_path / "shared"
        self.shared_dir.mkdir()
        self.settings = {"kind": "lsf", "transport": "web", "url": self.emulator.url,
                         "user": self.user,
                         "password_file": str(self.password_file(self.password))}
        self._counter = CountingTransport()
        self.adapter = LsfAdapter(self.target, self.settings, transport=self._counter)

    def password_file(self, password: str) -> Path:
        return secret_file(self._dir, password + "\n", prefix="password")

    def calls(self) -> int:
        return self._counter.count

    def unreachable(self) -> LsfAdapter:
        return self.make(url=f"http://127.0.0.1:{free_port()}/platform")

    def with_bad_credentials(self) -> tuple[LsfAdapter, str]:
        wrong = secrets.token_urlsafe(16)
        return self.make(password_file=str(self.password_file(wrong))), wrong


class LsfSshHarness(_LsfHarness):
    """An :class:`LsfAdapter` with ``transport: ssh``, logging in to ``sshd`` as its user.

    The user's files are in a directory of the emulator's that the user owns:
    ``shared_dir``, and ``remote_dir``, which the adapter creates.
    """

    def __init__(self, sshd: SshServer) -> None:
        super().__init__(LsfEmulator({}, queues=_QUEUES, clean_period_s=CLEAN_PERIOD_S,
                                     terminate_interval_s=1))
        self.sshd = sshd
        account = pwd.getpwnam(sshd.user)
        home = self.emulator.root / "user"
        self.shared_dir = home / "shared"
        for directory in (home, self.shared_dir):
            directory.mkdir(mode=0o755)
            os.chown(directory, account.pw_uid, account.pw_gid)
        self.remote_dir = home / "lsf"
        self.settings = {
            "kind": "lsf", "transport": "ssh", "host": sshd.host, "port": sshd.port,
            "user": sshd.user, "key_file": str(sshd.key_file),
            "known_hosts_file": str(sshd.known_hosts_file),
            "remote_dir": str(self.remote_dir), "profile": str(self.emulator.profile),
        }
        self.connection = CountingConnection.from_settings(self.target, self.settings)
        self.adapter = LsfAdapter(self.target, self.settings, connection=self.connection)
        self._keys: list[Path] = []

    def calls(self) -> int:
        return len(self.connection.commands)

    def unreachable(self) -> LsfAdapter:
        return self.make(port=free_port())

    def with_bad_credentials(self) -> tuple[LsfAdapter, str]:
        """A key of the right format that is in no authorized_keys file."""
        directory = Path(tempfile.mkdtemp(prefix="lsf-key-"))
        self._keys.append(directory)
        key = directory / "id_ed25519"
        generate_key(key)
        return self.make(key_file=str(key)), key.read_text()

    def close(self) -> None:
        super().close()
        for directory in self._keys:
            shutil.rmtree(directory, ignore_errors=True)
