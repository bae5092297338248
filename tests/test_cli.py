"""The ``hpc-bridge`` command against a running bridge, as a person types it: a real
Redis, the dev stack (functions, broker, ticker), local targets, and for the mirror read
path the Kubernetes API emulator."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as kube_client

from hpcbridge import cli
from hpcbridge.dev import DevStack, free_port
from hpcbridge.mirror import Mirror
from hpcbridge.model import JobStatus, State
from hpcbridge.store import Store
from tests.adapters import held_command, until
from tests.emulators.kube_apiserver import KubeApiEmulator
from tests.functions.conftest import write_targets
from tests.services.redis_server import RedisServer

#: What points the CLI at a bridge; removed so that each test says where the bridge is.
_WHERE_VARIABLES = ("REDIS_URL", "KUBECONFIG", "HPCBRIDGE_BROKER", "HPCBRIDGE_TARGETS",
                    "HPCBRIDGE_REDIS_PREFIX", "KUBERNETES_SERVICE_HOST")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def cli_targets(base: Path) -> Path:
    return write_targets(base / "targets.yaml", {
        "local": {"kind": "local", "workdir": str(base / "local"), "kill_grace_s": 1},
        "other": {"kind": "local", "workdir": str(base / "other"), "kill_grace_s": 1},
    })


@pytest.fixture(scope="module")
def cli_stack(redis_server: RedisServer, cli_targets: Path, base: Path) -> Iterator[DevStack]:
    with DevStack(redis_url=redis_server.url, targets_file=str(cli_targets), tick_s=0.2,
                  log_dir=base / "logs").running() as stack:
        yield stack


@pytest.fixture(scope="module")
def isolated(base: Path) -> dict[str, str]:
    """An environment that names no bridge and has no dev stack state file or kubeconfig."""
    home = base / "home"
    (home / "run").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k not in _WHERE_VARIABLES}
    return {**env, "HOME": str(home), "XDG_RUNTIME_DIR": str(home / "run")}


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[Path]:
    """A file whose creation lets a :func:`held_command` job finish; created at the end anyway."""
    path = tmp_path / "go"
    yield path
    path.touch()


def where(stack: DevStack) -> list[str]:
    return ["--broker", str(stack.broker.url), "--redis", str(stack.redis_url),
            "--targets", str(stack.targets_file)]


def command(*args: str, stack: DevStack | None) -> list[str]:
    return [sys.executable, "-m", "hpcbridge.cli", *([] if stack is None else where(stack)),
            *args]


def hpc_bridge(*args: str, stack: DevStack | None = None,
               env: dict[str, str] | None = None, stdin: str | None = None,
               timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command(*args, stack=stack), capture_output=True, text=True,
                          timeout=timeout, input=stdin, env=env or {**os.environ})


def on_a_terminal(*args: str, stack: DevStack, env: dict[str, str],
                  enough: Callable[[str], bool] | None = None,
                  seen: Callable[[str], None] | None = None,
                  timeout: float = 60) -> tuple[int | None, str]:
    """Run the command with its stdout on a pseudo-terminal; its status and what it wrote.

    ``seen`` is called with the output so far each time more comes. With ``enough``, the
    command is stopped (SIGTERM, by its pid) once the output satisfies it, and the status
    is None.
    """
    master, slave = pty.openpty()
    process = subprocess.Popen(command(*args, stack=stack), stdin=subprocess.DEVNULL,
                               stdout=slave, stderr=subprocess.DEVNULL, env=env)
    os.close(slave)
    output = b""
    deadline = time.monotonic() + timeout
    try:
        while True:
            ready, _, _ = select.select([master], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                pytest.fail(f"no end after {timeout} s; the terminal shows {output!r}")
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the command closed its terminal
                break
            if not data:
                break
            output += data
            if seen is not None:
                seen(output.decode(errors="replace"))
            if enough is not None and enough(output.decode(errors="replace")):
                process.terminate()
                process.wait(10)
                return None, output.decode(errors="replace")
        return process.wait(10), output.decode(errors="replace")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)


def state_of(store: Store, job_id: str) -> State | None:
    job = store.load(job_id)
    return None if job is None else job.status.state


def until_state(store: Store, job_id: str, *states: State, timeout_s: float = 30) -> None:
    until(lambda: state_of(store, job_id) in states, timeout_s,
          lambda: f"{job_id} is {state_of(store, job_id)}, not {states}")


# -- submit ---------------------------------------------------------------------------------

def test_submit_wait_exits_with_the_jobs_exit_code(cli_stack: DevStack, store: Store) -> None:
    done = hpc_bridge("submit", "--wait", "--command", "sh", "-c", "exit 3", stack=cli_stack)
    assert done.returncode == 3, done.stderr
    job_id = done.stdout.splitlines()[0]
    assert "FAILED" in done.stdout.splitlines()[-1]
    status = hpc_bridge("status", job_id, "--output", "json", stack=cli_stack)
    data = json.loads(status.stdout)
    assert (data["state"], data["exit_code"], data["reason"]) == ("FAILED", 3, "exit_code")
    assert set(data) == set(JobStatus.__dataclass_fields__)
    as_yaml = yaml.safe_load(hpc_bridge("status", job_id, "-o", "yaml", stack=cli_stack).stdout)
    assert as_yaml == data
    table = hpc_bridge("status", job_id, stack=cli_stack).stdout
    assert "ACCEPTED" in table and "history:" in table


def test_submit_wait_prints_a_row_per_change_up_to_succeeded(cli_stack: DevStack,
                                                             store: Store, gate: Path) -> None:
    waiting = subprocess.Popen(command("submit", "--wait", "--name", "hello", "--command",
                                       *held_command(gate), stack=cli_stack),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = threading.Timer(60, gate.touch)  # should RUNNING never show, the job ends
    deadline.start()
    try:
        rows = [waiting.stdout.readline() for _ in range(3)]
        while rows[-1] and " RUNNING " not in rows[-1]:
            rows.append(waiting.stdout.readline())
        gate.touch()  # the table showed the job running: let it end
        rest, errors = waiting.communicate(timeout=60)
    finally:
        deadline.cancel()
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait()
    assert waiting.returncode == 0, errors
    rows = [row.rstrip("\n") for row in rows] + rest.splitlines()
    assert rows[1].split()[:3] == ["JOB_ID", "TARGET", "STATE"]
    states = [row.split()[2] for row in rows[2:]]
    order = ["ACCEPTED", "QUEUED", "RUNNING", "SUCCEEDED"]
    assert states == sorted(set(states), key=order.index), "a row per change, in order"
    assert states[-2:] == ["RUNNING", "SUCCEEDED"]
    assert all(row.split()[0] == rows[0] for row in rows[2:])
    assert rows[0] in hpc_bridge("list", stack=cli_stack).stdout


def test_submit_wait_on_a_terminal_rewrites_one_line(cli_stack: DevStack, store: Store,
                                                     isolated: dict[str, str],
                                                     gate: Path) -> None:
    def release_once_running(shown: str) -> None:
        if " RUNNING " in shown.rsplit("\r\x1b[K", 1)[-1]:
            gate.touch()

    code, shown = on_a_terminal("submit", "--wait", "--command", "sh", "-c",
                                f"while [ ! -e {gate} ]; do sleep 0.05; done; exit 4",
                                stack=cli_stack, env=isolated, seen=release_once_running)
    assert code == 4, shown
    job_id, progress = shown.split("\r\n", 1)
    assert progress.count("\r\x1b[K") > 1, "the line was redrawn"
    assert progress.count("\n") == 1, f"one line, updated in place: {progress!r}"
    last = progress.rsplit("\r\x1b[K", 1)[1].split()
    assert last[:3] == [job_id, "FAILED", "EXITED"] and "exit" in last and "4" in last
    assert any(" RUNNING " in line for line in progress.split("\r\x1b[K")), progress


def test_submit_from_a_file_with_flags_on_top(cli_stack: DevStack, store: Store,
                                              tmp_path: Path) -> None:
    document = {"target": "other", "name": "from-file", "command": ["echo", "file"],
                "labels": {"team": "physics", "run": "1"}, "resources": {"time_limit_s": 60}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(document))
    submitted = hpc_bridge("submit", "--file", str(tmp_path / "job.yaml"), "--name", "flagged",
                           "--label", "run=2", "--env", "GREETING=hi", "--time-limit", "30",
                           "-o", "json", stack=cli_stack)
    assert submitted.returncode == 0, submitted.stderr
    job_id = json.loads(submitted.stdout)["job_id"]
    until_state(store, job_id, State.SUCCEEDED)
    job = store.load(job_id)
    assert job is not None
    assert job.request["name"] == "flagged" and job.request["target"] == "other"
    assert job.request["labels"] == {"team": "physics", "run": "2"}
    assert job.request["environment"] == {"GREETING": "hi"}
    assert job.request["resources"] == {"time_limit_s": 30}
    assert job.request["command"] == ["echo", "file"]

    # JSON from stdin; --command replaces the document's script; -o yaml: the final status
    piped = hpc_bridge("submit", "--file", "-", "--wait", "-o", "yaml", "--command", "sh", "-c",
                       "exit 5", stack=cli_stack,
                       stdin=json.dumps({"target": "local", "script": "#!/bin/sh\ntrue\n"}))
    assert piped.returncode == 5, piped.stderr
    final = yaml.safe_load(piped.stdout)
    assert (final["state"], final["exit_code"], final["target"]) == ("FAILED", 5, "local")
    assert "FAILED" in piped.stderr, "the progress goes to stderr when stdout is for programs"
    stored = store.load(final["job_id"])
    assert stored is not None and "script" not in stored.request


# -- list ----------------------------------------------------------------------------------

def test_list_filters_by_target_state_and_label_newest_first(cli_stack: DevStack,
                                                             store: Store) -> None:
    jobs = {}
    for name, target, code in (("a", "local", "0"), ("b", "other", "1"), ("c", "local", "0")):
        done = hpc_bridge("submit", "--target", target, "--label", f"name={name}",
                          "--label", "batch=x", "--command", "sh", "-c", f"exit {code}",
                          stack=cli_stack)
        assert done.returncode == 0, done.stderr
        jobs[name] = done.stdout.strip()
    for job_id in jobs.values():
        until_state(store, job_id, State.SUCCEEDED, State.FAILED)

    def listed(*filters: str) -> list[str]:
        answer = hpc_bridge("list", *filters, "-o", "json", stack=cli_stack)
        assert answer.returncode == 0, answer.stderr
        return [s["job_id"] for s in json.loads(answer.stdout)]

    assert listed() == [jobs["c"], jobs["b"], jobs["a"]]
    assert listed("--target", "local") == [jobs["c"], jobs["a"]]
    assert listed("--state", "failed") == [jobs["b"]]
    assert listed("--state", "FAILED", "--state", "SUCCEEDED", "--limit", "2") == \
        [jobs["c"], jobs["b"]]
    assert listed("--label", "name=a") == [jobs["a"]]
    assert listed("--label", "batch=x", "--target", "other") == [jobs["b"]]
    assert listed("--label", "batch=y") == []

    as_yaml = yaml.safe_load(hpc_bridge("list", "--target", "other", "-o", "yaml",
                                        stack=cli_stack).stdout)
    assert [s["job_id"] for s in as_yaml] == [jobs["b"]] and as_yaml[0]["exit_code"] == 1
    table = hpc_bridge("list", "--label", "name=c", stack=cli_stack).stdout.splitlines()
    assert table[0].split()[:3] == ["JOB_ID", "TARGET", "STATE"]
    assert table[1].split()[:3] == [jobs["c"], "local", "SUCCEEDED"] and len(table) == 2
    none = hpc_bridge("list", "--label", "name=nobody", stack=cli_stack)
    assert (none.returncode, none.stdout, none.stderr.strip()) == (0, "", "no jobs")


# -- logs ----------------------------------------------------------------------------------

def test_logs_prints_the_whole_output_or_its_tail(cli_stack: DevStack, store: Store) -> None:
    done = hpc_bridge("submit", "--wait", "--command", "printf", "one\\ntwo\\nthree\\n",
                      stack=cli_stack)
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.splitlines()[0]
    whole = hpc_bridge("logs", job_id, stack=cli_stack)
    assert (whole.returncode, whole.stdout) == (0, "one\ntwo\nthree\n"), whole.stderr
    assert hpc_bridge("logs", job_id, "--tail", "2", stack=cli_stack).stdout == "two\nthree\n"
    after_end = hpc_bridge("logs", job_id, "--follow", "--tail", "1", stack=cli_stack)
    assert (after_end.returncode, after_end.stdout) == (0, "three\n")


def test_logs_follow_prints_new_output_until_the_job_ends(cli_stack: DevStack, store: Store,
                                                          gate: Path) -> None:
    job_id = hpc_bridge("submit", "--command", *held_command(gate), stack=cli_stack).stdout.strip()
    follower = subprocess.Popen(command("logs", job_id, "--follow", stack=cli_stack),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([follower.stdout], [], [], 60)
        assert ready, "the output so far comes while the job runs"
        assert follower.stdout.readline() == "started\n"
        assert follower.poll() is None and not state_of(store, job_id).terminal
        gate.touch()
        rest, errors = follower.communicate(timeout=60)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert (follower.returncode, rest) == (0, "released\n"), errors
    assert state_of(store, job_id) is State.SUCCEEDED


def test_logs_stored_prints_the_tail_the_bridge_keeps(cli_stack: DevStack, store: Store,
                                                      gate: Path) -> None:
    job_id = hpc_bridge("submit", "--command", *held_command(gate), stack=cli_stack).stdout.strip()

    def stored() -> str:
        done = hpc_bridge("logs", job_id, "--stored", stack=cli_stack)
        assert done.returncode == 0, done.stderr
        return done.stdout

    until(lambda: stored() == "started\n", 60, lambda: f"stored tail: {stored()!r}")
    assert not state_of(store, job_id).terminal, "kept while the job runs"
    gate.touch()
    until(lambda: state_of(store, job_id).terminal, 60, lambda: "the job did not end")
    assert stored() == "started\nreleased\n"
    last = hpc_bridge("logs", job_id, "--stored", "--tail", "1", stack=cli_stack)
    assert last.stdout == "released\n"


def test_outputs_lists_and_fetches_the_files_a_job_named(cli_stack: DevStack, store: Store,
                                                         tmp_path: Path) -> None:
    done = hpc_bridge("submit", "--wait", "--collect", "out/result.txt", "--collect", "nope",
                      "--command", "sh", "-c", "mkdir out; echo 42 > out/result.txt",
                      stack=cli_stack)
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.splitlines()[0]
    listed = hpc_bridge("outputs", job_id, "-o", "json", stack=cli_stack)
    assert listed.returncode == 0, listed.stderr
    outputs = json.loads(listed.stdout)
    assert outputs["out/result.txt"]["location"] == "redis"
    assert outputs["out/result.txt"]["bytes"] == 3
    assert outputs["nope"] == {"error": "nope: no such file"}
    table = hpc_bridge("outputs", job_id, stack=cli_stack).stdout
    assert "out/result.txt" in table and "not collected: nope: no such file" in table
    got = hpc_bridge("outputs", job_id, "--get", "out/result.txt", stack=cli_stack)
    assert (got.returncode, got.stdout) == (0, "42\n")
    saved = hpc_bridge("outputs", job_id, "--to", str(tmp_path / "into"), stack=cli_stack)
    assert saved.returncode == 0, saved.stderr
    assert (tmp_path / "into/out/result.txt").read_text() == "42\n"
    assert "skipped nope" in saved.stderr
    missing = hpc_bridge("outputs", job_id, "--get", "other", stack=cli_stack)
    assert missing.returncode == 2 and "has no output 'other'" in missing.stderr


def test_the_namespace_option_filters_what_redis_shows(cli_stack: DevStack,
                                                       store: Store) -> None:
    done = hpc_bridge("-n", "team-a", "submit", "--wait", "--command", "true",
                      stack=cli_stack)
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.splitlines()[0]
    for namespace, shown in (("team-a", True), ("team-b", False)):
        listing = hpc_bridge("list", "-n", namespace, "-o", "json", stack=cli_stack)
        assert (job_id in [j["job_id"] for j in json.loads(listing.stdout)]) is shown
        status = hpc_bridge("status", job_id, "-n", namespace, stack=cli_stack)
        assert (status.returncode == 0) is shown, status.stderr
    assert job_id in hpc_bridge("list", "-o", "json", stack=cli_stack).stdout


# -- cancel --------------------------------------------------------------------------------

def test_cancel_stops_a_running_job(cli_stack: DevStack, store: Store) -> None:
    job_id = hpc_bridge("submit", "--command", "sleep", "300", stack=cli_stack).stdout.strip()
    cancelled = hpc_bridge("cancel", job_id, "--wait", stack=cli_stack)
    assert cancelled.returncode == 0, cancelled.stderr
    assert "CANCELLED" in cancelled.stdout.splitlines()[-1]
    again = hpc_bridge("cancel", job_id, stack=cli_stack)
    assert "already ended" in again.stdout
    as_json = json.loads(hpc_bridge("cancel", job_id, "-o", "json", stack=cli_stack).stdout)
    assert as_json["state"] == "CANCELLED"


# -- watch ---------------------------------------------------------------------------------

def test_watch_shows_the_active_jobs(cli_stack: DevStack, store: Store, gate: Path,
                                     isolated: dict[str, str]) -> None:
    job_id = hpc_bridge("submit", "--target", "other", "--command", *held_command(gate),
                        stack=cli_stack).stdout.strip()
    until_state(store, job_id, State.RUNNING)
    frame = hpc_bridge("watch", "--once", stack=cli_stack).stdout.splitlines()
    assert frame[0].startswith("1 active job at ") and "Redis at redis://" in frame[0]
    assert frame[1].split() == ["JOB_ID", "TARGET", "STATE", "NATIVE_ID", "NATIVE_STATE", "AGE"]
    assert frame[2].split()[:3] == [job_id, "other", "RUNNING"] and len(frame) == 3
    as_json = json.loads(hpc_bridge("watch", "--once", "-o", "json", stack=cli_stack).stdout)
    assert [s["job_id"] for s in as_json] == [job_id] and as_json[0]["state"] == "RUNNING"
    elsewhere = hpc_bridge("watch", "--once", "--target", "local", stack=cli_stack).stdout
    assert elsewhere.startswith("0 active jobs at ")

    _, screen = on_a_terminal("watch", "--interval", "0.1", stack=cli_stack, env=isolated,
                              enough=lambda shown: shown.count("\x1b[2J") >= 3)
    frames = screen.split("\x1b[H\x1b[2J")[1:-1]  # the last one may be cut short
    assert len(frames) >= 2 and all(job_id in f and "RUNNING" in f for f in frames), screen

    gate.touch()
    until_state(store, job_id, State.SUCCEEDED)
    assert hpc_bridge("watch", "--once", stack=cli_stack).stdout.startswith("0 active jobs")


# -- targets -------------------------------------------------------------------------------

def test_targets_says_which_managers_answer_and_their_active_jobs(
        cli_stack: DevStack, store: Store, gate: Path, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("not-a-real-token")
    token.chmod(0o600)
    configured = yaml.safe_load(Path(str(cli_stack.targets_file)).read_text())["targets"]
    targets = write_targets(tmp_path / "targets.yaml", {**configured, "away": {
        "kind": "slurm", "url": f"http://127.0.0.1:{free_port()}", "user": "alice",
        "token_file": str(token), "output_dir": str(tmp_path), "api_version": "v0.0.38"}})
    job_id = hpc_bridge("submit", "--command", *held_command(gate), stack=cli_stack).stdout.strip()
    until_state(store, job_id, State.RUNNING)

    table = hpc_bridge("targets", stack=cli_stack)
    assert table.returncode == 0, table.stderr
    rows = {line.split()[0]: line.split() for line in table.stdout.splitlines()[1:]}
    assert rows["local"][:4] == ["local", "local", "yes", "1"]
    assert rows["other"][:4] == ["other", "local", "yes", "0"]
    assert "cpus" in table.stdout

    with_away = hpc_bridge("targets", "--targets", str(targets), "-o", "json", stack=cli_stack)
    assert with_away.returncode == 1, "a manager that does not answer fails the command"
    reports = {r["name"]: r for r in json.loads(with_away.stdout)}
    assert (reports["away"]["kind"], reports["away"]["answers"]) == ("slurm", False)
    assert "cannot reach slurmrestd" in reports["away"]["detail"]
    assert "not-a-real-token" not in with_away.stdout
    assert (reports["local"]["answers"], reports["local"]["active"]) == (True, 1)
    as_yaml = yaml.safe_load(hpc_bridge("targets", "-o", "yaml", stack=cli_stack).stdout)
    assert {r["name"] for r in as_yaml} == {"local", "other"}


# -- configuration ---------------------------------------------------------------------------

def test_the_dev_stacks_state_file_is_all_the_cli_needs(cli_stack: DevStack, store: Store,
                                                        isolated: dict[str, str]) -> None:
    state = Path(isolated["XDG_RUNTIME_DIR"]) / "hpc-bridge" / "dev.json"
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text(json.dumps(cli_stack.describe()))
    assert cli_stack.describe()["targets_file"] == str(Path(str(cli_stack.targets_file))
                                                       .resolve())
    try:
        done = hpc_bridge("submit", "--wait", "--target", "other", "--command", "echo",
                          "from the state file", env=isolated)
        assert done.returncode == 0, done.stderr
        job_id = done.stdout.splitlines()[0]
        logged = hpc_bridge("logs", job_id, env=isolated)
        assert (logged.returncode, logged.stdout) == (0, "from the state file\n"), logged.stderr
        listed = hpc_bridge("targets", "-o", "json", env=isolated)
        assert [r["name"] for r in json.loads(listed.stdout)] == ["local", "other"]
    finally:
        state.unlink()


def in_process(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``hpc-bridge argv`` run by :func:`hpcbridge.cli.main` in this process (argument
    handling needs no process of its own): exit status, stdout, stderr."""
    try:
        code = cli.main(list(argv))
    except SystemExit as exited:  # argparse: --help, or a usage error
        code = int(exited.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_mistakes_get_a_sentence_not_a_traceback(cli_stack: DevStack, store: Store,
                                                 isolated: dict[str, str], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    unknown = hpc_bridge("status", "no-such-job", stack=cli_stack)
    assert (unknown.returncode, unknown.stderr) == (2, "hpc-bridge: no job no-such-job\n")

    def refused(*args: str, stack: DevStack | None = cli_stack) -> str:
        code, _, err = in_process(capsys, *([] if stack is None else where(stack)), *args)
        assert code == 2, err
        return err.strip()

    assert refused("logs", "no-such-job") == "hpc-bridge: no job no-such-job"
    assert "job_id" in refused("submit", "--job-id", "Not_Valid", "--command", "true")
    assert "unknown target 'nowhere'" in refused("submit", "--target", "nowhere", "--command",
                                                 "true")
    assert "--label wants KEY=VALUE" in refused("list", "--label", "team")
    assert "is not a state" in refused("list", "--state", "DONE")
    assert "cannot read" in refused("submit", "--file", str(tmp_path / "missing.yaml"))
    (tmp_path / "list.yaml").write_text("- not\n- a mapping\n")
    assert "one JobRequest" in refused("submit", "--file", str(tmp_path / "list.yaml"))
    assert "give --command, --script or --file" in refused("submit")

    for name, value in isolated.items():
        monkeypatch.setenv(name, value)
    for name in _WHERE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert "no job state" in refused("list", stack=None)
    assert "no broker" in refused("submit", "--command", "true", stack=None)
    monkeypatch.setenv("REDIS_URL", "redis://:hunter2@127.0.0.1:1/0")
    away = refused("list", stack=None)
    assert "unreachable" in away and "hunter2" not in away


def test_every_command_teaches_with_examples(capsys: pytest.CaptureFixture[str]) -> None:
    code, shown, _ = in_process(capsys, "--help")
    assert code == 0 and "hpc-bridge submit --wait" in shown
    for name in ("dev", "submit", "status", "list", "logs", "cancel", "watch", "targets"):
        code, shown, _ = in_process(capsys, name, "--help")
        assert code == 0 and "examples:" in shown, name
        assert f"hpc-bridge {name}" in shown.split("examples:")[1], name


# -- the Kubernetes mirror -------------------------------------------------------------------

@pytest.fixture(scope="module")
def kube() -> Iterator[KubeApiEmulator]:
    with KubeApiEmulator() as emulator:
        yield emulator


def show_in_mirror(mirror: Mirror, job_id: str, target: str, states: list[State], *,
                   submitted_at: float, labels: dict[str, str] | None = None,
                   namespace: str | None = None) -> JobStatus:
    """Write the mirror of a job going through ``states`` as the bridge writes it."""
    request: dict[str, Any] = {"target": target, "command": ["true"], "labels": labels or {}}
    if namespace:
        request["namespace"] = namespace
    status = JobStatus(job_id, target, State.ACCEPTED, submitted_at=submitted_at)
    for step, state in enumerate(states):
        status = status.replace(
            state=state, native_id="4242", native_state=state.lower(),
            updated_at=submitted_at + step, started_at=submitted_at + 1 if step else None,
            exit_code=0 if state is State.SUCCEEDED else None,
            finished_at=submitted_at + step if state.terminal else None)
        mirror.show(status, request, transition=True, create_pod=not state.terminal)
    return status


def test_without_redis_the_cli_reads_the_kubernetes_mirror(kube: KubeApiEmulator,
                                                            isolated: dict[str, str],
                                                            tmp_path: Path) -> None:
    api = kube.api_client()
    kube_client.CoreV1Api(api).create_namespace({"metadata": {"name": "science"}})
    mirror = Mirror(api)
    now = time.time()
    done = show_in_mirror(mirror, "mirrored-done", "hpc",
                          [State.ACCEPTED, State.RUNNING, State.SUCCEEDED], submitted_at=now - 30,
                          labels={"team": "physics"})
    running = show_in_mirror(mirror, "mirrored-running", "hpc", [State.ACCEPTED, State.RUNNING],
                             submitted_at=now - 20, labels={"team": "physics"})
    queued = show_in_mirror(mirror, "mirrored-queued", "laptop", [State.QUEUED],
                            submitted_at=now - 10, namespace="science")
    env = {**isolated, "KUBECONFIG": str(kube.write_kubeconfig(tmp_path / "kubeconfig"))}

    def cli(*args: str, environment: dict[str, str] = env) -> subprocess.CompletedProcess[str]:
        answer = hpc_bridge(*args, env=environment)
        assert answer.returncode == 0, answer.stderr
        return answer

    assert json.loads(cli("status", "mirrored-running", "-o", "json").stdout) == \
        running.to_dict()
    table = cli("status", "mirrored-done").stdout
    history = table.split("history (Events of the proxy pod):")[1].split()
    assert [w for w in history if w in State.__members__][:3] == \
        ["ACCEPTED", "RUNNING", "SUCCEEDED"], table

    def listed(*filters: str, environment: dict[str, str] = env) -> list[str]:
        answer = cli("list", *filters, "-o", "json", environment=environment)
        return [s["job_id"] for s in json.loads(answer.stdout)]

    assert listed() == [queued.job_id, running.job_id, done.job_id]
    assert listed("-n", "science") == [queued.job_id]
    as_yaml = yaml.safe_load(cli("list", "--label", "team=physics", "--state", "SUCCEEDED",
                                 "--state", "RUNNING", "--limit", "2", "-o", "yaml").stdout)
    assert as_yaml == [running.to_dict(), done.to_dict()]

    frame = cli("watch", "--once").stdout.splitlines()
    assert frame[0].startswith("2 active jobs") and "the Kubernetes mirror" in frame[0]
    assert [line.split()[0] for line in frame[2:]] == [queued.job_id, running.job_id]

    unreachable = {**env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    fallback = hpc_bridge("list", "-o", "json", env=unreachable)
    assert fallback.returncode == 0, fallback.stderr
    assert "reading the Kubernetes mirror instead" in fallback.stderr
    assert len(json.loads(fallback.stdout)) == 3


# -- the demo --------------------------------------------------------------------------------

def test_the_readme_demo_runs_a_job_to_its_end(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "KUBECONFIG")}
    env.update(XDG_RUNTIME_DIR=str(tmp_path), TMPDIR=str(tmp_path))
    demo = hpc_bridge("dev", "--demo", env=env)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert demo.stdout.splitlines()[-1].split()[2] == "SUCCEEDED"
    assert not (tmp_path / "hpc-bridge" / "dev.json").exists(), "the stack cleaned up"
