"""adapters.quantum_api: what the IBM Quantum Runtime REST API sends, read without a server."""

from __future__ import annotations

from typing import Any

import pytest

from adapters import quantum_api
from hpcbridge.model import Reason, State


@pytest.mark.parametrize(("state", "expected"), [
    ({"status": "Queued"}, (State.QUEUED, None, None, "Queued")),
    ({"status": "Running"}, (State.RUNNING, None, None, "Running")),
    ({"status": "Completed", "reason": ""}, (State.SUCCEEDED, 0, None, "Completed")),
    ({"status": "COMPLETED"}, (State.SUCCEEDED, 0, None, "COMPLETED")),
    ({"status": "Failed", "reason": "Error in the validation process of the job.",
      "reason_code": 1002}, (State.FAILED, 1, Reason.EXIT_CODE, "Failed (1002)")),
    ({"status": "Cancelled", "reason": ""}, (State.CANCELLED, None, Reason.CANCELLED,
                                             "Cancelled")),
    ({"status": "Cancelled", "reason": "Ran too long", "reason_code": 1305},
     (State.FAILED, None, Reason.TIMEOUT, "Cancelled (1305)")),
    # Older answers: camelCase code, upper-case reason, or the status saying it all.
    ({"status": "CANCELLED", "reason": "RAN TOO LONG", "reasonCode": 1305},
     (State.FAILED, None, Reason.TIMEOUT, "CANCELLED (1305)")),
    ({"status": "Cancelled - Ran too long"},
     (State.FAILED, None, Reason.TIMEOUT, "Cancelled - Ran too long")),
    ({"status": "Validating"}, (State.UNKNOWN, None, None, "Validating")),
    ({}, (State.UNKNOWN, None, None, "UNKNOWN")),
])
def test_job_states_map_to_common_states(state: dict[str, Any],
                                         expected: tuple[Any, ...]) -> None:
    observation = quantum_api.observe({"id": "j", "state": state})

    assert (observation.state, observation.exit_code, observation.reason,
            observation.native_state) == expected


def test_the_top_level_status_is_read_when_state_is_missing() -> None:
    assert quantum_api.observe({"id": "j", "status": "Running"}).state is State.RUNNING


def test_the_submission_is_one_sampler_pub_with_the_bridge_tags() -> None:
    body = quantum_api.submission("OPENQASM 3.0;", backend="ibm_x", job_id="j-1", shots=100,
                                  time_limit_s=99999)

    assert body == {"program_id": "sampler", "backend": "ibm_x",
                    "params": {"pubs": [["OPENQASM 3.0;"]], "version": 2, "shots": 100},
                    "tags": ["hpcbridge", "hpcbridge:j-1"], "cost": 10800}
    assert "cost" not in quantum_api.submission("c", backend="b", job_id="j", shots=None,
                                                time_limit_s=None)


def test_results_are_summarised_as_counts_per_pub_and_register() -> None:
    body = {"results": [
        {"data": {"c": {"samples": ["0x0", "0x3", "0x3", "0x0", "0x3"], "num_bits": 2}},
         "metadata": {}},
        {"data": {"meas": {"samples": ["0x1"], "num_bits": 3},
                  "evs": [0.5]}},
    ]}

    assert quantum_api.results_summary(body) == [
        "pub 0 c: 5 shots, 2 bits: 00=2 11=3",
        "pub 1 meas: 1 shots, 3 bits: 001=1",
        "pub 1 evs: [0.5]",
    ]
    assert quantum_api.results_summary({"results": "nonsense"}) == []


def test_a_jobs_page_and_its_count() -> None:
    jobs, count = quantum_api.jobs_page({"jobs": [{"id": "a"}, {"no": "id"}], "count": 7})

    assert (jobs, count) == ([{"id": "a"}], 7)
    assert quantum_api.jobs_page({"jobs": []}) == ([], None)
    with pytest.raises(ValueError):
        quantum_api.jobs_page({"errors": []})


def test_error_text_reads_ibm_cloud_error_containers() -> None:
    body = {"errors": [{"code": "bad_request", "message": "tags must be a list"},
                       {"message": "and more"}], "trace": "abc", "status_code": 400}

    assert quantum_api.error_text(body) == "tags must be a list (bad_request); and more"
    assert quantum_api.error_text({"message": "plain"}) == "plain"
    assert quantum_api.error_text("text") == ""
