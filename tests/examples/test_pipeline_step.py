"""The step of the Argo and Tekton examples (examples/pipeline-step/submit_and_wait.py), run
as the pipelines run it: against a bridge whose mirror goes to a Kubernetes API (the
emulator of tests/emulators stands in for the cluster), reading the job's ConfigMap."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from hpcbridge.dev import DevStack
from hpcbridge.store import Store
from tests.adapters import until
from tests.emulators.kube_apiserver import KubeApiEmulator
from tests.examples.conftest import EXAMPLES
from tests.functions.conftest import STACK_ENV, write_targets
from tests.services.redis_server import RedisServer

STEP = EXAMPLES / "pipeline-step" / "submit_and_wait.py"
NAMESPACE = "pipelines"


@pytest.fixture(scope="module")
def kube() -> Iterator[KubeApiEmulator]:
    with KubeApiEmulator() as emulator:
        client.CoreV1Api(emulator.api_client()).create_namespace(
            {"metadata": {"name": NAMESPACE}})
        yield emulator


@pytest.fixture(scope="module")
def kubeconfig(kube: KubeApiEmulator, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return kube.write_kubeconfig(tmp_path_factory.mktemp("kube") / "kubeconfig")


@pytest.fixture(scope="module")
def mirrored(redis_server: RedisServer, kubeconfig: Path,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    """The bridge with its mirror on and its own ticker: the step only waits."""
    base = tmp_path_factory.mktemp("step")
    targets = write_targets(base / "targets.yaml", {
        "local": {"kind": "local", "workdir": str(base / "local"), "kill_grace_s": 1}})
    stack = DevStack(redis_url=redis_server.url, targets_file=str(targets), tick_s=0.2,
                     log_dir=base / "logs",
                     extra_env={**STACK_ENV, "KUBECONFIG": str(kubeconfig),
                                "HPCBRIDGE_NAMESPACE": "default"})
    with stack.running() as running:
        yield running


def step_env(stack: DevStack, kubeconfig: Path, results: Path, **values: str) -> dict[str, str]:
    """The environment the Argo and Tekton examples give the step."""
    assert stack.broker is not None
    env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
    env.update(HPCBRIDGE_BROKER=stack.broker.url, JOB_TARGET="local", JOB_NAMESPACE=NAMESPACE,
               KUBECONFIG=str(kubeconfig), POLL_INTERVAL_S="0.1",
               RESULT_JOB_ID_FILE=str(results / "job-id"),
               RESULT_STATE_FILE=str(results / "state"))
    env.update(values)
    return env


def run_step(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(STEP)], env=env, capture_output=True,
                          text=True, timeout=120)


def test_the_step_succeeds_with_its_job_and_shows_its_output(
        mirrored: DevStack, store: Store, kubeconfig: Path, tmp_path: Path) -> None:
    done = run_step(step_env(mirrored, kubeconfig, tmp_path, JOB_ID="step-ok",
                             JOB_NAME="simulate",
                             JOB_SCRIPT="#!/bin/sh\necho hello from the job\n"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "job-id").read_text() == "step-ok"
    assert (tmp_path / "state").read_text() == "SUCCEEDED"
    assert "hello from the job" in done.stdout
    job = store.load("step-ok")
    assert job is not None and job.request["namespace"] == NAMESPACE


def test_the_step_fails_with_the_jobs_exit_code(mirrored: DevStack, kubeconfig: Path,
                                                store: Store, tmp_path: Path) -> None:
    done = run_step(step_env(mirrored, kubeconfig, tmp_path, JOB_ID="step-exit-3",
                             JOB_SCRIPT="#!/bin/sh\necho about to fail\nexit 3\n"))
    assert done.returncode == 3, done.stdout + done.stderr
    assert (tmp_path / "state").read_text() == "FAILED"
    assert "ended FAILED, reason exit_code, exit code 3" in done.stdout


def test_a_retried_step_follows_the_same_job(mirrored: DevStack, kubeconfig: Path,
                                             store: Store, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    env = step_env(mirrored, kubeconfig, tmp_path, JOB_ID="step-retried",
                   JOB_SCRIPT=f"#!/bin/sh\necho ran >> {runs}\n")
    first, again = run_step(env), run_step(env)
    assert (first.returncode, again.returncode) == (0, 0), first.stderr + again.stderr
    assert runs.read_text() == "ran\n", "the job ran once"
    history = [entry["state"] for entry in store.history("step-retried")]
    assert history.count("ACCEPTED") == 1 and history.count("SUCCEEDED") == 1


def test_a_job_the_bridge_refuses_fails_the_step_after_the_accept_timeout(
        mirrored: DevStack, kubeconfig: Path, store: Store, tmp_path: Path) -> None:
    done = run_step(step_env(mirrored, kubeconfig, tmp_path, JOB_ID="step-nowhere",
                             JOB_TARGET="nowhere", JOB_SCRIPT="#!/bin/sh\ntrue\n",
                             ACCEPT_TIMEOUT_S="1"))
    assert done.returncode == 1
    assert "the bridge has not accepted step-nowhere after 1 s" in done.stderr
    assert store.load("step-nowhere") is None


def test_an_invalid_job_is_refused_before_anything_is_sent(
        mirrored: DevStack, kubeconfig: Path, store: Store, tmp_path: Path) -> None:
    done = run_step(step_env(mirrored, kubeconfig, tmp_path, JOB_ID="Not_Valid",
                             JOB_SCRIPT="#!/bin/sh\ntrue\n"))
    assert done.returncode == 1
    assert done.stderr.startswith("invalid job: job_id: must be 1-53 characters")
    assert not (tmp_path / "job-id").exists()


def test_stopping_the_step_cancels_its_job(mirrored: DevStack, kubeconfig: Path,
                                           store: Store, tmp_path: Path) -> None:
    env = step_env(mirrored, kubeconfig, tmp_path, JOB_ID="step-stopped",
                   JOB_SCRIPT="#!/bin/sh\nsleep 300\n")
    step = subprocess.Popen([sys.executable, str(STEP)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        def running() -> bool:
            job = store.load("step-stopped")
            return job is not None and str(job.status.state) == "RUNNING"

        until(running, 60, lambda: f"step-stopped is {store.load('step-stopped')}")
        step.send_signal(signal.SIGTERM)  # what Argo and Tekton do to a stopped step
        output, _ = step.communicate(timeout=60)
    finally:
        if step.poll() is None:
            step.kill()
            step.wait()
    assert step.returncode == 143, output
    assert "stopped: cancelling step-stopped" in output
    assert (tmp_path / "state").read_text() == "CANCELLED"

    def cancelled() -> bool:
        job = store.load("step-stopped")
        return job is not None and str(job.status.state) == "CANCELLED"

    until(cancelled, 60, lambda: f"step-stopped is {store.load('step-stopped')}")
