"""The Python client (``from hpcbridge import client``) against a running bridge: a real
Redis, the dev stack, local targets, and the Kubernetes API emulator for the mirror."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as kube_client

from hpcbridge import client, events
from hpcbridge.client import Client, Config
from hpcbridge.dev import DevStack, free_port
from hpcbridge.mirror import Mirror
from hpcbridge.model import JobRequest, JobStatus, State
from hpcbridge.store import Store
from tests.adapters import held_command, until
from tests.emulators.kube_apiserver import KubeApiEmulator
from tests.functions.conftest import write_targets
from tests.services.redis_server import RedisServer

_WHERE_VARIABLES = ("REDIS_URL", "KUBECONFIG", "HPCBRIDGE_BROKER", "HPCBRIDGE_TARGETS",
                    "HPCBRIDGE_REDIS_PREFIX", "KUBERNETES_SERVICE_HOST")


@pytest.fixture(scope="module")
def bridge(redis_server: RedisServer,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    base = tmp_path_factory.mktemp("client")
    targets = write_targets(base / "targets.yaml", {
        "local": {"kind": "local", "workdir": str(base / "local"), "kill_grace_s": 1},
        "other": {"kind": "local", "workdir": str(base / "other"), "kill_grace_s": 1},
    })
    with DevStack(redis_url=redis_server.url, targets_file=str(targets), tick_s=0.2,
                  log_dir=base / "logs").running() as stack:
        yield stack


@pytest.fixture(autouse=True)
def nowhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No bridge named by the environment, no dev stack state file, no kubeconfig."""
    for name in _WHERE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    return tmp_path / "run"


@pytest.fixture
def hpc(bridge: DevStack, store: Store) -> Iterator[Client]:
    """A client of the running bridge, over an empty Redis."""
    with Client(broker=bridge.broker.url, redis_url=bridge.redis_url,
                targets_file=bridge.targets_file) as made:
        yield made


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "go"
    yield path
    path.touch()


def state_of(hpc: Client, job_id: str) -> State | None:
    try:
        return hpc.status(job_id).state
    except client.JobNotFound:
        return None


def running(hpc: Client, job_id: str) -> None:
    until(lambda: state_of(hpc, job_id) is State.RUNNING, 30,
          lambda: f"{job_id} is {state_of(hpc, job_id)}")


def sent(stack: DevStack, event_type: str, job_id: str) -> list[dict[str, Any]]:
    """The events of ``event_type`` about ``job_id`` that reached the broker."""
    found = []
    for event in stack.broker.seen():
        data = event["data"]
        data = json.loads(data) if isinstance(data, str | bytes) else data
        if event["type"] == event_type and data.get("job_id") == job_id:
            found.append(event)
    return found


def test_submit_wait_status_and_logs_of_a_job(hpc: Client) -> None:
    job_id = hpc.submit({"target": "other", "command": ["sh", "-c", "echo one; echo two"],
                         "labels": {"step": "first"}})
    seen: list[State] = []
    final = hpc.wait(job_id, timeout_s=60, on_change=lambda s: seen.append(s.state))
    assert (final.state, final.exit_code, final.target) == (State.SUCCEEDED, 0, "other")
    assert seen[-1] is State.SUCCEEDED and seen[0] in (State.ACCEPTED, State.QUEUED,
                                                        State.RUNNING)
    assert hpc.status(job_id) == final
    assert client.exit_code(final) == 0
    assert hpc.logs(job_id) == "one\ntwo\n" and hpc.logs(job_id, tail=1) == "two\n"
    assert next(e["state"] for e in hpc.history(job_id)) == "ACCEPTED"
    assert [s.job_id for s in hpc.jobs(labels={"step": "first"})] == [job_id]
    assert hpc.jobs(states=["running"]) == [] and hpc.active() == []
    assert hpc.reads == "redis" and hpc.reads_from.startswith("Redis at redis://127.0.0.1:")


def test_a_job_request_with_an_id_makes_one_job_however_often_sent(hpc: Client,
                                                                   bridge: DevStack,
                                                                   store: Store) -> None:
    request = JobRequest(target="local", command=("sh", "-c", "exit 7"), name="seven")
    job_id = hpc.submit(request, job_id="step-seven")
    assert job_id == "step-seven" == hpc.submit(request, job_id="step-seven")
    final = hpc.wait(job_id, timeout_s=60)
    assert (final.state, final.exit_code, str(final.reason)) == (State.FAILED, 7, "exit_code")
    assert client.exit_code(final) == 7
    assert client.exit_code(final.replace(exit_code=None)) == 1
    assert store.recent() == ["step-seven"]
    assert len(sent(bridge, events.REQUESTED, job_id)) == 2


def test_wait_gives_up_and_cancel_ends_a_running_job(hpc: Client, bridge: DevStack,
                                                     gate: Path) -> None:
    job_id = hpc.submit({"target": "local", "command": held_command(gate)})
    with pytest.raises(client.WaitTimeout) as timed_out:
        hpc.wait(job_id, timeout_s=0.3)
    assert isinstance(timed_out.value, TimeoutError) and job_id in str(timed_out.value)
    running(hpc, job_id)
    assert [s.job_id for s in hpc.active()] == [job_id]
    assert [s.job_id for s in hpc.active(targets=["other"])] == []

    before = hpc.cancel(job_id)
    assert before.state is State.RUNNING
    final = hpc.wait(job_id, timeout_s=60)
    assert final.state is State.CANCELLED and client.exit_code(final) != 0
    assert hpc.cancel(job_id) == final, "an ended job is left alone"
    assert len(sent(bridge, events.CANCEL, job_id)) == 1


def test_follow_logs_yields_only_new_output_until_the_job_ends(hpc: Client,
                                                              gate: Path) -> None:
    job_id = hpc.submit({"target": "local", "command": held_command(gate)})
    chunks = hpc.follow_logs(job_id, poll_s=0.05)
    assert next(chunks) == "started\n"
    assert not hpc.status(job_id).state.terminal
    gate.touch()
    assert "".join(chunks) == "released\n"
    assert hpc.status(job_id).state is State.SUCCEEDED
    assert list(hpc.follow_logs(job_id, tail=1)) == ["released\n"]
    assert list(hpc.follow_logs(job_id, tail=0)) == []


def test_targets_reports_kind_answer_and_active_jobs(hpc: Client, gate: Path) -> None:
    job_id = hpc.submit({"target": "other", "command": held_command(gate)})
    running(hpc, job_id)
    reports = {r.name: r for r in hpc.targets()}
    assert set(reports) == {"local", "other"}
    assert (reports["other"].kind, reports["other"].answers, reports["other"].active) == \
        ("local", True, 1)
    assert reports["local"].active == 0 and reports["local"].capacity["cpus"] >= 1
    assert "cpus" in reports["local"].detail
    assert reports["local"].to_dict()["answers"] is True


def test_mistakes_are_client_errors_with_a_sentence(hpc: Client, bridge: DevStack) -> None:
    with pytest.raises(client.JobNotFound, match="no job nobody"):
        hpc.status("nobody")
    with pytest.raises(client.JobNotFound, match="refused the request"):
        hpc.wait("nobody", missing_s=0.2, poll_s=0.05)
    with pytest.raises(client.InvalidRequest) as invalid:
        hpc.submit({"target": "local", "command": ["true"], "job_id": "Not_Valid"})
    assert invalid.value.field == "job_id"
    with pytest.raises(client.InvalidRequest, match="unknown target 'away'") as unknown:
        hpc.submit({"target": "away", "command": ["true"]})
    assert unknown.value.field == "target"
    with pytest.raises(client.ClientError, match="unknown state"):
        hpc.jobs(states=["DONE"])
    with pytest.raises(client.NotConfigured, match="no broker"):
        Client(Config()).submit({"target": "local", "command": ["true"]})
    with pytest.raises(client.NotConfigured, match="no job state"):
        Client(Config()).status("anything")
    closed = f"http://127.0.0.1:{free_port()}/"
    with pytest.raises(client.Unavailable, match="cannot reach the broker"):
        Client(broker=closed).submit({"target": "local", "command": ["true"]})
    secret = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    with pytest.raises(client.Unavailable, match="unreachable") as away:
        Client(redis_url=secret).status("anything")
    assert "hunter2" not in str(away.value) and ":***@" in str(away.value)


def test_configuration_comes_from_arguments_environment_or_the_dev_stack(
        bridge: DevStack, store: Store, monkeypatch: pytest.MonkeyPatch, nowhere: Path,
        tmp_path: Path) -> None:
    assert Config.resolve() == Config(origins={})
    monkeypatch.setenv("HPCBRIDGE_BROKER", "http://broker.example/")
    monkeypatch.setenv("REDIS_URL", "redis://redis.example:6379/0")
    monkeypatch.setenv("HPCBRIDGE_TARGETS", "/etc/targets.yaml")
    monkeypatch.setenv("HPCBRIDGE_REDIS_PREFIX", "other:")
    from_env = Config.resolve()
    assert (from_env.broker, from_env.redis_url, from_env.targets_file, from_env.redis_prefix) \
        == ("http://broker.example/", "redis://redis.example:6379/0", "/etc/targets.yaml",
            "other:")
    assert Config.resolve(broker="http://mine/").broker == "http://mine/"
    kubeconfig = tmp_path / "kubeconfig"
    mirror_only = Config.resolve(kubeconfig=str(kubeconfig))
    assert (mirror_only.redis_url, mirror_only.kubeconfig) == (None, str(kubeconfig))
    for name in ("HPCBRIDGE_BROKER", "REDIS_URL", "HPCBRIDGE_TARGETS", "HPCBRIDGE_REDIS_PREFIX"):
        monkeypatch.delenv(name)

    state = nowhere / "hpc-bridge" / "dev.json"
    state.parent.mkdir(parents=True)
    state.write_text(json.dumps(bridge.describe()))
    from_stack = Config.resolve()
    assert (from_stack.broker, from_stack.redis_url, from_stack.targets_file) == \
        (bridge.broker.url, bridge.redis_url, str(Path(str(bridge.targets_file)).resolve()))
    assert "the dev stack" in from_stack.origin("broker")

    # the module functions: configured from the environment or the dev stack alone
    job_id = client.submit({"target": "other", "command": ["echo", "module"]})
    final = client.wait(job_id, timeout_s=60)
    assert final.state is State.SUCCEEDED and client.status(job_id) == final
    assert client.logs(job_id) == "module\n"
    assert client.cancel(job_id) == final

    dead = {**bridge.describe(), "pid": 2**22 + 1}  # above pid_max: no such process
    state.write_text(json.dumps(dead))
    assert Config.resolve().broker is None, "a dead stack's state file is ignored"


# -- the Kubernetes mirror -------------------------------------------------------------------

@pytest.fixture(scope="module")
def kube() -> Iterator[KubeApiEmulator]:
    with KubeApiEmulator() as emulator:
        yield emulator


def test_without_redis_the_client_reads_the_mirror(kube: KubeApiEmulator,
                                                   tmp_path: Path) -> None:
    mirror = Mirror(kube.api_client())
    request = {"target": "hpc", "command": ["true"], "labels": {"team": "physics"}}
    queued = JobStatus("mirror-one", "hpc", State.QUEUED, native_id="17",
                       native_state="PENDING", submitted_at=1_700_000_000.0,
                       updated_at=1_700_000_001.0)
    mirror.show(queued, request, transition=True)
    kubeconfig = str(kube.write_kubeconfig(tmp_path / "kubeconfig"))
    notices: list[str] = []
    with Client(kubeconfig=kubeconfig, notice=notices.append) as reader:
        assert reader.status("mirror-one") == queued and reader.reads == "mirror"
        assert [s.job_id for s in reader.jobs(labels={"team": "physics"})] == ["mirror-one"]
        assert [s.job_id for s in reader.jobs(targets=["hpc"], states=["queued"])] == \
            ["mirror-one"]
        assert reader.jobs(labels={"team": "chemistry"}) == []
        assert reader.jobs(targets=["laptop"]) == reader.jobs(states=[State.RUNNING]) == []
        assert [s.job_id for s in reader.active(targets=["hpc"])] == ["mirror-one"]
        for unknown in ("mirror-none", "Not A Job Id"):
            with pytest.raises(client.JobNotFound):
                reader.status(unknown)

        # wait follows the mirror: each change it sees moves the job on
        steps = {State.QUEUED: queued.replace(state=State.RUNNING, native_state="RUNNING",
                                              updated_at=1_700_000_002.0),
                 State.RUNNING: queued.replace(state=State.SUCCEEDED, native_state="COMPLETED",
                                               exit_code=0, updated_at=1_700_000_003.0)}

        def advance(status: JobStatus) -> None:
            if status.state in steps:
                mirror.show(steps[status.state], request, transition=True)

        final = reader.wait("mirror-one", timeout_s=30, poll_s=0.05, on_change=advance)
        assert final == steps[State.RUNNING]
        assert [e["state"] for e in reader.history("mirror-one")] == \
            ["QUEUED", "RUNNING", "SUCCEEDED"]
        assert reader.active() == []
    assert notices == []

    core = kube_client.CoreV1Api(kube.api_client())
    assert core.read_namespaced_config_map("hpcbridge-mirror-one", "default").data[
        "native_id"] == "17"
    unreachable = f"redis://127.0.0.1:{free_port()}/0"
    with Client(redis_url=unreachable, kubeconfig=kubeconfig,
                notice=notices.append) as fallback:
        assert fallback.status("mirror-one") == final
    assert len(notices) == 1 and "reading the Kubernetes mirror instead" in notices[0]
