"""Output files copied to an S3-compatible bucket: moto's S3 EMULATOR (not S3), checking
every request's SigV4 signature, behind the real poll function."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpcbridge import cli
from hpcbridge.client import Client
from hpcbridge.dev import DevStack
from hpcbridge.store import Store
from tests.adapters import until
from tests.functions import emitted, submitted, tick, tick_until
from tests.functions.conftest import new_stack, write_targets
from tests.functions.test_outputs import writer
from tests.services.redis_server import RedisServer
from tests.services.s3_emulator import S3Emulator


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Emulator]:
    with S3Emulator() as emulator:
        yield emulator


def bucket_env(s3: S3Emulator, directory: Path, secret: str | None = None) -> dict[str, str]:
    """The bucket settings, credentials in files as mounted Secrets."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "access-key").write_text(s3.access_key_id)
    (directory / "secret-key").write_text(secret or s3.secret_access_key)
    return {"HPCBRIDGE_S3_ENDPOINT": s3.url, "HPCBRIDGE_S3_BUCKET": s3.bucket,
            "HPCBRIDGE_S3_ACCESS_KEY_FILE": str(directory / "access-key"),
            "HPCBRIDGE_S3_SECRET_KEY_FILE": str(directory / "secret-key")}


def bucket_stack(redis_url: str, base: Path, env: dict[str, str], **extra: str) -> DevStack:
    targets = write_targets(base / "targets.yaml", {
        "local": {"kind": "local", "workdir": str(base / "local"), "kill_grace_s": 1}})
    return new_stack(redis_url, targets, base / "logs", **env, **extra)


@pytest.fixture(scope="module")
def to_bucket(redis_server: RedisServer, s3: S3Emulator,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    base = tmp_path_factory.mktemp("bucket")
    with bucket_stack(redis_server.url, base, bucket_env(s3, base / "secrets")).running() \
            as stack:
        yield stack


def test_outputs_go_to_the_bucket_and_the_status_names_each_object(
        to_bucket: DevStack, store: Store, s3: S3Emulator, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    job_id = submitted(to_bucket, {"target": "local", "command": writer(),
                                   "outputs": ["result.txt", "sub/dir/data.bin"]})
    status = tick_until(to_bucket, store, job_id, "SUCCEEDED")
    binary = bytes(range(256)) * 4
    key = f"hpc-bridge/{job_id}/sub/dir/data.bin"
    assert status.outputs is not None
    assert status.outputs["sub/dir/data.bin"] == {
        "location": f"s3://{s3.bucket}/{key}", "bytes": 1024,
        "sha256": hashlib.sha256(binary).hexdigest()}
    assert status.outputs["result.txt"]["location"] == \
        f"s3://{s3.bucket}/hpc-bridge/{job_id}/result.txt"
    assert s3.fetch(key).content == binary, "the object itself, read from the emulator"
    assert store.output(job_id, "sub/dir/data.bin") is None, "nothing of it in Redis"

    for name, value in bucket_env(s3, tmp_path / "client").items():
        monkeypatch.setenv(name, value)
    with Client(redis_url=to_bucket.redis_url, broker=to_bucket.broker.url) as client:
        assert client.output(job_id, "sub/dir/data.bin") == binary
    into = tmp_path / "results"
    assert cli.main(["outputs", job_id, "--redis", str(to_bucket.redis_url),
                     "--to", str(into)]) == 0
    assert (into / "sub/dir/data.bin").read_bytes() == binary
    assert (into / "result.txt").read_text() == "the answer is 42\n"
    capsys.readouterr()
    assert cli.main(["outputs", job_id, "--redis", str(to_bucket.redis_url)]) == 0
    table = capsys.readouterr().out
    assert f"s3://{s3.bucket}/{key}" in table and "1024" in table


def test_a_refused_bucket_holds_the_job_until_it_takes_the_files(
        redis_server: RedisServer, s3: S3Emulator, store: Store, tmp_path: Path) -> None:
    """The job's end is recorded only once its files are kept: a bucket refusing the
    bridge's key (a rotated Secret not yet mounted) delays it, and loses nothing."""
    secrets = tmp_path / "secrets"
    env = bucket_env(s3, secrets, secret="not-the-secret")
    with bucket_stack(redis_server.url, tmp_path, env,
                      HPCBRIDGE_LOST_AFTER_S="600").running() as stack:
        job_id = submitted(stack, {"target": "local", "command": writer(),
                                   "outputs": ["result.txt"]})
        exit_file = tmp_path / "local" / "jobs" / job_id / "exit.json"  # the runner wrote it
        until(exit_file.exists, 60, lambda: f"{job_id} did not end")
        for _ in range(3):
            tick(stack)
        job = store.load(job_id)
        assert job is not None and not job.status.state.terminal, job.status
        assert all(e["type"] != "hpcbridge.job.succeeded" for e in emitted(stack, job_id))
        (secrets / "secret-key").write_text(s3.secret_access_key)  # the Secret, rotated
        status = tick_until(stack, store, job_id, "SUCCEEDED")
        assert status.outputs is not None
        assert status.outputs["result.txt"]["location"].startswith(f"s3://{s3.bucket}/")
        log = (stack.log_dir / "poll.log").read_text()
        assert "not-the-secret" not in log and s3.secret_access_key not in log


def test_a_bucket_that_stays_refused_is_given_up_on_after_lost_after_s(
        redis_server: RedisServer, s3: S3Emulator, store: Store, tmp_path: Path) -> None:
    env = bucket_env(s3, tmp_path / "secrets", secret="still-not-the-secret")
    with bucket_stack(redis_server.url, tmp_path, env).running() as stack:  # lost after 0 s
        job_id = submitted(stack, {"target": "local", "command": writer(),
                                   "outputs": ["result.txt"]})
        status = tick_until(stack, store, job_id, "SUCCEEDED")
    assert status.outputs is not None
    error = status.outputs["result.txt"]["error"]
    assert error.startswith("not collected: ") and "SignatureDoesNotMatch" in error
    assert "still-not-the-secret" not in error


def test_the_cli_says_where_bucket_settings_are_missing(to_bucket: DevStack,
                                                         store: Store) -> None:
    job_id = submitted(to_bucket, {"target": "local", "command": writer(),
                                   "outputs": ["result.txt"]})
    tick_until(to_bucket, store, job_id, "SUCCEEDED")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPCBRIDGE_S3_")}
    assert "HPCBRIDGE_S3_BUCKET" not in env
    done = subprocess.run([sys.executable, "-m", "hpcbridge.cli", "outputs", job_id,
                           "--redis", str(to_bucket.redis_url), "--get", "result.txt"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 2
    assert "set HPCBRIDGE_S3_BUCKET" in done.stderr and "Traceback" not in done.stderr
