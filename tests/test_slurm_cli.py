"""Slurm's command lines built and their output read (adapters.slurm_cli), without Slurm.

The sample outputs are what Slurm 22.05's commands printed for the formats the adapter asks
for (squeue and sinfo checked on the test cluster; sacct's per its documentation, as the
test cluster keeps no accounting).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from adapters import slurm_api, slurm_cli
from hpcbridge.model import Reason, State

_SQUEUE = """\
1|FAILED|256|1795446086|1795446086|
2|CANCELLED|15|1795446086|1795446126|
3|RUNNING|0|1795446086|1826982086|
4|PENDING|0|N/A|N/A|
5|COMPLETING|0|1795446090|1795446099|
6|COMPLETED|0|1795446091|1795446092|
7|TIMEOUT|0|1795446000|1795446060|
"""


def test_squeue_lines_read_like_the_rest_api() -> None:
    jobs = slurm_cli.parse_squeue(_SQUEUE + "\nnot a job line\n")

    assert set(jobs) == {"1", "2", "3", "4", "5", "6", "7"}
    assert (jobs["1"].state, jobs["1"].exit_code, jobs["1"].reason) == (
        State.FAILED, 1, Reason.EXIT_CODE)
    assert (jobs["2"].state, jobs["2"].exit_code, jobs["2"].reason) == (
        State.CANCELLED, 143, Reason.CANCELLED)
    assert (jobs["3"].state, jobs["3"].started_at, jobs["3"].finished_at) == (
        State.RUNNING, 1795446086, None)
    assert (jobs["4"].state, jobs["4"].started_at, jobs["4"].native_state) == (
        State.QUEUED, None, "PENDING")
    assert jobs["5"].state is State.RUNNING
    assert (jobs["6"].state, jobs["6"].exit_code, jobs["6"].finished_at) == (
        State.SUCCEEDED, 0, 1795446092)
    assert (jobs["7"].state, jobs["7"].reason) == (State.FAILED, Reason.TIMEOUT)


def test_squeue_and_the_rest_api_map_one_record_alike() -> None:
    rest = {"job_state": "FAILED", "exit_code": 768, "start_time": 10, "end_time": 20}

    assert slurm_cli.parse_squeue("9|FAILED|768|10|20|\n")["9"] == slurm_api.observe(rest)


def test_sacct_lines_have_their_own_state_and_exit_code_forms() -> None:
    jobs = slurm_cli.parse_sacct(
        "11|CANCELLED by 1001|0:15|1795446086|1795446126\n"
        "12|FAILED|3:0|1795446086|1795446087\n"
        "13|COMPLETED|0:0|1795446086|1795446087\n"
        "14|OUT_OF_MEMORY|0:125|1795446086|1795446087\n"
        "15|PENDING|0:0|Unknown|Unknown\n"
        "16.batch|COMPLETED|0:0|1|2\n")

    assert set(jobs) == {"11", "12", "13", "14", "15"}
    assert (jobs["11"].state, jobs["11"].exit_code) == (State.CANCELLED, 143)
    assert (jobs["12"].state, jobs["12"].exit_code, jobs["12"].reason) == (
        State.FAILED, 3, Reason.EXIT_CODE)
    assert (jobs["13"].state, jobs["13"].exit_code) == (State.SUCCEEDED, 0)
    assert jobs["14"].reason is Reason.OUT_OF_MEMORY
    assert (jobs["15"].state, jobs["15"].started_at) == (State.QUEUED, None)


def test_sacct_asks_only_for_slurm_job_numbers() -> None:
    args = slurm_cli.sacct_args("sacct", ["12", "x;y", "13", "--all"])

    assert "--jobs=12,13" in args
    assert args[:3] == ["env", "SLURM_TIME_FORMAT=%s", "sacct"]


def test_ids_and_sbatch_answers() -> None:
    assert slurm_cli.parse_ids("12|\n9|\n(null)|\n") == ["12", "9"]
    assert slurm_cli.parse_sbatch("123\n") == "123"
    assert slurm_cli.parse_sbatch("124;cluster-a\n") == "124"
    assert slurm_cli.parse_sbatch("") is None
    assert slurm_cli.parse_sbatch("Submitted batch job 5\n") is None


def test_sinfo_counts_each_node_once() -> None:
    capacity = slurm_cli.parse_sinfo("n1|4/12/0/16|64000|(null)|\n"
                                     "n1|4/12/0/16|64000|(null)|\n"
                                     "n2|0/8/0/8|32000|gpu:a100:2|\n")

    assert capacity == {"nodes": 2, "cpus": 24, "idle_cpus": 20, "memory_mb": 96000,
                        "gpus": 2}


def test_sbatch_arguments_carry_the_spec() -> None:
    spec = slurm_api.JobSpec(script="", name="j-1", comment="hpcbridge:j-1",
                             working_dir="/w d", environment={"A": "secret"},
                             output="/o/%j.out", partition="p", account="acc",
                             time_limit_min=2, nodes=1, tasks=2, cpus_per_task=3,
                             memory_mb=512, gpus=1)

    args = slurm_cli.sbatch_args("/opt/slurm/bin/sbatch", spec, "/r/j-1/job.sh")

    assert args == ["/opt/slurm/bin/sbatch", "--parsable", "--export=NONE", "--job-name=j-1",
                    "--comment=hpcbridge:j-1", "--chdir=/w d", "--output=/o/%j.out",
                    "--partition=p", "--account=acc", "--time=2", "--nodes=1", "--ntasks=2",
                    "--cpus-per-task=3", "--mem=512M", "--gres=gpu:1", "/r/j-1/job.sh"]
    assert not [arg for arg in args if "secret" in arg]


def test_output_pattern_keeps_percent_signs_in_the_directory() -> None:
    assert slurm_cli.output_pattern("/data/100%/x/") == "/data/100%%/x/%j.out"


def test_job_script_hands_values_and_arguments_over_as_data(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    hostile = [f"$(touch {marker})", f"`touch {marker}`", f"; touch {marker}", "a\nb",
               "'\"\\", "*", "-n", "", " x "]
    environment = {f"HB_{i}": value for i, value in enumerate(hostile)}
    script = tmp_path / "job.sh"
    script.write_text(slurm_cli.job_script(
        environment, ["sh", "-c", 'printf "%s\\0" "$@"; env -0', "sh", *hostile]))

    out = subprocess.run(["sh", str(script)], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin"}).stdout

    fields = out.split("\0")
    assert fields[:len(hostile)] == hostile
    seen = dict(entry.partition("=")[::2] for entry in fields[len(hostile):] if entry)
    assert {name: seen.get(name) for name in environment} == environment
    assert not marker.exists()


def test_job_script_refuses_names_that_are_not_variables() -> None:
    with pytest.raises(ValueError, match="not an environment variable name"):
        slurm_cli.job_script({"A;touch x": "1"}, ["true"])


@pytest.mark.parametrize(("stderr", "transient"), [
    ("sbatch: error: Batch job submission failed: Unable to contact slurm controller "
     "(connect failure)", True),
    ("squeue: error: slurm_load_jobs error: Socket timed out on send/recv operation", True),
    ("sbatch: error: Batch job submission failed: Zero Bytes were transmitted or received",
     True),
    ("sbatch: error: Munge decode failed: Expired credential", True),
    ("sbatch: error: Batch job submission failed: Invalid partition name specified", False),
    ("sbatch: error: Batch job submission failed: Requested node configuration is not "
     "available", False),
    ("sbatch: error: Batch job submission failed: Invalid account or account/partition "
     "combination specified", False),
])
def test_failures_that_say_slurm_is_away_are_transient(stderr: str, transient: bool) -> None:
    assert slurm_cli.transient(stderr) is transient


def test_accounting_disabled_is_recognised() -> None:
    assert slurm_cli.accounting_disabled("Slurm accounting storage is disabled\n")
    assert not slurm_cli.accounting_disabled("sacct: error: Problem talking to the database")
