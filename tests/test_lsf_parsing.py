"""LSF's wire shapes (adapters.lsf_api) without a cluster: bsub and bjobs output, the
Application Center's JSON, the job script, the states."""

from __future__ import annotations

import calendar
import json
import subprocess
from pathlib import Path

import pytest

from adapters import lsf_api
from adapters.lsf_api import JobRecord
from hpcbridge.model import Reason, Resources, State

_NOW = float(calendar.timegm((2025, 7, 2, 12, 0, 0, 0, 0, 0)))


# --- bsub ------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("Job <1234> is submitted to queue <normal>.\n", "1234"),
    ("Job <7> is submitted to default queue <short>.\n", "7"),
    ("Warning: something\nJob <42> is submitted to queue <gpu-a100>.\n", "42"),
    ("normal2: No such queue. Job not submitted.\n", None),
    ("", None),
])
def test_bsub_output_gives_the_job_id(text: str, expected: str | None) -> None:
    assert lsf_api.parse_bsub_output(text) == expected


# --- bjobs -json -----------------------------------------------------------------------

_BJOBS = """{
  "COMMAND":"bjobs",
  "JOBS":4,
  "RECORDS":[
    {
      "JOBID":"101",
      "STAT":"DONE",
      "EXIT_CODE":"",
      "EXIT_REASON":"",
      "JOB_NAME":"j-1",
      "SUBMIT_TIME":"Jul  2 11:58:01",
      "START_TIME":"Jul  2 11:58:02",
      "FINISH_TIME":"Jul  2 11:59:03"
    },
    {
      "JOBID":"102",
      "STAT":"EXIT",
      "EXIT_CODE":"130",
      "EXIT_REASON":"TERM_OWNER: Job killed by owner",
      "JOB_NAME":"j-2",
      "SUBMIT_TIME":"Jul  2 11:58",
      "START_TIME":"-",
      "FINISH_TIME":"Jul  2 11:59 L"
    },
    {
      "ERROR":"Job <103> is not found"
    },
    {
      "JOBID":"104",
      "STAT":"PEND",
      "EXIT_CODE":"",
      "EXIT_REASON":"",
      "JOB_NAME":"j-4",
      "SUBMIT_TIME":"Jul  2 11:58:01",
      "START_TIME":"",
      "FINISH_TIME":""
    }
  ]
}
"""


def test_bjobs_json_records_are_read_and_errors_are_absent_jobs() -> None:
    records = lsf_api.parse_bjobs_json(_BJOBS, now=_NOW)

    assert set(records) == {"101", "102", "104"}
    done = records["101"]
    assert (done.stat, done.name, done.exit_code, done.term_reason) == ("DONE", "j-1", None,
                                                                        None)
    assert done.started_at == _NOW - 118
    assert done.finished_at == _NOW - 57
    killed = records["102"]
    assert (killed.exit_code, killed.term_reason) == (130, "TERM_OWNER")
    assert killed.started_at is None
    assert killed.finished_at == _NOW - 60
    assert records["104"].started_at is None


def test_bjobs_json_values_are_strings_even_numbers() -> None:
    text = json.dumps({"COMMAND": "bjobs", "JOBS": 1, "RECORDS": [
        {"JOBID": "5", "STAT": "EXIT", "EXIT_CODE": "3", "JOB_NAME": "x"}]})

    record = lsf_api.parse_bjobs_json(text, now=_NOW)["5"]

    assert record.exit_code == 3
    assert lsf_api.observe(record).exit_code == 3


@pytest.mark.parametrize("text", ["", "Job <1> is not found\n", "[]", '{"RECORDS": {}}',
                                  "LSF is down. Please wait ...\n"])
def test_anything_but_a_bjobs_document_is_an_error(text: str) -> None:
    with pytest.raises(ValueError):
        lsf_api.parse_bjobs_json(text)


@pytest.mark.parametrize(("text", "expected"), [
    ("Jul  2 11:59:03", (2025, 7, 2, 11, 59, 3)),
    ("Jul  2 11:59", (2025, 7, 2, 11, 59, 0)),
    ("Jul  2 11:59 E", (2025, 7, 2, 11, 59, 0)),
    ("Dec 31 23:59:59", (2024, 12, 31, 23, 59, 59)),  # seen in July: last December
    ("Jul  3 08:00:00", (2025, 7, 3, 8, 0, 0)),  # less than a day ahead: this year
    ("Jan  5 10:00:00 2023", (2023, 1, 5, 10, 0, 0)),
])
def test_cli_times_are_read_as_utc(text: str, expected: tuple[int, ...]) -> None:
    assert lsf_api.parse_cli_time(text, _NOW) == calendar.timegm((*expected, 0, 0, 0))


@pytest.mark.parametrize("text", ["", "-", "yesterday", "Foo  2 11:59", "Feb 30 10:00", None])
def test_unreadable_cli_times_are_none(text: str | None) -> None:
    assert lsf_api.parse_cli_time(text, _NOW) is None


# --- states ----------------------------------------------------------------------------

@pytest.mark.parametrize(("stat", "state"), [
    ("PEND", State.QUEUED), ("WAIT", State.QUEUED), ("PROV", State.QUEUED),
    ("PSUSP", State.QUEUED), ("RUN", State.RUNNING), ("USUSP", State.SUSPENDED),
    ("SSUSP", State.SUSPENDED), ("DONE", State.SUCCEEDED), ("EXIT", State.FAILED),
    ("ZOMBI", State.UNKNOWN), ("UNKWN", State.UNKNOWN), ("SOMETHING", State.UNKNOWN),
])
def test_every_lsf_state_maps(stat: str, state: State) -> None:
    observation = lsf_api.observe(JobRecord("1", stat, started_at=_NOW, finished_at=_NOW))

    assert observation.state is state
    assert observation.native_state == stat
    assert (observation.started_at is None) == (state is State.QUEUED)
    assert (observation.finished_at is None) == (not state.terminal)


@pytest.mark.parametrize(("reason", "state", "expected"), [
    (None, State.FAILED, Reason.EXIT_CODE),
    ("TERM_RUNLIMIT", State.FAILED, Reason.TIMEOUT),
    ("TERM_DEADLINE", State.FAILED, Reason.TIMEOUT),
    ("TERM_MEMLIMIT", State.FAILED, Reason.OUT_OF_MEMORY),
    ("TERM_PREEMPT", State.FAILED, Reason.PREEMPTED),
    ("TERM_OWNER", State.CANCELLED, Reason.CANCELLED),
    ("TERM_ADMIN", State.CANCELLED, Reason.CANCELLED),
    ("TERM_FORCE_OWNER", State.CANCELLED, Reason.CANCELLED),
    ("TERM_CPULIMIT", State.FAILED, Reason.EXIT_CODE),
])
def test_exit_reasons(reason: str | None, state: State, expected: Reason) -> None:
    observation = lsf_api.observe(JobRecord("1", "EXIT", exit_code=137, term_reason=reason))

    assert (observation.state, observation.reason, observation.exit_code) == \
        (state, expected, 137)


def test_done_is_exit_code_zero_whatever_the_field_says() -> None:
    observation = lsf_api.observe(JobRecord("1", "DONE", exit_code=None))

    assert (observation.state, observation.exit_code, observation.reason) == \
        (State.SUCCEEDED, 0, None)


@pytest.mark.parametrize(("text", "valid"), [
    ("1", True), ("999999", True), ("2147483646", True), ("2147483647", False),
    ("0", False), ("-1", False), ("12a", False), ("", False),
    ("\uff11\uff12", False)])  # full-width digits are digits to str.isdigit
def test_job_ids(text: str, valid: bool) -> None:
    assert lsf_api.is_job_id(text) is valid


# --- the job script --------------------------------------------------------------------

def _run(script: str, tmp_path: Path) -> str:
    path = tmp_path / "job.sh"
    path.write_text(script)
    return subprocess.run(["/bin/sh", str(path)], capture_output=True, text=True,
                          check=True, cwd=tmp_path, timeout=30).stdout


def test_a_script_travels_verbatim_even_with_its_delimiter_inside(tmp_path: Path) -> None:
    body = "#!/bin/sh\ncat <<'EOF'\n$HOME `x` \\n 'q'\nEOF\n"
    delimiter = lsf_api.job_script(job_id="j-1", script=body, command=None,
                                   environment={}, working_dir=None).split("<<'")[1][:26]
    hostile = body + f"echo '{delimiter}'\n: <<'{delimiter}'\n{delimiter}\n"
    script = lsf_api.job_script(job_id="j-1", script=hostile, command=None,
                                environment={}, working_dir=None)

    output = _run(script, tmp_path)

    assert output == f"$HOME `x` \\n 'q'\n{delimiter}\n"


def test_a_script_without_interpreter_line_runs_with_sh(tmp_path: Path) -> None:
    script = lsf_api.job_script(job_id="j-1", script="echo $0 | grep -c hpcbridge",
                                command=None, environment={}, working_dir=None)

    assert _run(script, tmp_path) == "1\n"


def test_environment_working_dir_and_arguments_are_data(tmp_path: Path) -> None:
    odd = tmp_path / "it's $(odd) `dir`"
    odd.mkdir()
    marker = tmp_path / "marker"
    hostile = [f"$(touch {marker})", f"; touch {marker}", "line\nbreak", "'\"\\", ""]
    script = lsf_api.job_script(
        job_id="j-1", script=None, command=["sh", "-c", 'pwd; printf "%s|" "$@"; env',
                                            "sh", *hostile],
        environment={f"V{i}": value for i, value in enumerate(hostile)},
        working_dir=str(odd))

    output = _run(script, tmp_path)

    assert output.startswith(f"{odd}\n" + "|".join(hostile) + "|")
    for i, value in enumerate(hostile):
        assert f"V{i}={value}\n" in output
    assert not marker.exists()


def test_environment_names_must_be_names() -> None:
    with pytest.raises(ValueError):
        lsf_api.job_script(job_id="j-1", script=None, command=["true"],
                           environment={"A;B": "x"}, working_dir=None)


# --- bsub options ----------------------------------------------------------------------

@pytest.mark.parametrize(("resources", "account", "expected"), [
    (Resources(), None, []),
    (Resources(tasks=4, cpus_per_task=2, nodes=2), "proj-1",
     ["-P", "proj-1", "-n", "8", "-R", "span[ptile=4]"]),
    (Resources(nodes=1, memory_mb=2048, gpus=1), None,
     ["-R", "span[hosts=1]", "-M", "2048MB", "-gpu", "num=1"]),
    (Resources(nodes=3), None, ["-n", "3", "-R", "span[ptile=1]"]),
])
def test_bsub_options(resources: Resources, account: str | None,
                      expected: list[str]) -> None:
    assert lsf_api.bsub_options(resources, account=account) == expected


def test_an_account_that_is_not_a_word_is_refused() -> None:
    with pytest.raises(ValueError):
        lsf_api.bsub_options(Resources(), account="a; b")


@pytest.mark.parametrize(("seconds", "minutes"), [(None, None), (1, 1), (60, 1), (61, 2),
                                                  (7200, 120)])
def test_run_limits_are_whole_minutes_rounded_up(seconds: int | None,
                                                 minutes: int | None) -> None:
    assert lsf_api.run_limit_minutes(Resources(time_limit_s=seconds)) == minutes


# --- Application Center ----------------------------------------------------------------

def test_logon_body_escapes_its_values() -> None:
    assert lsf_api.logon_body("u<1>", 'p&"') == \
        "<User><name>u&lt;1&gt;</name><pass>p&amp;\"</pass></User>"


def test_the_cookie_carries_quotes_as_pac_wants() -> None:
    token = 'root"2015-12-08T14:35:51Z"57hG+/=="3Y+Tec=='

    assert lsf_api.cookie_token(token) == \
        "root#quote#2015-12-08T14:35:51Z#quote#57hG+/==#quote#3Y+Tec=="


@pytest.mark.parametrize(("body", "token"), [
    ({"token": 'u"x"y"z'}, 'u"x"y"z'), ({"User": {"token": " t "}}, "t"),
    ({"name": "u"}, None), ([], None), (None, None)])
def test_logon_answers(body: object, token: str | None) -> None:
    assert lsf_api.parse_logon(body) == token


def test_one_job_comes_as_an_object_several_as_a_list() -> None:
    job = {"jobId": "7", "jobName": "j-7", "jobStatus": "EXIT", "exitStatus": "768",
           "exitInfo": "", "submitTimeGMT": "2025-07-02T11:58:01Z",
           "startTimeGMT": "2025-07-02T11:58:02Z", "endTimeGMT": "2025-07-02T11:59:03Z"}
    other = {**job, "jobId": "8", "jobStatus": "RUN", "exitStatus": "", "endTimeGMT": ""}

    one = lsf_api.parse_web_jobs({"@total": "1", "job": job})
    two = lsf_api.parse_web_jobs({"@total": "2", "job": [job, other]})

    assert one == {"7": two["7"]}
    assert two["7"] == JobRecord("7", "EXIT", "j-7", 3, None, _NOW - 119, _NOW - 118,
                                 _NOW - 57)
    assert (two["8"].stat, two["8"].exit_code, two["8"].finished_at) == ("RUN", None, None)


def test_basic_records_and_termination_numbers() -> None:
    found = lsf_api.parse_web_jobs({"pseudoJob": [{"id": "3", "name": "n", "status": "PEND"},
                                                  {"id": "x"}]})
    killed = lsf_api.parse_web_jobs({"job": {"jobId": "4", "jobStatus": "EXIT",
                                             "exitStatus": "2", "exitInfo": "14"}})

    assert found == {"3": JobRecord("3", "PEND", "n")}
    assert lsf_api.observe(killed["4"]).state is State.CANCELLED
    assert killed["4"].exit_code == 130


@pytest.mark.parametrize(("status", "code"), [(0, 0), (768, 3), (9, 137), (2, 130),
                                              (None, None), (-1, None)])
def test_wait_statuses(status: int | None, code: int | None) -> None:
    assert lsf_api.decode_wait_status(status) == code


@pytest.mark.parametrize(("body", "message"), [
    ({"message": "No jobs that match"}, "No jobs that match"), ({"errMsg": "bad"}, "bad"),
    ({"error": {"message": "nested"}}, "nested"), ({"other": 1}, None), ("x", None)])
def test_error_messages(body: object, message: str | None) -> None:
    assert lsf_api.error_message(body) == message


def test_download_answers_are_multipart() -> None:
    body = (b"--b1\r\nContent-Type: application/octet-stream\r\n"
            b'Content-Disposition: attachment; filename="out.txt"\r\n'
            b"Content-ID: <out.txt>\r\n\r\nline 1\r\nline 2\n\r\n--b1--\r\n")

    assert lsf_api.parse_download("multipart/mixed; boundary=b1", body) == \
        {"out.txt": b"line 1\r\nline 2\n"}
    with pytest.raises(ValueError):
        lsf_api.parse_download("application/json", b"{}")


def test_a_submission_is_the_documented_multipart_layout() -> None:
    content_type, body = lsf_api.web_submission(
        {"COMMANDTORUN": "/bin/sh a.sh", "JOB_NAME": "j<1>"}, {"a.sh": b"echo 'x'\n"},
        "INPUT_FILE")
    boundary = content_type.split("boundary=")[1]
    text = body.decode()

    assert content_type.startswith("multipart/mixed; boundary=")
    assert text.startswith(f'--{boundary}\r\nContent-Disposition: form-data; name="AppName"'
                           "\r\nContent-ID: <AppName>\r\n\r\ngeneric\r\n")
    assert "<AppParam><id>JOB_NAME</id><value>j&lt;1&gt;</value><type></type></AppParam>" \
        in text
    assert "<AppParam><id>INPUT_FILE</id><value>a.sh</value><type>file</type></AppParam>" \
        in text
    assert ('Content-Disposition: form-data; name="a.sh"; filename="a.sh"\r\n'
            "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary"
            "\r\nContent-ID: <a.sh>\r\n\r\necho 'x'\n\r\n") in text
    assert text.endswith(f"--{boundary}--\r\n")
