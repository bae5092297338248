"""The Containerfile, its build context (.dockerignore), and the commands the image runs.

No container engine and no base image can be had here (registries other than PyPI,
Debian and npm are out of reach), so the image itself is not built. What is checked
instead: the Containerfile's instructions (base, user, port, what is copied and from
where packages come), that its context holds what it copies and nothing else, and that
the commands the image runs, its default CMD and each Knative Service's command and
args, really serve the functions when run from a tree laid out like the image's WORKDIR
(the repository top: functions/ beside an installed hpcbridge), answering the probes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import socket
import subprocess
import sysconfig
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.render import REPO

FUNCTIONS = ("submit", "poll", "cancel")
Instruction = tuple[str, str]


def instructions(path: Path = REPO / "Containerfile") -> list[Instruction]:
    """``(INSTRUCTION, arguments)`` pairs, continuation lines joined, comments dropped."""
    result: list[Instruction] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        result.append((word.upper(), rest.strip()))
    assert not pending, "the Containerfile ends in a continuation"
    return result


def stages(steps: list[Instruction]) -> list[list[Instruction]]:
    found: list[list[Instruction]] = []
    for step in steps:
        if step[0] == "FROM":
            found.append([])
        found[-1].append(step)
    return found


# -- .dockerignore, with Docker's semantics -----------------------------------------------


def ignore_patterns(path: Path = REPO / ".dockerignore") -> list[tuple[bool, re.Pattern[str]]]:
    """``(is_exception, regex)`` per line, as moby's patternmatcher compiles them."""
    patterns = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        regex = ""
        index = 0
        while index < len(pattern):
            char = pattern[index]
            if pattern.startswith("**/", index):
                regex += "(.*/)?"
                index += 3
                continue
            if pattern.startswith("**", index):
                regex += ".*"
                index += 2
                continue
            regex += {"*": "[^/]*", "?": "[^/]"}.get(char, re.escape(char))
            index += 1
        patterns.append((exception, re.compile(f"^{regex}$")))
    return patterns


def excluded(relative: str, patterns: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether Docker leaves ``relative`` out of the build context: the last pattern that
    matches the path or one of its parent directories decides."""
    parts = relative.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    result = False
    for exception, regex in patterns:
        if any(regex.match(c) for c in candidates):
            result = not exception
    return result


def context_files() -> set[str]:
    """The repository's tracked and untracked files that would go into the context."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    patterns = ignore_patterns()
    return {f for f in listed if (REPO / f).is_file() and not excluded(f, patterns)}


# -- the Containerfile --------------------------------------------------------------------


def test_containerfile_builds_from_python_slim_and_runs_unprivileged() -> None:
    steps = instructions()
    build, final = stages(steps)
    assert build[0] == ("FROM", "python:3.11-slim AS build")
    assert final[0] == ("FROM", "python:3.11-slim")
    users = [args for word, args in final if word == "USER"]
    assert users, "the image must not run as root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0, "a numeric user, for runAsNonRoot"
    assert not gid or (gid.isdigit() and int(gid) > 0)
    assert ("EXPOSE", "8080") in final
    assert ("WORKDIR", "/app") in final


def test_containerfile_installs_only_from_package_registries() -> None:
    runs = [args for word, args in instructions() if word == "RUN"]
    for command in runs:
        assert "http://" not in command and "https://" not in command, command
        assert "--index-url" not in command and "--extra-index-url" not in command
        assert "curl" not in command and "wget" not in command
    build, final = stages(instructions())
    assert any("pip wheel" in args for word, args in build if word == "RUN")
    # The final stage installs the wheels built beside it, offline.
    assert any("pip install --no-index" in args for word, args in final if word == "RUN")


def test_containerfile_copies_the_packages_the_project_declares() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = set(project["tool"]["setuptools"]["packages"])
    build, final = stages(instructions())
    copied = [shlex.split(args) for word, args in build if word == "COPY"]
    sources = {Path(src).as_posix() for args in copied for src in args[:-1]}
    assert packages <= sources
    assert {"pyproject.toml", project["project"]["readme"]} <= sources
    final_copies = [shlex.split(args) for word, args in final if word == "COPY"]
    assert ["functions", "./functions"] in final_copies


def test_build_context_holds_what_the_containerfile_copies_and_nothing_else() -> None:
    files = context_files()
    steps = instructions()
    for word, args in steps:
        if word != "COPY" or args.startswith("--from"):
            continue
        for source in shlex.split(args)[:-1]:
            inside = {f for f in files if f == source or f.startswith(source.rstrip("/") + "/")}
            assert inside, f"COPY {source}: nothing of it is in the build context"
    for function in FUNCTIONS:
        assert f"functions/{function}/main.py" in files
    assert "hpcbridge/service.py" in files and "adapters/base.py" in files
    for outside in ("tests/", "bench/", "scripts/", "knative/", ".git/", ".ci/"):
        assert not [f for f in files if f.startswith(outside)], outside
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]


@pytest.mark.parametrize(("path", "is_excluded"), [
    ("tests/conftest.py", True), ("hpcbridge/store.py", False),
    ("hpcbridge/__pycache__/store.cpython-311.pyc", True), ("functions/poll/main.py", False),
    ("README.md", False), ("Containerfile", True), ("docs/x/README.md", True),
])
def test_dockerignore_matcher_follows_docker(path: str, is_excluded: bool) -> None:
    assert excluded(path, ignore_patterns()) is is_excluded


# -- the commands, run for real -----------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _environment(extra: dict[str, str]) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items()
                   if not k.startswith(("FUNCTION_", "HPCBRIDGE_"))}
    scripts = sysconfig.get_path("scripts")
    environment["PATH"] = f"{scripts}{os.pathsep}{environment.get('PATH', '')}"
    environment.update(extra)
    return environment


@contextlib.contextmanager
def serving(argv: list[str], extra_env: dict[str, str]) -> Iterator[str]:
    """Run ``argv`` from the repository top (the image's WORKDIR has the same layout),
    on a free port, until it answers; yield its base URL."""
    port = _free_port()
    process = subprocess.Popen(argv, cwd=REPO, env=_environment({**extra_env, "PORT": str(port)}),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise AssertionError(f"{argv} exited {process.returncode}: "
                                     f"{process.stderr.read() if process.stderr else ''}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{argv} did not listen within 30 s") from None
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr:
            process.stderr.close()


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 (loopback)
        return answer.status, answer.read().decode()


def _default_command() -> list[str]:
    (cmd,) = [args for word, args in stages(instructions())[-1] if word == "CMD"]
    argv = json.loads(cmd)  # exec form: signals reach the server, not a shell
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)
    return argv


@pytest.mark.parametrize("function", FUNCTIONS)
def test_image_default_command_serves_the_function_named_by_function_target(
        function: str) -> None:
    with serving(_default_command(), {"FUNCTION_TARGET": function}) as url:
        assert _get(url + "/") == (200, "ok\n")


def test_image_default_command_refuses_to_start_without_a_target() -> None:
    result = subprocess.run(_default_command(), cwd=REPO, env=_environment({}),
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0
    assert "set FUNCTION_TARGET to submit, poll or cancel" in result.stderr


@pytest.mark.parametrize("function", FUNCTIONS)
def test_knative_service_command_serves_its_probes(objects: list[dict[str, Any]],
                                                   function: str) -> None:
    (ksvc,) = [o for o in objects if o["apiVersion"] == "serving.knative.dev/v1"
               and o["metadata"]["name"] == f"hpc-bridge-{function}"]
    (container,) = ksvc["spec"]["template"]["spec"]["containers"]
    assert "workingDir" not in container  # so relative --source paths start at /app
    literal_env = {e["name"]: e["value"] for e in container["env"]
                   if "value" in e and e["name"] in ("THREADS", "HPCBRIDGE_NAMESPACE")}
    with serving(container["command"] + container["args"], literal_env) as url:
        for probe in ("readinessProbe", "livenessProbe"):
            path = container[probe]["httpGet"]["path"]
            assert _get(url + path) == (200, "ok\n")
