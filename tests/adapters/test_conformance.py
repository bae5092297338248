"""What every adapter must do, run against each harness of ``conftest.HARNESSES``.

Tests wait for conditions with a deadline (``harness.wait_s``) by polling
``status_many``; they never assert how long anything took.
"""

from __future__ import annotations

from typing import Any

import pytest

from adapters.base import Adapter, Observation
from hpcbridge.model import Reason, Resources, State
from tests.adapters import Harness, finished, new_job_id, observe_until, wait_for

# Strings that do something when a shell sees them: they must arrive as plain data.
_HOSTILE = [
    "$(touch {marker})",
    "`touch {marker}`",
    "; touch {marker}",
    "&& touch {marker} ||",
    "| touch {marker}",
    "> {marker}",
    "line one\nline two\n",
    "'single' \"double\" \\backslash",
    "* ? [a-z] ~",
    "$HOME ${PATH} %s %%",
    "  leading and trailing  ",
    "-n",
    "",
]


def _submit(harness: Harness, **overrides: Any) -> str:
    return harness.adapter.submit(harness.request(**overrides), new_job_id())


def _finished(harness: Harness, native_id: str) -> Observation:
    return finished(harness.adapter, native_id, harness.wait_s)


def test_speaks_the_adapter_protocol(any_harness: Harness) -> None:
    assert isinstance(any_harness.adapter, Adapter)


@pytest.mark.parametrize("job", [
    {"command": ["echo", "hello from a command"]},
    {"script": "#!/bin/sh\necho hello from a script\n"},
], ids=["command", "script"])
def test_job_succeeds_and_its_output_is_in_the_logs(harness: Harness,
                                                    job: dict[str, Any]) -> None:
    native_id = _submit(harness, **job)

    observation = _finished(harness, native_id)

    assert observation.state is State.SUCCEEDED
    assert observation.exit_code == 0
    assert observation.reason is None
    assert observation.native_state
    assert observation.started_at is not None
    assert observation.finished_at is not None
    assert "hello from a" in harness.adapter.logs(native_id)


def test_non_zero_exit_fails_with_its_exit_code(harness: Harness) -> None:
    native_id = _submit(harness, command=["sh", "-c", "exit 3"])

    observation = _finished(harness, native_id)

    assert observation.state is State.FAILED
    assert observation.exit_code == 3
    assert observation.reason is Reason.EXIT_CODE


def test_duplicate_submit_makes_one_job(harness: Harness) -> None:
    runs = harness.shared_dir / "runs"
    request = harness.request(command=["sh", "-c", 'echo run >> "$1"', "sh", str(runs)])
    job_id = new_job_id()

    first = harness.adapter.submit(request, job_id)
    second = harness.adapter.submit(request, job_id)

    assert second == first or harness.adapter.find_by_tag(job_id) == first
    assert harness.adapter.find_by_tag(job_id) == first
    for native_id in {first, second}:
        _finished(harness, native_id)
    assert runs.read_text() == "run\n"


def test_find_by_tag_of_an_unknown_job_is_none(any_harness: Harness) -> None:
    assert any_harness.adapter.find_by_tag(new_job_id()) is None


def test_status_many_reports_several_jobs_in_one_call(harness: Harness) -> None:
    good = _submit(harness, command=["true"])
    bad = _submit(harness, command=["sh", "-c", "exit 5"])
    asked = [good, bad, harness.unknown_id]

    answer = observe_until(
        harness.adapter, asked,
        lambda answer: all(n in answer and answer[n].state.terminal for n in (good, bad)),
        harness.wait_s)

    assert answer[good].state is State.SUCCEEDED
    assert answer[bad].state is State.FAILED
    assert answer[bad].exit_code == 5
    assert harness.unknown_id not in answer


def test_unknown_native_id_is_absent(any_harness: Harness) -> None:
    assert any_harness.unknown_id not in any_harness.adapter.status_many([any_harness.unknown_id])


def test_cancel_of_a_running_job(harness: Harness) -> None:
    native_id = _submit(harness, command=["sleep", "1000"])
    running = wait_for(harness.adapter, native_id,
                       lambda observation: observation.state is State.RUNNING, harness.wait_s)
    assert running.started_at is not None

    harness.adapter.cancel(native_id)

    observation = _finished(harness, native_id)
    assert observation.state is State.CANCELLED
    assert observation.reason is Reason.CANCELLED


def test_cancel_of_a_queued_job_means_it_never_runs(harness: Harness) -> None:
    marker = harness.shared_dir / "ran"
    native_id = harness.queued_job(command=["touch", str(marker)])
    wait_for(harness.adapter, native_id,
             lambda observation: observation.state is State.QUEUED, harness.wait_s)

    harness.adapter.cancel(native_id)

    observation = _finished(harness, native_id)
    assert observation.state is State.CANCELLED
    assert observation.reason is Reason.CANCELLED
    # Let the queue move on; a job submitted after the cancelled one has then run.
    harness.release()
    assert _finished(harness, _submit(harness, command=["true"])).state is State.SUCCEEDED
    assert not marker.exists()


def test_cancel_of_a_finished_or_unknown_job_changes_nothing(harness: Harness) -> None:
    native_id = _submit(harness, command=["true"])
    assert _finished(harness, native_id).state is State.SUCCEEDED

    harness.adapter.cancel(native_id)
    harness.adapter.cancel(harness.unknown_id)

    observation = harness.adapter.status_many([native_id])[native_id]
    assert observation.state is State.SUCCEEDED
    assert observation.exit_code == 0


def test_logs_tail(harness: Harness) -> None:
    native_id = _submit(harness, command=["seq", "1", "5"])
    assert _finished(harness, native_id).state is State.SUCCEEDED

    assert harness.adapter.logs(native_id).splitlines() == ["1", "2", "3", "4", "5"]
    assert harness.adapter.logs(native_id, tail=2).splitlines() == ["4", "5"]


def test_command_arguments_arrive_as_data(harness: Harness) -> None:
    marker = harness.shared_dir / "executed"
    arguments = [text.replace("{marker}", str(marker)) for text in _HOSTILE]
    native_id = _submit(harness, command=["printf", "%s\\0", *arguments])

    assert _finished(harness, native_id).state is State.SUCCEEDED

    assert harness.adapter.logs(native_id).split("\0")[:-1] == arguments
    assert not marker.exists()


def test_environment_values_arrive_as_data(harness: Harness) -> None:
    marker = harness.shared_dir / "executed"
    environment = {f"HB_VALUE_{i}": text.replace("{marker}", str(marker))
                   for i, text in enumerate(_HOSTILE)}
    native_id = _submit(harness, command=["env", "-0"], environment=environment)

    assert _finished(harness, native_id).state is State.SUCCEEDED

    seen = dict(entry.partition("=")[::2]
                for entry in harness.adapter.logs(native_id).split("\0"))
    assert {name: seen.get(name) for name in environment} == environment
    assert not marker.exists()


@pytest.mark.time_limit
def test_time_limit_fails_the_job_with_reason_timeout(harness: Harness) -> None:
    limit = harness.min_time_limit_s
    native_id = _submit(harness, command=["sleep", "1000"],
                        resources=Resources(time_limit_s=limit))

    observation = finished(harness.adapter, native_id, harness.wait_s + 2 * limit)

    assert observation.state is State.FAILED
    assert observation.reason is Reason.TIMEOUT


def test_capacity_matches_the_declared_capability(any_harness: Harness) -> None:
    capacity = any_harness.adapter.capacity()

    if any_harness.adapter.capabilities.report_capacity:
        assert capacity["cpus"] > 0
    else:
        assert capacity == {}
