"""docs/events.md says what the code does: every type and field, examples that parse and
validate, events exactly as the bridge emits them, and the functions' own answers to the
examples of what pipelines send."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from hpcbridge import events
from hpcbridge.dev import ROUTES, DevStack
from hpcbridge.model import JobRequest, JobStatus, Reason, RequestError, Resources, State
from hpcbridge.targets import Targets
from tests.examples import markdown
from tests.examples.conftest import DOCS
from tests.functions.conftest import new_stack, write_targets
from tests.services.redis_server import RedisServer

DOC = DOCS / "events.md"
STRUCTURED = {"content-type": "application/cloudevents+json"}
INBOUND = {events.REQUESTED, events.CANCEL, events.TICK, events.PING,
           events.APISERVER_UPDATE, events.APISERVER_DELETE}
#: Every type the bridge emits; a job is ACCEPTED by hpcbridge.job.submitted.
OUTBOUND = {events.SUBMITTED, events.REJECTED} | {
    events.type_for_state(s) for s in State if s is not State.ACCEPTED}
#: Requests the bridge refuses, one per message docs/events.md lists.
REFUSED: list[Any] = [
    {"command": ["true"]},
    {"target": "a b", "command": ["true"]},
    {"target": "local", "script": "x", "command": ["y"]},
    {"target": "local", "script": " "},
    {"target": "local", "command": "true"},
    {"target": "local", "command": [""]},
    {"target": "local", "command": ["true"], "job_id": "Bad_Id"},
    {"target": "local", "command": ["true"], "colour": "red"},
    {"target": "local", "command": ["true"], "resources": {"gpu": 1}},
    {"target": "local", "command": ["true"], "resources": {"nodes": "2"}},
    {"target": "local", "command": ["true"], "resources": {"nodes": 0}},
    {"target": "local", "command": ["true"], "working_dir": "relative"},
    {"target": "local", "command": ["true"], "environment": {"1A": "x"}},
    {"target": "local", "command": ["true"], "environment": {"A": 1}},
    {"target": "local", "command": ["true"], "labels": {"team": "a b"}},
    {"target": "local", "command": ["true"], "namespace": "Not_A_Namespace"},
    {"target": "local", "command": ["true"], "name": "has space"},
    {"target": "nowhere", "command": ["true"]},
    {"target": "local", "command": ["true"], "outputs": "result.txt"},
    {"target": "local", "command": ["true"], "outputs": [f"f{i}" for i in range(33)]},
    {"target": "local", "command": ["true"], "outputs": ["/etc/passwd"]},
    {"target": "local", "command": ["true"], "outputs": ["a/../b"]},
    {"target": "local", "command": ["true"], "outputs": ["a\nb"]},
    {"target": "local", "command": ["true"], "outputs": ["a", "a"]},
]


def text() -> str:
    return DOC.read_text()


def refusal(request: Any) -> str:
    """What the bridge says of ``request``, on a bridge whose targets are hpc and local."""
    try:
        checked = JobRequest.from_dict(request)
        Targets({"hpc": {"kind": "local"}, "local": {"kind": "local"}}).adapter(checked.target)
    except RequestError as error:
        return str(error)
    raise AssertionError(f"accepted: {request}")


def messages() -> list[str]:
    return [refusal(request) for request in REFUSED]


def examples() -> list[dict[str, Any]]:
    """Every structured-mode event in the doc."""
    found = []
    for block in markdown.blocks(text()):
        if block.info == "json" and '"specversion"' in block.text:
            found.append(json.loads(block.text))
    return found


def example(event_type: str) -> dict[str, Any]:
    (found,) = [e for e in examples() if e["type"] == event_type]
    return found


def parsed(document: dict[str, Any]) -> events.CloudEvent:
    return events.parse(STRUCTURED, json.dumps(document).encode())


# -- what the doc lists --------------------------------------------------------------------


def test_every_outcome_the_functions_answer_is_listed() -> None:
    code = (markdown.REPO / "hpcbridge" / "service.py").read_text()
    outcomes = set(re.findall(r'Reply\((?:[^"]|\n)*?"([a-z][a-z-]*)"', code)) | {"rejected"}
    assert {"submitted", "cancelled", "ticked"} <= outcomes
    listed = set(re.findall(r"`([a-z][a-z-]*)`", markdown.section(text(), "HTTP answers")))
    assert outcomes <= listed


def test_the_types_table_lists_every_type_in_and_out() -> None:
    listed = markdown.first_column(markdown.section(text(), "Types"))
    assert sorted(listed) == sorted(INBOUND | OUTBOUND)
    assert set(ROUTES) == INBOUND, "the types routed to the functions are the inbound ones"


def test_every_type_has_an_example_that_parses() -> None:
    shown = [parsed(e)["type"] for e in examples()]
    assert sorted(shown) == sorted(INBOUND | OUTBOUND)


def test_the_field_tables_list_every_field() -> None:
    request = markdown.first_column(markdown.section(text(), "JobRequest"))
    resource_fields = {f"resources.{f.name}" for f in dataclasses.fields(Resources)}
    assert sorted(request) == sorted({f.name for f in dataclasses.fields(JobRequest)}
                                     | resource_fields)
    status = markdown.first_column(markdown.section(text(), "JobStatus"))
    assert status == [f.name for f in dataclasses.fields(JobStatus)]
    assert markdown.first_column(markdown.section(text(), "States")) == [str(s) for s in State]
    assert markdown.first_column(markdown.section(text(), "Reasons")) == [str(r) for r in Reason]


def test_the_job_request_examples_pass_the_bridges_validation() -> None:
    found = [json.loads(b.text) for b in markdown.blocks(text())
             if b.info == "json" and b.section == "JobRequest"]
    assert len(found) == 2
    for request in found:
        assert JobRequest.from_dict(request).to_dict() == request
    full = found[0]
    assert set(full) | {"command"} == {f.name for f in dataclasses.fields(JobRequest)}, \
        "the first example shows every field"
    assert set(full["resources"]) == {f.name for f in dataclasses.fields(Resources)}


def test_the_refusals_are_the_bridges_own_words() -> None:
    (block,) = [b for b in markdown.blocks(text())
                if b.info == "text" and b.section == "When a request is refused"]
    assert sorted(block.text.splitlines()) == sorted(messages())
    prose = " ".join(markdown.section(text(), "When a request is refused").split())
    for quoted in ("the event data must be a JSON object (a JobRequest)",
                   "job_id: job <job id> already exists with another request"):
        assert quoted in prose
        assert markdown.missing_from_source(quoted.removeprefix("job_id: ")) == []
    with pytest.raises(RequestError, match=r"^the event data must be a JSON object"):
        JobRequest.from_dict(["not", "an", "object"])


# -- the examples are what the bridge emits ------------------------------------------------


def status_types() -> Iterator[str]:
    return iter(sorted(OUTBOUND - {events.REJECTED}))


@pytest.mark.parametrize("event_type", list(status_types()))
def test_a_status_example_is_exactly_what_the_bridge_emits(event_type: str) -> None:
    shown = parsed(example(event_type))
    status = JobStatus.from_dict(shown.data)
    assert status.to_dict() == shown.data, "every JobStatus field, nothing else"
    if event_type == events.SUBMITTED:
        assert status.state is State.ACCEPTED
    else:
        assert events.type_for_state(status.state) == event_type
    trace = events.trace_context(shown)
    emitted = events.status_event(shown["source"], status, event_type, trace=trace,
                                  namespace=shown["namespace"])
    assert emitted.get_attributes() == shown.get_attributes()
    assert emitted.data == shown.data


def test_the_rejected_example_is_what_submit_answers(doc_stack: DevStack) -> None:
    request = example(events.REQUESTED)
    bad = {**request, "data": {**request["data"], "target": "nowhere"}}
    answer = httpx.post(doc_stack.functions["submit"], content=json.dumps(bad),
                        headers=STRUCTURED, timeout=60)
    assert answer.status_code == 400
    got = events.parse(answer.headers, answer.content)
    shown = parsed(example(events.REJECTED))
    assert got.data == shown.data
    same = ("type", "subject", "id", "datacontenttype")
    assert {k: got[k] for k in same} == {k: shown[k] for k in same}


def test_the_binary_example_is_the_structured_request() -> None:
    (block,) = [b for b in markdown.blocks(text()) if b.info == "http"]
    head, _, body = block.text.partition("\n\n")
    request_line, *header_lines = head.splitlines()
    assert request_line == "POST / HTTP/1.1"
    headers = dict(line.split(": ", 1) for line in header_lines)
    binary = events.parse(headers, body.strip().encode())
    structured = parsed(example(events.REQUESTED))
    JobRequest.from_dict(events.event_data(binary))
    assert events.event_data(binary) == structured.data
    for name in ("type", "source", "id", "subject"):
        assert binary[name] == structured[name]


# -- the functions' answers to the examples of what pipelines send -------------------------


@pytest.fixture(scope="module")
def doc_stack(redis_server: RedisServer,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    """A bridge whose targets are the doc's: hpc and local (both local processes here)."""
    base = tmp_path_factory.mktemp("doc-events")
    targets = write_targets(base / "targets.yaml", {
        name: {"kind": "local", "workdir": str(base / name), "kill_grace_s": 1}
        for name in ("hpc", "local")})
    with new_stack(redis_server.url, targets, base / "logs").running() as stack:
        yield stack


def deliver(stack: DevStack, event_type: str) -> httpx.Response:
    """POST the doc's example of ``event_type`` to the function the Broker routes it to."""
    url = stack.functions[ROUTES[event_type]]
    return httpx.post(url, content=json.dumps(example(event_type)), headers=STRUCTURED,
                      timeout=60)


def test_the_functions_take_the_examples_of_what_pipelines_send(doc_stack: DevStack,
                                                                 store: Any) -> None:
    submitted = deliver(doc_stack, events.REQUESTED)
    assert (submitted.status_code, submitted.headers["Hpcbridge-Outcome"]) == (
        200, "submitted"), submitted.text
    reply = events.parse(submitted.headers, submitted.content)
    assert reply["subject"] == "nightly-render"
    assert reply["traceparent"] == example(events.REQUESTED)["traceparent"]

    cancelled = deliver(doc_stack, events.CANCEL)
    assert (cancelled.status_code, cancelled.headers["Hpcbridge-Outcome"]) == (
        200, "cancelled"), cancelled.text
    assert events.parse(cancelled.headers, cancelled.content).data["state"] == "CANCELLED"

    for event_type in (events.TICK, events.PING):
        ticked = deliver(doc_stack, event_type)
        assert ticked.status_code == 200, ticked.text
        assert ticked.headers["Hpcbridge-Outcome"] == "ticked"

    # The proxy pod events name the same job, by now cancelled: the same answer again.
    for event_type in (events.APISERVER_UPDATE, events.APISERVER_DELETE):
        answer = deliver(doc_stack, event_type)
        assert (answer.status_code, answer.headers["Hpcbridge-Outcome"]) == (
            200, "already-cancelled"), answer.text
        assert answer.content == cancelled.content
