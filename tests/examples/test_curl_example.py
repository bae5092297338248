"""examples/curl/submit.sh, run with bash against a running bridge (real Redis, dev broker)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from hpcbridge import events
from hpcbridge.dev import DevStack
from hpcbridge.store import Store
from tests.examples.conftest import EXAMPLES
from tests.functions import tick_until

SCRIPT = EXAMPLES / "curl" / "submit.sh"
JOB_ID = re.compile(r"^[a-z0-9]([-a-z0-9]{0,51}[a-z0-9])?$")


def submit_sh(*args: str, request: object = None, env: dict[str, str] | None = None,
              raw: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the example as a person would: ``bash examples/curl/submit.sh ARGS < request``."""
    given = raw if raw is not None else None if request is None else json.dumps(request)
    base = {k: v for k, v in os.environ.items() if k != "HPCBRIDGE_BROKER"}
    return subprocess.run(["bash", str(SCRIPT), *args], input=given or "", text=True,
                          capture_output=True, timeout=120, env={**base, **(env or {})})


def broker_url(stack: DevStack) -> str:
    assert stack.broker is not None
    return stack.broker.url


def test_a_job_sent_through_the_broker_runs_to_success(local_stack: DevStack,
                                                      store: Store) -> None:
    done = submit_sh(broker_url(local_stack),
                     request={"target": "local", "command": ["echo", "hello"]})
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip()
    assert JOB_ID.match(job_id) and job_id.startswith("curl-"), done.stdout
    status = tick_until(local_stack, store, job_id, "SUCCEEDED")
    assert status.exit_code == 0
    (request,) = [e for e in local_stack.broker.seen(job_id) if e["type"] == events.REQUESTED]
    assert request["source"] == "/examples/curl/submit.sh"
    assert request["datacontenttype"] == "application/json"


def test_the_broker_comes_from_the_environment_and_the_job_id_from_the_request(
        local_stack: DevStack, store: Store, tmp_path: Path) -> None:
    request_file = tmp_path / "request.json"
    request_file.write_text(json.dumps(
        {"target": "local", "job_id": "curl-explicit-1", "command": ["sh", "-c", "exit 4"]}))
    done = submit_sh("-f", str(request_file), env={"HPCBRIDGE_BROKER": broker_url(local_stack)})
    assert (done.returncode, done.stdout) == (0, "curl-explicit-1\n"), done.stderr
    status = tick_until(local_stack, store, "curl-explicit-1", "FAILED")
    assert (status.exit_code, str(status.reason)) == (4, "exit_code")


def test_request_values_reach_the_job_as_data_never_as_shell_code(
        local_stack: DevStack, store: Store, tmp_path: Path) -> None:
    planted = tmp_path / "planted"
    written = tmp_path / "written"
    hostile = f"$(touch {planted}) `touch {planted}` \"double\" 'single' ; & | \\ \n end"
    done = submit_sh(broker_url(local_stack), request={
        "target": "local", "name": "quoting",
        "command": ["sh", "-c", 'printf %s "$1" > "$2"', "sh", hostile, str(written)],
        "environment": {"GREETING": hostile}})
    assert done.returncode == 0, done.stderr
    tick_until(local_stack, store, done.stdout.strip(), "SUCCEEDED")
    assert written.read_text() == hostile
    assert not planted.exists()


def test_talking_to_the_submit_function_prints_the_job_id_of_its_reply(
        local_stack: DevStack, store: Store) -> None:
    done = submit_sh(local_stack.functions["submit"],
                     request={"target": "local", "job_id": "curl-direct-1",
                              "command": ["true"]})
    assert (done.returncode, done.stdout) == (0, "curl-direct-1\n"), done.stderr
    tick_until(local_stack, store, "curl-direct-1", "SUCCEEDED")


def test_a_rejected_request_names_the_field(local_stack: DevStack, store: Store) -> None:
    done = submit_sh(local_stack.functions["submit"],
                     request={"target": "nowhere", "command": ["true"]})
    assert done.returncode == 1
    assert done.stderr.startswith("submit.sh: rejected: target: unknown target 'nowhere'"), \
        done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize(("args", "given", "message"), [
    ((), '{"target": "local", "command": ["true"]}', "usage:"),
    (("http://127.0.0.1:9/",), '["not", "an", "object"]', "must be a JSON object"),
    (("http://127.0.0.1:9/",), "not json", "must be a JSON object"),
    (("http://127.0.0.1:9/",),
     '{"target": "local", "command": ["true"], "job_id": "ok\\r\\nce-type: evil"}',
     "job_id must be"),
    (("http://127.0.0.1:9/", "extra"), "{}", "usage:"),
])
def test_mistakes_are_refused_before_anything_is_sent(args: tuple[str, ...], given: str,
                                                      message: str) -> None:
    done = submit_sh(*args, raw=given)
    assert done.returncode == 2
    assert message in done.stderr
    assert done.stdout == ""


def test_an_unreachable_broker_is_a_clear_failure() -> None:
    done = submit_sh("http://127.0.0.1:9/",
                     request={"target": "local", "command": ["true"]})
    assert done.returncode == 1
    assert "cannot reach http://127.0.0.1:9/" in done.stderr
