"""JobRequest validation: every field, refused with a message that names it."""

from __future__ import annotations

import pytest

from hpcbridge.model import JobRequest, JobStatus, Reason, RequestError, State, job_id_for_event

VALID = {"target": "hpc", "command": ["echo", "hi"]}


def refused(**fields: object) -> RequestError:
    data = {**VALID, **fields}
    data = {k: v for k, v in data.items() if v is not ...}
    with pytest.raises(RequestError) as caught:
        JobRequest.from_dict(data)
    return caught.value


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"target": ...}, "target", "required"),
        ({"target": 3}, "target", "string"),
        ({"target": "a b"}, "target", "not allowed"),
        ({"command": ...}, "script", "exactly one"),
        ({"script": "echo"}, "script", "exactly one"),
        ({"command": "echo hi"}, "command", "list of strings"),
        ({"command": []}, "command", "list of strings"),
        ({"command": ["echo", 1]}, "command", "list of strings"),
        ({"command": ["", "x"]}, "command", "program name"),
        ({"command": ["echo", "a\x00b"]}, "command", "NUL"),
        ({"command": ..., "script": ""}, "script", "non-empty"),
        ({"command": ..., "script": 5}, "script", "non-empty"),
        ({"command": ..., "script": "a\x00"}, "script", "NUL"),
        ({"job_id": "Upper"}, "job_id", "lower-case"),
        ({"job_id": "-x"}, "job_id", "starting and ending"),
        ({"job_id": "x" * 54}, "job_id", "1-53"),
        ({"job_id": 7}, "job_id", "string"),
        ({"name": "bad name"}, "name", "not allowed"),
        ({"name": ""}, "name", "1 to 128"),
        ({"queue": "q;rm"}, "queue", "not allowed"),
        ({"account": ["a"]}, "account", "string"),
        ({"working_dir": "relative/dir"}, "working_dir", "absolute"),
        ({"working_dir": "/a\x00b"}, "working_dir", "NUL"),
        ({"environment": ["A=1"]}, "environment", "object"),
        ({"environment": {"1A": "x"}}, "environment.1A", "not an allowed key"),
        ({"environment": {"A": 1}}, "environment.A", "string"),
        ({"environment": {"A": "x\x00"}}, "environment.A", "NUL"),
        ({"labels": {"k": "has space"}}, "labels.k", "not an allowed value"),
        ({"labels": {"bad key!": "v"}}, "labels.bad key!", "not an allowed key"),
        ({"namespace": "Default"}, "namespace", "not allowed"),
        ({"resources": 4}, "resources", "object"),
        ({"resources": {"nodes": "2"}}, "resources.nodes", "integer"),
        ({"resources": {"tasks": True}}, "resources.tasks", "integer"),
        ({"resources": {"cpus_per_task": 0}}, "resources.cpus_per_task", "between"),
        ({"resources": {"memory_mb": -1}}, "resources.memory_mb", "between"),
        ({"resources": {"gpus": 1.5}}, "resources.gpus", "integer"),
        ({"resources": {"time_limit_s": 10**10}}, "resources.time_limit_s", "between"),
        ({"resources": {"walltime": 5}}, "resources.walltime", "not a known field"),
        ({"priority": 5}, "priority", "not a known field"),
    ],
)
def test_each_field_is_refused_by_name(fields: dict, field: str, words: str) -> None:
    error = refused(**fields)
    assert error.field == field
    assert words in error.message


def test_data_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(RequestError, match="JSON object"):
        JobRequest.from_dict(["target", "hpc"])


def test_a_full_request_round_trips() -> None:
    data = {
        "target": "hpc", "script": "#!/bin/bash\necho hi\n", "job_id": "run-42",
        "name": "step.one", "queue": "debug", "account": "proj1", "working_dir": "/scratch/x",
        "environment": {"OMP_NUM_THREADS": "4"}, "labels": {"team": "physics"},
        "namespace": "pipelines",
        "resources": {"nodes": 1, "tasks": 2, "cpus_per_task": 4, "memory_mb": 1024,
                      "gpus": 0, "time_limit_s": 600},
    }
    request = JobRequest.from_dict(data)
    assert request.to_dict() == data
    assert JobRequest.from_dict(request.to_dict()) == request


def test_job_ids_from_events_are_stable_and_valid() -> None:
    first = job_id_for_event("/pipeline/a", "event-1")
    assert first == job_id_for_event("/pipeline/a", "event-1")
    assert first != job_id_for_event("/pipeline/a", "event-2")
    assert first != job_id_for_event("/pipeline/b", "event-1")
    JobRequest.from_dict({**VALID, "job_id": first})


def test_status_round_trips_through_json_types() -> None:
    status = JobStatus(job_id="j", target="t", state=State.FAILED, exit_code=3,
                       reason=Reason.EXIT_CODE, submitted_at=1.5)
    data = status.to_dict()
    assert data["state"] == "FAILED" and data["reason"] == "exit_code"
    assert JobStatus.from_dict(data) == status
