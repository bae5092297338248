"""LsfEmulator: an EMULATOR of IBM Spectrum LSF 10.1 and its Application Center, for tests.

No LSF cluster can run in this workplace. The ``lsf`` adapter is tested against this
instead: one batch system (the behaviour of mbatchd and sbatchd,
:mod:`tests.emulators.lsf_batch`) with two ways in, both real and on this machine only:

* the LSF Application Center (PAC 10.2) web services over HTTP on 127.0.0.1, base
  ``/platform/`` (:mod:`tests.emulators.lsf_web`);
* the LSF commands ``bsub``, ``bjobs``, ``bkill`` and ``bpeek``, small executables in
  :attr:`LsfEmulator.bin_dir` that talk to the emulator over a Unix socket, and a
  ``profile.lsf`` that puts them on the ``PATH`` as a site's profile does
  (:mod:`tests.emulators.lsf_cli`). Over the socket the emulator learns the caller's uid
  (``SO_PEERCRED``), so jobs run as the user who submitted them, as with LSF.

It follows IBM's public documentation: the LSF 10.1 command reference (bsub, bjobs -o
and -json, -hms, bkill, bpeek; exit code 255 and ``Job <N> is not found`` for unknown
ids), lsb.params (CLEAN_PERIOD, JOB_TERMINATE_INTERVAL, MAX_JOBID), "Termination reasons
displayed by bacct, bhist, and bjobs" (the TERM_* keywords and their exitInfo numbers),
"Kill jobs" (SIGINT and SIGTERM, then SIGKILL), and the Application Center 10.2 RESTful
web services reference (logon, token cookie, submit, job information by id, basic job
information by name, job history, download files). Where the documentation is silent,
the choices are named in the modules that make them.

Jobs run for real as local processes in a session of their own: their output, exit
codes, kills and run limits are real. A job's state is one of LSF's: PEND (waiting for a
slot, or for its queue to be activated), PSUSP (``bsub -H``), RUN, USUSP and SSUSP
(stopped with SIGSTOP by :meth:`LsfEmulator.suspend`), DONE, EXIT; WAIT, PROV, ZOMBI and
UNKWN, which need hosts this emulator does not have, are shown when a test sets them
with :meth:`LsfEmulator.show_state`. Termination reasons: TERM_OWNER (or TERM_ADMIN) for
bkill, TERM_RUNLIMIT for ``-W``, TERM_MEMLIMIT for ``-M`` (the resident memory of the
job's processes is measured every half second), TERM_CWD_NOTEXIST for a ``-cwd`` that
does not exist. A finished job is forgotten ``clean_period_s`` after it ended, as
mbatchd does after CLEAN_PERIOD; its record stays in the job history (``lsb.events``)
until :meth:`LsfEmulator.forget`.

Output is spooled and copied to the ``-o`` file when the job ends, as LSF does unless
LSB_STDOUT_DIRECT=Y (``stdout_direct=True`` writes the file directly); ``bpeek`` shows
the spool of a running job.

Test controls: :meth:`~LsfEmulator.activate_queue` / :meth:`~LsfEmulator.inactivate_queue`
(``badmin qact`` / ``qinact``), :meth:`~LsfEmulator.switch` (``bswitch``),
:meth:`~LsfEmulator.suspend` / :meth:`~LsfEmulator.resume`, :meth:`~LsfEmulator.show_state`,
:meth:`~LsfEmulator.forget`, :meth:`~LsfEmulator.expire_tokens`,
:meth:`~LsfEmulator.set_password`, :meth:`~LsfEmulator.logged_on`, and the counts
:meth:`~LsfEmulator.http_requests` and :meth:`~LsfEmulator.commands`.

What it does not do: hosts, resource requirements and their scheduling (``-R``, ``-gpu``
and ``-n`` beyond counting slots are recorded, not honoured), job arrays, dependencies,
fair share, preemption, checkpoints, email, job groups, projects' accounting, other
LSF commands (bstop, bresume, bswitch, badmin are test controls), multiple clusters,
PAC's other services (flows, applications other than ``generic``, users, X.509 and
OAuth logons), TLS.
"""

from __future__ import annotations

import pwd
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from tests.emulators.lsf_batch import CLEAN_PERIOD_S, JOB_TERMINATE_INTERVAL_S, Batch
from tests.emulators.lsf_cli import CommandServer
from tests.emulators.lsf_web import ApplicationCenter

__all__ = ["LsfEmulator"]


class LsfEmulator:
    """An emulated LSF cluster with its Application Center and its commands.

    ``users`` maps the Application Center's users to their passwords; each must be an
    account of this machine, whose uid runs the jobs it submits. ``queues`` maps queue
    names to whether they are active; an inactive queue takes jobs and never starts them.
    """

    def __init__(self, users: Mapping[str, str], *, parent: Path | None = None,
                 queues: Mapping[str, bool] | None = None, default_queue: str = "normal",
                 slots: int = 8, clean_period_s: float = CLEAN_PERIOD_S,
                 terminate_interval_s: float = JOB_TERMINATE_INTERVAL_S,
                 token_lifetime_s: float = 3600.0, stdout_direct: bool = False) -> None:
        queues = dict(queues or {default_queue: True})
        if default_queue not in queues:
            raise ValueError(f"the default queue {default_queue!r} is not among the queues")
        for name in users:
            pwd.getpwnam(name)  # every Application Center user is an account here
        # Under /tmp, mode 0755: the users whose jobs run here reach the commands in it.
        self.root = Path(tempfile.mkdtemp(prefix="hpcbridge-lsf-", dir=parent))
        self.root.chmod(0o755)
        self.batch = Batch(self.root, queues=queues, default_queue=default_queue,
                           slots=slots, clean_period_s=clean_period_s,
                           terminate_interval_s=terminate_interval_s,
                           stdout_direct=stdout_direct)
        self._web = ApplicationCenter(self.batch, self.root / "pac", users,
                                      token_lifetime_s=token_lifetime_s)
        self._commands = CommandServer(self.batch, self.root)
        self.url = self._web.url
        self.bin_dir = self._commands.bin_dir
        self.profile = self._commands.profile

    def __enter__(self) -> LsfEmulator:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Stop the web services and the commands' socket, kill every job, remove files."""
        self._web.close()
        self._commands.close()
        self.batch.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    # --- test controls -------------------------------------------------------------------

    def http_requests(self) -> int:
        """Requests the web services have answered so far."""
        return self._web.requests

    def commands(self) -> int:
        """LSF commands (bsub, bjobs, bkill, bpeek) run so far."""
        return self._commands.count

    def expire_tokens(self) -> None:
        """Make every logon token expire now, as PAC does after its session timeout."""
        self._web.expire_tokens()

    def set_password(self, user: str, password: str) -> None:
        """Change an Application Center user's password, as an administrator would."""
        self._web.set_password(user, password)

    def logged_on(self) -> list[str]:
        """The users holding a valid logon token, once per token."""
        return self._web.logged_on()

    def activate_queue(self, queue: str) -> None:
        self.batch.set_queue_active(queue, True)

    def inactivate_queue(self, queue: str) -> None:
        self.batch.set_queue_active(queue, False)

    def switch(self, job_id: str, queue: str) -> None:
        """``bswitch``: move a pending job to another queue."""
        self.batch.switch(int(job_id), queue)

    def suspend(self, job_id: str, *, by_user: bool = True) -> None:
        """``bstop`` (USUSP), or a suspension by LSF itself (SSUSP): SIGSTOP to the job."""
        self.batch.suspend(int(job_id), by_user=by_user)

    def resume(self, job_id: str) -> None:
        """``bresume``: a suspended job runs on, a PSUSP job pends again."""
        self.batch.resume(int(job_id))

    def show_state(self, job_id: str, state: str | None) -> None:
        """Report WAIT, PROV, ZOMBI or UNKWN for a job (None: its real state again)."""
        self.batch.show_state(int(job_id), state)

    def forget(self, job_id: str) -> None:
        """Forget a job everywhere, as a cluster whose event log was switched and purged."""
        self.batch.forget(int(job_id))

    def known(self, job_id: str) -> bool:
        """Whether mbatchd still knows the job (bjobs would show it)."""
        return self.batch.find(int(job_id)) is not None

    def job_state(self, job_id: str) -> str | None:
        job = self.batch.find(int(job_id))
        return None if job is None else job.stat
