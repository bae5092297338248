"""What only the ``local`` adapter does; the common behaviour is in tests/adapters.

Tests look into the job directories where the local adapter's contract is about files
(restart, a killed runner). Every process they signal themselves is one they started,
named by the pid the adapter recorded.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

import adapters
from adapters.base import ConfigError, ManagerRejected, Observation
from adapters.local import LocalAdapter
from hpcbridge.model import JobRequest, Reason, Resources, State
from tests.adapters import finished, new_job_id, observe_until, until, wait_for
from tests.adapters.local_harness import stop_jobs

_WAIT_S = 15.0


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    """A local workdir whose jobs are all cancelled, and their runners gone, at the end."""
    path = tmp_path / "local"
    yield path
    if path.is_dir():
        stop_jobs(LocalAdapter("t", {"workdir": str(path)}), path, _WAIT_S)


def _adapter(workdir: Path, **settings: Any) -> LocalAdapter:
    return LocalAdapter("t", {"workdir": str(workdir), **settings})


def _request(**fields: Any) -> JobRequest:
    if "command" in fields:
        fields["command"] = tuple(fields["command"])
    return JobRequest(target="t", **fields)


def _wait_until_present(path: Path) -> list[str]:
    """A command that waits for ``path`` to exist, then exits 0."""
    return ["sh", "-c", 'while [ ! -e "$1" ]; do sleep 0.02; done', "sh", str(path)]


def _appending(path: Path, text: str) -> list[str]:
    return ["sh", "-c", 'echo "$2" >> "$1"', "sh", str(path), text]


def _states(answer: Mapping[str, Observation], native_ids: list[str]) -> list[State | None]:
    return [answer[n].state if n in answer else None for n in native_ids]


def _gone(pid: int) -> bool:
    """Whether ``pid`` has ended (a zombie waiting for its parent counts as ended)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return text.rpartition(")")[2].split()[0] == "Z"


def test_jobs_survive_a_restart_of_the_bridge(tmp_path: Path, workdir: Path) -> None:
    go, go_too = tmp_path / "go", tmp_path / "go-too"
    old = _adapter(workdir, slots=2)
    ends = old.submit(_request(command=_wait_until_present(go)), "ends-while-down")
    sleeps = old.submit(_request(command=["sleep", "1000"]), "keeps-running")
    starts = old.submit(_request(command=_wait_until_present(go_too)), "starts-while-down")
    waits = old.submit(_request(command=["echo", "ran after the restart"]), "still-waits")
    jobs = [ends, sleeps, starts, waits]
    before = observe_until(old, jobs, lambda a: _states(a, jobs) == [
        State.RUNNING, State.RUNNING, State.QUEUED, State.QUEUED], _WAIT_S)
    old.close()

    go.touch()
    until(lambda: (workdir / "jobs" / ends / "exit.json").exists(), _WAIT_S,
          lambda: "the job to finish while no adapter exists")
    new = _adapter(workdir, slots=2)

    after = observe_until(new, jobs, lambda a: _states(a, jobs) == [
        State.SUCCEEDED, State.RUNNING, State.RUNNING, State.QUEUED], _WAIT_S)
    assert after[sleeps].started_at == before[sleeps].started_at
    new.cancel(sleeps)
    assert finished(new, sleeps, _WAIT_S).state is State.CANCELLED
    assert finished(new, waits, _WAIT_S).state is State.SUCCEEDED
    assert new.logs(waits) == "ran after the restart\n"
    go_too.touch()
    assert finished(new, starts, _WAIT_S).state is State.SUCCEEDED


def test_a_runner_killed_hard_leaves_its_job_unknown_and_lost(workdir: Path) -> None:
    adapter = _adapter(workdir, slots=1)
    native_id = adapter.submit(_request(command=["sleep", "1000"]), new_job_id())
    wait_for(adapter, native_id, lambda o: o.state is State.RUNNING, _WAIT_S)
    jobdir = workdir / "jobs" / native_id
    job_pid = json.loads((jobdir / "started.json").read_text())["pid"]
    try:
        os.kill(int((jobdir / "runner.pid").read_text()), signal.SIGKILL)

        observation = wait_for(adapter, native_id, lambda o: o.state is State.UNKNOWN, _WAIT_S)

        assert observation.native_state == "LOST"
        assert observation.started_at is not None
        # The slot of the dead runner is free again.
        after = adapter.submit(_request(command=["true"]), new_job_id())
        assert finished(adapter, after, _WAIT_S).state is State.SUCCEEDED
    finally:
        os.killpg(job_pid, signal.SIGKILL)  # the job's own group, now without supervisor


def test_a_queued_job_whose_runner_died_does_not_block_the_queue(tmp_path: Path,
                                                                  workdir: Path) -> None:
    go = tmp_path / "go"
    adapter = _adapter(workdir, slots=1)
    blocker = adapter.submit(_request(command=_wait_until_present(go)), new_job_id())
    dead = adapter.submit(_request(command=["true"]), new_job_id())
    later = adapter.submit(_request(command=["true"]), new_job_id())
    os.kill(int((workdir / "jobs" / dead / "runner.pid").read_text()), signal.SIGKILL)
    assert wait_for(adapter, dead, lambda o: o.state is State.UNKNOWN, _WAIT_S).started_at is None

    go.touch()

    assert finished(adapter, blocker, _WAIT_S).state is State.SUCCEEDED
    assert finished(adapter, later, _WAIT_S).state is State.SUCCEEDED


def test_queued_jobs_start_in_submit_order(tmp_path: Path, workdir: Path) -> None:
    go, order = tmp_path / "go", tmp_path / "order"
    adapter = _adapter(workdir, slots=1)
    blocker = adapter.submit(_request(command=_wait_until_present(go)), new_job_id())
    queued = [adapter.submit(_request(command=_appending(order, name)), new_job_id())
              for name in "ABCDE"]
    observe_until(adapter, [blocker, *queued],
                  lambda a: _states(a, [blocker, *queued])
                  == [State.RUNNING] + [State.QUEUED] * 5, _WAIT_S)

    go.touch()

    for native_id in queued:
        assert finished(adapter, native_id, _WAIT_S).state is State.SUCCEEDED
    assert order.read_text().split() == list("ABCDE")


def test_slots_bound_how_many_jobs_run_at_once(tmp_path: Path, workdir: Path) -> None:
    go = tmp_path / "go"
    adapter = _adapter(workdir, slots=2)
    jobs = [adapter.submit(_request(command=_wait_until_present(go)), new_job_id())
            for _ in range(3)]

    observe_until(adapter, jobs, lambda a: _states(a, jobs)
                  == [State.RUNNING, State.RUNNING, State.QUEUED], _WAIT_S)
    go.touch()

    for native_id in jobs:
        assert finished(adapter, native_id, _WAIT_S).state is State.SUCCEEDED
    assert adapter.capacity()["cpus"] == 2


def test_cancel_leaves_no_process_behind(workdir: Path) -> None:
    adapter = _adapter(workdir, slots=1)
    script = "sleep 1000 &\necho child $!\nwait\n"
    native_id = adapter.submit(_request(script=script), new_job_id())
    until(lambda: "child " in adapter.logs(native_id), _WAIT_S, lambda: "the child's pid")
    child = int(adapter.logs(native_id).split()[1])
    shell = json.loads((workdir / "jobs" / native_id / "started.json").read_text())["pid"]

    adapter.cancel(native_id)

    assert finished(adapter, native_id, _WAIT_S).state is State.CANCELLED
    until(lambda: _gone(child) and _gone(shell), _WAIT_S, lambda: "the job's processes to end")


def test_background_processes_end_with_the_job(workdir: Path) -> None:
    adapter = _adapter(workdir, slots=1)
    native_id = adapter.submit(_request(script="sleep 1000 &\necho child $!\n"), new_job_id())

    assert finished(adapter, native_id, _WAIT_S).state is State.SUCCEEDED
    child = int(adapter.logs(native_id).split()[1])
    until(lambda: _gone(child), _WAIT_S, lambda: f"the background process {child} to end")


def test_a_job_ignoring_sigterm_is_killed_after_the_grace_period(workdir: Path) -> None:
    adapter = _adapter(workdir, slots=1, kill_grace_s=0.2)
    command = ["sh", "-c", 'trap "" TERM; while :; do sleep 0.05; done']
    native_id = adapter.submit(_request(command=command, resources=Resources(time_limit_s=1)),
                               new_job_id())

    observation = finished(adapter, native_id, _WAIT_S)

    assert observation.state is State.FAILED
    assert observation.reason is Reason.TIMEOUT
    assert observation.native_state == "TIMEOUT"
    assert observation.exit_code == 128 + signal.SIGKILL


def test_death_by_signal_reads_as_128_plus_the_signal(workdir: Path) -> None:
    adapter = _adapter(workdir, slots=1)
    native_id = adapter.submit(_request(command=["sh", "-c", "kill -KILL $$"]), new_job_id())

    observation = finished(adapter, native_id, _WAIT_S)

    assert observation.state is State.FAILED
    assert observation.reason is Reason.EXIT_CODE
    assert observation.exit_code == 137


def test_scripts_run_by_their_interpreter_or_sh(workdir: Path) -> None:
    adapter = _adapter(workdir, slots=2)
    python = adapter.submit(
        _request(script=f"#!{sys.executable}\nimport sys\nprint('python', sys.argv[0])\n"),
        new_job_id())
    plain = adapter.submit(_request(script="echo plain $0\n"), new_job_id())

    for native_id in (python, plain):
        assert finished(adapter, native_id, _WAIT_S).state is State.SUCCEEDED
    script = workdir / "jobs" / python / "script"
    assert adapter.logs(python) == f"python {script}\n"
    # Executed directly, a script without "#!" would fail (ENOEXEC): sh ran it.
    assert adapter.logs(plain) == f"plain {workdir / 'jobs' / plain / 'script'}\n"
    assert stat.S_IMODE(script.stat().st_mode) == 0o700


def test_jobs_get_a_minimal_environment(monkeypatch: pytest.MonkeyPatch,
                                        workdir: Path) -> None:
    monkeypatch.setenv("HB_BRIDGE_SECRET", "not for jobs")
    adapter = _adapter(workdir, slots=1)
    native_id = adapter.submit(
        _request(command=["env", "-0"], environment={"LANG": "C", "HB_MINE": "yes"}), "env-job")

    assert finished(adapter, native_id, _WAIT_S).state is State.SUCCEEDED

    seen = dict(e.partition("=")[::2] for e in adapter.logs(native_id).split("\0") if e)
    assert "HB_BRIDGE_SECRET" not in seen
    assert seen["HB_MINE"] == "yes"
    assert seen["LANG"] == "C"
    assert seen["HPCBRIDGE_JOB_ID"] == "env-job"
    assert seen["PATH"] == "/usr/local/bin:/usr/bin:/bin"


def test_working_directory_defaults_to_the_job_directory(tmp_path: Path,
                                                         workdir: Path) -> None:
    adapter = _adapter(workdir, slots=2)
    default = adapter.submit(_request(command=["pwd"]), new_job_id())
    chosen = adapter.submit(_request(command=["pwd"], working_dir=str(tmp_path)), new_job_id())

    for native_id in (default, chosen):
        assert finished(adapter, native_id, _WAIT_S).state is State.SUCCEEDED
    assert adapter.logs(default) == f"{workdir / 'jobs' / default}\n"
    assert adapter.logs(chosen) == f"{tmp_path}\n"


def test_a_program_that_cannot_start_fails_like_in_a_shell(workdir: Path) -> None:
    adapter = _adapter(workdir, slots=1)
    native_id = adapter.submit(_request(command=["no-such-program-hb"]), new_job_id())

    observation = finished(adapter, native_id, _WAIT_S)

    assert observation.state is State.FAILED
    assert observation.exit_code == 127
    assert "no-such-program-hb" in adapter.logs(native_id)


def test_concurrent_submits_of_one_job_make_one_job(tmp_path: Path, workdir: Path) -> None:
    runs = tmp_path / "runs"
    adapter = _adapter(workdir, slots=1)
    request = _request(command=_appending(runs, "run"))
    barrier = threading.Barrier(8)
    answers: list[str] = []

    def submit() -> None:
        barrier.wait()
        answers.append(adapter.submit(request, "the-one-job"))

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert answers == ["the-one-job"] * 8
    assert finished(adapter, "the-one-job", _WAIT_S).state is State.SUCCEEDED
    assert runs.read_text() == "run\n"
    assert [p.name for p in (workdir / "jobs").iterdir()] == ["the-one-job"]


def test_logs_tail_of_a_long_output(workdir: Path) -> None:
    adapter = _adapter(workdir, slots=1)
    native_id = adapter.submit(_request(command=["seq", "1", "100000"]), new_job_id())
    assert finished(adapter, native_id, _WAIT_S).state is State.SUCCEEDED

    assert adapter.logs(native_id, tail=3) == "99998\n99999\n100000\n"
    tail = adapter.logs(native_id, tail=30000).splitlines()
    assert tail == [str(n) for n in range(70001, 100001)]
    assert adapter.logs(native_id, tail=0) == ""
    assert len(adapter.logs(native_id).splitlines()) == 100000


@pytest.mark.parametrize("native_id", ["../escape", "/etc", "", "Upper", "a/b"])
def test_strings_that_are_no_job_id_are_unknown(workdir: Path, native_id: str) -> None:
    adapter = _adapter(workdir)

    assert adapter.status_many([native_id]) == {}
    assert adapter.logs(native_id) == ""
    assert adapter.find_by_tag(native_id) is None
    adapter.cancel(native_id)
    with pytest.raises(ManagerRejected):
        adapter.submit(_request(command=["true"]), native_id)


def test_more_than_one_node_is_refused(workdir: Path) -> None:
    with pytest.raises(ManagerRejected, match="nodes"):
        _adapter(workdir).submit(_request(command=["true"], resources=Resources(nodes=2)),
                                 new_job_id())


def test_built_from_the_targets_configuration(workdir: Path) -> None:
    adapter = adapters.create("local", "laptop", {"kind": "local", "workdir": str(workdir)})

    assert isinstance(adapter, LocalAdapter)
    assert adapter.capacity()["cpus"] == os.cpu_count()


def test_default_workdir_follows_xdg_state_home(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))

    LocalAdapter("laptop", {})

    assert (tmp_path / "state" / "hpc-bridge" / "local" / "laptop" / "jobs").is_dir()


@pytest.mark.parametrize("settings", [
    {"slots": 0},
    {"slots": "4"},
    {"slots": True},
    {"kill_grace_s": -1},
    {"workdir": "relative/path"},
    {"colour": "blue"},
], ids=["zero-slots", "string-slots", "bool-slots", "negative-grace", "relative-workdir",
        "unknown-setting"])
def test_bad_settings_are_configuration_errors(tmp_path: Path,
                                               settings: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        LocalAdapter("t", {"workdir": str(tmp_path), **settings})
