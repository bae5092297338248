"""Reading a finished job's files (``OutputReader``), run against every harness whose
adapter declares ``collect_outputs`` (``conftest.HARNESSES``), and the ``slurm``
adapter's ``outputs_root`` guard.

The job writes its files in its working directory under names made unique per job, as
the default working directory of some targets is shared by every job (Slurm's
``working_dir``, the LSF user's home).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import errno
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from adapters._files import _open_without_links
from adapters.base import ConfigError, OutputMissing, OutputReader, OutputTooLarge
from adapters.lsf import LsfAdapter
from adapters.slurm import SlurmRestAdapter
from hpcbridge.model import JobRequest, State
from tests.adapters import Harness, finished, new_job_id

_TEXT = b"the result of the job\n"
_DATA = bytes(range(256))
_BIG = 100_000
_LIMIT = 1 << 20
_OUTSIDE = "/etc/hostname"


@dataclasses.dataclass(frozen=True)
class _Files:
    """The names of what the job leaves, relative to its working directory."""

    token: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex[:8])

    @property
    def text(self) -> str:
        return f"result-{self.token}.txt"

    @property
    def directory(self) -> str:
        return f"sub-{self.token}"

    @property
    def data(self) -> str:
        return f"{self.directory}/dir/data.bin"

    @property
    def inner(self) -> str:  # a symlink to ``text``, inside the working directory
        return f"inner-{self.token}"

    @property
    def escape(self) -> str:  # a symlink to a file outside it
        return f"escape-{self.token}"

    @property
    def escape_dir(self) -> str:  # a symlink to a directory outside it
        return f"escape-dir-{self.token}"

    @property
    def dangling(self) -> str:
        return f"dangling-{self.token}"

    @property
    def fifo(self) -> str:
        return f"fifo-{self.token}"

    @property
    def big(self) -> str:
        return f"big-{self.token}.bin"

    def script(self) -> str:
        """A job that leaves all of them; every name is a plain word, nothing to quote."""
        return "\n".join([
            "#!/bin/sh",
            "set -e",
            f"printf '{_octal(_TEXT)}' > {self.text}",
            f"mkdir -p {self.directory}/dir",
            f"printf '{_octal(_DATA)}' > {self.data}",
            f"ln -s {self.text} {self.inner}",
            f"ln -s {_OUTSIDE} {self.escape}",
            f"ln -s {os.path.dirname(_OUTSIDE)} {self.escape_dir}",
            f"ln -s nowhere-{self.token} {self.dangling}",
            f"mkfifo {self.fifo}",
            f"head -c {_BIG} /dev/zero > {self.big}",
            "",
        ])


def _octal(data: bytes) -> str:
    """``data`` as a printf format of octal escapes: any byte, NUL included."""
    return "".join(f"\\{byte:03o}" for byte in data)


@dataclasses.dataclass(frozen=True)
class _Job:
    reader: OutputReader
    native_id: str
    job_id: str
    request: JobRequest
    files: _Files

    def read(self, path: str, limit: int = _LIMIT) -> bytes:
        return self.reader.read_output(self.native_id, self.job_id, self.request, path, limit)


def _finished_job(harness: Harness, **overrides: Any) -> _Job:
    """Run the job that leaves :class:`_Files` to its successful end."""
    files = _Files()
    request = harness.request(script=files.script(), **overrides)
    job_id = new_job_id()
    native_id = harness.adapter.submit(request, job_id)
    observation = finished(harness.adapter, native_id, harness.wait_s)
    assert observation.state is State.SUCCEEDED, harness.adapter.logs(native_id)
    assert isinstance(harness.adapter, OutputReader)
    return _Job(harness.adapter, native_id, job_id, request, files)


def _within(seconds: float, call: Callable[[], Any]) -> Any:
    """``call()``, failing the test if it has not returned after ``seconds``."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        return pool.submit(call).result(timeout=seconds)
    except concurrent.futures.TimeoutError:
        pytest.fail(f"still blocked after {seconds} s")
    finally:
        pool.shutdown(wait=False)


def test_the_capability_is_declared(outputs_harness: Harness) -> None:
    assert outputs_harness.adapter.capabilities.collect_outputs
    assert isinstance(outputs_harness.adapter, OutputReader)


@pytest.mark.parametrize("explicit", [False, True], ids=["default-dir", "working-dir"])
def test_files_are_read_exactly(outputs_harness: Harness, explicit: bool) -> None:
    overrides = {"working_dir": str(outputs_harness.shared_dir)} if explicit else {}
    job = _finished_job(outputs_harness, **overrides)

    assert job.read(job.files.text) == _TEXT
    assert job.read(job.files.data) == _DATA
    assert job.read(job.files.inner) == _TEXT  # a symlink that stays inside is followed
    assert job.read(job.files.text, limit=len(_TEXT)) == _TEXT
    if explicit:
        assert (outputs_harness.shared_dir / job.files.data).read_bytes() == _DATA


def test_what_is_not_a_regular_file_inside_is_missing(outputs_harness: Harness) -> None:
    job = _finished_job(outputs_harness)
    assert Path(_OUTSIDE).is_file()  # so that only the confinement refuses it

    for path, why in [
        (f"missing-{job.files.token}", "no such file"),
        (f"{job.files.directory}/missing", "no such file"),
        (job.files.dangling, "no such file"),
        (job.files.escape, "outside"),
        (f"{job.files.escape_dir}/{Path(_OUTSIDE).name}", "outside"),
        (job.files.directory, "not a regular file"),
    ]:
        with pytest.raises(OutputMissing, match=why):
            job.read(path)
    # A FIFO is refused before it is opened: opening it would block until a writer came.
    with pytest.raises(OutputMissing, match="not a regular file"):
        _within(outputs_harness.wait_s, lambda: job.read(job.files.fifo))


def test_a_file_over_the_limit_is_too_large_and_not_read(outputs_harness: Harness) -> None:
    job = _finished_job(outputs_harness)

    with pytest.raises(OutputTooLarge) as raised:
        job.read(job.files.big, limit=_BIG - 1)
    # The size it reports is the file's, known before reading: a read stops at limit + 1.
    assert raised.value.size == _BIG
    with pytest.raises(OutputTooLarge):
        job.read(job.files.text, limit=len(_TEXT) - 1)
    assert job.read(job.files.big, limit=_BIG) == bytes(_BIG)


# --- the slurm adapter reads with the bridge's rights: only inside outputs_root ---------

def _slurm(tmp_path: Path, **settings: str) -> SlurmRestAdapter:
    """A slurm adapter that never needs its slurmrestd: reading outputs is all local."""
    token = tmp_path / "token"
    token.write_text("not used")
    return SlurmRestAdapter("slurm-outputs", {
        "kind": "slurm", "url": "http://127.0.0.1:9", "user": "nobody",
        "token_file": str(token), "output_dir": str(tmp_path / "out"), **settings})


def _request(working_dir: Path | str | None = None) -> JobRequest:
    return JobRequest(target="slurm-outputs", command=("true",),
                      working_dir=None if working_dir is None else str(working_dir))


@pytest.fixture
def shared(tmp_path: Path) -> Path:
    """A mounted shared file system: ``root`` (outputs_root) and ``elsewhere``, each
    with a job's file ``result.txt``; ``root/link`` leads to ``elsewhere``."""
    for name in ("root", "elsewhere"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "result.txt").write_bytes(_TEXT)
    (tmp_path / "root" / "link").symlink_to(tmp_path / "elsewhere")
    return tmp_path


def test_slurm_reads_inside_outputs_root(shared: Path) -> None:
    adapter = _slurm(shared, outputs_root=str(shared / "root"))

    assert adapter.read_output("1", new_job_id(), _request(shared / "root"), "result.txt",
                               _LIMIT) == _TEXT


@pytest.mark.parametrize(("working_dir", "path"), [
    ("elsewhere", "result.txt"),
    ("root/link", "result.txt"),  # a symlink inside that leads out
    ("root/..", "root/result.txt"),
    ("/etc", "hostname"),  # a file of the bridge's, not of a job
])
def test_slurm_refuses_a_working_dir_outside_outputs_root(shared: Path, working_dir: str,
                                                          path: str) -> None:
    adapter = _slurm(shared, outputs_root=str(shared / "root"))
    outside = shared / working_dir  # an absolute working_dir stays as it is
    assert (outside / path).is_file()

    with pytest.raises(OutputMissing, match="outside outputs_root"):
        adapter.read_output("1", new_job_id(), _request(outside), path, _LIMIT)


def test_a_directory_swapped_for_a_symlink_after_the_check_is_not_followed(
        shared: Path) -> None:
    """The race a job user could try on a shared file system: the file's path is resolved
    and checked, then one of its directories becomes a symlink to somewhere the bridge can
    read. The open walks the checked path without following links, so it fails."""
    run = shared / "root" / "run"
    run.mkdir()
    (run / "result.txt").write_bytes(_TEXT)
    checked = (run / "result.txt").resolve(strict=True)
    run.rename(shared / "moved-run")
    run.symlink_to(shared / "elsewhere")  # elsewhere/result.txt exists too
    assert (run / "result.txt").read_bytes() == _TEXT, "a plain open would follow it"

    with pytest.raises(OSError) as refused:
        _open_without_links(checked)
    assert refused.value.errno in (errno.ELOOP, errno.ENOTDIR)


def test_slurm_outputs_root_defaults_to_working_dir_then_output_dir(shared: Path) -> None:
    by_working_dir = _slurm(shared, working_dir=str(shared / "root"))
    by_output_dir = _slurm(shared, output_dir=str(shared / "root"))
    elsewhere = _slurm(shared, working_dir=str(shared / "elsewhere"),
                       outputs_root=str(shared / "root"))

    for adapter in (by_working_dir, by_output_dir):
        assert adapter.read_output("1", new_job_id(), _request(), "result.txt",
                                   _LIMIT) == _TEXT
        with pytest.raises(OutputMissing, match="outside outputs_root"):
            adapter.read_output("1", new_job_id(), _request(shared / "elsewhere"),
                                "result.txt", _LIMIT)
    with pytest.raises(OutputMissing, match="outside outputs_root"):
        elsewhere.read_output("1", new_job_id(), _request(), "result.txt", _LIMIT)


def test_slurm_outputs_root_not_mounted_is_a_config_error(tmp_path: Path) -> None:
    adapter = _slurm(tmp_path, outputs_root=str(tmp_path / "not-mounted"))

    with pytest.raises(ConfigError, match="outputs_root"):
        adapter.read_output("1", new_job_id(), _request(tmp_path), "result.txt", _LIMIT)


def test_lsf_collects_outputs_over_ssh_only(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("not used")
    common = {"kind": "lsf", "user": "nobody", "timeout_s": 1}
    web = LsfAdapter("lsf-outputs", {**common, "transport": "web",
                                     "url": "http://127.0.0.1:9/platform",
                                     "password_file": str(secret)})
    ssh = LsfAdapter("lsf-outputs", {**common, "transport": "ssh", "host": "127.0.0.1",
                                     "key_file": str(secret),
                                     "known_hosts_file": str(secret),
                                     "remote_dir": str(tmp_path)})
    try:
        assert not web.capabilities.collect_outputs
        assert ssh.capabilities.collect_outputs
        with pytest.raises(OutputMissing, match="transport web"):
            web.read_output("1", new_job_id(), _request(tmp_path), "result.txt", _LIMIT)
    finally:
        web.close()
        ssh.close()
