"""The one protocol every external manager speaks to the bridge.

Modelled on PSI/J's executor: the core never asks "which kind is this?"; it asks an
adapter to submit, to report on many jobs at once, to cancel, to fetch logs, and to find
a job again by the bridge's tag after a crash. What an adapter can do beyond that it
declares in :class:`Capabilities`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Protocol, runtime_checkable

from hpcbridge.model import JobRequest, Reason, State

__all__ = [
    "Adapter",
    "AdapterError",
    "AuthenticationFailed",
    "Capabilities",
    "ConfigError",
    "ManagerRejected",
    "ManagerUnavailable",
    "Observation",
    "OutputMissing",
    "OutputReader",
    "OutputTooLarge",
]


class AdapterError(Exception):
    """Base of the errors an adapter raises; messages never carry credentials."""


class ManagerUnavailable(AdapterError):
    """The manager could not be reached or answered with a transient error: retry later."""


class ManagerRejected(AdapterError):
    """The manager refused the request itself (bad partition, bad credentials): do not retry."""


class AuthenticationFailed(ManagerRejected):
    """The manager refused the bridge's credentials: the operator must fix the Secret.

    Unlike other refusals this says nothing about the job, so the functions answer 503
    and the request is retried once the credential is fixed.
    """


class OutputMissing(AdapterError):
    """A named output file is not there, is not a regular file, or lies outside the
    job's working directory."""


class OutputTooLarge(AdapterError):
    """A named output file is larger than the caller's limit; it was not read."""

    def __init__(self, path: str, size: int, limit: int) -> None:
        super().__init__(f"{path} has {size} bytes, more than the limit of {limit}")
        self.size = size


class ConfigError(AdapterError):
    """The target's configuration is unusable (missing endpoint, unreadable credential)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Observation:
    """What a manager says of one job right now, mapped to the common states."""

    state: State
    native_state: str
    exit_code: int | None = None
    reason: Reason | None = None
    started_at: float | None = None
    finished_at: float | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Capabilities:
    """What an adapter can do beyond the protocol's minimum."""

    cancel_queued: bool = True
    logs: bool = True
    find_by_tag: bool = True
    report_capacity: bool = False
    #: Runs ``command`` and shell ``script`` jobs; a quantum service runs circuits instead.
    runs_commands: bool = True
    #: Reads a finished job's files (:class:`OutputReader`), for ``outputs`` requests.
    collect_outputs: bool = False


@runtime_checkable
class Adapter(Protocol):
    """One external manager behind one target name."""

    kind: ClassVar[str]

    @property
    def capabilities(self) -> Capabilities:
        """What it can do: a class attribute for most kinds, per instance where it depends
        on the settings (LSF reads files only over SSH)."""

    def submit(self, request: JobRequest, job_id: str) -> str:
        """Start the job, tagged with ``job_id``; return the manager's native id."""

    def status_many(self, native_ids: Sequence[str]) -> Mapping[str, Observation]:
        """Observe many jobs in as few calls as the manager allows.

        A native id the manager no longer knows is absent from the answer.
        """

    def cancel(self, native_id: str) -> None:
        """Ask the manager to stop the job; a job that already ended is not an error."""

    def logs(self, native_id: str, tail: int | None = None) -> str:
        """The job's output so far, the last ``tail`` lines when given."""

    def find_by_tag(self, job_id: str) -> str | None:
        """The native id of a job tagged with ``job_id``, if the manager has one."""

    def capacity(self) -> Mapping[str, Any]:
        """What the manager offers (cpus, memory, gpus, nodes), or an empty map."""

    def close(self) -> None:
        """Release connections."""


@runtime_checkable
class OutputReader(Protocol):
    """An adapter that can read the files a job left (``Capabilities.collect_outputs``)."""

    def read_output(self, native_id: str, job_id: str, request: JobRequest, path: str,
                    limit: int) -> bytes:
        """The file ``path``, relative to the working directory the job ran in (the
        ``request``'s, else the one the adapter chose for ``job_id`` at submission).

        Raises :class:`OutputMissing` for a missing or non-regular file or one whose real
        path leaves the working directory (a symlink), :class:`OutputTooLarge` past
        ``limit`` bytes, :class:`ManagerUnavailable` when the files cannot be reached now.
        """
