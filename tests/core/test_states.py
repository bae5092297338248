"""The common state machine: progress, absorption, regressions, UNKNOWN then lost."""

from __future__ import annotations

from adapters.base import Observation
from hpcbridge.model import JobStatus, Reason, State
from hpcbridge.states import advance

LOST_AFTER = 60.0


def job(state: State, **fields: object) -> JobStatus:
    return JobStatus(job_id="j", target="t", state=state, native_id="7", updated_at=0.0,
                     **fields)


def seen(state: State, native: str, **fields: object) -> Observation:
    return Observation(state=state, native_state=native, **fields)


def test_progress_sets_times_exit_code_and_keeps_native_state() -> None:
    running = advance(job(State.QUEUED), seen(State.RUNNING, "RUNNING", started_at=5.0), 10.0,
                      LOST_AFTER)
    assert running is not None
    assert (running.state, running.native_state, running.started_at) == \
        (State.RUNNING, "RUNNING", 5.0)
    done = advance(running, seen(State.FAILED, "FAILED", exit_code=3, finished_at=9.0), 11.0,
                   LOST_AFTER)
    assert done is not None
    assert (done.state, done.exit_code, done.reason, done.finished_at) == \
        (State.FAILED, 3, Reason.EXIT_CODE, 9.0)


def test_nothing_changes_when_nothing_changed() -> None:
    current = job(State.RUNNING, native_state="RUNNING")
    assert advance(current, seen(State.RUNNING, "RUNNING"), 10.0, LOST_AFTER) is None


def test_a_new_native_state_within_the_same_state_is_recorded() -> None:
    current = job(State.QUEUED, native_state="PENDING")
    new = advance(current, seen(State.QUEUED, "CONFIGURING"), 10.0, LOST_AFTER)
    assert new is not None and (new.state, new.native_state) == (State.QUEUED, "CONFIGURING")


def test_terminal_states_absorb() -> None:
    for terminal in (State.SUCCEEDED, State.FAILED, State.CANCELLED):
        current = job(terminal)
        assert advance(current, seen(State.RUNNING, "RUNNING"), 10.0, LOST_AFTER) is None
        assert advance(current, None, 10.0**6, LOST_AFTER) is None


def test_regressions_are_ignored_but_suspension_goes_both_ways() -> None:
    assert advance(job(State.RUNNING), seen(State.QUEUED, "PENDING"), 10.0, LOST_AFTER) is None
    suspended = advance(job(State.RUNNING), seen(State.SUSPENDED, "SUSPENDED"), 10.0,
                        LOST_AFTER)
    assert suspended is not None and suspended.state is State.SUSPENDED
    resumed = advance(suspended, seen(State.RUNNING, "RUNNING"), 11.0, LOST_AFTER)
    assert resumed is not None and resumed.state is State.RUNNING


def test_a_vanished_job_goes_unknown_then_lost_never_succeeded() -> None:
    unknown = advance(job(State.RUNNING), None, 100.0, LOST_AFTER)
    assert unknown is not None and unknown.state is State.UNKNOWN
    assert advance(unknown, None, 100.0 + LOST_AFTER / 2, LOST_AFTER) is None
    lost = advance(unknown, None, 100.0 + LOST_AFTER, LOST_AFTER)
    assert lost is not None
    assert (lost.state, lost.reason) == (State.FAILED, Reason.LOST)


def test_an_unknown_job_that_reappears_is_settled_by_the_manager() -> None:
    unknown = advance(job(State.RUNNING), None, 100.0, LOST_AFTER)
    assert unknown is not None
    back = advance(unknown, seen(State.SUCCEEDED, "COMPLETED", exit_code=0), 101.0, LOST_AFTER)
    assert back is not None and (back.state, back.reason) == (State.SUCCEEDED, None)


def test_cancelled_and_failure_reasons_come_from_the_manager() -> None:
    cancelled = advance(job(State.RUNNING), seen(State.CANCELLED, "CANCELLED"), 1.0, LOST_AFTER)
    assert cancelled is not None and cancelled.reason is Reason.CANCELLED
    timeout = advance(job(State.RUNNING), seen(State.FAILED, "TIMEOUT", reason=Reason.TIMEOUT),
                      1.0, LOST_AFTER)
    assert timeout is not None and timeout.reason is Reason.TIMEOUT
