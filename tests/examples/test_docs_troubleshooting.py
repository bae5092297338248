"""docs/troubleshooting.md quotes what the code says: every message is still in the code,
and the first errors people meet (a refused token, an unknown target, a manager or Redis
that is down) are provoked for real and answered and logged as the doc shows."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hpcbridge import events
from hpcbridge.dev import DevStack, free_port
from tests.adapters import until
from tests.examples import markdown
from tests.examples.conftest import DOCS
from tests.functions import send
from tests.functions.conftest import new_stack, slurm_target, write_targets
from tests.services.redis_server import RedisServer
from tests.services.slurm import SlurmCluster, hs256_token

DOC = DOCS / "troubleshooting.md"


def text() -> str:
    return DOC.read_text()


def quoted(section: str) -> list[str]:
    """The lines of the ``text`` blocks of one section: messages and JSON log lines."""
    part = markdown.section(text(), section, nested=True)
    return [line for block in markdown.blocks(part) if block.info == "text"
            for line in block.text.splitlines() if line.strip()]


def test_every_quoted_message_is_still_in_the_code() -> None:
    messages = markdown.quoted_messages(text())
    assert len(messages) >= 20
    for message in messages:
        assert markdown.missing_from_source(message) == [], message


def test_the_doc_covers_the_first_errors() -> None:
    titles = re.findall(r"^## (.+)$", text(), re.MULTILINE)
    for topic in ("token", "unknown target", "manager is down", "Redis is down",
                  "stuck in ACCEPTED", "will not go away"):
        assert any(topic in title for title in titles), topic


def log_entries(stack: DevStack, function: str) -> list[dict[str, Any]]:
    lines = (stack.log_dir / f"{function}.log").read_text().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def logged_as_shown(stack: DevStack, function: str, shown: str) -> dict[str, Any]:
    """The function's log entry that the doc's JSON log line ``shown`` describes."""
    expected = json.loads(shown)
    fixed = {k: v for k, v in expected.items() if "<" not in v}
    pattern = markdown.template(expected["message"])
    found: list[dict[str, Any]] = []

    def logged() -> bool:
        found[:] = [e for e in log_entries(stack, function)
                    if pattern.fullmatch(e["message"])
                    and all(e.get(k) == v for k, v in fixed.items())]
        return bool(found)

    until(logged, 30, lambda: f"no {function} log entry like {shown}")
    assert set(found[-1]) == set(expected)
    return found[-1]


def answered_as_shown(answer: httpx.Response, shown: str) -> None:
    assert markdown.template(shown).fullmatch(answer.text.strip()), answer.text


# -- provoked for real ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def troubled(redis_server: RedisServer,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    """A bridge with a good local target and a Slurm target where nothing listens."""
    base = tmp_path_factory.mktemp("troubled")
    token = base / "token"
    token.write_text(hs256_token(b"any key", "alice", 3600))
    targets = write_targets(base / "targets.yaml", {
        "local": {"kind": "local", "workdir": str(base / "local")},
        "down": {"kind": "slurm", "url": f"http://127.0.0.1:{free_port()}", "user": "alice",
                 "token_file": str(token), "output_dir": str(base / "out")}})
    with new_stack(redis_server.url, targets, base / "logs").running() as stack:
        yield stack


def test_an_unknown_target_is_rejected_and_logged_as_shown(troubled: DevStack) -> None:
    rejected, logged = quoted("\"unknown target\"")
    answer = send(troubled.functions["submit"], events.REQUESTED,
                  {"target": "nowhere", "command": ["true"]})
    assert answer.status_code == 400
    reply = events.parse(answer.headers, answer.content)
    shown = json.loads(rejected)
    assert reply.data["field"] == shown["field"]
    assert markdown.template(shown["error"]).fullmatch(reply.data["error"])
    assert reply.data["error"] == "unknown target 'nowhere' (configured: down, local)"
    logged_as_shown(troubled, "submit", logged)


def test_a_manager_that_is_down_gets_503_and_no_native_job(troubled: DevStack,
                                                                 store: Any) -> None:
    unreachable = quoted("The manager is down")[0]
    answer = send(troubled.functions["submit"], events.REQUESTED,
                  {"target": "down", "job_id": "waits-for-slurm", "command": ["true"]})
    assert answer.status_code == 503
    answered_as_shown(answer, unreachable)
    job = store.load("waits-for-slurm")
    assert job is not None and job.status.native_id is None
    assert str(job.status.state) == "ACCEPTED"


def test_redis_down_gets_503_and_is_logged_as_shown(tmp_path: Path) -> None:
    answer_shown, logged = quoted("Redis is down")
    targets = write_targets(tmp_path / "targets.yaml", {
        "local": {"kind": "local", "workdir": str(tmp_path / "local")}})
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    with new_stack(nowhere, targets, tmp_path / "logs").running() as stack:
        answer = send(stack.functions["submit"], events.REQUESTED,
                      {"target": "local", "command": ["true"]})
        assert answer.status_code == 503
        answered_as_shown(answer, answer_shown)
        assert answer.text.strip() == "unavailable, retry later: Redis is unreachable: " \
                                      "ConnectionError"
        logged_as_shown(stack, "submit", logged)


@pytest.mark.slurm
def test_a_refused_token_gets_503_and_is_logged_as_shown(
        redis_server: RedisServer, slurm_cluster: SlurmCluster, store: Any,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    answer_shown, logged = quoted("The target refuses the bridge's token")[:2]
    base = tmp_path_factory.mktemp("expired")
    hpc = slurm_target(slurm_cluster, base)
    Path(hpc["token_file"]).write_text(
        hs256_token(slurm_cluster.jwt_key_path.read_bytes(), slurm_cluster.user, -60))
    targets = write_targets(base / "targets.yaml", {"hpc": hpc})
    with new_stack(redis_server.url, targets, base / "logs").running() as stack:
        answer = send(stack.functions["submit"], events.REQUESTED,
                      {"target": "hpc", "job_id": "expired-token", "command": ["true"]})
        assert answer.status_code == 503, answer.text
        answered_as_shown(answer, answer_shown)
        assert f"(check file {hpc['token_file']}: it expired at " in answer.text
        job = store.load("expired-token")
        assert job is not None and job.status.native_id is None
        entry = logged_as_shown(stack, "submit", logged)
        assert entry["event_type"] == events.REQUESTED
