"""The ``lsf`` adapter beyond the conformance suite, and the LSF EMULATOR's fidelity.

Against :class:`tests.emulators.lsf.LsfEmulator` (no LSF can run here): the states only
LSF has, resources as bsub options, token renewal, the one-command status of the SSH
transport, bpeek for running jobs; and what the emulator prints and answers, checked
against the shapes IBM documents (bsub and bjobs -json output, Application Center's
logon, job lists, history, downloads).
"""

from __future__ import annotations

import json
import os
import pwd
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters import lsf_api
from adapters.base import AuthenticationFailed, ConfigError, ManagerRejected
from adapters.lsf import LsfAdapter
from hpcbridge.model import Reason, Resources, State
from tests.adapters import finished, new_job_id, until, wait_for
from tests.adapters.lsf_harness import LsfSshHarness, LsfWebHarness
from tests.emulators.lsf import LsfEmulator

_Harness = LsfWebHarness | LsfSshHarness


@pytest.fixture(params=["web", pytest.param("ssh", marks=pytest.mark.slurm)])
def lsf(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[_Harness]:
    harness: _Harness = LsfWebHarness(tmp_path) if request.param == "web" \
        else LsfSshHarness(request.getfixturevalue("sshd"))
    yield harness
    harness.close()


@pytest.fixture
def web(tmp_path: Path) -> Iterator[LsfWebHarness]:
    harness = LsfWebHarness(tmp_path)
    yield harness
    harness.close()


@pytest.fixture
def ssh(sshd: Any) -> Iterator[LsfSshHarness]:
    harness = LsfSshHarness(sshd)
    yield harness
    harness.close()


def _submit(harness: _Harness, **overrides: Any) -> str:
    return harness.adapter.submit(harness.request(**overrides), new_job_id())


def _running(harness: _Harness, native_id: str) -> None:
    wait_for(harness.adapter, native_id, lambda o: o.state is State.RUNNING, harness.wait_s)


# --- both transports -------------------------------------------------------------------

def test_suspended_jobs_are_suspended_and_resume(lsf: _Harness) -> None:
    native_id = _submit(lsf, command=["sleep", "1000"])
    _running(lsf, native_id)

    for by_user, stat in ((True, "USUSP"), (False, "SSUSP")):
        lsf.emulator.suspend(native_id, by_user=by_user)
        observation = lsf.adapter.status_many([native_id])[native_id]
        assert (observation.state, observation.native_state) == (State.SUSPENDED, stat)
        lsf.emulator.resume(native_id)
        assert lsf.adapter.status_many([native_id])[native_id].state is State.RUNNING

    lsf.emulator.suspend(native_id)
    lsf.adapter.cancel(native_id)
    assert finished(lsf.adapter, native_id, lsf.wait_s).state is State.CANCELLED


@pytest.mark.parametrize(("stat", "state"), [
    ("WAIT", State.QUEUED), ("PROV", State.QUEUED), ("ZOMBI", State.UNKNOWN),
    ("UNKWN", State.UNKNOWN)])
def test_states_of_hosts_lsf_has(lsf: _Harness, stat: str, state: State) -> None:
    native_id = lsf.queued_job()

    lsf.emulator.show_state(native_id, stat)
    observation = lsf.adapter.status_many([native_id])[native_id]
    lsf.emulator.show_state(native_id, None)

    assert (observation.state, observation.native_state) == (state, stat)
    assert lsf.adapter.status_many([native_id])[native_id].native_state == "PEND"


def test_a_job_over_its_memory_limit_is_out_of_memory(lsf: _Harness) -> None:
    native_id = _submit(lsf, command=["python3", "-c",
                                      "import time; x = 'x' * 200_000_000; time.sleep(60)"],
                        resources=Resources(memory_mb=50))

    observation = finished(lsf.adapter, native_id, lsf.wait_s)

    assert (observation.state, observation.reason, observation.native_state) == \
        (State.FAILED, Reason.OUT_OF_MEMORY, "EXIT")


def test_resources_reach_lsf_as_bsub_options(lsf: _Harness) -> None:
    native_id = lsf.queued_job(resources=Resources(tasks=2, cpus_per_task=2, nodes=2,
                                                   memory_mb=4096, gpus=1,
                                                   time_limit_s=90),
                               account="proj-7")

    sub = lsf.emulator.batch.jobs[int(native_id)].sub

    assert (sub.slots, sub.memory_limit_kb, sub.resource_requirements, sub.gpu,
            sub.project, sub.run_limit_min, sub.queue) == \
        (4, 4096 * 1024, ("span[ptile=2]",), "num=1", "proj-7", 2, "held")


def test_an_unknown_queue_is_refused_in_lsfs_words(lsf: _Harness) -> None:
    with pytest.raises(ManagerRejected, match=re.escape("nope: No such queue. Job not submitted.")):
        _submit(lsf, queue="nope")


def test_a_working_directory_with_shell_characters_is_just_a_name(lsf: _Harness) -> None:
    odd = lsf.shared_dir / "it's $(touch x) `y` ; z"
    odd.mkdir()
    owner = lsf.shared_dir.stat()
    os.chown(odd, owner.st_uid, owner.st_gid)

    native_id = _submit(lsf, command=["pwd"], working_dir=str(odd))

    assert finished(lsf.adapter, native_id, lsf.wait_s).state is State.SUCCEEDED
    assert lsf.adapter.logs(native_id) == f"{odd}\n"
    assert not (odd / "x").exists()


def test_the_same_tag_twice_through_two_adapters_is_found_as_the_first(
        lsf: _Harness) -> None:
    job_id = new_job_id()
    other = lsf.make()
    try:
        first = lsf.adapter.submit(lsf.request(), job_id)
        second = other.submit(lsf.request(), job_id)
    finally:
        other.close()

    assert int(second) > int(first)
    assert lsf.adapter.find_by_tag(job_id) == first


# --- Application Center ----------------------------------------------------------------

def test_a_refused_token_is_renewed_once(web: LsfWebHarness) -> None:
    native_id = _submit(web)
    finished(web.adapter, native_id, web.wait_s)

    web.emulator.expire_tokens()
    before, requests = web.calls(), web.emulator.http_requests()
    answer = web.adapter.status_many([native_id])
    renewed = web.calls() - before
    assert web.emulator.http_requests() - requests == renewed
    before = web.calls()
    web.adapter.status_many([native_id])

    assert answer[native_id].state is State.SUCCEEDED
    assert renewed == 3, "the refused request, one logon, the same request again"
    assert web.calls() - before == 1


def test_a_job_held_before_it_ran_is_queued(web: LsfWebHarness) -> None:
    held = subprocess.run([str(web.emulator.bin_dir / "bsub"), "-H", "true"], check=True,
                          capture_output=True, text=True, timeout=30)
    native_id = lsf_api.parse_bsub_output(held.stdout)
    assert native_id is not None

    observation = web.adapter.status_many([native_id])[native_id]
    web.emulator.resume(native_id)

    assert (observation.state, observation.native_state) == (State.QUEUED, "PSUSP")
    assert finished(web.adapter, native_id, web.wait_s).state is State.SUCCEEDED


def test_the_password_is_read_at_each_logon(web: LsfWebHarness) -> None:
    native_id = _submit(web)
    rotated = "rotated-" + web.password
    web.emulator.set_password(web.user, rotated)
    web.emulator.expire_tokens()

    with pytest.raises(AuthenticationFailed) as refused:
        web.adapter.status_many([native_id])
    Path(web.settings["password_file"]).write_text(rotated + "\n")

    assert web.password not in str(refused.value)
    assert web.settings["password_file"] in str(refused.value)
    assert native_id in web.adapter.status_many([native_id])


def test_close_logs_off(web: LsfWebHarness) -> None:
    web.adapter.status_many([web.unknown_id])
    assert web.emulator.logged_on() == [web.user]

    web.adapter.close()

    assert web.emulator.logged_on() == []


def test_logs_of_a_job_without_output_are_empty(web: LsfWebHarness) -> None:
    native_id = web.queued_job()

    assert web.adapter.logs(native_id) == ""


# --- SSH -------------------------------------------------------------------------------

@pytest.mark.slurm
def test_status_is_one_bjobs_for_all_ids(ssh: LsfSshHarness) -> None:
    jobs = [_submit(ssh) for _ in range(3)]
    asked = [*jobs, ssh.unknown_id]
    before, commands = ssh.calls(), ssh.emulator.commands()

    ssh.adapter.status_many(asked)

    assert ssh.calls() - before == ssh.emulator.commands() - commands == 1
    argv = ssh.connection.commands[-1]
    assert argv[argv.index("bjobs"):] == ["bjobs", "-json", "-hms", "-o",
                                          "jobid stat exit_code exit_reason job_name "
                                          "submit_time start_time finish_time", *asked]
    assert argv[4] == str(ssh.emulator.profile)


@pytest.mark.slurm
def test_logs_of_a_running_job_come_from_bpeek(ssh: LsfSshHarness) -> None:
    native_id = _submit(ssh, command=["sh", "-c", "echo one; echo two; sleep 1000"])
    _running(ssh, native_id)

    until(lambda: ssh.adapter.logs(native_id) == "one\ntwo\n", ssh.wait_s,
          lambda: f"logs of {native_id}: {ssh.adapter.logs(native_id)!r}")
    assert ssh.adapter.logs(native_id, tail=1) == "two\n"
    assert ["bpeek", native_id] == ssh.connection.commands[-1][-2:]


@pytest.mark.slurm
@pytest.mark.parametrize("profile", ["/nonexistent/profile.lsf", None])
def test_lsf_commands_that_cannot_run_are_a_configuration_error(
        ssh: LsfSshHarness, profile: str | None) -> None:
    adapter = ssh.make(profile=profile)
    try:
        with pytest.raises(ConfigError, match="profile"):
            adapter.status_many(["1"])
    finally:
        adapter.close()


# --- settings --------------------------------------------------------------------------

_WEB = {"kind": "lsf", "transport": "web", "url": "http://127.0.0.1:1/platform",
        "user": "u", "password_env": "LSF_TEST_PASSWORD"}
_SSH = {"kind": "lsf", "transport": "ssh", "host": "127.0.0.1", "user": "u",
        "key_env": "LSF_TEST_KEY", "known_hosts_file": "/dev/null", "remote_dir": "/tmp/x"}


@pytest.mark.parametrize(("settings", "message"), [
    ({**_WEB, "transport": None}, "transport must be"),
    ({**_WEB, "remote_dir": "/tmp"}, "unknown setting 'remote_dir' for transport web"),
    ({**_SSH, "url": "http://x"}, "unknown setting 'url' for transport ssh"),
    ({**_WEB, "password": "secret"}, "unknown setting 'password'"),
    ({**{k: v for k, v in _WEB.items() if k != "password_env"}, "password": "x"},
     "must not be written into the targets file"),
    ({**_WEB, "url": "pac:8080"}, "http:// or https://"),
    ({**_WEB, "queue": "a b"}, "plain name"),
    ({**_WEB, "working_dir": "relative"}, "absolute path"),
    ({**_SSH, "remote_dir": "/tmp/%J"}, "must not contain '%'"),
    ({**_SSH, "profile": "profile.lsf"}, "absolute path"),
])
def test_settings_are_checked(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        LsfAdapter("t", {k: v for k, v in settings.items() if v is not None})


# --- the emulator's LSF commands ---------------------------------------------------------

@pytest.fixture
def emulator() -> Iterator[LsfEmulator]:
    with LsfEmulator({}, queues={"normal": True, "held": False}, clean_period_s=1,
                     terminate_interval_s=1) as emulated:
        yield emulated


def _lsf(emulator: LsfEmulator, *argv: str, stdin: str | None = None
         ) -> subprocess.CompletedProcess[str]:
    env = {"PATH": f"{emulator.bin_dir}:/usr/bin:/bin", "TZ": "UTC0"}
    return subprocess.run(list(argv), capture_output=True, text=True, env=env, input=stdin,
                          timeout=30, check=False)


def _bjobs(emulator: LsfEmulator, *ids: str) -> dict[str, Any]:
    done = _lsf(emulator, "bjobs", "-json", "-hms", "-o",
                "jobid stat exit_code exit_reason job_name submit_time", *ids)
    return json.loads(done.stdout)


def test_bsub_says_what_lsf_says(emulator: LsfEmulator) -> None:
    default = _lsf(emulator, "bsub", "true")
    named = _lsf(emulator, "bsub", "-q", "normal", "true")
    wrong = _lsf(emulator, "bsub", "-q", "nope", "true")
    script = _lsf(emulator, "bsub", stdin="#!/bin/sh\n#BSUB -J from-script\n#BSUB -q held\n"
                  "echo hi\n#BSUB -J ignored\n")

    assert (default.stdout, default.returncode) == \
        ("Job <1> is submitted to default queue <normal>.\n", 0)
    assert named.stdout == "Job <2> is submitted to queue <normal>.\n"
    assert (wrong.stdout, wrong.stderr, wrong.returncode) == \
        ("", "nope: No such queue. Job not submitted.\n", 255)
    assert script.stdout == "Job <3> is submitted to queue <held>.\n"
    assert emulator.batch.jobs[3].name == "from-script"


def test_bjobs_json_is_lsfs_layout_with_string_values(emulator: LsfEmulator) -> None:
    _lsf(emulator, "bsub", "-J", "fails", "exit 3")
    until(lambda: emulator.job_state("1") == "EXIT", 15, lambda: "job 1 did not end")

    done = _lsf(emulator, "bjobs", "-json", "-o", "jobid stat exit_code", "1", "7")

    assert done.returncode == 0
    assert done.stdout == ('{\n  "COMMAND":"bjobs",\n  "JOBS":2,\n  "RECORDS":[\n    {\n'
                           '      "JOBID":"1",\n      "STAT":"EXIT",\n      "EXIT_CODE":"3"\n'
                           '    },\n    {\n      "ERROR":"Job <7> is not found"\n    }\n'
                           "  ]\n}\n")


def test_bjobs_of_unknown_ids_only_exits_255(emulator: LsfEmulator) -> None:
    done = _lsf(emulator, "bjobs", "-json", "-o", "jobid stat", "5", "6")

    assert done.returncode == 255
    assert [r["ERROR"] for r in json.loads(done.stdout)["RECORDS"]] == \
        ["Job <5> is not found", "Job <6> is not found"]


def test_bkill_and_the_exit_it_leaves(emulator: LsfEmulator) -> None:
    _lsf(emulator, "bsub", "-J", "sleeper", "sleep 1000")
    until(lambda: emulator.job_state("1") == "RUN", 15, lambda: "job 1 did not start")

    killed = _lsf(emulator, "bkill", "1", "9")
    until(lambda: emulator.job_state("1") == "EXIT", 15, lambda: "job 1 did not end")
    again = _lsf(emulator, "bkill", "1")
    record = _bjobs(emulator, "1")["RECORDS"][0]

    assert (killed.stdout, killed.stderr, killed.returncode) == \
        ("Job <1> is being terminated\n", "Job <9>: No matching job found\n", 255)
    assert (again.stdout, again.stderr) == ("", "Job <1>: Job has already finished\n")
    assert record["EXIT_CODE"] in ("130", "143")  # SIGINT and SIGTERM come together
    assert record["EXIT_REASON"] == "TERM_OWNER: Job killed by owner"
    assert re.fullmatch(r"[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d", record["SUBMIT_TIME"])
    assert all(isinstance(value, str) for value in record.values())


def test_bpeek_shows_a_running_jobs_spooled_output(emulator: LsfEmulator) -> None:
    _lsf(emulator, "bsub", "-o", "/dev/null", "echo early; sleep 1000")
    pending = _lsf(emulator, "bsub", "-q", "held", "true")
    until(lambda: "early" in _lsf(emulator, "bpeek", "1").stdout, 15,
          lambda: "no output from job 1")

    assert _lsf(emulator, "bpeek", "1").stdout == "<< output from stdout >>\nearly\n"
    assert _lsf(emulator, "bpeek", "2").stderr == "Job <2> : Not yet started.\n"
    assert pending.returncode == 0


def test_jobs_wait_while_their_queue_is_inactive(emulator: LsfEmulator) -> None:
    emulator.inactivate_queue("normal")
    _lsf(emulator, "bsub", "true")
    waiting = _lsf(emulator, "bjobs", "-noheader", "-o", "jobid stat pend_reason")

    emulator.activate_queue("normal")

    assert waiting.stdout.split(maxsplit=2) == \
        ["1", "PEND", "The queue is inactivated by the administrator\n"]
    until(lambda: emulator.job_state("1") == "DONE", 15, lambda: "job 1 did not run")


def test_finished_jobs_are_forgotten_after_clean_period(emulator: LsfEmulator) -> None:
    _lsf(emulator, "bsub", "true")
    until(lambda: emulator.job_state("1") == "DONE", 15, lambda: "job 1 did not end")
    listed = _lsf(emulator, "bjobs", "-a", "-noheader", "-o", "jobid stat")

    until(lambda: not emulator.known("1"), 15, lambda: "job 1 is still known")

    assert listed.stdout == "1 DONE\n"
    assert _lsf(emulator, "bjobs", "-a").stderr == "No job found\n"
    assert _bjobs(emulator, "1")["RECORDS"] == [{"ERROR": "Job <1> is not found"}]


def test_jobs_run_as_the_user_who_submitted_them(emulator: LsfEmulator,
                                                 tmp_path: Path) -> None:
    user = pwd.getpwnam("nobody")
    out = tmp_path / "whoami"
    tmp_path.chmod(0o777)
    done = subprocess.run(["runuser", "-u", "nobody", "--", str(emulator.bin_dir / "bsub"),
                           "-o", str(out), "id -u"], capture_output=True, text=True,
                          timeout=30, check=True, cwd="/")

    until(lambda: emulator.job_state("1") == "DONE", 15, lambda: done.stdout + done.stderr)

    assert out.read_text() == f"{user.pw_uid}\n"
    assert out.stat().st_uid == user.pw_uid


# --- the emulator's Application Center ---------------------------------------------------

class _Pac:
    """A bare client of the emulated Application Center, holding one logon token."""

    def __init__(self, url: str, user: str, password: str) -> None:
        self.client = httpx.Client(base_url=url + "/", timeout=30)
        self.user, self.password = user, password
        self.token = ""

    def logon(self, password: str | None = None, accept: str = "application/json"
              ) -> httpx.Response:
        body = f"<User><name>{self.user}</name><pass>{password or self.password}</pass></User>"
        answer = self.client.post("ws/logon", content=body,
                                  headers={"Content-Type": "application/xml", "Accept": accept})
        if answer.status_code == 200 and accept == "application/json":
            self.token = answer.json()["token"]
        return answer

    def headers(self, accept: str = "application/json") -> dict[str, str]:
        return {"Accept": accept,
                "Cookie": "platform_token=" + self.token.replace('"', "#quote#")}

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.get(path, headers=self.headers(), **kwargs)

    def post(self, path: str, accept: str = "application/json", **kwargs: Any
             ) -> httpx.Response:
        headers = {**self.headers(accept), **kwargs.pop("headers", {})}
        return self.client.post(path, headers=headers, **kwargs)


@pytest.fixture
def pac() -> Iterator[tuple[LsfEmulator, _Pac]]:
    user = pwd.getpwuid(os.getuid()).pw_name
    with LsfEmulator({user: "pw"}, clean_period_s=1, terminate_interval_s=1) as emulated:
        client = _Pac(emulated.url, user, "pw")
        yield emulated, client
        client.client.close()


def _bsub(emulator: LsfEmulator, *argv: str) -> None:
    subprocess.run([str(emulator.bin_dir / "bsub"), *argv], check=True, capture_output=True,
                   timeout=30)


def test_logon_answers_as_documented(pac: tuple[LsfEmulator, _Pac]) -> None:
    _, client = pac
    xml = client.logon(accept="application/xml")
    wrong = client.logon(password="wrong")
    empty = client.client.post("ws/logon", content="<User><name></name><pass>x</pass></User>",
                               headers={"Accept": "application/json"})

    assert xml.status_code == 200
    assert re.fullmatch(rf'<\?xml [^>]+\?><User><token>{client.user}&quot;\d{{4}}-\d\d-\d\dT'
                        r'\d\d:\d\d:\d\dZ&quot;[A-Za-z0-9+/=]+&quot;[A-Za-z0-9+/=]+</token>'
                        r"</User>", xml.text)
    assert (empty.status_code, empty.json()) == (400, {"message": "The user is empty."})
    assert wrong.status_code == 403
    assert "message" in wrong.json()


def test_tokens_go_back_as_the_documented_cookie(pac: tuple[LsfEmulator, _Pac]) -> None:
    _, client = pac
    client.logon()
    raw = client.client.get("ws/jobs/1", headers={"Accept": "application/json",
                                                  "Cookie": f"platform_token={client.token}"})
    none = client.client.get("ws/jobs/1", headers={"Accept": "application/json"})

    assert '"' in client.token
    assert client.get("ws/jobs/1").status_code == 404  # the token is good: no such job
    assert raw.status_code == none.status_code == 403
    assert client.post("ws/logout").status_code == 200
    assert client.get("ws/jobs/1").status_code == 403


def test_job_lists_are_mapped_json_with_string_values(pac: tuple[LsfEmulator, _Pac]) -> None:
    emulator, client = pac
    client.logon()
    for name in ("one", "two"):
        _bsub(emulator, "-J", name, "exit 3")
    until(lambda: emulator.job_state("2") == "EXIT", 15, lambda: "job 2 did not end")

    single = client.get("ws/jobs/1,77").json()
    both = client.get("ws/jobs/1,2").json()
    basic = client.get("ws/jobs", params={"jobname": "tw*"}).json()
    unknown = client.get("ws/jobs/77")

    assert single["@total"] == "1"
    assert isinstance(single["job"], dict)
    assert (single["job"]["jobId"], single["job"]["jobStatus"],
            single["job"]["exitStatus"]) == ("1", "EXIT", "768")
    assert all(isinstance(value, str) for value in single["job"].values())
    assert [job["jobName"] for job in both["job"]] == ["one", "two"]
    assert basic == {"@total": "1", "pseudoJob": {"id": "2", "name": "two", "status": "EXIT",
                                                  "user": client.user, "queue": "normal"}}
    assert (unknown.status_code, unknown.json()) == \
        (404, {"message": "No jobs that match the specified criteria were found."})


def test_job_history_outlives_clean_period(pac: tuple[LsfEmulator, _Pac]) -> None:
    emulator, client = pac
    client.logon()
    _bsub(emulator, "true")
    until(lambda: emulator.job_state("1") == "DONE", 15, lambda: "job 1 did not end")
    until(lambda: not emulator.known("1"), 15, lambda: "job 1 is still known")

    history = client.get("ws/jobhistory", params={"ids": "1"})
    emulator.forget("1")

    assert client.get("ws/jobs/1").status_code == 404
    assert history.json()["jobHistory"]["jobStatus"] == "DONE"
    assert client.get("ws/jobhistory", params={"ids": "1"}).status_code == 404


def test_downloads_stay_in_the_job_directory(web: LsfWebHarness) -> None:
    native_id = _submit(web, command=["sh", "-c", "echo secret > .hidden; echo out"])
    assert finished(web.adapter, native_id, web.wait_s).state is State.SUCCEEDED
    client = _Pac(web.emulator.url, web.user, web.password)
    client.logon()

    def download(name: str) -> httpx.Response:
        return client.post(f"ws/jobfiles/download/{native_id}", accept="multipart/mixed",
                           data={"dir": name})

    try:
        good = download("hpcbridge-job.out")
        assert good.headers["Content-Type"].startswith("multipart/mixed; boundary=")
        assert lsf_api.parse_download(good.headers["Content-Type"], good.content) == \
            {"hpcbridge-job.out": b"out\n"}
        assert download("../../../etc/passwd").status_code == 403
        assert download(".hidden").status_code == 403
        assert download("missing").status_code == 404
    finally:
        client.client.close()


def test_a_submission_with_bad_extra_params_is_refused(pac: tuple[LsfEmulator, _Pac]
                                                       ) -> None:
    _, client = pac
    client.logon()
    content_type, body = lsf_api.web_submission(
        {"COMMANDTORUN": "true", "EXTRA_PARAMS": "-x 1"}, {}, "INPUT_FILE")

    answer = client.post("ws/jobs/submit", content=body,
                         headers={"Content-Type": content_type})

    assert answer.status_code == 400
    assert "illegal option -- x" in answer.json()["message"]


def test_a_file_parameter_needs_its_file_attached(pac: tuple[LsfEmulator, _Pac]) -> None:
    _, client = pac
    client.logon()
    content_type, body = lsf_api.web_submission({"COMMANDTORUN": "true"},
                                                {"job.sh": b"true\n"}, "INPUT_FILE")
    without_file = body.split(b'Content-Disposition: form-data; name="job.sh"')[0]
    boundary = content_type.split("boundary=")[1]

    answer = client.post("ws/jobs/submit", content=without_file[:without_file.rindex(b"--")]
                         + f"--{boundary}--\r\n".encode(),
                         headers={"Content-Type": content_type})

    assert (answer.status_code, answer.json()) == \
        (400, {"message": "job.sh: the file is not attached to the request."})
