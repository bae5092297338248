"""Hostile input, over HTTP against the real functions: fuzzed events and JobRequests,
shell metacharacters, newlines and NUL, oversized events.

What must hold: a malformed input gets a 4xx (a ``rejected`` event whose ``error`` says
what is wrong and whose ``field`` names the field), never a 5xx, a crash or a stack
trace; text that is accepted reaches the manager as data (a marker file that the text
would create if any shell ran it never appears, and the job prints the text back
unchanged); an event over the size limit gets 413.

Hypothesis runs derandomized (the same examples in every CI run);
``HPCBRIDGE_FUZZ_EXAMPLES`` scales the number of examples per property.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpcbridge import events
from tests.reliability import (
    EVIDENCE,
    FIGURES,
    Stack,
    converge,
    deliver,
    local_done,
    post,
)
from tests.reliability.conftest import MAX_EVENT_BYTES
from tests.reliability.slurm import SLURM_OVER
from tests.reliability.strategies import broken_requests, envelopes, hostile_text
from tests.services.slurm import SlurmCluster

EXAMPLES = int(os.environ.get("HPCBRIDGE_FUZZ_EXAMPLES", "120"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


@pytest.fixture
def hostile(plain: Stack) -> Stack:
    """The shared plain bridge; its target ``fuzz`` takes the hostile jobs."""
    return plain


def refused_clearly(answer: httpx.Response, field: Any = ..., status: int = 400) -> dict:
    """A 4xx with a rejected event naming ``field`` (any, if not given) and saying why."""
    assert answer.status_code == status, f"{answer.status_code}: {answer.text}"
    assert "Traceback" not in answer.text and "internal error" not in answer.text
    assert answer.headers.get("ce-type") == events.REJECTED, answer.headers
    body = answer.json()
    assert isinstance(body.get("error"), str) and body["error"].strip(), body
    if field is not ...:
        assert body.get("field") == field, f"named {body.get('field')!r}, not {field!r}: {body}"
    return body


def never_a_crash(answer: httpx.Response) -> None:
    assert answer.status_code < 500, f"{answer.status_code}: {answer.text}"
    assert "Traceback" not in answer.text
    if answer.status_code in (400, 413) and answer.headers.get("ce-type"):
        refused_clearly(answer, status=answer.status_code)


# -- fuzzing ----------------------------------------------------------------------------


def test_a_request_with_one_broken_field_is_refused_naming_that_field(hostile: Stack) -> None:
    @FUZZ
    @given(case=broken_requests("fuzz"), mode=st.sampled_from(["binary", "structured"]))
    def check(case: tuple[dict[str, Any], str], mode: str) -> None:
        data, field = case
        FIGURES.add("inputs")
        answer = post(hostile.submit_url, events.REQUESTED, data, mode=mode)
        refused_clearly(answer, field)

    before = len(hostile.store.recent(10**6))
    check()
    assert len(hostile.store.recent(10**6)) == before, "nothing is stored for a refusal"


def test_hostile_text_is_taken_as_data_or_refused_naming_its_field(hostile: Stack) -> None:
    """Free text where the contract allows it (arguments, environment values, working
    directories): accepted, or refused naming the field; never a 5xx. The jobs accepted
    then run to an end the manager explains, never lost. (A script is code by contract:
    it is not fuzzed as data.)"""
    accepted: list[str] = []

    @settings(FUZZ, max_examples=max(10, EXAMPLES // 3))
    @given(text=hostile_text, where=st.sampled_from(["command", "environment", "working_dir"]))
    def check(text: str, where: str) -> None:
        data: dict[str, Any] = {"target": "fuzz", "command": ["printf", "%s", text]}
        field = where
        if where == "environment":
            data = {"target": "fuzz", "command": ["true"], "environment": {"V": text}}
            field = "environment.V"
        elif where == "working_dir":
            data = {"target": "fuzz", "command": ["true"], "working_dir": "/" + text}
        FIGURES.add("inputs")
        answer = post(hostile.submit_url, events.REQUESTED, data)
        if answer.status_code == 200:
            accepted.append(answer.headers["ce-subject"])
        else:
            refused_clearly(answer, field)

    check()
    workdir = hostile.targets["fuzz"]["workdir"]
    converge(hostile, {job_id: {"SUCCEEDED", "FAILED"} for job_id in accepted},
             lambda job_id: local_done(workdir, job_id), timeout_s=120)
    lost = {job_id: job.status for job_id, job in hostile.store.load_many(accepted).items()
            if str(job.status.reason) not in ("None", "exit_code")}
    assert lost == {}, "accepted jobs end as their programs do"


def undecodable_json(body: bytes) -> bool:
    """Bytes that JSON's encoding detection reads as UTF-16/32 and cannot decode."""
    try:
        body.decode(json.detect_encoding(body))
    except UnicodeDecodeError:
        return True
    return False


def test_malformed_events_never_crash_a_function(hostile: Stack) -> None:
    @FUZZ
    @given(request=envelopes(), function=st.sampled_from(["submit", "poll", "cancel"]))
    def check(request: tuple[dict[str, str], bytes], function: str) -> None:
        headers, body = request
        FIGURES.add("inputs")
        url = hostile.dev.functions[function]
        answer = httpx.post(url, content=body, headers=headers, timeout=60)
        if answer.status_code >= 400:
            EVIDENCE.answer(url, answer)
        never_a_crash(answer)

    check()


@pytest.mark.parametrize("function", ["submit", "poll", "cancel"])
def test_a_body_json_cannot_decode_is_refused(hostile: Stack, function: str) -> None:
    url = hostile.dev.functions[function]
    for body in (b"\x00\x00\x00\x00\x00", b"\x00{\x00}\x00", b"{\x00\x00\x00\x00"):
        assert undecodable_json(body)  # as UTF-32-BE, UTF-16-BE, UTF-32-LE
        for headers in ({"content-type": "application/json"},
                        {"content-type": "application/cloudevents+json"},
                        {"content-type": "application/json", "ce-specversion": "1.0",
                         "ce-type": events.REQUESTED, "ce-source": "/x", "ce-id": "1"}):
            FIGURES.add("inputs")
            answer = httpx.post(url, content=body, headers=headers, timeout=60)
            EVIDENCE.answer(url, answer)
            refused_clearly(answer)


def test_fuzzed_cancels_and_ticks_are_answered_or_refused_naming_a_field(
        hostile: Stack) -> None:
    job_ids = st.one_of(st.text(max_size=60), st.from_regex(r"\A[a-z0-9][-a-z0-9]{0,20}\Z"))
    cancels = st.fixed_dictionaries({}, optional={
        "job_id": st.one_of(job_ids, st.integers(), st.none()),
        "namespace": st.one_of(st.text(max_size=70), st.from_regex(r"\A[a-z][-a-z0-9]{0,9}\Z"),
                               st.booleans()),
        "reason": st.text(max_size=5)})
    pods = st.fixed_dictionaries({"metadata": st.fixed_dictionaries({}, optional={
        "name": st.one_of(st.text(max_size=20), st.integers()),
        "namespace": st.one_of(st.text(max_size=20), st.none()),
        "deletionTimestamp": st.one_of(st.text(max_size=25), st.none()),
        "labels": st.one_of(st.dictionaries(st.sampled_from(
            ["hpcbridge.io/job-id", "app.kubernetes.io/managed-by", "x"]),
            st.one_of(job_ids, st.integers()), max_size=3), st.text(max_size=5))})})
    ticks = st.one_of(st.none(), st.fixed_dictionaries({}, optional={
        "targets": st.one_of(st.lists(st.sampled_from(["fuzz", "nowhere", ""]), max_size=3),
                             st.text(max_size=5), st.lists(st.integers(), max_size=2))}))

    @FUZZ
    @given(kind=st.sampled_from(["cancel", "pod-update", "pod-delete", "tick"]),
           cancel=cancels, pod=pods, tick=ticks)
    def check(kind: str, cancel: dict, pod: dict, tick: dict | None) -> None:
        FIGURES.add("inputs")
        if kind == "cancel":
            answer = post(hostile.cancel_url, events.CANCEL, cancel)
            allowed = {"job_id", "namespace", "reason"}
        elif kind == "tick":
            answer = post(hostile.poll_url, events.TICK, tick)
            allowed = {"targets"}
        else:
            kind_type = events.APISERVER_UPDATE if kind == "pod-update" else \
                events.APISERVER_DELETE
            answer = post(hostile.cancel_url, kind_type, pod)
            allowed = {"metadata", "metadata.name", "metadata.namespace",
                       "metadata.labels.hpcbridge.io/job-id"}
        never_a_crash(answer)
        if answer.status_code == 400:
            assert refused_clearly(answer)["field"] in allowed

    check()


@pytest.mark.parametrize(("field", "change"), [
    ("script", {"script": "echo \ud800", "command": None}),
    ("command", {"command": ["echo", "\ud800"]}),
    ("environment.V", {"environment": {"V": "\ud800"}}),
    ("working_dir", {"working_dir": "/tmp/\ud800"}),
], ids=["script", "command", "environment", "working_dir"])
def test_a_lone_surrogate_is_refused_naming_the_field(hostile: Stack, field: str,
                                                       change: dict[str, Any]) -> None:
    data = {k: v for k, v in {"target": "fuzz", "command": ["true"], **change}.items()
            if v is not None}
    FIGURES.add("inputs")
    answer = post(hostile.submit_url, events.REQUESTED, data)
    refused_clearly(answer, field)


# -- contract details a fuzzer finds ------------------------------------------------------


@pytest.mark.parametrize(("data", "field"), [([1, 2], None), (5, None),
                                             ({"target": ["fuzz"]}, "target")],
                         ids=["list", "number", "unknown-field"])
def test_malformed_tick_data_is_refused(hostile: Stack, data: Any, field: str | None) -> None:
    FIGURES.add("inputs")
    refused_clearly(post(hostile.poll_url, events.TICK, data), field)


@pytest.mark.parametrize("missing", ["id", "source", "type"])
def test_a_missing_attribute_is_named(hostile: Stack, missing: str) -> None:
    headers = {"ce-specversion": "1.0", "ce-type": events.REQUESTED, "ce-source": "/x",
               "ce-id": uuid.uuid4().hex, "content-type": "application/json"}
    del headers[f"ce-{missing}"]
    FIGURES.add("inputs")
    answer = httpx.post(hostile.submit_url, headers=headers, timeout=60,
                        content=json.dumps({"target": "fuzz", "command": ["true"]}))
    EVIDENCE.answer(hostile.submit_url, answer)
    body = refused_clearly(answer)
    assert body["field"] == missing and "specversion" not in body["error"], body


@pytest.mark.parametrize("empty", ["id", "source"])
def test_an_empty_id_or_source_is_refused(hostile: Stack, empty: str) -> None:
    headers = {"ce-specversion": "1.0", "ce-type": events.REQUESTED, "ce-source": "/x",
               "ce-id": uuid.uuid4().hex, "content-type": "application/json",
               f"ce-{empty}": ""}
    FIGURES.add("inputs")
    answer = httpx.post(hostile.submit_url, headers=headers, timeout=60,
                        content=json.dumps({"target": "fuzz", "command": ["true"]}))
    refused_clearly(answer, empty)


# -- shell metacharacters, newlines, NUL ------------------------------------------------

PAYLOADS = ["$(touch {m})", "`touch {m}`", "; touch {m}", "| touch {m}", "&& touch {m}",
            "\ntouch {m}\n", "'; touch {m}; '", '"; touch {m}; "', "$(touch${{IFS}}{m})",
            "x\r\ntouch {m}", "{{touch,{m}}}", "-e touch {m}"]
#: Fields whose contract forbids these characters: refused, naming the field.
PATTERNED = ["name", "queue", "account", "job_id", "namespace", "labels", "environment-key"]


def injections(marker: Path, shared: Path) -> list[tuple[str, dict[str, Any], str]]:
    """(what, request, what the job must print) for each payload and place."""
    cases = []
    for number, template in enumerate(PAYLOADS):
        text = template.format(m=marker)
        directory = shared / f"wd-{number}-{text}"
        directory.mkdir(parents=True, exist_ok=True)
        cases += [
            (f"argv {text!r}", {"command": ["printf", "%s", text]}, text),
            (f"environment {text!r}", {"command": ["sh", "-c", 'printf "%s" "$P"'],
                                      "environment": {"P": text}}, text),
            (f"script environment {text!r}",
             {"script": '#!/bin/sh\nprintf "%s" "$P"\n', "environment": {"P": text}}, text),
            (f"working_dir {text!r}", {"command": ["sh", "-c", "pwd -P"],
                                      "working_dir": str(directory)}, f"{directory}\n"),
        ]
    return cases


def refused_everywhere_else(stack: Stack, target: str, marker: Path) -> None:
    """The payloads (and NUL) in fields whose contract forbids them: 400 naming them."""
    for template in PAYLOADS:
        text = template.format(m=marker)
        for where in PATTERNED:
            data: dict[str, Any] = {"target": target, "command": ["true"]}
            field = where
            if where == "labels":
                data["labels"], field = {"team": text}, "labels.team"
            elif where == "environment-key":
                data["environment"], field = {text: "x"}, f"environment.{text}"
            else:
                data[where] = text
            FIGURES.add("inputs")
            refused_clearly(post(stack.submit_url, events.REQUESTED, data), field)
        for field, data in [
            ("command", {"command": ["printf", "%s", "a\x00" + text]}),
            ("environment.P", {"command": ["true"], "environment": {"P": "a\x00" + text}}),
            ("working_dir", {"command": ["true"], "working_dir": "/tmp/a\x00" + text}),
            ("script", {"script": "echo a\x00" + text}),
        ]:
            FIGURES.add("inputs")
            refused_clearly(post(stack.submit_url, events.REQUESTED,
                                 {"target": target, **data}), field)


def run_injections(stack: Stack, target: str, marker: Path, shared: Path,
                   done: Any, output: Any) -> None:
    cases = injections(marker, shared)
    jobs = {}
    for what, data, expected in cases:
        FIGURES.add("inputs")
        FIGURES.add("injections")
        answer = deliver(stack.submit_url, events.REQUESTED, {"target": target, **data})
        assert answer.status_code == 200, f"{what}: {answer.text}"
        jobs[answer.headers["ce-subject"]] = (what, expected)
    refused_everywhere_else(stack, target, marker)
    converge(stack, dict.fromkeys(jobs, "SUCCEEDED"), done, timeout_s=120)
    assert not marker.exists(), "a payload ran as a command"
    wrong = {what: (output(job_id), expected) for job_id, (what, expected) in jobs.items()
             if output(job_id) != expected}
    assert wrong == {}, "every payload reached the program unchanged, as data"


def test_metacharacters_reach_the_local_target_as_data(hostile: Stack, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    workdir = Path(hostile.targets["fuzz"]["workdir"])
    run_injections(hostile, "fuzz", marker, tmp_path / "dirs",
                   lambda job_id: local_done(workdir, job_id),
                   lambda job_id: (workdir / "jobs" / job_id / "output").read_bytes().decode())


@pytest.mark.slurm
def test_metacharacters_reach_slurm_as_data(slurm_stack: Stack,
                                            slurm_cluster: SlurmCluster) -> None:
    shared = slurm_cluster.workdir / f"hostile-{uuid.uuid4().hex[:8]}"

    def native(job_id: str) -> str:
        job = slurm_stack.store.load(job_id)
        assert job is not None and job.status.native_id
        return job.status.native_id

    run_injections(
        slurm_stack, "hpc", shared / "marker", shared,
        lambda job_id: slurm_cluster.job_state(native(job_id)) in SLURM_OVER,
        lambda job_id: (slurm_cluster.workdir / f"{native(job_id)}.out").read_bytes().decode())


# -- size ------------------------------------------------------------------------------


@pytest.mark.parametrize("function", ["submit", "poll", "cancel"])
def test_an_oversized_event_is_refused_with_413(hostile: Stack, function: str) -> None:
    job_id = f"big-{uuid.uuid4().hex[:8]}"
    data = {"target": "fuzz", "job_id": job_id, "script": "#" * (MAX_EVENT_BYTES + 1)}
    event_type = {"submit": events.REQUESTED, "poll": events.TICK,
                  "cancel": events.CANCEL}[function]
    FIGURES.add("inputs")
    answer = post(hostile.dev.functions[function], event_type, data)
    refused_clearly(answer, None, status=413)
    assert hostile.store.load(job_id) is None


def test_an_oversized_chunked_event_is_refused_with_413(hostile: Stack) -> None:
    job_id = f"chunked-{uuid.uuid4().hex[:8]}"
    body = json.dumps({"target": "fuzz", "job_id": job_id,
                       "script": "#" * (4 * MAX_EVENT_BYTES)}).encode()

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 16384):
            yield body[start:start + 16384]

    FIGURES.add("inputs")
    answer = httpx.post(hostile.submit_url, content=chunks(), timeout=60, headers={
        "ce-specversion": "1.0", "ce-type": events.REQUESTED, "ce-source": "/x",
        "ce-id": uuid.uuid4().hex, "content-type": "application/json"})
    EVIDENCE.answer(hostile.submit_url, answer)
    assert answer.status_code == 413, f"{answer.status_code}: {answer.text[:200]}"
