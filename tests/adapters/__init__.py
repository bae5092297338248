"""Adapter tests: the harness interface of the conformance suite, what harnesses share,
and waiting helpers.

A harness drives one adapter kind for :mod:`tests.adapters.test_conformance`; the
registry of harnesses is ``HARNESSES`` in :mod:`tests.adapters.conftest`.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import httpx
import pytest

from adapters.base import Adapter, Observation
from hpcbridge.dev import free_port
from hpcbridge.model import JobRequest, Resources

__all__ = ["CountingTransport", "EmulatorHarness", "Harness", "HttpHarness", "RemoteHarness",
           "VanishingHarness", "build_request", "cancel_until_gone", "finished",
           "held_command", "new_job_id", "observe_until", "secret_file", "until", "wait_for"]

_POLL_S = 0.05
A = TypeVar("A", bound=Adapter)


class Harness(Protocol):
    """One adapter under test and what the conformance suite needs to drive it."""

    adapter: Adapter
    #: A directory that both the tests and the target's jobs can read and write.
    shared_dir: Path
    #: A native id this target never issued.
    unknown_id: str
    #: The shortest time limit the target enforces, in seconds.
    min_time_limit_s: int
    #: How long a job may take to reach its next state on this target, in seconds.
    wait_s: float

    def request(self, **overrides: Any) -> JobRequest:
        """A minimal valid request for this target, with ``JobRequest`` fields overridden.

        ``command`` may be given as a list; giving ``script`` drops the default command.
        """

    def queued_job(self, **overrides: Any) -> str:
        """Submit ``request(**overrides)`` so that it stays QUEUED; return its native id.

        The job waits until it is cancelled or :meth:`release` is called.
        """

    def release(self) -> None:
        """Let the jobs held by :meth:`queued_job` run (they start in submit order)."""

    def close(self) -> None:
        """Stop every job this harness or its tests started and free what it used."""


class RemoteHarness(Harness, Protocol):
    """A harness of a manager reached over the network, with credentials."""

    def calls(self) -> int:
        """Requests (or remote commands) the adapter has made to the manager so far."""

    def unreachable(self) -> Adapter:
        """An adapter like :attr:`adapter` whose manager does not answer at all."""

    def with_bad_credentials(self) -> tuple[Adapter, str]:
        """An adapter whose credential the manager refuses, and that credential."""


class VanishingHarness(Harness, Protocol):
    """A harness that can make the manager forget a finished job (purge, restart)."""

    def vanish(self, native_id: str) -> None:
        """Make the manager forget ``native_id`` as a purge or a restart would."""


class CountingTransport(httpx.HTTPTransport):
    """An httpx transport that counts the requests it sends to the manager."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.count = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.count += 1
        return super().handle_request(request)


class HttpHarness(Generic[A]):
    """What the harnesses of adapters speaking HTTP to their manager share.

    A subclass names :attr:`target` and :attr:`adapter_class` and calls :meth:`_connect`
    with its settings.
    """

    target: str
    #: Called as ``adapter_class(target, settings, transport=...)``.
    adapter_class: Callable[..., A]
    #: The path of the API's base URL, as the ``url`` setting ends.
    url_path = ""
    #: A request's fields when a test gives neither a command nor a script.
    default_request: ClassVar[Mapping[str, Any] | None] = None
    settings: dict[str, Any]
    adapter: A

    def _connect(self, settings: dict[str, Any], transport: httpx.BaseTransport | None) -> None:
        """Make :attr:`adapter` for ``settings``, counting its requests unless ``transport``
        replaces the counting one."""
        self.settings = settings
        self._counter = CountingTransport()
        self.adapter = self.adapter_class(self.target, settings,
                                          transport=transport or self._counter)

    def calls(self) -> int:
        return self._counter.count

    def make(self, **changes: Any) -> A:
        """An adapter of this target (not counted) with ``changes`` to its settings."""
        return self.adapter_class(self.target, {**self.settings, **changes})

    def unreachable(self) -> A:
        return self.make(url=f"http://127.0.0.1:{free_port()}{self.url_path}")

    def request(self, **overrides: Any) -> JobRequest:
        """A minimal valid request: :attr:`default_request` (``true`` as a command), unless
        a script or a command is given."""
        return build_request(self.target, overrides, self.default_request)


class _Emulator(Protocol):
    def release(self) -> None: ...

    def stop(self) -> None: ...


E = TypeVar("E", bound=_Emulator)


class EmulatorHarness(HttpHarness[A], Generic[A, E]):
    """An :class:`HttpHarness` whose manager is an emulator of its own, stopped at close.

    The subclass starts :attr:`emulator` after this ``__init__``; secrets go to files in
    a private directory, as mounted Secrets are.
    """

    emulator: E

    def __init__(self, tmp_path: Path) -> None:
        self.shared_dir = tmp_path / "shared"
        self.shared_dir.mkdir()
        self._secrets = tmp_path / "secrets"
        self._secrets.mkdir(mode=0o700)

    def _secret(self, value: str) -> str:
        """The path of a new file holding ``value``, for a ``*_file`` setting."""
        return str(secret_file(self._secrets, value))

    def _submit_held(self, hold: str, prefix: str, overrides: Mapping[str, Any]) -> str:
        """Submit ``request(**overrides)`` while the emulator's flag named ``hold`` is set:
        the emulator holds the job until :meth:`release`."""
        setattr(self.emulator, hold, True)
        try:
            return self.adapter.submit(self.request(**overrides),
                                       f"{prefix}-{uuid.uuid4().hex}")
        finally:
            setattr(self.emulator, hold, False)

    def release(self) -> None:
        self.emulator.release()

    def close(self) -> None:
        self.emulator.stop()
        self.adapter.close()


def secret_file(directory: Path, value: str, prefix: str = "secret") -> Path:
    """A new file (mode 0600) in ``directory`` holding ``value``, the way a mounted Secret
    does."""
    path = directory / f"{prefix}-{uuid.uuid4().hex[:8]}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value)
    return path


def held_command(gate: Path) -> list[str]:
    """A command that prints 'started', waits until ``gate`` exists, prints 'released'."""
    return ["sh", "-c", f"echo started; while [ ! -e {gate} ]; do sleep 0.05; done; "
            "echo released"]


def new_job_id(prefix: str = "t") -> str:
    """A job id no other test (or test session on a shared cluster) uses."""
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def until(condition: Callable[[], bool], timeout_s: float, what: Callable[[], str]) -> None:
    """Poll ``condition`` until it holds; fail the test with ``what()`` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            pytest.fail(f"gave up after {timeout_s} s: {what()}")
        time.sleep(_POLL_S)


def observe_until(adapter: Adapter, native_ids: Sequence[str],
                  done: Callable[[Mapping[str, Observation]], bool],
                  timeout_s: float) -> Mapping[str, Observation]:
    """Ask ``status_many`` about ``native_ids`` until ``done`` holds for its answer."""
    answer: Mapping[str, Observation] = {}

    def check() -> bool:
        nonlocal answer
        answer = adapter.status_many(native_ids)
        return done(answer)

    until(check, timeout_s, lambda: f"status of {list(native_ids)}: last answer {answer}")
    return answer


def wait_for(adapter: Adapter, native_id: str, done: Callable[[Observation], bool],
             timeout_s: float) -> Observation:
    """The first observation of ``native_id`` for which ``done`` holds."""
    return observe_until(adapter, [native_id],
                         lambda answer: native_id in answer and done(answer[native_id]),
                         timeout_s)[native_id]


def finished(adapter: Adapter, native_id: str, timeout_s: float) -> Observation:
    """The observation of ``native_id`` once it reached a terminal state."""
    return wait_for(adapter, native_id, lambda observation: observation.state.terminal,
                    timeout_s)


def build_request(target: str, overrides: Mapping[str, Any],
                  default: Mapping[str, Any] | None = None) -> JobRequest:
    """A request for ``target``: ``default`` (``true`` as the command) unless ``overrides``
    give a script or a command, then ``overrides``; a command may be a list and
    ``resources`` a mapping."""
    fields: dict[str, Any] = {} if {"script", "command"} & set(overrides) \
        else dict(default or {"command": ("true",)})
    fields.update(overrides)
    if fields.get("command") is not None:
        fields["command"] = tuple(fields["command"])
    if isinstance(fields.get("resources"), Mapping):
        fields["resources"] = Resources.from_dict(fields["resources"])
    return JobRequest(target=target, **fields)


def cancel_until_gone(adapter: Adapter, active: Callable[[], Sequence[str]],
                      timeout_s: float) -> None:
    """Cancel the native ids ``active()`` lists, then wait until it lists none."""
    for native_id in active():
        adapter.cancel(native_id)
    until(lambda: not active(), timeout_s, lambda: f"jobs still active: {list(active())}")
