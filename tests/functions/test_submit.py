"""The submit function over HTTP: the contract, validation and exactly-once submission."""

from __future__ import annotations

import concurrent.futures
import json
import uuid
from pathlib import Path

import httpx
import pytest

from hpcbridge import events
from hpcbridge.dev import DevStack
from hpcbridge.model import job_id_for_event
from hpcbridge.store import Store
from tests.functions import SOURCE, reply, send, tick_until
from tests.functions.conftest import new_stack
from tests.services.redis_server import RedisServer


def submit_url(stack: DevStack) -> str:
    return stack.functions["submit"]


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_a_request_in_either_mode_is_submitted(bridge: DevStack, store: Store,
                                               mode: str) -> None:
    event_id = uuid.uuid4().hex
    answer = send(submit_url(bridge), events.REQUESTED,
                  {"target": "local", "command": ["true"]}, mode=mode, event_id=event_id)
    assert answer.status_code == 200, answer.text
    event = reply(answer)
    job_id = job_id_for_event(SOURCE, event_id)
    assert (event["type"], event["subject"]) == (events.SUBMITTED, job_id)
    assert event.data["job_id"] == job_id and event.data["state"] == "ACCEPTED"
    assert event.data["native_id"], "the reply carries the manager's id"
    stored = store.load(job_id)
    assert stored is not None and stored.status.native_id == event.data["native_id"]


def test_the_callers_job_id_names_the_job(bridge: DevStack) -> None:
    answer = send(submit_url(bridge), events.REQUESTED,
                  {"target": "local", "command": ["true"], "job_id": "my-step-1"})
    assert reply(answer)["subject"] == "my-step-1"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"command": ["true"]}, "target"),
        ({"target": "local"}, "script"),
        ({"target": "local", "command": ["true"], "colour": "red"}, "colour"),
        ({"target": "local", "command": ["true"], "resources": {"nodes": "1"}},
         "resources.nodes"),
        ({"target": "local", "command": ["true"], "environment": {"A": 1}}, "environment.A"),
        ({"target": "nowhere", "command": ["true"]}, "target"),
        ({"target": "local", "command": ["true"], "job_id": "Bad_Id"}, "job_id"),
        (["not", "an", "object"], None),
    ],
)
def test_a_bad_request_is_rejected_naming_the_field(bridge: DevStack, store: Store,
                                                    data: object, field: str | None) -> None:
    answer = send(submit_url(bridge), events.REQUESTED, data)
    assert answer.status_code == 400
    event = reply(answer)
    assert event["type"] == events.REJECTED
    assert event.data["field"] == field
    assert event.data["error"]
    assert store.recent() == [], "nothing is stored for a rejected request"


def test_a_body_that_is_no_cloudevent_is_rejected(bridge: DevStack) -> None:
    answer = httpx.post(submit_url(bridge), content=b'{"target": "local"}',
                        headers={"content-type": "application/json"})
    assert answer.status_code == 400
    assert reply(answer)["type"] == events.REJECTED
    assert "Traceback" not in answer.text


def test_the_wrong_event_type_is_rejected(bridge: DevStack) -> None:
    answer = send(submit_url(bridge), events.CANCEL, {"job_id": "x"})
    assert answer.status_code == 400
    assert reply(answer).data["field"] == "type"


def test_an_oversized_event_is_refused(bridge: DevStack, store: Store) -> None:
    answer = send(submit_url(bridge), events.REQUESTED,
                  {"target": "local", "script": "#" * (3 * 1024 * 1024)})
    assert answer.status_code == 413
    assert reply(answer)["type"] == events.REJECTED
    assert store.recent() == []


def test_a_job_id_reused_for_another_request_is_rejected(bridge: DevStack) -> None:
    first = send(submit_url(bridge), events.REQUESTED,
                 {"target": "local", "command": ["true"], "job_id": "reused"})
    assert first.status_code == 200
    second = send(submit_url(bridge), events.REQUESTED,
                  {"target": "local", "command": ["false"], "job_id": "reused"})
    assert second.status_code == 400
    assert reply(second).data["field"] == "job_id"


def test_five_deliveries_at_once_make_one_job_and_five_identical_replies(
        bridge: DevStack, store: Store, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    data = {"target": "local", "command": ["sh", "-c", 'echo ran >> "$RUNS"'],
            "environment": {"RUNS": str(runs)}}
    event_id = uuid.uuid4().hex
    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        answers = list(pool.map(
            lambda _: send(submit_url(bridge), events.REQUESTED, data, event_id=event_id),
            range(5)))
    assert [a.status_code for a in answers] == [200] * 5
    assert len({a.content for a in answers}) == 1
    assert len({a.headers["ce-id"] for a in answers}) == 1
    job_id = job_id_for_event(SOURCE, event_id)
    assert store.recent() == [job_id]
    tick_until(bridge, store, job_id, "SUCCEEDED")
    assert runs.read_text() == "ran\n", "the job ran exactly once"


def test_redis_down_answers_503_and_writes_nothing(
        targets_file: Path, local_targets: dict, tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    try:
        with new_stack(server.url, targets_file, tmp_path / "logs").running() as bridge:
            server.stop()
            data = {"target": "local", "command": ["true"], "job_id": "while-redis-down"}
            event_id = uuid.uuid4().hex
            down = send(submit_url(bridge), events.REQUESTED, data, event_id=event_id)
            assert down.status_code == 503
            assert "Redis" in down.text and "Traceback" not in down.text
            jobs = Path(local_targets["local"]["workdir"]) / "jobs"
            assert not (jobs / "while-redis-down").exists(), "no job without a record"
            server.start()
            up = send(submit_url(bridge), events.REQUESTED, data, event_id=event_id)
            assert up.status_code == 200
            assert reply(up)["subject"] == "while-redis-down"
            assert (jobs / "while-redis-down").is_dir()
    finally:
        server.stop()


def test_a_crash_between_the_managers_answer_and_the_record_is_recovered(
        redis_server: RedisServer, store: Store, targets_file: Path, local_targets: dict,
        tmp_path: Path) -> None:
    data = {"target": "local", "command": ["true"], "job_id": "crash-after-submit"}
    event_id = uuid.uuid4().hex
    crashing = new_stack(redis_server.url, targets_file, tmp_path / "logs-1",
                      HPCBRIDGE_FAULT="submit.after_manager")
    with crashing.running():
        with pytest.raises(httpx.HTTPError):
            answer = send(submit_url(crashing), events.REQUESTED, data, event_id=event_id)
            pytest.fail(f"the function should have died, it answered {answer.status_code}")
    jobs = Path(local_targets["local"]["workdir"]) / "jobs"
    assert (jobs / "crash-after-submit").is_dir(), "the manager got the job"
    stored = store.load("crash-after-submit")
    assert stored is not None and stored.status.native_id is None, "but Redis did not"

    with new_stack(redis_server.url, targets_file, tmp_path / "logs-2").running() as healthy:
        answer = send(submit_url(healthy), events.REQUESTED, data, event_id=event_id)
    assert answer.status_code == 200
    assert reply(answer).data["native_id"] == "crash-after-submit"
    assert sorted(p.name for p in jobs.iterdir() if p.name.startswith("crash")) == \
        ["crash-after-submit"]
    log = (tmp_path / "logs-2" / "submit.log").read_text()
    assert "adopted" in log
    assert json.loads(log.splitlines()[-1])["outcome"] == "submitted"


def test_a_bad_setting_answers_503_naming_it(targets_file: Path, tmp_path: Path,
                                              redis_server: RedisServer) -> None:
    with new_stack(redis_server.url, targets_file, tmp_path / "logs",
                   HPCBRIDGE_LOST_AFTER_S="soon").running() as broken:
        answer = send(submit_url(broken), events.REQUESTED,
                      {"target": "local", "command": ["true"]})
    assert answer.status_code == 503
    assert "HPCBRIDGE_LOST_AFTER_S" in answer.text and "Traceback" not in answer.text
