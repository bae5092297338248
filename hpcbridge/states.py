"""The common state machine: how a manager's observation moves a job's status.

    ACCEPTED -> QUEUED -> RUNNING <-> SUSPENDED -> SUCCEEDED | FAILED | CANCELLED
    UNKNOWN: contact lost or job vanished; settled later, or declared lost

Terminal states absorb, and a regression a manager reports (QUEUED after RUNNING, as
a requeue looks) is ignored, so one late or reordered answer cannot undo progress.
"""

from __future__ import annotations

from adapters.base import Observation
from hpcbridge.model import JobStatus, Reason, State

__all__ = ["advance", "declare_lost"]

_RANK = {
    State.ACCEPTED: 0,
    State.QUEUED: 1,
    State.RUNNING: 2,
    State.SUSPENDED: 2,
    State.SUCCEEDED: 3,
    State.FAILED: 3,
    State.CANCELLED: 3,
}


def advance(current: JobStatus, seen: Observation | None, now: float,
            lost_after_s: float) -> JobStatus | None:
    """The job's next status given what the manager says, or None when nothing changes.

    ``seen`` is None when the manager no longer knows the job: it goes UNKNOWN first and
    is declared lost (FAILED, reason ``lost``) only when it stays unseen ``lost_after_s``.
    """
    if current.state.terminal:
        return None
    if seen is None:
        if current.state is not State.UNKNOWN:
            return current.replace(state=State.UNKNOWN, native_state=None, updated_at=now)
        if current.updated_at is not None and now - current.updated_at >= lost_after_s:
            return declare_lost(current, now)
        return None
    if seen.state is State.UNKNOWN:
        # The manager knows the job but cannot say how it is (a lost runner, a down node).
        if current.state is State.UNKNOWN:
            if current.updated_at is not None and now - current.updated_at >= lost_after_s:
                return declare_lost(current, now)
            return None
        return current.replace(state=State.UNKNOWN, native_state=seen.native_state,
                               updated_at=now)
    if current.state is not State.UNKNOWN and _RANK[seen.state] < _RANK[current.state]:
        return None
    if (seen.state is current.state and seen.native_state == current.native_state
            and seen.exit_code == current.exit_code):
        return None
    changes: dict[str, object] = {
        "state": seen.state,
        "native_state": seen.native_state,
        "updated_at": now,
    }
    if seen.exit_code is not None:
        changes["exit_code"] = seen.exit_code
    if seen.state in (State.RUNNING, State.SUSPENDED) or seen.state.terminal:
        if current.started_at is None and (seen.started_at or seen.state is State.RUNNING):
            changes["started_at"] = seen.started_at or now
    if seen.state.terminal:
        changes["finished_at"] = seen.finished_at or now
        changes["reason"] = _terminal_reason(seen)
    return current.replace(**changes)


def declare_lost(current: JobStatus, now: float) -> JobStatus:
    """The job is gone without a trace: FAILED, reason ``lost``."""
    return current.replace(state=State.FAILED, reason=Reason.LOST, finished_at=now,
                           updated_at=now)


def _terminal_reason(seen: Observation) -> Reason | None:
    if seen.state is State.SUCCEEDED:
        return None
    if seen.state is State.CANCELLED:
        return seen.reason or Reason.CANCELLED
    return seen.reason or Reason.EXIT_CODE
