"""The reliability and security suite: what it shares.

Every test here drives the real functions over HTTP (functions-framework under gunicorn,
as in Knative), with a real redis-server, the real local runner, the real Slurm cluster
and the Kubernetes API emulator. Three things are shared:

* :data:`FIGURES` counts what the suite did (deliveries, faults, inputs, ...); the
  package's conftest prints them when the session ends.
* :data:`EVIDENCE` keeps everything the suite produced (Redis contents, emulator
  objects, broker events, function logs, job directories, every HTTP error answer) and
  every credential it configured, for ``test_secrets``.
* :class:`Stack` (a dev stack on a key prefix of its own), :func:`deliver` (what a
  Knative Broker does with a 5xx: deliver again, with backoff) and :func:`converge`
  (the two-tick rule after a recovery).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from hpcbridge import events
from hpcbridge.dev import FUNCTIONS_DIR, DevStack, free_port
from hpcbridge.store import Store
from tests.functions.conftest import new_stack, write_targets

__all__ = ["EVIDENCE", "FIGURES", "SOURCE", "Stack", "assert_watched_once", "converge",
           "deliver", "local_done", "post", "preconditions", "tick", "tick_until", "wait_for"]

SOURCE = "/tests/reliability"
#: What the dev Broker (and Knative) redelivers: transport errors, 5xx and these.
RETRIED = {404, 408, 409, 429}
#: Settings of every stack here, on top of the function tests' STACK_ENV (2 s claims).
#: Jobs are declared lost only after the production default, so that any FAILED seen
#: here is the bridge's verdict on a real outcome, never a short test timer.
RELIABILITY_ENV = {"HPCBRIDGE_LOST_AFTER_S": "600"}


class Figures:
    """Counters of what the suite did, printed at the end of the session."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: collections.Counter[str] = collections.Counter()
        self.notes: dict[str, str] = {}

    def add(self, name: str, count: int = 1) -> None:
        with self._lock:
            self.counts[name] += count

    def note(self, name: str, text: str) -> None:
        with self._lock:
            self.notes[name] = text


FIGURES = Figures()


class Evidence:
    """Everything the suite produced, and every credential it configured."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.credentials: dict[str, str] = {}
        self._live: dict[str, Callable[[], str]] = {}
        self._frozen: dict[str, str] = {}
        self._paths: list[Path] = []
        self.answers: list[str] = []

    def credential(self, label: str, value: str) -> str:
        with self._lock:
            self.credentials[label] = value
        return value

    def source(self, label: str, read: Callable[[], str]) -> None:
        """A live source (a Redis, an emulator, a broker), read when collected."""
        with self._lock:
            self._live[label] = read

    def freeze(self, label: str) -> None:
        """Read a live source now, before it goes away (a server about to stop)."""
        with self._lock:
            read = self._live.pop(label, None)
        if read is not None:
            text = read()
            with self._lock:
                self._frozen[label] = text

    def path(self, path: Path) -> None:
        """A file or directory whose every file is evidence (logs, job directories)."""
        with self._lock:
            self._paths.append(path)

    def answer(self, url: str, response: httpx.Response) -> None:
        with self._lock:
            self.answers.append(f"{url} {response.status_code}\n"
                                + "".join(f"{k}: {v}\n" for k, v in response.headers.items())
                                + response.content.decode("utf-8", errors="replace"))

    def collect(self) -> dict[str, bytes]:
        """Every piece of evidence, by label."""
        for label in list(self._live):
            with contextlib.suppress(Exception):  # a source already gone was frozen
                self.freeze(label)
        with self._lock:
            found = {label: text.encode("utf-8", errors="surrogatepass")
                     for label, text in self._frozen.items()}
            found.update({f"http-error-{i}": a.encode("utf-8", errors="surrogatepass")
                          for i, a in enumerate(self.answers)})
            paths = list(self._paths)
        for root in paths:
            files = [root] if root.is_file() else sorted(p for p in root.rglob("*")
                                                        if p.is_file())
            for file in files:
                with contextlib.suppress(OSError):
                    found[str(file)] = file.read_bytes()
        return found


EVIDENCE = Evidence()


def dump_redis(client: redis.Redis) -> str:
    """Every key and value of a Redis, as text."""
    lines = []
    for key in sorted(client.scan_iter(count=1000)):
        kind = client.type(key)
        value: Any
        if kind == "string":
            value = client.get(key)
        elif kind == "hash":
            value = client.hgetall(key)
        elif kind == "list":
            value = client.lrange(key, 0, -1)
        elif kind == "set":
            value = sorted(client.smembers(key))
        elif kind == "zset":
            value = client.zrange(key, 0, -1, withscores=True)
        else:
            value = None
        lines.append(f"{key} {kind} {json.dumps(value, default=str)}")
    return "\n".join(lines)


def register_redis(label: str, url: str) -> None:
    def read() -> str:
        client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=5)
        try:
            return dump_redis(client)
        finally:
            client.close()

    EVIDENCE.source(label, read)


# -- HTTP ------------------------------------------------------------------------------


def post(url: str, event_type: str, data: Any, *, event_id: str | None = None,
         source: str = SOURCE, mode: str = "binary", client: httpx.Client | None = None,
         extensions: Mapping[str, str] | None = None, timeout: float = 60,
         headers: Mapping[str, str] | None = None) -> httpx.Response:
    """POST one CloudEvent (with ``headers`` on top, e.g. Authorization); any 4xx/5xx
    answer is kept as evidence."""
    attributes = {"type": event_type, "source": source, "id": event_id or uuid.uuid4().hex,
                  "specversion": "1.0", **(extensions or {})}
    if mode == "structured":
        body = json.dumps({**attributes, "datacontenttype": "application/json", "data": data})
        sent = {"content-type": "application/cloudevents+json"}
    else:
        body = json.dumps(data)
        sent = {f"ce-{k}": v for k, v in attributes.items()}
        sent["content-type"] = "application/json"
    answer = (client or httpx).post(url, content=body, headers={**sent, **(headers or {})},
                                    timeout=timeout)
    if answer.status_code >= 400:
        EVIDENCE.answer(url, answer)
    return answer


def deliver(url: str, event_type: str, data: Any, *, event_id: str | None = None,
            source: str = SOURCE, client: httpx.Client | None = None,
            deadline_s: float = 120, backoff_s: float = 0.1,
            on_attempt: Callable[[httpx.Response | None], None] | None = None
            ) -> httpx.Response:
    """Deliver as a Knative Broker does: again, with backoff, after a transport error,
    a 5xx, 404, 408, 409 or 429, until an answer that is final (2xx or another 4xx)."""
    event_id = event_id or uuid.uuid4().hex
    deadline = time.monotonic() + deadline_s
    delay = backoff_s
    while True:
        FIGURES.add("deliveries")
        try:
            answer: httpx.Response | None = post(url, event_type, data, event_id=event_id,
                                                 source=source, client=client)
        except httpx.TransportError:
            answer = None
        if on_attempt is not None:
            on_attempt(answer)
        if answer is not None and (answer.is_success or (
                answer.status_code < 500 and answer.status_code not in RETRIED)):
            return answer
        FIGURES.add("redeliveries")
        if time.monotonic() + delay > deadline:
            raise TimeoutError(f"no final answer from {url} within {deadline_s} s: "
                               f"{answer.status_code if answer else 'no answer'} "
                               f"{answer.text if answer else ''}")
        time.sleep(delay)
        delay = min(delay * 2, 2.0)


# -- stacks ----------------------------------------------------------------------------


class Stack:
    """A dev stack (three functions, broker) on a Redis key prefix of its own.

    Its logs, broker events and Redis keys are evidence for the secrets scan.
    """

    def __init__(self, redis_url: str, targets: Mapping[str, Mapping[str, Any]],
                 base: Path, *, prefix: str | None = None, **env: str) -> None:
        base.mkdir(parents=True, exist_ok=True)
        self.name = base.name
        self.redis_url = redis_url
        self.prefix = prefix or f"rel-{uuid.uuid4().hex[:8]}:"
        self.targets = {name: dict(entry) for name, entry in targets.items()}
        self.env = dict(env)
        targets_file = write_targets(base / f"targets-{uuid.uuid4().hex[:6]}.yaml",
                                     self.targets)
        self.logs = base / f"logs-{uuid.uuid4().hex[:6]}"
        self.dev: DevStack = new_stack(redis_url, targets_file, self.logs,
                                       HPCBRIDGE_REDIS_PREFIX=self.prefix,
                                       **{**RELIABILITY_ENV, **env})
        self._client = redis.Redis.from_url(redis_url, decode_responses=True,
                                            socket_timeout=10)
        self.store = Store(self._client, self.prefix)
        EVIDENCE.path(self.logs)
        for entry in self.targets.values():
            if entry.get("kind") == "local":
                EVIDENCE.path(Path(entry["workdir"]))

    @contextlib.contextmanager
    def one_function(self, function: str, base: Path, **env: str) -> Iterator[str]:
        """Another instance of one of this bridge's functions, on the same Redis prefix,
        targets and sink, with ``env`` on top (a fault point); its URL."""
        base.mkdir(parents=True, exist_ok=True)
        log_file = base / f"{function}.log"
        EVIDENCE.path(log_file)
        port = free_port()
        assert self.dev.broker is not None and self.dev.targets_file is not None
        environment = {**os.environ, **self.dev.extra_env,
                       "REDIS_URL": self.redis_url, "K_SINK": self.dev.broker.url,
                       "HPCBRIDGE_SOURCE": "/hpc-bridge/dev",
                       "HPCBRIDGE_TARGETS": str(Path(self.dev.targets_file).resolve()),
                       **env}
        with log_file.open("ab") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "functions_framework", "--source",
                 str(FUNCTIONS_DIR / function / "main.py"), "--target", function,
                 "--host", "127.0.0.1", "--port", str(port)],
                env=environment, stdout=output, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}/"
        try:
            def ready() -> bool:
                assert process.poll() is None, f"{function} died: see {log_file}"
                with contextlib.suppress(httpx.HTTPError):
                    return httpx.get(url, timeout=2).status_code == 200
                return False

            wait_for(ready, 60, lambda: f"{function} did not start: see {log_file}")
            yield url
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    @property
    def submit_url(self) -> str:
        return self.dev.functions["submit"]

    @property
    def poll_url(self) -> str:
        return self.dev.functions["poll"]

    @property
    def cancel_url(self) -> str:
        return self.dev.functions["cancel"]

    def start(self) -> Stack:
        self.dev.start()
        broker = self.dev.broker
        assert broker is not None
        EVIDENCE.source(f"broker-events-{self.name}-{self.prefix}",
                        lambda: json.dumps(broker.seen(), default=str))
        return self

    def stop(self) -> None:
        self.dev.stop()
        self._client.close()

    @contextlib.contextmanager
    def running(self) -> Iterator[Stack]:
        self.start()
        try:
            yield self
        finally:
            self.stop()

    def worker_pids(self, function: str) -> list[int]:
        """The gunicorn worker processes serving ``function`` (children of its arbiter)."""
        index = list(self.dev.functions).index(function)
        arbiter = self.dev._processes[index].pid
        return children(arbiter)

    def history(self, job_id: str) -> list[str]:
        return [entry["state"] for entry in self.store.history(job_id)]

    def states(self, job_ids: Iterable[str]) -> dict[str, str]:
        return {job_id: str(job.status.state)
                for job_id, job in self.store.load_many(list(job_ids)).items()}


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(p) for p in (task / "children").read_text().split()]
    return found


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def tick(stack: Stack, targets: list[str] | None = None) -> httpx.Response:
    answer = post(stack.poll_url, events.TICK, None if targets is None else
                  {"targets": targets})
    FIGURES.add("ticks")
    assert answer.status_code == 200, answer.text
    return answer


def local_done(workdir: str | Path, job_id: str) -> bool:
    """Whether the local target's runner recorded the job's end (the manager's truth)."""
    return (Path(workdir) / "jobs" / job_id / "exit.json").exists()


def wait_for(condition: Callable[[], bool], timeout_s: float, what: Callable[[], str],
             interval_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"gave up after {timeout_s} s: {what()}")
        time.sleep(interval_s)


def converge(stack: Stack, expected: Mapping[str, str | set[str]],
             native_done: Callable[[str], bool], *, targets: list[str] | None = None,
             timeout_s: float = 60,
             also: Callable[[], Mapping[str, str]] | None = None) -> int:
    """The two-tick rule: once the manager has finished every job (``native_done``),
    at most two ticks bring each job to its expected state (and make ``also``, a check
    that answers what is still wrong, answer nothing). The ticks it took."""
    wait_for(lambda: all(native_done(job_id) for job_id in expected), timeout_s,
             lambda: f"the manager has not finished "
                     f"{[j for j in expected if not native_done(j)][:10]}")
    wanted = {job_id: {want} if isinstance(want, str) else set(want)
              for job_id, want in expected.items()}
    for ticks in (1, 2):
        tick(stack, targets)
        states = stack.states(wanted)
        wrong: dict[str, Any] = {j: states.get(j) for j, want in wanted.items()
                                 if states.get(j) not in want}
        if not wrong and also is not None:
            wrong = dict(also())
        if not wrong:
            return ticks
    raise AssertionError(f"not converged two ticks after recovery: {len(wrong)} jobs, e.g. "
                         f"{dict(list(wrong.items())[:10])}, wanted "
                         f"{ {j: wanted[j] for j in list(wrong)[:10]} }")


def tick_until(stack: Stack, job_ids: Iterable[str], *states: str,
               timeout_s: float = 60) -> None:
    """Tick until every job is in one of ``states``."""
    ids = list(job_ids)

    def reached() -> bool:
        tick(stack)
        return all(state in states for state in stack.states(ids).values())

    wait_for(reached, timeout_s, lambda: f"states: {stack.states(ids)}", interval_s=0.1)


def tick_until_seen(stack: Stack, job_ids: Iterable[str], state: str,
                    timeout_s: float = 60) -> None:
    """Tick until every job is, or has been, in ``state``."""
    ids = list(job_ids)

    def reached() -> bool:
        tick(stack)
        return all(state in stack.history(job_id) for job_id in ids)

    wait_for(reached, timeout_s, lambda: f"states: {stack.states(ids)}", interval_s=0.1)


def assert_watched_once(stack: Stack, job_ids: Iterable[str]) -> None:
    """No job watched twice: each job's history has each state once, in one line."""
    for job_id in job_ids:
        history = stack.history(job_id)
        assert history and history[0] == "ACCEPTED", (job_id, history)
        assert len(history) == len(set(history)), f"{job_id} watched twice: {history}"


@contextlib.contextmanager
def preconditions() -> Iterator[None]:
    """What a test checks before the property it is about. In a test that documents a
    gap (strict xfail, raises=AssertionError), a failed precondition must fail the test,
    not pass for the expected failure: it is turned into a plain failure."""
    try:
        yield
    except AssertionError as exc:
        pytest.fail(f"precondition failed: {exc}")


def secret_variants(value: str) -> set[str]:
    """The forms in which a credential could leak: as is, URL-quoted, and for a JWT
    its signature (the part only the key holder can make; header and claims are not
    secret and are the same in many tokens)."""
    forms = {value, urllib.parse.quote(value, safe=""), urllib.parse.quote_plus(value)}
    parts = value.split(".")
    if len(parts) == 3 and all(parts):
        forms.add(parts[2])
    return {form for form in forms if len(form) >= 8}
