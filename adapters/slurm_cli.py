"""Slurm's command line: argv built and output read, without any I/O.

Checked against Slurm 22.05's ``sbatch``, ``squeue``, ``sacct``, ``scancel`` and ``sinfo``.
What the commands report is turned into the records :mod:`adapters.slurm_api` reads, so
states, exit codes and times mean exactly what they mean for the REST adapter:

* ``squeue --Format`` prints ``State`` as ``job_state_string`` does (the same text as
  slurmrestd v0.0.38's ``job_state``) and ``exit_code`` as the raw wait status (exit 3
  reads 768), the same as v0.0.38's ``exit_code``;
* ``sacct`` prints ``State`` with a suffix (``CANCELLED by 1001``) and ``ExitCode`` as
  ``status:signal``;
* times are read as epoch seconds: every reading command runs under
  ``env SLURM_TIME_FORMAT=%s``.

``squeue --json`` is not used: up to Slurm 23.02 it ignores every filter, so it would
return every job of every user of the cluster.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from adapters import slurm_api
from adapters.base import Observation

__all__ = [
    "accounting_disabled",
    "find_args",
    "job_script",
    "output_pattern",
    "parse_ids",
    "parse_sacct",
    "parse_sbatch",
    "parse_sinfo",
    "parse_squeue",
    "sacct_args",
    "sbatch_args",
    "sinfo_args",
    "squeue_args",
    "transient",
]

_EPOCH = ("env", "SLURM_TIME_FORMAT=%s")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_JOB_ID = re.compile(r"^\d+$")
# What Slurm's tools print when slurmctld or slurmdbd cannot be reached or is busy
# (slurm_errno.c); anything else on a failed command is a refusal.
_TRANSIENT = re.compile(
    r"unable to contact slurm controller|communication connection failure|"
    r"communication (send|receive|shutdown) failure|socket timed out|"
    r"zero bytes were transmitted|temporarily unable|not responding|connection refused|"
    r"standby mode|slurmdbd|persistent connection|unable to establish|munge|"
    r"authentication error",
    re.IGNORECASE)
_ACCOUNTING_DISABLED = re.compile(r"accounting storage is disabled", re.IGNORECASE)


# --- submit ----------------------------------------------------------------------------

def job_script(environment: Mapping[str, str], argv: Sequence[str]) -> str:
    """The batch script: export the environment, then exec ``argv``.

    Every value and argument is quoted with :func:`shlex.quote`, so the script's shell
    sees plain words whatever they contain; names must be shell variable names.
    """
    lines = ["#!/bin/sh"]
    for name, value in environment.items():
        if not _ENV_NAME.match(name):
            raise ValueError(f"{name!r} is not an environment variable name")
        lines.append(f"export {name}={shlex.quote(value)}")
    lines.append("exec " + shlex.join(argv))
    return "\n".join(lines) + "\n"


def output_pattern(directory: str) -> str:
    """``sbatch --output`` for ``<directory>/<job id>.out``, ``%`` escaped in the directory."""
    return directory.rstrip("/").replace("%", "%%") + "/%j.out"


def sbatch_args(sbatch: str, spec: slurm_api.JobSpec, script_path: str) -> list[str]:
    """``sbatch`` for ``spec``, whose batch script is already at ``script_path``.

    ``--export=NONE``: the job starts from the user's login environment (Slurm loads it
    on the node) plus what the script exports, never the SSH session's.
    """
    args = [sbatch, "--parsable", "--export=NONE", f"--job-name={spec.name}",
            f"--comment={spec.comment}", f"--chdir={spec.working_dir}",
            f"--output={spec.output}"]
    for value, flag in ((spec.partition, "--partition={}"), (spec.account, "--account={}"),
                        (spec.time_limit_min, "--time={}"), (spec.nodes, "--nodes={}"),
                        (spec.tasks, "--ntasks={}"), (spec.cpus_per_task, "--cpus-per-task={}"),
                        (spec.memory_mb, "--mem={}M"), (spec.gpus or None, "--gres=gpu:{}")):
        if value is not None:
            args.append(flag.format(value))
    args.append(script_path)
    return args


def parse_sbatch(stdout: str) -> str | None:
    """The job id ``sbatch --parsable`` printed (``id`` or ``id;cluster``)."""
    lines = stdout.strip().splitlines()
    native = lines[-1].split(";")[0].strip() if lines else ""
    return native if _JOB_ID.match(native) else None


# --- status ----------------------------------------------------------------------------

def squeue_args(squeue: str) -> list[str]:
    """Every job of the calling user that slurmctld still knows, one per line."""
    return [*_EPOCH, squeue, "--me", "--all", "--states=all", "--noheader",
            "--Format=JobID:|,State:|,exit_code:|,StartTime:|,EndTime:|"]


def parse_squeue(text: str) -> dict[str, Observation]:
    found = {}
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) < 5 or not fields[0]:
            continue
        native, state, exit_code, start, end = fields[:5]
        found[native] = slurm_api.observe({
            "job_state": state, "exit_code": _int(exit_code),
            "start_time": _int(start), "end_time": _int(end),
        })
    return found


def sacct_args(sacct: str, native_ids: Iterable[str]) -> list[str]:
    """The accounting records of ``native_ids`` (only ids that are Slurm job numbers)."""
    ids = ",".join(n for n in native_ids if _JOB_ID.match(n))
    return [*_EPOCH, sacct, "--noheader", "--parsable2", "--allocations", f"--jobs={ids}",
            "--format=JobIDRaw,State,ExitCode,Start,End"]


def parse_sacct(text: str) -> dict[str, Observation]:
    found = {}
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) < 5 or not _JOB_ID.match(fields[0]):
            continue
        native, state, exit_code, start, end = fields[:5]
        found[native] = slurm_api.observe({
            "job_state": state.split(" ")[0], "exit_code": _wait_status(exit_code),
            "start_time": _int(start), "end_time": _int(end),
        })
    return found


def find_args(squeue: str, job_id: str) -> list[str]:
    """The ids of the calling user's jobs named ``job_id``, finished ones included."""
    return [squeue, "--me", "--all", "--states=all", "--noheader", f"--name={job_id}",
            "--Format=JobID:|"]


def parse_ids(text: str) -> list[str]:
    return [f for line in text.splitlines() if _JOB_ID.match(f := line.strip().split("|")[0])]


# --- capacity --------------------------------------------------------------------------

def sinfo_args(sinfo: str) -> list[str]:
    return [sinfo, "--noheader", "--Node", "--Format=NodeList:|,CPUsState:|,Memory:|,Gres:|"]


def parse_sinfo(text: str) -> dict[str, int]:
    """Totals over the nodes; ``sinfo --Node`` lists a node once per partition."""
    nodes: dict[str, dict[str, Any]] = {}
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) < 4 or not fields[0]:
            continue
        name, cpus, memory, gres = fields[:4]
        allocated_idle_other_total = cpus.split("/")
        if len(allocated_idle_other_total) != 4:
            continue
        nodes[name] = {"cpus": _int(allocated_idle_other_total[3]),
                       "idle_cpus": _int(allocated_idle_other_total[1]),
                       "real_memory": _int(memory), "gres": gres}
    return slurm_api.capacity({"nodes": list(nodes.values())})


# --- errors ----------------------------------------------------------------------------

def transient(stderr: str) -> bool:
    """Whether a failed command's message says Slurm is away or busy, not a refusal."""
    return bool(_TRANSIENT.search(stderr))


def accounting_disabled(stderr: str) -> bool:
    """Whether ``sacct`` failed because the cluster keeps no accounting (no slurmdbd)."""
    return bool(_ACCOUNTING_DISABLED.search(stderr))


def _int(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.isdigit() else None


def _wait_status(exit_code: str) -> int | None:
    """sacct's ``status:signal`` as the raw wait status squeue and slurmrestd report."""
    status, _, signal = exit_code.partition(":")
    code, number = _int(status), _int(signal) or 0
    if code is None:
        return None
    return number & 0x7F if number else (code & 0xFF) << 8
