"""A real single-node Ray head with its dashboard, started for a test session.

``ray start --head --block`` runs in the foreground as a child of this process, in its
own session, with its own ``--temp-dir`` and free ports on 127.0.0.1 for every listener
Ray lets us name. It is stopped by its pid (SIGTERM; ``ray start --block`` then stops
every Ray process it started), never with ``ray stop``, which kills every Ray process on
the machine.

Token authentication is on (``RAY_AUTH_MODE=token``, Ray 2.52 and later): the dashboard
refuses a request without the token with 401 and a wrong one with 403, so the adapter's
credential handling is tested against Ray itself.

``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` makes Ray use the loopback address as the node's
address (its single-node mode): otherwise ``ray start`` replaces ``--node-ip-address
127.0.0.1`` with the machine's outward address and listens there.

The head advertises :data:`CPUS` CPUs and a small object store; it takes 5-10 s to start
and about 1.5-2 GB of memory (RSS summed over its processes).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from hpcbridge.dev import free_port
from tests.services._daemon import Daemon, spawn, stop_process, wait_until

__all__ = ["CPUS", "RayHead"]

CPUS = 2
_OBJECT_STORE_BYTES = 128 << 20
_PORT_OPTIONS = ("--port", "--dashboard-port", "--ray-client-server-port",
                 "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
                 "--runtime-env-agent-port", "--metrics-export-port", "--node-manager-port",
                 "--object-manager-port")


class RayHead(Daemon):
    """``ray start --head`` on 127.0.0.1, owned by this object."""

    name = "the Ray head"
    dir_prefix = "hpcbridge-ray-"
    cpus = CPUS

    def __init__(self, parent: Path | None = None, *, startup_timeout: float = 120.0) -> None:
        """``parent`` defaults to the system's temporary directory: Ray's socket paths
        live under the temp dir and must stay short (108 bytes)."""
        super().__init__(parent, startup_timeout)
        self._proc: subprocess.Popen[bytes] | None = None
        self._client: httpx.Client | None = None
        self.token = secrets.token_hex(32)
        self.url = ""

    @property
    def token_file(self) -> Path:
        return self.root / "auth_token"

    @property
    def log(self) -> Path:
        return self.root / "ray-start.out"

    # --- lifecycle -------------------------------------------------------------------

    def _prepare(self) -> None:
        if shutil.which("ray") is None:
            raise RuntimeError("the 'ray' command is missing: pip install 'ray[default]'")

    def _launch(self) -> None:
        fd = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(self.token)
        ports = {option: free_port() for option in _PORT_OPTIONS}
        self.url = f"http://127.0.0.1:{ports['--dashboard-port']}"
        args = ["ray", "start", "--head", "--block", "--disable-usage-stats",
                "--node-ip-address", "127.0.0.1", "--dashboard-host", "127.0.0.1",
                "--num-cpus", str(CPUS), "--num-gpus", "0",
                "--object-store-memory", str(_OBJECT_STORE_BYTES),
                "--temp-dir", str(self.root / "ray")]
        for option, port in ports.items():
            args += [option, str(port)]
        env = {**os.environ, "RAY_AUTH_MODE": "token",
               "RAY_AUTH_TOKEN_PATH": str(self.token_file),
               "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
        env.pop("RAY_AUTH_TOKEN", None)
        env.pop("RAY_ADDRESS", None)
        self._proc = spawn(args, self.log, env, cwd=self.root)
        self._client = httpx.Client(base_url=self.url, timeout=30,
                                    headers={"Authorization": f"Bearer {self.token}"})
        self._wait_until_jobs_run()

    def _halt(self) -> None:
        """Stop the head by its pid; what is left of its process group is killed."""
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._proc is not None:
            proc, self._proc = self._proc, None
            stop_process(proc, 60, group=True)

    # --- helpers for tests -----------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A request to the dashboard with the head's token."""
        if self._client is None:
            raise RuntimeError("the Ray head is not started")
        return self._client.request(method, path, **kwargs)

    def job(self, submission_id: str) -> Mapping[str, Any] | None:
        """Ray's record of a job, or None."""
        response = self.request("GET", f"/api/jobs/{submission_id}")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return response.json()

    def jobs(self) -> list[Mapping[str, Any]]:
        response = self.request("GET", "/api/jobs/")
        response.raise_for_status()
        return [job for job in response.json() if job.get("submission_id")]

    # --- start-up --------------------------------------------------------------------

    def _wait_until_jobs_run(self) -> None:
        """Until a trivial job has run: the Jobs API and its agent on the node are up."""
        probe = f"hpcbridge-probe-{secrets.token_hex(4)}"
        submitted = False

        def probe_succeeded() -> bool:
            nonlocal submitted
            with contextlib.suppress(httpx.HTTPError):
                if not submitted:
                    answer = self.request("POST", "/api/jobs/",
                                          json={"entrypoint": "true", "submission_id": probe})
                    submitted = answer.status_code == 200
                    return False
                job = self.job(probe)
                if job is not None and job.get("status") in ("FAILED", "STOPPED"):
                    raise RuntimeError(f"the probe job failed: {job.get('message')}")
                return job is not None and job.get("status") == "SUCCEEDED"
            return False

        wait_until(probe_succeeded, self._timeout, "the Ray head (running a probe job)",
                   self.log, self._proc, interval=0.2)
