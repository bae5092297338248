"""Slurm through its command line on a login node, over SSH (KNoC-style).

The bridge logs in to a login node as the job user over one kept-open SSH connection
(:mod:`adapters._ssh`) and runs ``sbatch``, ``squeue``, ``sacct``, ``scancel`` and
``sinfo`` there, each as an argv whose every argument is quoted; files go over SFTP.

Settings of a ``kind: slurm-ssh`` target (unknown keys are an error):

``host`` (required), ``port`` (default 22), ``user`` (required)
    The login node, and the account that submits and owns the jobs.
``key_file`` or ``key_env`` (one required)
    The SSH private key, from a mounted Secret; never shown.
``known_hosts_file`` (required)
    The login node's host key in OpenSSH known_hosts form; host keys are always checked.
``timeout_s`` (default 30)
    The limit for connecting and for each command or file transfer.
``remote_dir`` (required)
    An absolute directory on the cluster's shared file system, created if missing (mode
    0700). Each job gets ``<remote_dir>/<job id>/`` holding its batch script ``job.sh``
    (and ``script``, the request's script), and writes its stdout and stderr to
    ``<remote_dir>/<native id>.out``: :meth:`SlurmSshAdapter.logs` is given only the
    native id and reads that file over SFTP. Nothing there is ever deleted by the bridge.
    It must not contain a backslash (which turns off Slurm's file name patterns).
``partition``
    The partition when a request names no ``queue`` (default: the cluster's default).
``accounting`` (default true)
    Whether the cluster keeps accounting (slurmdbd). Then a job that ``squeue`` no longer
    shows is looked up with ``sacct``, in one more command for all such jobs. If ``sacct``
    says accounting is disabled, the adapter stops asking; set ``false`` to save that
    one call on a cluster without it.
``sbatch``, ``squeue``, ``sacct``, ``scancel``, ``sinfo``
    The commands' names or absolute paths on the login node (default: the plain names,
    found on the user's PATH of a non-interactive SSH session).

The login node must be set up so that these commands work in a non-interactive SSH
session of ``user`` as they are (a login node normally has its slurm.conf in the default
place; if a variable is needed, the site sets it there, e.g. with sshd's ``SetEnv``), and
the user's login shell must be a POSIX shell.

Jobs: the batch script exports the request's environment, each value quoted so that it
is data whatever it contains, and ``exec``s the command (every argument quoted) or the
request's script; no value ever reaches a command line. ``sbatch --export=NONE``: the
job starts from the user's login environment, as Slurm loads it on the node, never from
the SSH session's. It runs in the request's ``working_dir``, else in its job directory;
the files a request names in ``outputs`` are read from there over SFTP, with the user's
rights, never outside that directory (:meth:`SshConnection.read_confined`).
Jobs are tagged with the bridge's job id as their name and in their comment
(``hpcbridge:<job id>``); as with the REST adapter, a job id submitted again through the
same adapter returns the first job, and :meth:`SlurmSshAdapter.find_by_tag` finds a job
by its name as long as ``squeue`` shows it. States, exit codes and times are mapped by
:mod:`adapters.slurm_api`, exactly as for the REST adapter. Without accounting, Slurm
forgets a finished job ``MinJobAge`` seconds (default 300) after it ends; from then on
the job is absent from :meth:`SlurmSshAdapter.status_many`.

Costs: ``status_many`` is one ``squeue`` for all the user's jobs (plus one ``sacct`` for
the asked jobs squeue no longer shows, when accounting is on); ``cancel``, ``find_by_tag``
and ``capacity`` are one command each; ``submit`` is a few SFTP operations and one
``sbatch``.

Not supported: container images (requests carry none, and nothing here wraps the job in
apptainer or singularity); job arrays.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from adapters import _settings, slurm_api, slurm_cli
from adapters._ssh import SSH_SETTINGS, Completed, SshConnection
from adapters.base import (
    AdapterError,
    Capabilities,
    ConfigError,
    ManagerRejected,
    ManagerUnavailable,
    Observation,
    OutputMissing,
)
from hpcbridge.model import JobRequest, RequestError, validate_job_id

__all__ = ["SlurmSshAdapter"]

log = logging.getLogger(__name__)

_COMMANDS = ("sbatch", "squeue", "sacct", "scancel", "sinfo")
_SETTINGS = frozenset({"kind", *SSH_SETTINGS, "remote_dir", "partition", "accounting",
                       *_COMMANDS})
_NATIVE_ID = re.compile(r"^\d+$")
# What scancel says of a job that is over or unknown: nothing left to cancel.
_NOTHING_TO_CANCEL = re.compile(r"invalid job id|already completing or completed",
                                re.IGNORECASE)
_UNUSABLE_IN_PATHS = re.compile(r"[\\\x00-\x1f\x7f]")
_NON_EMPTY = " to be a non-empty string"
_DETAIL_LIMIT = 500


class SlurmSshAdapter:
    """One Slurm cluster behind a login node reached over SSH."""

    kind: ClassVar[str] = "slurm-ssh"
    capabilities: ClassVar[Capabilities] = Capabilities(report_capacity=True,
                                                        collect_outputs=True)

    def __init__(self, name: str, settings: Mapping[str, Any], *,
                 connection: SshConnection | None = None) -> None:
        """``connection`` replaces the one built from ``settings``, for tests that watch
        the commands."""
        self.name = name
        self._ssh = connection or SshConnection.from_settings(name, settings)
        _settings.check_known(name, settings, _SETTINGS)
        self._remote_dir = _remote_dir(name, settings)
        self._partition = _text(name, settings, "partition") if "partition" in settings \
            else None
        accounting = settings.get("accounting", True)
        if not isinstance(accounting, bool):
            raise ConfigError(f"target {name!r}: accounting must be true or false")
        self._accounting = accounting
        self._commands = {command: _text(name, settings, command) if command in settings
                          else command for command in _COMMANDS}
        self._submitted = _settings.Submissions()

    # --- the protocol ------------------------------------------------------------------

    def submit(self, request: JobRequest, job_id: str) -> str:
        if (known := self._submitted.checked(self.name, job_id)) is not None:
            return known
        job_dir = f"{self._remote_dir}/{job_id}"
        self._ssh.make_dirs(job_dir)
        if request.command is not None:
            argv = list(request.command)
        else:
            argv = [f"{job_dir}/script"]
            self._ssh.write_file(argv[0], slurm_api.batch_script(request.script, None), 0o700)
        try:
            batch = slurm_cli.job_script(request.environment, argv)
        except ValueError as exc:
            raise ManagerRejected(f"target {self.name!r}: job {job_id}: {exc}") from None
        batch_path = f"{job_dir}/job.sh"
        self._ssh.write_file(batch_path, batch)
        spec = slurm_api.JobSpec.for_request(
            request, job_id, script=batch, working_dir=request.working_dir or job_dir,
            environment=request.environment,
            output=slurm_cli.output_pattern(self._remote_dir), partition=self._partition)
        what = f"submit job {job_id}"
        result = self._ssh.run(slurm_cli.sbatch_args(self._commands["sbatch"], spec, batch_path))
        if result.exit_status != 0:
            raise self._failure(result, "sbatch", what, refusal=True)
        native = slurm_cli.parse_sbatch(result.stdout)
        if native is None:
            raise ManagerUnavailable(f"target {self.name!r}: sbatch printed no job id to "
                                     f"{what}: {_detail(result)}")
        # Slurm may accept a job and still warn, e.g. that it can never run where it is.
        if result.stderr.strip():
            log.warning("Slurm accepted %s as %s but says: %s", job_id, native,
                        result.stderr.strip()[:_DETAIL_LIMIT])
        self._submitted.remember(job_id, native)
        return native

    def status_many(self, native_ids: Sequence[str]) -> Mapping[str, Observation]:
        if not native_ids:
            return {}
        result = self._ssh.run(slurm_cli.squeue_args(self._commands["squeue"]))
        if result.exit_status != 0:
            raise self._failure(result, "squeue", "list jobs", refusal=False)
        jobs = slurm_cli.parse_squeue(result.stdout)
        answer = {nid: jobs[nid] for nid in native_ids if nid in jobs}
        gone = [nid for nid in dict.fromkeys(native_ids)
                if nid not in jobs and _NATIVE_ID.match(nid)]
        if gone and self._accounting:
            answer.update(self._accounted(gone))
        return answer

    def cancel(self, native_id: str) -> None:
        if not _NATIVE_ID.match(native_id):
            return  # never a Slurm job: there is nothing to cancel
        result = self._ssh.run([self._commands["scancel"], native_id])
        if result.exit_status == 0 or _NOTHING_TO_CANCEL.search(result.stderr):
            return
        raise self._failure(result, "scancel", f"cancel job {native_id}", refusal=True)

    def logs(self, native_id: str, tail: int | None = None) -> str:
        if not _NATIVE_ID.match(native_id):
            raise AdapterError(f"target {self.name!r}: {native_id!r} is not a Slurm job id")
        try:
            return self._ssh.read_file(f"{self._remote_dir}/{native_id}.out",
                                       tail_lines=tail)
        except FileNotFoundError:
            return ""  # the job has not started, or wrote nothing yet

    def read_output(self, native_id: str, job_id: str, request: JobRequest, path: str,
                    limit: int) -> bytes:
        """``path`` in the job's working directory (as :meth:`submit` chose it), over SFTP."""
        if request.working_dir is not None:
            root = request.working_dir
        else:
            try:
                root = f"{self._remote_dir}/{validate_job_id(job_id)}"
            except RequestError:
                raise OutputMissing(f"{path}: {job_id!r} is not a valid job id") from None
        return self._ssh.read_confined(root, path, limit)

    def find_by_tag(self, job_id: str) -> str | None:
        try:
            validate_job_id(job_id)
        except RequestError:
            return None  # no job of ours carries a name that is not a job id
        result = self._ssh.run(slurm_cli.find_args(self._commands["squeue"], job_id))
        if result.exit_status != 0:
            raise self._failure(result, "squeue", f"find job {job_id}", refusal=False)
        found = slurm_cli.parse_ids(result.stdout)
        return min(found, key=int) if found else None

    def capacity(self) -> Mapping[str, Any]:
        result = self._ssh.run(slurm_cli.sinfo_args(self._commands["sinfo"]))
        if result.exit_status != 0:
            raise self._failure(result, "sinfo", "list nodes", refusal=False)
        return slurm_cli.parse_sinfo(result.stdout)

    def close(self) -> None:
        self._ssh.close()

    # --- helpers -----------------------------------------------------------------------

    def _accounted(self, native_ids: Sequence[str]) -> dict[str, Observation]:
        """What accounting says of jobs squeue no longer shows."""
        result = self._ssh.run(slurm_cli.sacct_args(self._commands["sacct"], native_ids))
        if result.exit_status != 0:
            if slurm_cli.accounting_disabled(result.stderr):
                log.info("target %r: the cluster keeps no accounting; jobs squeue no longer "
                         "shows are reported absent (set accounting: false)", self.name)
                self._accounting = False
                return {}
            raise self._failure(result, "sacct", "read accounting", refusal=False)
        found = slurm_cli.parse_sacct(result.stdout)
        return {nid: found[nid] for nid in native_ids if nid in found}

    def _failure(self, result: Completed, program: str, what: str, *,
                 refusal: bool) -> AdapterError:
        """The exception for a command that failed; ``refusal``: its failure is Slurm's
        answer about the request (sbatch, scancel) unless it says Slurm is away."""
        detail = _detail(result)
        if result.exit_status in (126, 127):
            return ConfigError(
                f"target {self.name!r}: cannot run {self._commands[program]!r} on "
                f"{self._ssh.where} to {what}: {detail} (set the '{program}' setting)")
        if refusal and not slurm_cli.transient(detail):
            return ManagerRejected(f"target {self.name!r}: Slurm refused to {what}: {detail}")
        return ManagerUnavailable(f"target {self.name!r}: {program} on {self._ssh.where} "
                                  f"could not {what}: {detail}")


def _detail(result: Completed) -> str:
    text = result.stderr.strip() or result.stdout.strip()
    text = " ".join(text.split())
    return text[:_DETAIL_LIMIT] if text else f"exit status {result.exit_status}"


def _text(name: str, settings: Mapping[str, Any], key: str) -> str:
    return _settings.needed(name, settings, key, detail=_NON_EMPTY)


def _remote_dir(name: str, settings: Mapping[str, Any]) -> str:
    value = _settings.absolute_path(name, settings, "remote_dir", quote_key=False,
                                    detail=_NON_EMPTY)
    if _UNUSABLE_IN_PATHS.search(value):
        raise ConfigError(f"target {name!r}: remote_dir must not contain a backslash or "
                          "control characters")
    return value.rstrip("/") or "/"
