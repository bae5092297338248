"""adapters.flux_api: what flux-restful-api sends, read without any server."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from adapters import flux_api
from hpcbridge.model import Reason, State


@pytest.mark.parametrize(("state", "result", "expected"), [
    ("DEPEND", "", (State.QUEUED, None, "DEPEND")),
    ("PRIORITY", "", (State.QUEUED, None, "PRIORITY")),
    ("SCHED", "", (State.QUEUED, None, "SCHED")),
    ("RUN", "", (State.RUNNING, None, "RUN")),
    ("CLEANUP", "COMPLETED", (State.RUNNING, None, "CLEANUP")),
    ("INACTIVE", "COMPLETED", (State.SUCCEEDED, None, "INACTIVE,COMPLETED")),
    ("INACTIVE", "FAILED", (State.FAILED, Reason.EXIT_CODE, "INACTIVE,FAILED")),
    ("INACTIVE", "CANCELED", (State.CANCELLED, Reason.CANCELLED, "INACTIVE,CANCELED")),
    ("INACTIVE", "TIMEOUT", (State.FAILED, Reason.TIMEOUT, "INACTIVE,TIMEOUT")),
    # Older servers pass job-list's numbers through.
    (8, "", (State.QUEUED, None, "SCHED")),
    (16, "", (State.RUNNING, None, "RUN")),
    (64, 1, (State.SUCCEEDED, None, "INACTIVE,COMPLETED")),
    (64, 8, (State.FAILED, Reason.TIMEOUT, "INACTIVE,TIMEOUT")),
    ("INACTIVE", "", (State.UNKNOWN, None, "INACTIVE")),
    ("SOMETHING", "", (State.UNKNOWN, None, "SOMETHING")),
    (None, None, (State.UNKNOWN, None, "UNKNOWN")),
])
def test_states_and_results_map_to_common_states(state: object, result: object,
                                                 expected: tuple[State, Reason | None, str]
                                                 ) -> None:
    assert flux_api.map_state(state, result) == expected


@pytest.mark.parametrize(("record", "code"), [
    ({"returncode": 3, "waitstatus": 768}, 3),
    ({"returncode": "", "waitstatus": 768}, 3),
    ({"returncode": "", "waitstatus": 9}, 137),
    ({"returncode": 0}, 0),
    ({"returncode": "", "waitstatus": ""}, None),
    ({}, None),
])
def test_exit_code_comes_from_returncode_or_the_wait_status(record: dict[str, object],
                                                            code: int | None) -> None:
    assert flux_api.exit_code(record) == code


def test_an_ended_job_is_observed_with_its_times_and_exit_code() -> None:
    record = {"id": 7, "state": "INACTIVE", "result": "FAILED", "returncode": 5,
              "t_submit": 1.0, "t_run": 2.0, "t_cleanup": 3.0, "t_inactive": 3.5}

    observation = flux_api.observe(record)

    assert observation.state is State.FAILED
    assert observation.exit_code == 5
    assert observation.reason is Reason.EXIT_CODE
    assert (observation.started_at, observation.finished_at) == (2.0, 3.5)


def test_a_waiting_job_has_no_start_end_or_exit_code() -> None:
    observation = flux_api.observe({"id": 7, "state": "SCHED", "result": "",
                                    "returncode": "", "t_submit": 1.0})

    assert observation.state is State.QUEUED
    assert (observation.started_at, observation.finished_at, observation.exit_code) == \
        (None, None, None)


def test_a_job_cancelled_before_it_ran_has_no_start() -> None:
    observation = flux_api.observe({"id": 7, "state": "INACTIVE", "result": "CANCELED",
                                    "returncode": "", "t_cleanup": 4.0, "t_inactive": 4.0})

    assert observation.state is State.CANCELLED
    assert observation.started_at is None
    assert observation.finished_at == 4.0


def test_listings_in_both_shapes_are_keyed_by_job_id() -> None:
    record = {"id": 42, "state": "RUN"}

    assert flux_api.job_records({"42": record}) == {"42": record}
    assert flux_api.job_records([record, {"no": "id"}, "junk"]) == {"42": record}
    assert flux_api.job_records({"jobs": [{"id": 42}]}) is None
    assert flux_api.job_records("nonsense") is None


def test_ended_is_inactive_whatever_the_result() -> None:
    assert flux_api.ended({"state": "INACTIVE"})
    assert flux_api.ended({"state": 64})
    assert not flux_api.ended({"state": "CLEANUP"})


@pytest.mark.parametrize("arguments", [
    ["printf", "%s\\0", "$(id)", "`id`", "; rm -rf /", "a b", "", "'\"", "\n", "* ?", "-n"],
    ["echo", "über", "tab\there", "#not a comment", "~", "{a,b}", "\\"],
])
def test_the_command_string_splits_back_into_the_same_argv(arguments: list[str]) -> None:
    body = flux_api.submission(arguments, environment={}, workdir=None, runtime_s=None,
                               tasks=None, cores_per_task=None, nodes=None,
                               gpus_per_task=None)

    assert shlex.split(body["command"]) == arguments
    assert body == {"command": body["command"], "envars": {}}


def test_resources_become_the_documented_fields() -> None:
    body = flux_api.submission(["true"], environment={"A": "1"}, workdir="/w", runtime_s=60,
                               tasks=4, cores_per_task=2, nodes=1, gpus_per_task=1)

    assert body == {"command": "true", "envars": {"A": "1"}, "workdir": "/w", "runtime": 60,
                    "num_tasks": 4, "cores_per_task": 2, "num_nodes": 1, "gpus_per_task": 1}


@pytest.mark.parametrize(("script", "output"), [
    ("echo from sh; exit 4\n", "from sh\n"),
    ("#!/bin/sh\necho from a shebang\nexit 4\n", "from a shebang\n"),
    (f"#!{sys.executable}\nimport sys\nprint('py')\nsys.exit(4)\n", "py\n"),
])
def test_the_script_runner_runs_the_script_from_a_file_it_removes(
        tmp_path: Path, script: str, output: str) -> None:
    argv = flux_api.argv(script, None)

    done = subprocess.run(argv, env={"PATH": "/usr/bin:/bin", "FLUX_JOB_TMPDIR": str(tmp_path)},
                          capture_output=True, text=True, check=False)

    assert (done.returncode, done.stdout) == (4, output)
    assert argv[-1] == script  # the script is an argument, never shell code
    assert list(tmp_path.iterdir()) == []


def test_a_command_is_the_argv_itself() -> None:
    assert flux_api.argv(None, ("a", "b c")) == ["a", "b c"]


def test_the_handshake_token_is_an_hs256_jwt_of_the_credentials() -> None:
    token = flux_api.handshake_token("fluxuser", "pass word", "shared")

    header, claims, signature = token.split(".")
    expected = hmac.new(b"shared", f"{header}.{claims}".encode(), hashlib.sha256).digest()
    assert _decode(signature) == expected
    assert json.loads(_decode(claims)) == {"user": "fluxuser", "pass": "pass word",
                                           "scope": "token"}
    assert json.loads(_decode(header)) == {"alg": "HS256", "typ": "JWT"}


def _decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.mark.parametrize(("text", "count", "tail"), [
    ("1\n2\n3\n", 2, "2\n3\n"),
    ("1\n2\n3", 2, "2\n3"),
    ("1\n2\n3\n", 5, "1\n2\n3\n"),
    ("a\x0cb\nc\n", 1, "c\n"),
    ("a\x0cb\nc\n", 2, "a\x0cb\nc\n"),
    ("x\n", 0, ""),
    ("x\n", None, "x\n"),
    ("", 3, ""),
])
def test_tail_counts_newlines_only(text: str, count: int | None, tail: str) -> None:
    assert flux_api.tail_lines(text, count) == tail
