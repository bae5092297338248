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
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from hpcbridge.dev import free_port

__all__ = ["CPUS", "RayHead"]

CPUS = 2
_OBJECT_STORE_BYTES = 128 << 20
_PORT_OPTIONS = ("--port", "--dashboard-port", "--ray-client-server-port",
                 "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
                 "--runtime-env-agent-port", "--metrics-export-port", "--node-manager-port",
                 "--object-manager-port")


class RayHead:
    """``ray start --head`` on 127.0.0.1, owned by this object."""

    cpus = CPUS

    def __init__(self, parent: Path | None = None, *, startup_timeout: float = 120.0) -> None:
        """``parent`` defaults to the system's temporary directory: Ray's socket paths
        live under the temp dir and must stay short (108 bytes)."""
        self._parent = parent
        self._timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._root: Path | None = None
        self._client: httpx.Client | None = None
        self.token = secrets.token_hex(32)
        self.url = ""

    @property
    def root(self) -> Path:
        if self._root is None:
            raise RuntimeError("the Ray head is not started")
        return self._root

    @property
    def token_file(self) -> Path:
        return self.root / "auth_token"

    @property
    def log(self) -> Path:
        return self.root / "ray-start.out"

    # --- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> RayHead:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        if shutil.which("ray") is None:
            raise RuntimeError("the 'ray' command is missing: pip install 'ray[default]'")
        self._root = Path(tempfile.mkdtemp(prefix="hpcbridge-ray-", dir=self._parent))
        try:
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
            with open(self.log, "ab") as out:
                self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out,
                                              stderr=subprocess.STDOUT, env=env,
                                              cwd=self.root, start_new_session=True)
            self._client = httpx.Client(base_url=self.url, timeout=30,
                                        headers={"Authorization": f"Bearer {self.token}"})
            self._wait_until_jobs_run()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the head by its pid; what is left of its process group is killed."""
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._proc is not None:
            proc, self._proc = self._proc, None
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

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
        deadline = time.monotonic() + self._timeout
        probe = f"hpcbridge-probe-{secrets.token_hex(4)}"
        submitted = False
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"ray start exited with status {self._proc.returncode}"
                                   f"{self._tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if not submitted:
                    answer = self.request("POST", "/api/jobs/",
                                          json={"entrypoint": "true", "submission_id": probe})
                    submitted = answer.status_code == 200
                else:
                    job = self.job(probe)
                    if job is not None and job.get("status") == "SUCCEEDED":
                        return
                    if job is not None and job.get("status") in ("FAILED", "STOPPED"):
                        raise RuntimeError(f"the probe job failed: {job.get('message')}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Ray head did not run a job within "
                                   f"{self._timeout:.0f} s{self._tail()}")
            time.sleep(0.2)

    def _tail(self, lines: int = 30) -> str:
        if self._root is None or not self.log.exists():
            return ""
        text = self.log.read_text(errors="replace").splitlines()[-lines:]
        return f"\n--- last lines of {self.log} ---\n" + "\n".join(text)
