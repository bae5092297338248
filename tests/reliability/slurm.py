"""The reliability suite on the real Slurm cluster: its targets and what Slurm says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.functions.conftest import slurm_target
from tests.reliability import EVIDENCE
from tests.services.slurm import SlurmCluster

__all__ = ["SLURM_OVER", "slurm_stack_targets", "tagged"]

#: squeue states of a job that is over.
SLURM_OVER = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL",
              "PREEMPTED", "BOOT_FAIL", "DEADLINE"}


def slurm_stack_targets(cluster: SlurmCluster, directory: Path,
                        **settings: Any) -> dict[str, dict[str, Any]]:
    """A target ``hpc`` on the cluster; its token is a credential of the suite, and the
    jobs' output directory is evidence."""
    hpc = slurm_target(cluster, directory, **settings)
    EVIDENCE.credential(f"slurm token {Path(hpc['token_file']).name}",
                        Path(hpc["token_file"]).read_text().strip())
    EVIDENCE.path(cluster.workdir)
    return {"hpc": hpc}


def tagged(cluster: SlurmCluster, job_id: str) -> list[str]:
    """Ids of the Slurm jobs named after ``job_id`` (the bridge's tag)."""
    return [job.job_id for job in cluster.jobs() if job.name == job_id]
