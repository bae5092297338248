"""slurmrestd answers and requests, v0.0.38 to v0.0.41, without a cluster.

The v0.0.38 shapes were recorded from Slurm 22.05.8's slurmrestd; the later ones follow
the public OpenAPI descriptions of those versions (lists for ``job_state``, number
objects ``{set, infinite, number}``, verbose exit codes, ``environment`` as a list).
"""

from __future__ import annotations

import shlex
from typing import Any

import pytest

from adapters import slurm_api
from adapters.slurm_api import Failure, JobSpec, SlurmError
from hpcbridge.model import Reason, State


def num(value: int, *, set_: bool = True, infinite: bool = False) -> dict[str, Any]:
    return {"set": set_, "infinite": infinite, "number": value}


# --- versions ------------------------------------------------------------------------

@pytest.mark.parametrize(("paths", "expected"), [
    (["/slurm/v0.0.38/jobs", "/slurm/v0.0.37/jobs", "/slurm/v0.0.36/diag", "/openapi/v3"],
     "v0.0.38"),
    (["/slurm/v0.0.42/jobs/", "/slurm/v0.0.41/jobs/", "/slurm/v0.0.40/jobs/",
      "/slurmdb/v0.0.41/jobs/"], "v0.0.41"),
    (["/slurm/v0.0.39/job/submit", "/slurmdb/v0.0.40/jobs"], "v0.0.39"),
    (["/slurm/v0.0.37/jobs", "/slurmdb/v0.0.38/jobs"], None),
])
def test_newest_version_both_sides_speak_is_chosen(paths: list[str],
                                                   expected: str | None) -> None:
    document = {"openapi": "3.0.2", "paths": {path: {} for path in paths}}

    assert slurm_api.pick_version(slurm_api.served_versions(document)) == expected


def test_a_document_without_paths_serves_nothing() -> None:
    assert slurm_api.served_versions({"info": {}}) == set()


# --- values ----------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    (5, 5),
    (num(5), 5),
    (num(0, set_=False), None),
    (num(0, infinite=True), None),
    ({"number": 7}, 7),
    (None, None),
    (True, None),
    ("5", None),
])
def test_numbers_in_either_form(value: Any, expected: int | None) -> None:
    assert slurm_api.number(value) == expected


@pytest.mark.parametrize(("value", "expected"), [
    ("COMPLETED", ["COMPLETED"]),
    (["FAILED", "REQUEUED"], ["FAILED", "REQUEUED"]),
    ([], []),
    ("", []),
    (None, []),
])
def test_job_state_as_list(value: Any, expected: list[str]) -> None:
    assert slurm_api.job_states(value) == expected


@pytest.mark.parametrize(("states", "state", "reason"), [
    (["PENDING"], State.QUEUED, None),
    (["CONFIGURING"], State.QUEUED, None),
    (["REQUEUED"], State.QUEUED, None),
    (["PENDING", "REQUEUED"], State.QUEUED, None),
    (["RUNNING", "CONFIGURING"], State.QUEUED, None),
    (["RUNNING"], State.RUNNING, None),
    (["COMPLETING"], State.RUNNING, None),
    (["CANCELLED", "COMPLETING"], State.RUNNING, None),
    (["SUSPENDED"], State.SUSPENDED, None),
    (["COMPLETED"], State.SUCCEEDED, None),
    (["FAILED"], State.FAILED, Reason.EXIT_CODE),
    (["TIMEOUT"], State.FAILED, Reason.TIMEOUT),
    (["DEADLINE"], State.FAILED, Reason.TIMEOUT),
    (["OUT_OF_MEMORY"], State.FAILED, Reason.OUT_OF_MEMORY),
    (["NODE_FAIL"], State.FAILED, Reason.NODE_FAILURE),
    (["BOOT_FAIL"], State.FAILED, Reason.NODE_FAILURE),
    (["PREEMPTED"], State.FAILED, Reason.PREEMPTED),
    (["CANCELLED"], State.CANCELLED, Reason.CANCELLED),
    (["FAILED", "LAUNCH_FAILED"], State.FAILED, Reason.EXIT_CODE),
    (["SOMETHING_NEW"], State.UNKNOWN, None),
    ([], State.UNKNOWN, None),
])
def test_slurm_states_map_to_bridge_states(states: list[str], state: State,
                                           reason: Reason | None) -> None:
    assert slurm_api.map_state(states) == (state, reason)


@pytest.mark.parametrize(("value", "expected"), [
    (0, 0),
    (768, 3),           # exit 3, measured on 22.05
    (256 * 255, 255),
    (9, 137),           # SIGKILL
    (15, 143),          # SIGTERM, as after scancel
    (0x86, 134),        # SIGABRT with the core-dump bit
    (num(768), 3),
    (None, None),
    ({"status": ["SUCCESS"], "return_code": num(0),
      "signal": {"id": num(0, set_=False), "name": ""}}, 0),
    ({"status": ["ERROR"], "return_code": num(3),
      "signal": {"id": num(0, set_=False), "name": ""}}, 3),
    ({"status": ["SIGNALED"], "return_code": num(0),
      "signal": {"id": num(9), "name": "KILL"}}, 137),
    ({"status": ["CORE_DUMPED"], "return_code": num(0),
      "signal": {"id": num(11), "name": "SEGV"}}, 139),
    ({"status": "SIGNALED", "return_code": 0, "signal": {"signal_id": 15, "name": "TERM"}},
     143),
    ({"status": ["PENDING"], "return_code": num(0, set_=False)}, None),
])
def test_exit_codes_in_either_form(value: Any, expected: int | None) -> None:
    assert slurm_api.decode_exit_code(value) == expected


# --- whole job records -----------------------------------------------------------------

V38_FAILED = {  # an excerpt of a real v0.0.38 record: `exit 3` in a batch script
    "job_id": 1, "name": "t1", "comment": "hpcbridge:t1", "job_state": "FAILED",
    "exit_code": 768, "derived_exit_code": 0, "state_reason": "NonZeroExitCode",
    "submit_time": 1795443468, "start_time": 1795443469, "end_time": 1795443469,
}
V38_PENDING = {
    "job_id": 2, "name": "held1", "job_state": "PENDING", "exit_code": 0,
    "state_reason": "PartitionDown", "start_time": 1795450000, "end_time": 1795453600,
}
V41_TIMEOUT = {
    "job_id": 77, "name": "j-1", "comment": "hpcbridge:j-1",
    "job_state": ["TIMEOUT"],
    "exit_code": {"status": ["SIGNALED"], "return_code": num(0),
                  "signal": {"id": num(15), "name": "TERM"}},
    "start_time": num(1700000100), "end_time": num(1700000190),
    "submit_time": num(1700000000), "time_limit": num(1),
}
V41_RUNNING = {
    "job_id": 78, "job_state": ["RUNNING"],
    "exit_code": {"status": ["PENDING"], "return_code": num(0, set_=False)},
    "start_time": num(1700000100), "end_time": num(1700003700),
}


def test_v0038_failed_job() -> None:
    observation = slurm_api.observe(V38_FAILED)

    assert (observation.state, observation.reason, observation.exit_code) == (
        State.FAILED, Reason.EXIT_CODE, 3)
    assert observation.native_state == "FAILED"
    assert (observation.started_at, observation.finished_at) == (1795443469, 1795443469)


def test_estimated_times_of_a_waiting_job_are_not_reported() -> None:
    observation = slurm_api.observe(V38_PENDING)

    assert observation.state is State.QUEUED
    assert (observation.started_at, observation.finished_at, observation.exit_code) == (
        None, None, None)


def test_v0041_timed_out_job() -> None:
    observation = slurm_api.observe(V41_TIMEOUT)

    assert (observation.state, observation.reason, observation.exit_code) == (
        State.FAILED, Reason.TIMEOUT, 143)
    assert observation.native_state == "TIMEOUT"
    assert (observation.started_at, observation.finished_at) == (1700000100, 1700000190)


def test_v0041_running_job_has_no_end_yet() -> None:
    observation = slurm_api.observe(V41_RUNNING)

    assert observation.state is State.RUNNING
    assert (observation.started_at, observation.finished_at, observation.exit_code) == (
        1700000100, None, None)


def test_base_state_and_flags_are_joined() -> None:
    observation = slurm_api.observe({"job_state": ["CANCELLED", "COMPLETING"]})

    assert observation.native_state == "CANCELLED,COMPLETING"
    assert observation.state is State.RUNNING


# --- errors ----------------------------------------------------------------------------

# Recorded from slurmrestd 22.05.8 (v0.0.38) unless said otherwise.
BAD_PARTITION = (500, {"errors": [{"error_code": 2000,
                                   "error": "Invalid partition name specified"}]})
NO_ENVIRONMENT = (400, {"errors": [{"error": "environment must be set", "error_code": 2127},
                                   {"error_code": 9001, "error": "Failure during parsing"}]})
UNKNOWN_KEY = (400, {"errors": [{"description": "Unknown key \"bogus\"", "source": "hsearch_r"},
                                {"error_code": 9001, "error": "Failure during parsing"}]})
TOKEN_REFUSED_SUBMIT = (500, {"errors": [{"error_code": 5005,
                                          "error": "Zero Bytes were transmitted or received"}]})
TOKEN_REFUSED_KILL = (500, {"errors": [{
    "description": "unable to kill JobId=0 with signal 9: Zero Bytes were transmitted or "
                   "received",
    "error_number": 5005, "error": "Zero Bytes were transmitted or received",
    "source": "slurm_kill_job"}]})
JOBS_UNSPECIFIED = (500, {"errors": [{"description": "Failed while looking for jobs",
                                      "error_number": -1, "error": "Unspecified error",
                                      "source": "slurm_load_jobs"}], "jobs": []})
NODES_UNSPECIFIED = (500, {"errors": [{"error": "Unspecified error", "errno": -1}],
                           "nodes": []})
CONTROLLER_DOWN = (500, {"errors": [{"error_code": 1800, "error": "Unable to contact slurm "
                                     "controller (connect failure)"}]})
UNKNOWN_JOB = (500, {"errors": [{
    "description": "unable to kill JobId=99999 with signal 9: Invalid job id specified",
    "error_number": 2017, "error": "Invalid job id specified", "source": "slurm_kill_job"}]})
NO_TOKEN_HEADER = (401, None)
PROXY_DOWN = (502, None)
V41_REJECTED = (500, {"errors": [{"description": "Job submission failed",
                                  "error_number": 2000,
                                  "error": "Invalid partition name specified",
                                  "source": "slurm_submit_batch_job()"}],
                      "warnings": []})


@pytest.mark.parametrize(("answer", "failure"), [
    (BAD_PARTITION, Failure.REJECTED),
    (NO_ENVIRONMENT, Failure.REJECTED),
    (UNKNOWN_KEY, Failure.REJECTED),
    (UNKNOWN_JOB, Failure.REJECTED),
    (V41_REJECTED, Failure.REJECTED),
    (TOKEN_REFUSED_SUBMIT, Failure.CREDENTIALS_REFUSED),
    (TOKEN_REFUSED_KILL, Failure.CREDENTIALS_REFUSED),
    (NO_TOKEN_HEADER, Failure.CREDENTIALS_REFUSED),
    (JOBS_UNSPECIFIED, Failure.AMBIGUOUS),
    (NODES_UNSPECIFIED, Failure.AMBIGUOUS),
    (CONTROLLER_DOWN, Failure.UNAVAILABLE),
    (PROXY_DOWN, Failure.UNAVAILABLE),
    ((429, None), Failure.UNAVAILABLE),
    ((404, None), Failure.REJECTED),
])
def test_failures_are_classified(answer: tuple[int, Any], failure: Failure) -> None:
    status, body = answer

    assert slurm_api.classify(status, slurm_api.errors(body)) is failure


def test_error_texts_keep_what_slurm_said() -> None:
    assert slurm_api.errors(BAD_PARTITION[1]) == [
        SlurmError(2000, "Invalid partition name specified")]
    assert slurm_api.errors(JOBS_UNSPECIFIED[1]) == [
        SlurmError(-1, "Failed while looking for jobs: Unspecified error")]
    assert slurm_api.errors(UNKNOWN_JOB[1]) == [SlurmError(
        2017, "unable to kill JobId=99999 with signal 9: Invalid job id specified")]
    assert slurm_api.errors(UNKNOWN_KEY[1])[0] == SlurmError(None, "Unknown key \"bogus\"")
    assert slurm_api.errors(V41_REJECTED[1]) == [SlurmError(
        2000, "Job submission failed: Invalid partition name specified")]
    assert slurm_api.errors(None) == slurm_api.errors({"errors": []}) == []


# --- requests --------------------------------------------------------------------------

SPEC = JobSpec(
    script="#!/bin/sh\ntrue\n", name="j-1", comment="hpcbridge:j-1", working_dir="/work",
    environment={"PATH": "/bin", "A": "b=c"}, output="/out/%j.out", partition="debug",
    account="physics", time_limit_min=2, nodes=1, tasks=4, cpus_per_task=2,
    memory_mb=1024, gpus=2,
)


def test_v0038_submission() -> None:
    assert slurm_api.submission("v0.0.38", SPEC) == {
        "script": "#!/bin/sh\ntrue\n",
        "job": {
            "name": "j-1", "comment": "hpcbridge:j-1", "current_working_directory": "/work",
            "standard_output": "/out/%j.out", "standard_error": "/out/%j.out",
            "partition": "debug", "account": "physics", "tasks": 4, "cpus_per_task": 2,
            "time_limit": 2, "memory_per_node": 1024,
            "environment": {"PATH": "/bin", "A": "b=c"},
            "nodes": [1, 1], "gpus_per_node": "2",
        },
    }


@pytest.mark.parametrize("version", ["v0.0.39", "v0.0.40", "v0.0.41"])
def test_later_submissions(version: str) -> None:
    assert slurm_api.submission(version, SPEC) == {
        "job": {
            "script": "#!/bin/sh\ntrue\n",
            "name": "j-1", "comment": "hpcbridge:j-1", "current_working_directory": "/work",
            "standard_output": "/out/%j.out", "standard_error": "/out/%j.out",
            "partition": "debug", "account": "physics", "tasks": 4, "cpus_per_task": 2,
            "time_limit": num(2), "memory_per_node": num(1024),
            "environment": ["PATH=/bin", "A=b=c"],
            "minimum_nodes": 1, "maximum_nodes": 1, "tres_per_node": "gres/gpu:2",
        },
    }


def test_unset_resources_are_left_to_slurm() -> None:
    minimal = JobSpec(script="#!/bin/sh\n", name="j", comment="c", working_dir="/w",
                      environment={"PATH": "/bin"}, output="/o")

    assert set(slurm_api.submission("v0.0.38", minimal)["job"]) == {
        "name", "comment", "current_working_directory", "standard_output",
        "standard_error", "environment"}


def test_command_is_executed_with_every_argument_quoted() -> None:
    argv = ["printf", "%s\n", "it's", "$(reboot)", "a b", "; rm -rf /", "\n"]

    script = slurm_api.batch_script(None, argv)

    first, exec_line = script.splitlines()[0], script[len("#!/bin/sh\n"):]
    assert first == "#!/bin/sh"
    assert exec_line.startswith("exec ")
    assert shlex.split(exec_line[len("exec "):]) == argv


def test_script_gets_an_interpreter_line_only_when_missing() -> None:
    assert slurm_api.batch_script("echo hi\n", None) == "#!/bin/sh\necho hi\n"
    assert slurm_api.batch_script("#!/bin/bash\necho hi\n", None) == "#!/bin/bash\necho hi\n"


# --- nodes -----------------------------------------------------------------------------

def test_capacity_sums_the_nodes() -> None:
    body = {"nodes": [
        {"name": "vm", "cpus": 16, "idle_cpus": 16, "real_memory": 23593, "gres": ""},
        {"name": "g1", "cpus": num(64), "idle_cpus": num(60), "real_memory": num(512000),
         "gres": "gpu:a100:4(S:0-1),gpu:2"},
    ]}

    assert slurm_api.capacity(body) == {"nodes": 2, "cpus": 80, "idle_cpus": 76,
                                        "memory_mb": 535593, "gpus": 6}
