"""The conformance harness of the ``ray`` adapter, on the session's real Ray head."""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path
from typing import Any

import httpx

from adapters.ray import RayJobsAdapter
from hpcbridge.model import State
from tests.adapters import HttpHarness, new_job_id, secret_file, until, wait_for
from tests.services.ray_head import RayHead

__all__ = ["RayHarness"]

_ACTIVE = frozenset({"PENDING", "RUNNING"})


class RayHarness(HttpHarness[RayJobsAdapter]):
    """A :class:`RayJobsAdapter` for ``head``, its token in a file as a mounted Secret is.

    Jobs run as local processes of the head, so ``shared_dir`` is an ordinary directory.
    Every job that appears on the head while the harness lives is stopped by
    :meth:`close`.
    """

    target = "ray-test"
    adapter_class = RayJobsAdapter
    unknown_id = "never-submitted"
    #: The launcher enforces a time limit from the moment the command starts.
    min_time_limit_s = 1
    wait_s = 60.0

    def __init__(self, head: RayHead, tmp_path: Path, *,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.head = head
        self.shared_dir = tmp_path / "shared"
        self.shared_dir.mkdir()
        self._tmp_path = tmp_path
        self.token_file = self._token_file(head.token)
        self._connect({
            "kind": "ray",
            "url": head.url,
            "token_file": str(self.token_file),
        }, transport)
        self._known = {job["submission_id"] for job in head.jobs()}
        self._blocker: str | None = None

    def _token_file(self, token: str) -> Path:
        return secret_file(self._tmp_path, token, prefix="ray-token")

    def with_bad_credentials(self) -> tuple[RayJobsAdapter, str]:
        """A well-formed token that is not the cluster's: Ray answers 403."""
        token = uuid.uuid4().hex * 2
        return self.make(token_file=str(self._token_file(token))), token

    def queued_job(self, **overrides: Any) -> str:
        """Submit ``request(**overrides)`` asking for every CPU of the head, behind a job
        that holds them all until :meth:`release`; return its native id.

        Jobs that reserve no CPU (every other test job) still run meanwhile.
        """
        every_cpu = {"cpus_per_task": self.head.cpus}
        if self._blocker is None:
            blocker = self.adapter.submit(
                self.request(command=["sleep", "1000"], resources=every_cpu),
                new_job_id("blocker"))
            wait_for(self.adapter, blocker, lambda o: o.state is State.RUNNING, self.wait_s)
            self._blocker = blocker
        request = self.request(**overrides)
        resources = dataclasses.replace(request.resources, **every_cpu)
        return self.adapter.submit(dataclasses.replace(request, resources=resources),
                                   new_job_id("queued"))

    def release(self) -> None:
        """Stop the job that holds the CPUs: the held jobs then run, one at a time.

        A held job that was cancelled is stopped by Ray the moment it starts, before its
        command runs.
        """
        if self._blocker is not None:
            self.adapter.cancel(self._blocker)
            self._blocker = None

    def vanish(self, native_id: str) -> None:
        """Delete the finished job's record, as ``ray job delete`` does."""
        response = self.head.request("DELETE", f"/api/jobs/{native_id}")
        assert response.status_code == 200, response.text

    def close(self) -> None:
        """Stop the jobs that appeared since the harness was made; wait until they end.

        Ray stops a PENDING job only once it starts, so the stop is asked until it took.
        """
        def settled() -> bool:
            active = [job["submission_id"] for job in self.head.jobs()
                      if job["submission_id"] not in self._known and job["status"] in _ACTIVE]
            for native_id in active:
                self.head.request("POST", f"/api/jobs/{native_id}/stop")
            return not active

        until(settled, self.wait_s, lambda: "jobs of this harness are still active")
        self.adapter.close()
