"""The ``hpc-bridge`` command against a running bridge, as a person types it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpcbridge.dev import DevStack
from tests.services.redis_server import RedisServer


@pytest.fixture(scope="module")
def cli_stack(redis_server: RedisServer,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    base = tmp_path_factory.mktemp("cli")
    targets = base / "targets.yaml"
    targets.write_text(f"targets:\n  local:\n    kind: local\n    workdir: {base}/local\n")
    with DevStack(redis_url=redis_server.url, targets_file=str(targets), tick_s=0.2,
                  log_dir=base / "logs").running() as stack:
        yield stack


def hpc_bridge(*args: str, stack: DevStack | None = None,
               env: dict[str, str] | None = None,
               timeout: float = 120) -> subprocess.CompletedProcess[str]:
    where = [] if stack is None else ["--broker", stack.broker.url, "--redis",
                                      str(stack.redis_url)]
    return subprocess.run([sys.executable, "-m", "hpcbridge.cli", *where, *args],
                          capture_output=True, text=True, timeout=timeout,
                          env=env or {**os.environ})


def test_submit_wait_exits_with_the_jobs_exit_code(cli_stack: DevStack, store) -> None:
    done = hpc_bridge("submit", "--wait", "--command", "sh", "-c", "exit 3", stack=cli_stack)
    assert done.returncode == 3, done.stderr
    job_id = done.stdout.splitlines()[0]
    assert "FAILED" in done.stdout.splitlines()[-1]
    status = hpc_bridge("status", job_id, "--output", "json", stack=cli_stack)
    data = json.loads(status.stdout)
    assert (data["state"], data["exit_code"], data["reason"]) == ("FAILED", 3, "exit_code")
    table = hpc_bridge("status", job_id, stack=cli_stack).stdout
    assert "ACCEPTED" in table and "history:" in table


def test_a_job_goes_from_accepted_to_succeeded_in_the_table(cli_stack: DevStack,
                                                            store) -> None:
    done = hpc_bridge("submit", "--wait", "--name", "hello", "--command", "echo", "hi",
                      stack=cli_stack)
    assert done.returncode == 0, done.stderr
    rows = done.stdout.splitlines()
    assert rows[1].split()[:3] == ["JOB_ID", "TARGET", "STATE"]
    assert rows[2].split()[2] == "ACCEPTED"
    assert rows[-1].split()[2] == "SUCCEEDED"
    listing = hpc_bridge("list", stack=cli_stack).stdout
    assert rows[0] in listing


def test_cancel_stops_a_running_job(cli_stack: DevStack, store) -> None:
    job_id = hpc_bridge("submit", "--command", "sleep", "300", stack=cli_stack).stdout.strip()
    cancelled = hpc_bridge("cancel", job_id, "--wait", stack=cli_stack)
    assert cancelled.returncode == 0, cancelled.stderr
    assert "CANCELLED" in cancelled.stdout.splitlines()[-1]
    again = hpc_bridge("cancel", job_id, stack=cli_stack)
    assert "already ended" in again.stdout


def test_mistakes_get_a_sentence_not_a_traceback(cli_stack: DevStack, store) -> None:
    unknown = hpc_bridge("status", "no-such-job", stack=cli_stack)
    assert (unknown.returncode, unknown.stderr.strip()) == (2, "hpc-bridge: no job no-such-job")
    bad = hpc_bridge("submit", "--job-id", "Not_Valid", "--command", "true", stack=cli_stack)
    assert bad.returncode == 2 and "job_id" in bad.stderr and "Traceback" not in bad.stderr
    nowhere = hpc_bridge("list", env={**os.environ, "REDIS_URL": "redis://127.0.0.1:1/0"})
    assert nowhere.returncode == 2 and "unreachable" in nowhere.stderr


def test_the_readme_demo_runs_a_job_to_its_end(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "KUBECONFIG")}
    env.update(XDG_RUNTIME_DIR=str(tmp_path), TMPDIR=str(tmp_path))
    demo = hpc_bridge("dev", "--demo", env=env)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert demo.stdout.splitlines()[-1].split()[2] == "SUCCEEDED"
    assert not (tmp_path / "hpc-bridge" / "dev.json").exists(), "the stack cleaned up"
