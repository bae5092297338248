"""The slurm-ssh adapter against a real sshd and a real Slurm 22.05 cluster.

What the conformance suite does not show: hostile paths and values stay data, the job's
environment, host key checking, a dropped connection, the number of commands per call,
how Slurm's refusals and absences are classified, and the SSH layer on its own.
"""

from __future__ import annotations

import os
import pwd
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters._ssh import MAX_COMMANDS, SshConnection
from adapters.base import (
    AuthenticationFailed,
    ConfigError,
    ManagerRejected,
    ManagerUnavailable,
    Observation,
)
from adapters.slurm_ssh import SlurmSshAdapter
from hpcbridge.model import Reason, State
from tests.adapters import new_job_id, wait_for
from tests.adapters.slurm_ssh_harness import CountingConnection, SlurmSshHarness
from tests.services.slurm import SlurmCluster
from tests.services.sshd import SshServer, generate_key

pytestmark = pytest.mark.slurm

_HOSTILE_NAME = "a b $(touch {m}) `touch {m}`; touch {m} && 'q' \"d\" | * ~ %j 100%"


@pytest.fixture(scope="module")
def harness(slurm_cluster: SlurmCluster, sshd: SshServer) -> Iterator[SlurmSshHarness]:
    harness = SlurmSshHarness(slurm_cluster, sshd)
    yield harness
    harness.close()


def wait_state(harness: SlurmSshHarness, native_id: str, *states: State) -> Observation:
    return wait_for(harness.adapter, native_id, lambda o: o.state in states, harness.wait_s)


def owned_dir(harness: SlurmSshHarness, name: str) -> Path:
    """A directory in the cluster's work directory that belongs to the job user."""
    path = harness.cluster.workdir / name
    path.mkdir(parents=True, exist_ok=True)
    owner = harness.cluster.workdir.stat()
    os.chown(path, owner.st_uid, owner.st_gid)
    return path


# --- jobs ------------------------------------------------------------------------------

def test_hostile_paths_and_values_stay_data(harness: SlurmSshHarness) -> None:
    marker = harness.shared_dir / "executed"
    name = _HOSTILE_NAME.format(m=marker.name)
    remote_dir = harness.cluster.workdir / "hostile" / name
    working_dir = owned_dir(harness, f"work {name}")
    environment = {"HB_HOSTILE": f"$(touch {marker}); `touch {marker}`\n'\"",
                   "HB_EMPTY": ""}
    owned_dir(harness, "hostile")
    adapter = harness.make(remote_dir=str(remote_dir))
    try:
        in_job_dir, elsewhere = new_job_id(), new_job_id()
        jobs = {
            in_job_dir: adapter.submit(harness.request(command=["pwd"]), in_job_dir),
            elsewhere: adapter.submit(harness.request(
                script='#!/bin/sh\npwd\nprintf "%s|" "$HB_HOSTILE" "$HB_EMPTY"\n',
                working_dir=str(working_dir), environment=environment), elsewhere),
        }
        for native_id in jobs.values():
            assert wait_state(harness, native_id, State.SUCCEEDED, State.FAILED).state \
                is State.SUCCEEDED

        assert adapter.logs(jobs[in_job_dir]) == f"{remote_dir / in_job_dir}\n"
        assert adapter.logs(jobs[elsewhere]) == (f"{working_dir}\n"
                                                 f"{environment['HB_HOSTILE']}||")
    finally:
        adapter.close()
    assert (remote_dir / elsewhere / "job.sh").is_file()
    assert (remote_dir / f"{jobs[elsewhere]}.out").is_file()
    home = Path(pwd.getpwnam(harness.cluster.user).pw_dir)
    assert not marker.exists()
    assert not (home / marker.name).exists()
    assert not list(harness.cluster.workdir.rglob(marker.name))


def test_environment_values_never_reach_a_command_line(harness: SlurmSshHarness) -> None:
    value = f"value-{new_job_id()}"
    native_id = harness.adapter.submit(
        harness.request(command=["sh", "-c", 'echo "$HB_SECRETISH"'],
                        environment={"HB_SECRETISH": value}), new_job_id())

    wait_state(harness, native_id, State.SUCCEEDED)

    assert harness.adapter.logs(native_id) == f"{value}\n"
    assert not [argv for argv in harness.connection.commands
                if any(value in arg for arg in argv)]


def test_job_starts_from_the_login_environment_not_the_ssh_session(
        harness: SlurmSshHarness) -> None:
    native_id = harness.adapter.submit(harness.request(command=["env"]), new_job_id())

    wait_state(harness, native_id, State.SUCCEEDED)

    names = {line.partition("=")[0] for line in harness.adapter.logs(native_id).splitlines()}
    assert {"HOME", "USER", "PATH", "SLURM_JOB_ID"} <= names
    assert not names & {"SSH_CONNECTION", "SSH_CLIENT"}


@pytest.mark.parametrize(("script", "output"), [
    ("echo no interpreter line\n", "no interpreter line\n"),
    ("#!/usr/bin/env python3\nimport sys\nprint('python', sys.version_info[0])\n",
     "python 3\n"),
], ids=["sh", "python"])
def test_scripts_run_with_their_interpreter(harness: SlurmSshHarness, script: str,
                                            output: str) -> None:
    job_id = new_job_id()
    native_id = harness.adapter.submit(harness.request(script=script), job_id)

    wait_state(harness, native_id, State.SUCCEEDED)

    assert harness.adapter.logs(native_id) == output
    assert (harness.remote_dir / job_id / "script").stat().st_mode & 0o777 == 0o700


def test_death_by_signal_reads_as_128_plus_signal(harness: SlurmSshHarness) -> None:
    native_id = harness.adapter.submit(harness.request(command=["sh", "-c", "kill -9 $$"]),
                                       new_job_id())

    done = wait_state(harness, native_id, State.SUCCEEDED, State.FAILED)

    assert (done.state, done.exit_code, done.reason) == (State.FAILED, 137, Reason.EXIT_CODE)


def test_queued_job_has_no_logs_yet_and_is_cancelled(harness: SlurmSshHarness) -> None:
    native_id = harness.queued_job()
    queued = wait_state(harness, native_id, State.QUEUED)
    assert (queued.native_state, queued.started_at) == ("PENDING", None)
    assert harness.adapter.logs(native_id) == ""

    harness.adapter.cancel(native_id)

    assert wait_state(harness, native_id, State.CANCELLED).reason is Reason.CANCELLED


def test_a_job_is_found_by_its_tag_however_it_was_submitted(
        harness: SlurmSshHarness) -> None:
    job_id = new_job_id()
    native_id = harness.cluster.submit_direct("#!/bin/sh\nexit 0\n", name=job_id)
    before = harness.calls()

    assert harness.adapter.find_by_tag(job_id) == native_id
    assert harness.calls() - before == 1
    assert harness.adapter.find_by_tag("Not A Job Id,other") is None


@pytest.mark.parametrize(("overrides", "message"), [
    ({"queue": "no-such-partition"}, "Invalid partition name specified"),
    ({"resources": {"gpus": 1}}, "Requested node configuration is not available"),
    ({"environment": {"1BAD": "x"}}, "not an environment variable name"),
])
def test_submission_slurm_refuses_is_rejected(harness: SlurmSshHarness, overrides: dict,
                                              message: str) -> None:
    with pytest.raises(ManagerRejected, match=message) as refused:
        harness.adapter.submit(harness.request(**overrides), new_job_id())

    assert not isinstance(refused.value, AuthenticationFailed)


def test_capacity_reports_the_node(harness: SlurmSshHarness) -> None:
    capacity = harness.adapter.capacity()

    assert (capacity["nodes"], capacity["cpus"], capacity["gpus"]) == (1, 16, 0)
    assert capacity["memory_mb"] > 0


# --- commands per call -----------------------------------------------------------------

def test_status_many_is_one_squeue_for_any_number_of_jobs(harness: SlurmSshHarness) -> None:
    native_ids = [harness.adapter.submit(harness.request(), new_job_id()) for _ in range(20)]
    before = len(harness.connection.commands)

    seen = harness.adapter.status_many([*native_ids, "987654", "not-a-number"])

    commands = harness.connection.commands[before:]
    assert [argv[2] for argv in commands] == ["squeue"]
    assert set(seen) == set(native_ids)
    assert harness.adapter.status_many([]) == {}
    assert len(harness.connection.commands) == before + 1


def test_without_accounting_sacct_is_asked_once_then_never(
        harness: SlurmSshHarness) -> None:
    connection = CountingConnection.from_settings("accounting", harness.settings)
    adapter = harness.make(connection=connection, accounting=None)  # the default: true
    try:
        assert adapter.status_many(["987654"]) == {}
        assert adapter.status_many(["987655"]) == {}
    finally:
        adapter.close()

    assert [argv[2] for argv in connection.commands] == ["squeue", "sacct", "squeue"]


def test_cancel_of_something_that_is_no_slurm_id_runs_nothing(
        harness: SlurmSshHarness) -> None:
    before = harness.calls()

    harness.adapter.cancel("--user=hpcbridge-job")

    assert harness.calls() == before


# --- the connection --------------------------------------------------------------------

def test_a_dropped_connection_is_opened_again(harness: SlurmSshHarness) -> None:
    native_id = harness.adapter.submit(harness.request(command=["echo", "hi"]), new_job_id())
    wait_state(harness, native_id, State.SUCCEEDED)

    for call in (lambda: harness.adapter.status_many([native_id]),
                 lambda: harness.adapter.logs(native_id),
                 lambda: harness.adapter.submit(harness.request(), new_job_id())):
        harness.sshd.drop_connections()
        assert call()


def test_threads_share_one_connection(harness: SlurmSshHarness) -> None:
    native_id = harness.adapter.submit(harness.request(command=["echo", "hi"]), new_job_id())
    wait_state(harness, native_id, State.SUCCEEDED)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(3):
                assert native_id in harness.adapter.status_many([native_id])
                assert harness.adapter.logs(native_id) == "hi\n"
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(2 * MAX_COMMANDS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []


def test_an_unknown_host_is_a_config_error_naming_the_file(harness: SlurmSshHarness,
                                                           tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(harness.sshd.known_hosts_line(port=1) + "\n")
    adapter = harness.make(known_hosts_file=str(known_hosts))
    try:
        with pytest.raises(ConfigError, match=f"no entry in known_hosts_file {known_hosts}"):
            adapter.status_many(["1"])
    finally:
        adapter.close()


def test_a_changed_host_key_is_refused(harness: SlurmSshHarness, tmp_path: Path) -> None:
    other = generate_key(tmp_path / "other").split()
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[{harness.sshd.host}]:{harness.sshd.port} {other[0]} "
                           f"{other[1]}\n")
    adapter = harness.make(known_hosts_file=str(known_hosts))
    try:
        with pytest.raises(ConfigError, match="differs from the one in known_hosts_file"):
            adapter.submit(harness.request(), new_job_id())
    finally:
        adapter.close()


def test_the_key_can_come_from_the_environment(harness: SlurmSshHarness,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HB_TEST_SSH_KEY", harness.sshd.key_file.read_text())
    adapter = harness.make(key_file=None, key_env="HB_TEST_SSH_KEY")
    try:
        assert adapter.status_many([harness.unknown_id]) == {}
    finally:
        adapter.close()


def test_a_refused_key_names_where_it_came_from_not_what_it_is(
        harness: SlurmSshHarness) -> None:
    adapter, secret = harness.with_bad_credentials()
    try:
        with pytest.raises(AuthenticationFailed, match="refused the key from file") as refused:
            adapter.find_by_tag(new_job_id())
    finally:
        adapter.close()
    assert secret.strip() not in str(refused.value)
    assert secret.splitlines()[1] not in str(refused.value)


@pytest.mark.parametrize(("content", "message"), [
    ("not a key: s3cr3t-material", "holds no private key"),
    (None, "cannot read credential file"),
])
def test_an_unusable_key_is_a_config_error(harness: SlurmSshHarness, tmp_path: Path,
                                           content: str | None, message: str) -> None:
    key = tmp_path / "key"
    if content is not None:
        key.write_text(content)
    adapter = harness.make(key_file=str(key))
    try:
        with pytest.raises(ConfigError, match=message) as failed:
            adapter.status_many(["1"])
    finally:
        adapter.close()
    assert "s3cr3t" not in str(failed.value)


def test_a_missing_command_is_a_config_error(harness: SlurmSshHarness) -> None:
    adapter = harness.make(squeue="/nonexistent/squeue")
    try:
        with pytest.raises(ConfigError, match="set the 'squeue' setting"):
            adapter.status_many(["1"])
    finally:
        adapter.close()


def test_an_unreachable_controller_is_unavailable_not_a_refusal(
        harness: SlurmSshHarness, tmp_path: Path) -> None:
    """A login node whose Slurm commands cannot reach slurmctld: sbatch fails, and that
    says nothing about the job."""
    conf = harness.cluster.root / f"unreachable-{new_job_id()}.conf"
    lines = harness.cluster.conf_path.read_text().splitlines()
    # Nothing listens on port 1; the commands give up retrying after MessageTimeout.
    conf.write_text("\n".join(["MessageTimeout=1", *(
        "SlurmctldPort=1" if line.startswith("SlurmctldPort=") else line
        for line in lines)]) + "\n")
    conf.chmod(0o644)
    with SshServer(harness.cluster.user, environment={"SLURM_CONF": str(conf)}) as login:
        adapter = harness.make(port=login.port, known_hosts_file=str(login.known_hosts_file),
                               key_file=str(login.key_file))
        try:
            with pytest.raises(ManagerUnavailable, match="Unable to contact slurm controller"):
                adapter.submit(harness.request(), new_job_id())
            with pytest.raises(ManagerUnavailable, match="squeue"):
                adapter.status_many(["1"])
        finally:
            adapter.close()


@pytest.mark.parametrize(("settings", "message"), [
    ({"host": None}, "needs 'host'"),
    ({"key_file": None}, "needs 'key_file' or 'key_env'"),
    ({"key_file": None, "key": "inline"}, "must not be written into the targets file"),
    ({"known_hosts_file": None}, "needs 'known_hosts_file'"),
    ({"known_hosts_file": "known_hosts"}, "known_hosts_file must be an absolute path"),
    ({"remote_dir": "relative/dir"}, "remote_dir must be an absolute path"),
    ({"remote_dir": "/a\\b"}, "must not contain a backslash"),
    ({"port": "22"}, "port must be a TCP port number"),
    ({"timeout_s": 0}, "timeout_s must be a positive number"),
    ({"accounting": "yes"}, "accounting must be true or false"),
    ({"sbatch": ""}, "needs 'sbatch' to be a non-empty string"),
    ({"container_image": "x.sif"}, "unknown setting 'container_image'"),
])
def test_unusable_settings_are_config_errors(harness: SlurmSshHarness, settings: dict,
                                             message: str) -> None:
    merged = {k: v for k, v in {**harness.settings, **settings}.items() if v is not None}
    with pytest.raises(ConfigError, match=message):
        SlurmSshAdapter("broken", merged)


# --- the SSH layer on its own ----------------------------------------------------------

@pytest.fixture
def ssh(harness: SlurmSshHarness) -> Iterator[SshConnection]:
    connection = SshConnection.from_settings("ssh", harness.settings)
    yield connection
    connection.close()


def test_run_quotes_every_argument_and_reports_status_and_streams(
        ssh: SshConnection) -> None:
    arguments = ["$(id)", "`id`", "a b", "it's", "line\nbreak", "; exit 9", "*", ""]

    done = ssh.run(["sh", "-c", 'printf "%s|" "$@"; echo err >&2; exit 4', "sh",
                    *arguments])

    assert (done.exit_status, done.stdout, done.stderr) == (4, "|".join(arguments) + "|",
                                                            "err\n")


def test_large_output_on_both_streams_does_not_block(ssh: SshConnection) -> None:
    done = ssh.run(["sh", "-c", "head -c 3000000 /dev/zero >&2; head -c 3000000 /dev/zero"])

    assert (done.exit_status, len(done.stdout), len(done.stderr)) == (0, 3000000, 3000000)


def test_a_command_over_the_timeout_is_unavailable_and_the_connection_survives(
        harness: SlurmSshHarness) -> None:
    ssh = SshConnection.from_settings("ssh", {**harness.settings, "timeout_s": 1})
    try:
        with pytest.raises(ManagerUnavailable, match="sleep did not finish within 1 s"):
            ssh.run(["sleep", "30"])

        assert ssh.run(["echo", "still here"]).stdout == "still here\n"
    finally:
        ssh.close()


def test_files_round_trip_with_their_mode(ssh: SshConnection,
                                          harness: SlurmSshHarness) -> None:
    directory = harness.remote_dir / "files" / "deep er"
    ssh.make_dirs(str(directory))
    ssh.make_dirs(str(directory))
    path = directory / "f"
    ssh.write_file(str(path), "".join(f"{n}\n" for n in range(100_000)), 0o640)

    assert path.stat().st_mode & 0o777 == 0o640
    assert ssh.read_file(str(path), tail_lines=2) == "99998\n99999\n"
    assert ssh.read_file(str(path), tail_lines=0) == ""
    assert len(ssh.read_file(str(path)).splitlines()) == 100_000
    with pytest.raises(FileNotFoundError):
        ssh.read_file(str(directory / "missing"))
    with pytest.raises(ConfigError, match="Permission denied"):
        ssh.write_file("/etc/hpcbridge-not-allowed", "x")
