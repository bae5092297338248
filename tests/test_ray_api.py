"""Ray Jobs API requests and answers, and the launcher, without a Ray cluster.

The records follow what Ray 2.60's dashboard answered to ``GET /api/jobs/`` in the runs
behind :mod:`tests.test_ray_adapter`; the older shapes (no ``driver_exit_code``, no
``error_type``) are what Ray 2.x releases before those fields sent. The launcher is run
here the way Ray runs an entrypoint: ``/bin/sh -c <entrypoint>`` with the job's
``env_vars`` in the environment, expanded as Ray expands them.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from adapters import ray_api
from adapters.base import ManagerRejected
from hpcbridge.model import JobRequest, Reason, Resources, State
from tests.adapters import until

_JOB = "t-0123456789abcdef"


def request(**fields: Any) -> JobRequest:
    fields.setdefault("command", None if "script" in fields else ("true",))
    if fields["command"] is not None:
        fields["command"] = tuple(fields["command"])
    return JobRequest(target="ray-test", **fields)


def body(job: JobRequest, *, runtime_env: Mapping[str, Any] | None = None,
         metadata: Mapping[str, str] | None = None, kill_grace_s: float = 5,
         python: str = sys.executable) -> dict[str, Any]:
    return ray_api.submission(job, _JOB, python=python, runtime_env=runtime_env or {},
                              metadata=metadata or {}, kill_grace_s=kill_grace_s)


# --- requests --------------------------------------------------------------------------

def test_the_entrypoint_is_the_launcher_then_each_argument_quoted() -> None:
    command = ["printf", "%s", "$(touch x)", "; rm -rf /", "it's", "a\nb", "-n"]

    words = shlex.split(ray_api.entrypoint("python3", command))

    assert words[:3] == ["exec", "python3", "-c"]
    assert words[4:] == command


def test_the_launcher_has_nothing_ray_would_expand() -> None:
    """Ray expands $VAR and ${VAR} in every env_vars value."""
    assert "$" not in ray_api.LAUNCHER


def test_a_request_becomes_a_job_tagged_with_its_id() -> None:
    job = request(command=["echo", "hi"], name="step-1", labels={"team": "a"},
                  environment={"A": "1"},
                  resources=Resources(tasks=2, cpus_per_task=3, gpus=1, memory_mb=512))

    sent = body(job, runtime_env={"pip": ["numpy"], "env_vars": {"A": "0", "B": "2"}},
                metadata={"site": "x"})

    assert sent["submission_id"] == _JOB
    assert sent["metadata"] == {"site": "x", "team": "a", "job_name": "step-1",
                                ray_api.JOB_ID_KEY: _JOB}
    assert sent["runtime_env"]["pip"] == ["numpy"]
    env_vars = sent["runtime_env"]["env_vars"]
    assert (env_vars["A"], env_vars["B"], env_vars["HPCBRIDGE_JOB_ID"]) == ("1", "2", _JOB)
    assert sent["entrypoint_num_cpus"] == 6
    assert sent["entrypoint_num_gpus"] == 1
    assert sent["entrypoint_memory"] == 512 << 20
    launch = json.loads(base64.b64decode(env_vars["HPCBRIDGE_LAUNCH"]))
    assert launch == {"environment": {"A": "1"}, "kill_grace_s": 5}


def test_a_request_without_resources_reserves_nothing() -> None:
    sent = body(request())

    assert not {"entrypoint_num_cpus", "entrypoint_num_gpus", "entrypoint_memory"} & set(sent)
    assert sent["metadata"]["job_name"] == _JOB


@pytest.mark.parametrize(("fields", "says"), [
    ({"queue": "gpu"}, "queues"),
    ({"account": "proj"}, "accounts"),
    ({"resources": Resources(nodes=2)}, "one node"),
    ({"environment": {"HPCBRIDGE_LAUNCH": "x"}}, "HPCBRIDGE_LAUNCH"),
    ({"labels": {"job_name": "x"}}, "job_name"),
    ({"script": "#!/bin/sh\n" + "echo é\n" * 20_000}, "KiB"),
], ids=["queue", "account", "nodes", "reserved-env", "reserved-label", "too-large"])
def test_what_ray_cannot_honour_is_refused(fields: dict[str, Any], says: str) -> None:
    with pytest.raises(ManagerRejected, match=says):
        body(request(**fields))


def test_a_cancel_record_is_named_so_that_no_job_can_be() -> None:
    record = ray_api.cancel_record_body(_JOB)

    assert record["submission_id"] == f"{_JOB}.cancel"
    assert record["metadata"][ray_api.CANCELS_KEY] == _JOB


# --- the launcher, run as Ray runs an entrypoint ---------------------------------------

def _ray_environment(sent: Mapping[str, Any], base: Mapping[str, str]) -> dict[str, str]:
    """The entrypoint's environment: Ray expands references in env_vars values."""
    env = dict(base)
    for key, value in sent["runtime_env"]["env_vars"].items():
        env[key] = re.sub(r"\$\{[A-Z0-9_]+\}", "", os.path.expandvars(value))
    return env


def launch(job: JobRequest, tmp_path: Path, **options: Any) -> subprocess.Popen[bytes]:
    sent = body(job, **options)
    env = _ray_environment(sent, {"PATH": os.environ["PATH"], "HOME": str(tmp_path),
                                  "TMPDIR": str(tmp_path)})
    return subprocess.Popen(["/bin/sh", "-c", sent["entrypoint"]], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)


def run(job: JobRequest, tmp_path: Path, **options: Any) -> tuple[int, str]:
    process = launch(job, tmp_path, **options)
    out, _ = process.communicate(timeout=60)
    return process.returncode, out.decode()


def output(text: str) -> str:
    return ray_api.job_output(_JOB, "", text)


def test_hostile_arguments_and_environment_values_arrive_as_data(tmp_path: Path) -> None:
    hostile = ["$(touch x)", "`touch x`", "; touch x", "$HOME ${PATH}", "a\nb", "-n", ""]
    job = request(command=["printf", "%s\\0", *hostile],
                  environment={f"V{i}": text for i, text in enumerate(hostile)})

    code, text = run(job, tmp_path)

    assert code == 0
    assert output(text).split("\0")[:-1] == hostile
    code, text = run(request(command=["env", "-0"], environment=job.environment), tmp_path)
    seen = dict(entry.partition("=")[::2] for entry in output(text).split("\0"))
    assert {name: seen.get(name) for name in job.environment} == job.environment
    assert not (tmp_path / "x").exists()


def test_a_script_runs_with_its_interpreter_in_the_working_directory(tmp_path: Path) -> None:
    python = request(script="#!/usr/bin/env python3\nimport os\nprint(os.getcwd())\n",
                     working_dir=str(tmp_path))
    shell = request(script='echo "$1|$HB"\necho done\n', environment={"HB": "$HOME"})

    assert run(python, tmp_path) == (0, f"hpc-bridge: job {_JOB} starts\n{tmp_path}\n")
    code, text = run(shell, tmp_path)
    assert (code, output(text)) == (0, "|$HOME\ndone\n")
    assert not list(tmp_path.glob("hpcbridge-*")), "the script file is removed"


def test_exit_codes_are_shell_style(tmp_path: Path) -> None:
    assert run(request(command=["sh", "-c", "exit 3"]), tmp_path)[0] == 3
    assert run(request(command=["sh", "-c", "kill -9 $$"]), tmp_path)[0] == 137


def test_a_program_that_cannot_start_fails_with_127_and_says_why(tmp_path: Path) -> None:
    code, text = run(request(command=["true"], working_dir=str(tmp_path / "missing")),
                     tmp_path)

    assert code == 127
    assert output(text) == (f"hpc-bridge: cannot start true in {tmp_path / 'missing'}: "
                            "No such file or directory\n")


def test_the_time_limit_stops_the_job_and_says_so_last(tmp_path: Path) -> None:
    job = request(command=["sh", "-c", "echo started; sleep 30"],
                  resources=Resources(time_limit_s=1))

    code, text = run(job, tmp_path)

    assert code == -signal.SIGKILL  # Ray reads -9, the adapter 137
    assert output(text) == f"started\nhpc-bridge: job {_JOB} stopped at its time limit of 1 s\n"
    message = f"Job entrypoint command failed with exit code {code}, last available logs " \
              f"(truncated to 20,000 chars):\n{text}"
    assert ray_api.timed_out({"submission_id": _JOB, "message": message})


def test_a_job_deaf_to_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    job = request(command=["sh", "-c", "trap '' TERM; echo ready; sleep 30"],
                  resources=Resources(time_limit_s=1))

    code, text = run(job, tmp_path, kill_grace_s=0.5)

    assert code == -signal.SIGKILL  # Ray reads -9, the adapter 137
    assert output(text).endswith("stopped at its time limit of 1 s\n")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def test_rays_stop_reaches_the_whole_job(tmp_path: Path) -> None:
    job = request(command=["sh", "-c", "sleep 300 & echo $!; wait"])
    process = launch(job, tmp_path)
    assert process.stdout is not None
    lines = [process.stdout.readline().decode(), process.stdout.readline().decode()]
    background = int(lines[1])
    assert _alive(background)

    process.send_signal(signal.SIGTERM)

    assert process.wait(30) == -signal.SIGKILL
    until(lambda: not _alive(background), 30, lambda: f"{background} outlived the stop")


def test_a_stop_as_the_job_starts_means_the_command_never_runs(tmp_path: Path) -> None:
    """Ray sends the stop of a job cancelled while PENDING right as its entrypoint starts."""
    marker = tmp_path / "ran"
    process = launch(request(command=["touch", str(marker)]), tmp_path)
    process.send_signal(signal.SIGTERM)

    process.wait(30)

    assert process.returncode != 0
    assert not marker.exists()


# --- answers ---------------------------------------------------------------------------

def record(status: str, **fields: Any) -> dict[str, Any]:
    """A record of ``GET /api/jobs/`` as Ray 2.60 sends it."""
    base = {"type": "SUBMISSION", "job_id": None, "submission_id": _JOB, "driver_info": None,
            "status": status, "entrypoint": "exec python -c ...", "message": "",
            "error_type": None, "start_time": 1795446077354, "end_time": None,
            "metadata": {ray_api.JOB_ID_KEY: _JOB}, "runtime_env": {},
            "driver_agent_http_address": None, "driver_node_id": None,
            "driver_exit_code": None}
    if status != "PENDING":
        base["driver_node_id"] = "dc1da196"
    if status in ("SUCCEEDED", "FAILED", "STOPPED"):
        base["end_time"] = 1795446078856
    base.update(fields)
    return base


_FAILED_3 = ("Job entrypoint command failed with exit code 3, last available logs "
             "(truncated to 20,000 chars):\nhpc-bridge: job t starts\nbye\n")


@pytest.mark.parametrize(("job", "state", "code", "reason"), [
    (record("PENDING"), State.QUEUED, None, None),
    (record("RUNNING"), State.RUNNING, None, None),
    (record("SUCCEEDED", driver_exit_code=0), State.SUCCEEDED, 0, None),
    (record("SUCCEEDED"), State.SUCCEEDED, 0, None),
    (record("FAILED", driver_exit_code=3, message=_FAILED_3,
            error_type="JOB_ENTRYPOINT_COMMAND_ERROR"), State.FAILED, 3, Reason.EXIT_CODE),
    (record("FAILED", message=_FAILED_3), State.FAILED, 3, Reason.EXIT_CODE),
    (record("FAILED", message=_FAILED_3.replace(" 3,", " -9,")), State.FAILED, 137,
     Reason.EXIT_CODE),
    (record("FAILED", driver_exit_code=143, error_type="JOB_ENTRYPOINT_COMMAND_ERROR",
            message=_FAILED_3 + f"hpc-bridge: job {_JOB} stopped at its time limit of 1 s\n"),
     State.FAILED, 143, Reason.TIMEOUT),
    (record("FAILED", error_type="RUNTIME_ENV_SETUP_FAILURE", driver_node_id=None,
            message="runtime_env setup failed: ..."), State.FAILED, None, Reason.SUBMIT_ERROR),
    (record("FAILED", error_type="JOB_SUPERVISOR_ACTOR_DIED"), State.FAILED, None,
     Reason.NODE_FAILURE),
    (record("STOPPED", message="Job was intentionally stopped."), State.CANCELLED, None,
     Reason.CANCELLED),
    (record("RESTARTING"), State.UNKNOWN, None, None),
], ids=["pending", "running", "succeeded", "succeeded-older", "exit-code", "exit-code-older",
        "signal-older", "timeout", "runtime-env", "node", "stopped", "unknown"])
def test_records_map_to_states(job: dict[str, Any], state: State, code: int | None,
                               reason: Reason | None) -> None:
    observation = ray_api.observe(job)

    assert (observation.state, observation.exit_code, observation.reason) == \
        (state, code, reason)
    assert observation.native_state.startswith(job["status"])
    assert (observation.started_at is not None) == bool(job["driver_node_id"])
    assert (observation.finished_at is not None) == state.terminal


def test_a_pending_job_with_a_cancel_record_is_cancelled() -> None:
    cancel = record("SUCCEEDED", submission_id=f"{_JOB}.cancel", start_time=1795446090000,
                    metadata={ray_api.CANCELS_KEY: _JOB})
    jobs, cancels = ray_api.index([record("PENDING"), cancel,
                                   {"type": "DRIVER", "submission_id": None}])

    observation = ray_api.observe(jobs[_JOB], cancels.get(_JOB))

    assert set(jobs) == {_JOB, f"{_JOB}.cancel"}
    assert observation.state is State.CANCELLED
    assert observation.reason is Reason.CANCELLED
    assert observation.native_state == "PENDING (stop requested)"
    assert observation.started_at is None
    assert observation.finished_at == 1795446090.0
    assert ray_api.observe(record("RUNNING"), cancel).state is State.RUNNING


@pytest.mark.parametrize("logs", [
    "2026-11-23 15:01:17,362\tINFO job_manager.py:581 -- Runtime env is setting up.\n"
    "Running entrypoint for job {job}: {entrypoint}\n"
    "hpc-bridge: job {job} starts\n1\n2\n",
    "2026-11-23 15:01:17,362\tINFO job_manager.py:581 -- Runtime env is setting up.\n"
    "hpc-bridge: job {job} starts\n1\nRunning entrypoint for job {job}: {entrypoint}\n2\n",
    "Runtime env is setting up.\n"
    "hpc-bridge: job {job} starts\n1\n2Running entrypoint for job {job}: {entrypoint}\n\n",
], ids=["before", "between-lines", "mid-line"])
def test_rays_lines_are_cut_from_the_output_wherever_they_land(logs: str) -> None:
    entrypoint = ray_api.entrypoint("python", ["printf", "hpc-bridge: job {job} starts\n"])

    text = ray_api.job_output(_JOB, entrypoint, logs.format(job=_JOB, entrypoint=entrypoint))

    assert text == "1\n2\n"


def test_a_log_without_the_boundary_is_rays_own_and_kept() -> None:
    logs = "Runtime env is setting up.\nruntime_env setup failed: no such package\n"

    assert ray_api.job_output(_JOB, "exec python -c x", logs) == logs


def test_tail() -> None:
    assert ray_api.tail("1\n2\n3\n", 2) == "2\n3\n"
    assert ray_api.tail("1\n2\n3", 1) == "3"
    assert ray_api.tail("1\n", 0) == ""
    assert ray_api.tail("1\n", None) == "1\n"


def test_capacity_from_the_cluster_status() -> None:
    status = {"result": True, "data": {"clusterStatus": {
        "autoscalerReport": {"activeNodes": {"node_dc1da196": 1}, "idleNodes": None},
        "loadMetricsReport": {"usage": {"CPU": [0.5, 2.0], "memory": [0.0, 17202182144.0],
                                        "objectStoreMemory": [0.0, 134217728.0],
                                        "node:127.0.0.1": [0.0, 1.0]}}}}}

    assert ray_api.capacity(status) == {"cpus": 2, "idle_cpus": 1, "memory_mb": 16405,
                                        "gpus": 0, "nodes": 1}
    assert ray_api.capacity({"result": False}) == {}


def test_error_detail_is_the_last_line_of_rays_traceback() -> None:
    text = ("Traceback (most recent call last):\n  File \"common.py\", line 517\n"
            "TypeError: metadata values must be strings, got <class 'int'>\n")

    assert ray_api.error_detail(text) == \
        "TypeError: metadata values must be strings, got <class 'int'>"
