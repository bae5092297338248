"""The conformance harness of the ``local`` adapter: one slot, so one job can block the rest."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from adapters._local_runner import JOBS, LOCK, lock_is_held
from adapters.local import LocalAdapter
from hpcbridge.model import JobRequest
from tests.adapters import build_request, new_job_id, until

__all__ = ["LocalHarness", "stop_jobs"]

_TARGET = "local-test"


class LocalHarness:
    """A :class:`LocalAdapter` with ``slots=1`` in a private workdir."""

    unknown_id = "never-submitted"
    min_time_limit_s = 1
    wait_s = 15.0

    def __init__(self, tmp_path: Path) -> None:
        self.shared_dir = tmp_path / "shared"
        self.shared_dir.mkdir()
        self._workdir = tmp_path / "local"
        self.adapter = LocalAdapter(_TARGET, {"workdir": str(tmp_path / "local"), "slots": 1})
        self._blocker: str | None = None

    def request(self, **overrides: Any) -> JobRequest:
        return build_request(_TARGET, overrides)

    def queued_job(self, **overrides: Any) -> str:
        """Queue behind a long job that holds the only slot until :meth:`release`."""
        if self._blocker is None:
            self._blocker = self.adapter.submit(self.request(command=["sleep", "1000"]),
                                                new_job_id("blocker"))
        return self.adapter.submit(self.request(**overrides), new_job_id("queued"))

    def release(self) -> None:
        if self._blocker is not None:
            self.adapter.cancel(self._blocker)
            self._blocker = None

    def vanish(self, native_id: str) -> None:
        """Remove the job's directory, as a wiped state directory would."""
        shutil.rmtree(self._workdir / JOBS / native_id)

    def close(self) -> None:
        stop_jobs(self.adapter, self._workdir, self.wait_s)
        self.adapter.close()


def stop_jobs(adapter: LocalAdapter, workdir: Path, timeout_s: float) -> None:
    """Cancel every job in ``workdir`` and wait until none of their runners is left."""
    jobs = workdir / JOBS
    job_ids = [path.name for path in jobs.iterdir() if not path.name.startswith(".")]
    for job_id in job_ids:
        adapter.cancel(job_id)

    def runners() -> list[str]:
        return [job_id for job_id in job_ids if lock_is_held(jobs / job_id / LOCK)]

    until(lambda: not runners(), timeout_s, lambda: f"runners still alive: {runners()}")
