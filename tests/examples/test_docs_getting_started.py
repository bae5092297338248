"""docs/getting-started.md, run: its shell blocks, in order, as a person would type them,
with the real Slurm cluster of the test session standing in for "your cluster"."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sysconfig
from pathlib import Path

import pytest

from tests.adapters import until
from tests.examples import markdown
from tests.examples.conftest import DOCS, EXAMPLES
from tests.services.slurm import SlurmCluster

pytestmark = pytest.mark.slurm

DOC = DOCS / "getting-started.md"
#: Blocks not run: they install packages, which the test machine has.
INSTALL = ["python3 -m pip install -e .", "sudo apt-get install -y redis-server"]
#: The block of "your cluster's" settings, which the test sets to its own cluster's.
SETTINGS = ["SLURMRESTD_URL", "SLURM_USER", "SLURM_PARTITION", "SLURM_OUTPUT_DIR"]
#: What each block must print (a pattern), by a phrase of the block.
EXPECTED = {
    "hpc-bridge dev --demo": r"SUCCEEDED",
    "scontrol token": r"^$",
    "--job-id hello-slurm --wait": r"hello-slurm[\s\S]*SUCCEEDED",
    "hpc-bridge status hello-slurm\n": r"SUCCEEDED[\s\S]*history",
    "hpc-bridge list": r"hello-slurm",
    "cat \"$SLURM_OUTPUT_DIR": r"hello from \S+, Slurm job \d+",
    "logs hello-slurm --stored": r"hello from \S+, Slurm job \d+",
    "outputs answer --get answer.txt": r"SUCCEEDED[\s\S]*\nanswer\.txt +3 +redis\n42\n\Z",
    "cancel long-one --wait": r"CANCELLED",
    "examples/curl/submit.sh": r"^hello-event\n[\s\S]*SUCCEEDED",
}


def shell_blocks() -> list[str]:
    return [b.text for b in markdown.blocks(DOC.read_text()) if b.info == "sh"]


def is_settings(block: str) -> bool:
    return all(line.startswith("export ") for line in block.splitlines())


def test_the_blocks_the_test_does_not_run_are_only_installs_and_settings() -> None:
    blocks = shell_blocks()
    assert [b.strip() for b in blocks if b.strip() in INSTALL] == INSTALL
    (settings,) = [b for b in blocks if is_settings(b)]
    assert re.findall(r"^export (\w+)=", settings, re.MULTILINE) == SETTINGS
    ran = [b for b in blocks if b.strip() not in INSTALL and not is_settings(b)]
    for phrase in EXPECTED:
        assert sum(phrase in b for b in ran) == 1, phrase


def person(tmp_path: Path, cluster: SlurmCluster) -> dict[str, str]:
    """A clean environment: a home of its own, the test cluster as "your cluster"."""
    drop = ("REDIS_URL", "KUBECONFIG", "KUBERNETES_SERVICE_HOST", "HPCBRIDGE_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / "run").mkdir(mode=0o700)
    env.update(
        HOME=str(home), XDG_RUNTIME_DIR=str(tmp_path / "run"), TMPDIR=str(tmp_path),
        # the hpc-bridge command of this Python, whatever HOME is
        PATH=f"{sysconfig.get_path('scripts')}:{env.get('PATH', '')}",
        SLURM_CONF=str(cluster.conf_path),
        SLURMRESTD_URL=cluster.url, SLURM_USER=cluster.user,
        SLURM_PARTITION=cluster.partition, SLURM_OUTPUT_DIR=str(cluster.workdir))
    return env


def start_dev(block: str, env: dict[str, str], cwd: Path,
              state_file: Path) -> subprocess.Popen[bytes]:
    """Run ``hpc-bridge dev`` in the background; return once it has written its state."""
    dev = subprocess.Popen(["bash", "-c", "exec " + block.strip()], env=env, cwd=cwd,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    until(lambda: state_file.exists() or dev.poll() is not None, 90,
          lambda: "hpc-bridge dev did not start")
    assert dev.poll() is None, "hpc-bridge dev stopped"
    return dev


def test_getting_started_runs_from_install_to_a_finished_slurm_job(
        slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    env = person(tmp_path, slurm_cluster)
    checkout = tmp_path / "checkout"  # where the commands run: the doc's "checkout"
    checkout.mkdir()
    (checkout / "examples").symlink_to(EXAMPLES)
    state_file = tmp_path / "run" / "hpc-bridge" / "dev.json"
    dev: subprocess.Popen[bytes] | None = None
    printed: dict[str, str] = {}
    try:
        for block in shell_blocks():
            if block.strip() in INSTALL or is_settings(block):
                continue
            if block.startswith("hpc-bridge dev --targets"):
                # "In a terminal of its own": in the background, stopped at the end.
                dev = start_dev(block, env, checkout, state_file)
                continue
            done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block], env=env,
                                  cwd=checkout, capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, f"{block}\n{done.stdout}\n{done.stderr}"
            printed[block] = done.stdout
    finally:
        if dev is not None and dev.poll() is None:
            dev.send_signal(signal.SIGTERM)  # what Ctrl-C's neighbour, kill, sends
            try:
                dev.wait(60)
            except subprocess.TimeoutExpired:
                dev.kill()
                dev.wait()
    for phrase, pattern in EXPECTED.items():
        (output,) = [out for block, out in printed.items() if phrase in block]
        assert re.search(pattern, output), f"{phrase}: {output}"
    assert (Path(env["HOME"]) / ".config/hpc-bridge/slurm-token").stat().st_mode & 0o077 == 0
    assert not state_file.exists(), "hpc-bridge dev cleaned up when stopped"
    assert dev is not None and dev.returncode is not None
