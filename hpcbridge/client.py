"""The Python client of hpc-bridge: submit a job, wait for it, read its log, cancel it.

For a pipeline step (Argo, Tekton, Kubeflow, a script), the whole step::

    from hpcbridge import client

    job_id = client.submit({"target": "hpc", "script": "#!/bin/sh\\nsrun ./simulate\\n"},
                           job_id="run-42-simulate")  # a retried step finds the same job
    status = client.wait(job_id, timeout_s=6 * 3600)
    print(client.logs(job_id, tail=100))
    raise SystemExit(client.exit_code(status))        # the step ends as the job did

As an Argo ``script`` template (a Tekton step takes the same ``image``, ``env`` and
``script``)::

    - name: simulate
      script:
        image: registry.example.org/you/hpc-bridge:0.1.0
        command: [python]
        env:
          - name: HPCBRIDGE_BROKER
            value: http://broker-ingress.knative-eventing.svc.cluster.local/hpc-bridge/hpc-bridge
          - name: REDIS_URL
            value: redis://hpc-bridge-redis.hpc-bridge.svc.cluster.local:6379/0
        source: |
          from hpcbridge import client
          job = client.submit({"target": "hpc", "command": ["srun", "./simulate"]},
                              job_id="{{workflow.name}}-simulate")
          raise SystemExit(client.exit_code(client.wait(job)))

Giving ``job_id`` makes the step idempotent: the bridge runs one job per id, so a retried
step submits nothing new and waits for the job it already started.

Where things are, first found wins:

- the broker: the ``broker`` argument, ``HPCBRIDGE_BROKER``, the running dev stack
  (``hpc-bridge dev`` records its addresses in a state file);
- job state: Redis from the ``redis_url`` argument, else the Kubernetes mirror when a
  ``kubeconfig`` argument is given, else ``REDIS_URL``, the dev stack's Redis, and last
  the Kubernetes mirror with ``KUBECONFIG``, ``~/.kube/config`` or the pod's service
  account. The mirror is the ConfigMap the bridge writes per job (labels
  ``app.kubernetes.io/managed-by=hpc-bridge``, data ``status.json``); reading it needs
  ``list`` on ConfigMaps (and on Events for a job's history). A Redis that does not
  answer while a cluster is configured is replaced by the mirror, with a notice;
- targets (for :func:`logs` and :meth:`Client.targets`): the ``targets_file`` argument,
  ``HPCBRIDGE_TARGETS``, the dev stack's, else the one ``local`` target. Logs are read
  from the manager through the job's target adapter, with the targets file and the
  credentials the functions use.

Every error is a :class:`ClientError` with a sentence fit for a person.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import httpx

from adapters.base import ConfigError
from hpcbridge import events
from hpcbridge.credentials import CredentialError
from hpcbridge.model import (
    JobRequest,
    JobStatus,
    RequestError,
    State,
    job_id_for_event,
    validate_job_id,
)
from hpcbridge.naming import JOB_ID_LABEL, MANAGED_BY, STATE_LABEL, TARGET_LABEL, object_name
from hpcbridge.outputs import REDIS
from hpcbridge.store import Store, StoreUnavailable

if TYPE_CHECKING:
    from hpcbridge.targets import Targets

__all__ = [
    "Client",
    "ClientError",
    "Config",
    "InvalidRequest",
    "JobNotFound",
    "NotConfigured",
    "TargetReport",
    "Unavailable",
    "WaitTimeout",
    "cancel",
    "exit_code",
    "logs",
    "output",
    "status",
    "submit",
    "wait",
]

log = logging.getLogger(__name__)

SOURCE = "/hpc-bridge/client"
#: How long a job may be missing from the state before :meth:`Client.wait` gives up: the
#: submit function records it within moments of the event, unless it refused the request.
MISSING_S = 120.0
#: How long :meth:`Client.wait` rides out a state store that stopped answering.
OUTAGE_S = 300.0
_IN_CLUSTER_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
_TERMINAL_NAMES = ",".join(sorted(str(s) for s in State if s.terminal))
_LABEL_VALUE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")


# -- errors --------------------------------------------------------------------------------

class ClientError(Exception):
    """Something the caller can act on; the message is a sentence for a person."""


class NotConfigured(ClientError):
    """No broker, Redis or cluster is configured for what was asked."""


class Unavailable(ClientError):
    """The broker, Redis or the Kubernetes API did not answer."""


class JobNotFound(ClientError):
    def __init__(self, job_id: str, detail: str = "") -> None:
        super().__init__(f"no job {job_id}{detail}")
        self.job_id = job_id


class InvalidRequest(ClientError):
    """The JobRequest would be refused; ``field`` names the culprit."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(f"invalid job: {field}: {message}" if field else f"invalid job: {message}")
        self.field = field


class WaitTimeout(ClientError, TimeoutError):
    def __init__(self, job_id: str, timeout_s: float, last: JobStatus | None) -> None:
        state = f" (still {last.state})" if last is not None else ""
        super().__init__(f"{job_id} did not end within {timeout_s:g} s{state}")
        self.job_id = job_id
        self.last = last


# -- configuration -------------------------------------------------------------------------

def dev_stack_state() -> dict[str, Any]:
    """What a running ``hpc-bridge dev`` recorded (empty when none runs)."""
    from hpcbridge.dev import state_file

    try:
        state = json.loads(state_file().read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(state, dict):
        return {}
    pid = state.get("pid")
    if isinstance(pid, int) and pid > 0:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return {}  # a stack that died without cleaning up
        except PermissionError:
            pass
    return state


def _safe_url(url: str) -> str:
    """``url`` without the password it may carry."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


@dataclasses.dataclass(frozen=True, slots=True)
class Config:
    """Where the broker, the job state and the targets are; see the module docstring."""

    broker: str | None = None
    redis_url: str | None = None
    targets_file: str | None = None
    kubeconfig: str | None = None
    in_cluster: bool = False
    namespace: str | None = None
    redis_prefix: str = "hpcbridge:"
    #: setting -> where it came from, for error messages.
    origins: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def resolve(cls, *, broker: str | None = None, redis_url: str | None = None,
                targets_file: str | None = None, kubeconfig: str | None = None,
                namespace: str | None = None,
                environ: Mapping[str, str] | None = None) -> Config:
        env = os.environ if environ is None else environ
        dev = dev_stack_state()
        origins: dict[str, str] = {}

        def first(name: str, *choices: tuple[Any, str]) -> Any:
            for value, origin in choices:
                if value:
                    origins[name] = origin
                    return value
            return None

        from hpcbridge.dev import state_file

        stack = f"the dev stack ({state_file()})"
        broker = first("broker", (broker, "argument"), (env.get("HPCBRIDGE_BROKER"),
                       "HPCBRIDGE_BROKER"), (dev.get("broker"), stack))
        targets_file = first("targets_file", (targets_file, "argument"),
                             (env.get("HPCBRIDGE_TARGETS"), "HPCBRIDGE_TARGETS"),
                             (dev.get("targets_file"), stack))
        if kubeconfig and not redis_url:
            redis_url = None  # asked for the mirror, and not for a Redis
            origins["kubeconfig"] = "argument"
        else:
            redis_url = first("redis_url", (redis_url, "argument"),
                              (env.get("REDIS_URL"), "REDIS_URL"), (dev.get("redis_url"), stack))
            default = Path.home() / ".kube" / "config"
            kubeconfig = first("kubeconfig", (kubeconfig, "argument"),
                               (env.get("KUBECONFIG"), "KUBECONFIG"),
                               (str(default) if default.is_file() else None, str(default)))
        in_cluster = bool(env.get("KUBERNETES_SERVICE_HOST")) and _IN_CLUSTER_TOKEN.is_file()
        return cls(broker=broker, redis_url=redis_url, targets_file=targets_file,
                   kubeconfig=kubeconfig, in_cluster=in_cluster, namespace=namespace,
                   redis_prefix=env.get("HPCBRIDGE_REDIS_PREFIX") or "hpcbridge:",
                   origins=origins)

    @property
    def cluster(self) -> bool:
        """Whether a Kubernetes cluster (and so the mirror) is configured."""
        return bool(self.kubeconfig) or self.in_cluster

    def origin(self, name: str) -> str:
        where = self.origins.get(name)
        return f" (from {where})" if where and where != "argument" else ""


# -- where job state is read -----------------------------------------------------------------

@dataclasses.dataclass(frozen=True, slots=True)
class _Job:
    status: JobStatus
    labels: Mapping[str, str]
    namespace: str | None = None
    #: the log tail of the job's ConfigMap (the mirror's reading; Redis keeps its own)
    log_tail: str | None = None


def _matches(job: _Job, targets: Sequence[str], states: Sequence[State],
             labels: Mapping[str, str]) -> bool:
    return ((not targets or job.status.target in targets)
            and (not states or job.status.state in states)
            and all(job.labels.get(k) == v for k, v in labels.items()))


def _newest_first(jobs: Sequence[_Job]) -> list[_Job]:
    return sorted(jobs, key=lambda j: (j.status.submitted_at or 0.0, j.status.job_id),
                  reverse=True)


class _Reader(Protocol):
    kind: str
    description: str
    poll_s: float

    def get(self, job_id: str) -> _Job | None: ...

    def history(self, job: _Job) -> list[dict[str, Any]]: ...

    def jobs(self, targets: Sequence[str], states: Sequence[State],
             labels: Mapping[str, str], limit: int) -> list[_Job]: ...

    def active(self, targets: Sequence[str]) -> list[_Job]: ...

    def active_count(self, target: str) -> int: ...

    def log_tail(self, job: _Job) -> str | None: ...

    def output(self, job: _Job, path: str) -> bytes | None: ...


class _RedisReader:
    """The truth: the job hashes, histories and active sets in Redis.

    Given a namespace, only that namespace's jobs are seen (a request's ``namespace``,
    else the bridge's default, ``HPCBRIDGE_NAMESPACE``), as through the mirror.
    """

    kind = "redis"
    poll_s = 0.2

    def __init__(self, store: Store, url: str, namespace: str | None = None) -> None:
        self._store = store
        self._namespace = namespace
        self._default_namespace = os.environ.get("HPCBRIDGE_NAMESPACE") or "default"
        self.description = f"Redis at {_safe_url(url)}" + (f", namespace {namespace}"
                                                            if namespace else "")

    def _job(self, stored: Any) -> _Job | None:
        labels = stored.request.get("labels")
        namespace = stored.request.get("namespace") or self._default_namespace
        if self._namespace and namespace != self._namespace:
            return None
        return _Job(stored.status, labels if isinstance(labels, Mapping) else {}, namespace)

    def get(self, job_id: str) -> _Job | None:
        stored = self._store.load(job_id)
        return None if stored is None else self._job(stored)

    def history(self, job: _Job) -> list[dict[str, Any]]:
        return self._store.history(job.status.job_id)

    def jobs(self, targets: Sequence[str], states: Sequence[State],
             labels: Mapping[str, str], limit: int) -> list[_Job]:
        """Newest first, scanning the job index a page at a time until ``limit`` match."""
        found: list[_Job] = []
        start, page = 0, 100
        while len(found) < limit:
            ids = self._store.recent(page, start)
            if not ids:
                break
            start += len(ids)
            page = min(page * 2, 1000)
            loaded = self._store.load_many(ids)
            for job_id in ids:
                job = self._job(loaded[job_id]) if job_id in loaded else None
                if job is not None and _matches(job, targets, states, labels):
                    found.append(job)
        return found[:limit]

    def active(self, targets: Sequence[str]) -> list[_Job]:
        ids = [job_id for target, members in self._store.active_jobs().items()
               if not targets or target in targets for job_id in members]
        jobs = (self._job(stored) for stored in self._store.load_many(ids).values())
        return _newest_first([job for job in jobs if job is not None])

    def active_count(self, target: str) -> int:
        if self._namespace:
            return len(self.active([target]))
        return self._store.active_count(target)

    def log_tail(self, job: _Job) -> str | None:
        return self._store.tail(job.status.job_id)

    def output(self, job: _Job, path: str) -> bytes | None:
        return self._store.output(job.status.job_id, path)


class _MirrorReader:
    """The Kubernetes mirror: one ConfigMap per job, labelled, with ``status.json``."""

    kind = "mirror"
    poll_s = 1.0

    def __init__(self, api_client: Any, namespace: str | None) -> None:
        from kubernetes import client  # only on this path: it is slow to import

        self._core = client.CoreV1Api(api_client)
        self._namespace = namespace
        self.description = "the Kubernetes mirror" + (f" in namespace {namespace}"
                                                      if namespace else "")

    @classmethod
    def open(cls, config: Config) -> _MirrorReader:
        from kubernetes import client
        from kubernetes import config as kube_config

        try:
            if config.kubeconfig:
                api = kube_config.new_client_from_config(config_file=config.kubeconfig)
            else:
                configuration = client.Configuration()
                kube_config.load_incluster_config(client_configuration=configuration)
                api = client.ApiClient(configuration)
        except (kube_config.ConfigException, OSError, ValueError) as exc:
            where = config.kubeconfig or "the pod's service account"
            raise NotConfigured(f"cannot use the cluster configuration in {where}: "
                                f"{exc}") from None
        return cls(api, config.namespace)

    def _call(self, what: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.rest import ApiException
        from urllib3.exceptions import HTTPError

        try:
            answer = call(*args, _preload_content=False, **kwargs)
        except ApiException as exc:
            hint = ""
            if exc.status in (401, 403) and not self._namespace:
                hint = "; with access to one namespace only, name it with --namespace"
            if exc.status in (401, 403) or (exc.status or 0) < 500:
                raise ClientError(f"the Kubernetes API refused to {what}: {exc.status} "
                                  f"{exc.reason}{hint}") from None
            raise Unavailable(f"the Kubernetes API could not {what}: {exc.status} "
                              f"{exc.reason}") from None
        except (HTTPError, OSError) as exc:
            raise Unavailable(f"the Kubernetes API is unreachable: "
                              f"{type(exc).__name__}") from None
        return json.loads(answer.data)

    def _list(self, selector: Sequence[str]) -> list[_Job]:
        labels = ",".join([f"{MANAGED_BY[0]}={MANAGED_BY[1]}", *selector])
        if self._namespace:
            answer = self._call("list ConfigMaps", self._core.list_namespaced_config_map,
                                self._namespace, label_selector=labels)
        else:
            answer = self._call("list ConfigMaps",
                                self._core.list_config_map_for_all_namespaces,
                                label_selector=labels)
        jobs = []
        for item in answer.get("items") or []:
            metadata = item.get("metadata") or {}
            try:
                status = JobStatus.from_dict(json.loads((item.get("data") or {})["status.json"]))
            except (KeyError, TypeError, ValueError):
                continue  # not (yet) a job's status: nothing to show
            jobs.append(_Job(status, metadata.get("labels") or {}, metadata.get("namespace"),
                             item["data"].get("log_tail")))
        return jobs

    def get(self, job_id: str) -> _Job | None:
        try:
            validate_job_id(job_id)
        except RequestError:
            return None  # no job has that id, and it would not make a label selector
        found = [j for j in self._list([f"{JOB_ID_LABEL}={job_id}"])
                 if j.status.job_id == job_id]
        return max(found, key=lambda j: j.status.updated_at or 0.0) if found else None

    def history(self, job: _Job) -> list[dict[str, Any]]:
        """The transitions the bridge recorded as Events on the proxy pod (Kubernetes
        keeps Events for an hour)."""
        name = object_name(job.status.job_id)
        answer = self._call("list Events", self._core.list_namespaced_event,
                            job.namespace or "default",
                            field_selector=f"involvedObject.kind=Pod,involvedObject.name={name}")
        entries = []
        for event in answer.get("items") or []:
            state = str(event.get("reason") or "").upper()
            source = (event.get("source") or {}).get("component")
            if state not in State.__members__ or "hpc-bridge" not in (
                    source, event.get("reportingComponent")):
                continue
            stamp = event.get("firstTimestamp") or event.get("eventTime")
            entries.append({"at": _epoch(stamp), "state": state,
                            "note": event.get("message"),
                            "_order": (stamp or "", event["metadata"]["name"])})
        entries.sort(key=lambda e: e.pop("_order"))
        return entries

    def jobs(self, targets: Sequence[str], states: Sequence[State],
             labels: Mapping[str, str], limit: int) -> list[_Job]:
        selector = [f"{k}={v}" for k, v in labels.items()]
        if targets and all(_LABEL_VALUE.fullmatch(t) for t in targets):
            selector.append(f"{TARGET_LABEL} in ({','.join(targets)})")
        if states:
            selector.append(f"{STATE_LABEL} in ({','.join(str(s) for s in states)})")
        found = [j for j in self._list(selector) if _matches(j, targets, states, labels)]
        return _newest_first(found)[:limit]

    def active(self, targets: Sequence[str]) -> list[_Job]:
        found = self._list([f"{STATE_LABEL} notin ({_TERMINAL_NAMES})"])
        return _newest_first([j for j in found if not j.status.state.terminal
                              and (not targets or j.status.target in targets)])

    def active_count(self, target: str) -> int:
        return len(self.active([target]))

    def log_tail(self, job: _Job) -> str | None:
        return job.log_tail

    def output(self, job: _Job, path: str) -> bytes | None:
        return None  # kept in Redis, which this reading does without


def _epoch(stamp: str | None) -> float | None:
    if not stamp:
        return None
    from datetime import datetime

    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


# -- targets -------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, slots=True)
class TargetReport:
    """One configured target, as :meth:`Client.targets` found it."""

    name: str
    kind: str
    #: Whether the manager answered a cheap call (see :func:`_probe`).
    answers: bool
    #: The manager's error, or a summary of what it offers.
    detail: str
    #: Jobs the bridge is following there (None: the job state could not be read).
    active: int | None
    capacity: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "answers": self.answers,
                "active": self.active, "detail": self.detail, "capacity": dict(self.capacity)}


def _describe_capacity(capacity: Mapping[str, Any]) -> str:
    parts = []
    for key in ("nodes", "cpus", "gpus"):
        if capacity.get(key):
            count = capacity[key]
            parts.append(f"{count} {key if count != 1 else key[:-1]}")
    if capacity.get("memory_mb"):
        memory = int(capacity["memory_mb"])
        parts.append(f"{memory // 1024} GiB" if memory >= 1024 else f"{memory} MiB")
    return ", ".join(parts)


def _probe(targets: Targets, name: str) -> tuple[bool, str, dict[str, Any]]:
    """Ask the target's manager one cheap question: whether it answered, what it said.

    An adapter that reports capacity is asked for it (Slurm: one ``GET /nodes`` with the
    bridge's token, so a refused token shows too; Slurm over SSH: ``sinfo``; Ray: the
    cluster status; local: the adapter's work directory is made usable when the adapter
    is built, then the machine's size is read). One that finds jobs by tag is asked for a
    tag no job carries (LSF: ``bjobs -J``; IBM Quantum: one filtered job list). Any other
    is asked what a poll tick asks, the status of its jobs, here of none (Flux:
    ``GET /v1/jobs``). ``status_many([])`` is the last resort because it can prove
    nothing: the local adapter answers it without looking at anything.
    """
    from hpcbridge.credentials import redact

    try:
        adapter = targets.adapter(name)
        if adapter.capabilities.report_capacity:
            capacity = dict(adapter.capacity())
            return True, _describe_capacity(capacity), capacity
        if adapter.capabilities.find_by_tag:
            adapter.find_by_tag(f"probe-{uuid.uuid4().hex[:16]}")
        else:
            adapter.status_many([])
        return True, "", {}
    except Exception as exc:
        return False, redact(str(exc)) or type(exc).__name__, {}


# -- the client ----------------------------------------------------------------------------

class Client:
    """One configuration, its connections, and everything the module functions do.

    ``Client()`` takes its settings from the environment or the dev stack; keyword
    arguments override them (see :meth:`Config.resolve`). Use it as a context manager, or
    :meth:`close` it, to release the adapters that :meth:`logs` and :meth:`targets` built.
    """

    def __init__(self, config: Config | None = None, *, broker: str | None = None,
                 redis_url: str | None = None, targets_file: str | None = None,
                 kubeconfig: str | None = None, namespace: str | None = None,
                 source: str = SOURCE, notice: Callable[[str], None] | None = None) -> None:
        self.config = config or Config.resolve(
            broker=broker, redis_url=redis_url, targets_file=targets_file,
            kubeconfig=kubeconfig, namespace=namespace)
        self.source = source
        self._notice = notice or log.warning
        self._state: _Reader | None = None
        self._targets: Targets | None = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._targets is not None:
            self._targets.close()
            self._targets = None

    # -- plumbing -------------------------------------------------------------------------

    def _reader(self) -> _Reader:
        if self._state is not None:
            return self._state
        config = self.config
        if config.redis_url:
            store = Store.from_url(config.redis_url, config.redis_prefix)
            try:
                store.ping()
                self._state = _RedisReader(store, config.redis_url, config.namespace)
                return self._state
            except StoreUnavailable as exc:
                where = f"Redis at {_safe_url(config.redis_url)}{config.origin('redis_url')}"
                if not config.cluster:
                    hint = " (is the dev stack running? start it with 'hpc-bridge dev')" \
                        if config.origins.get("redis_url", "").startswith("the dev") else ""
                    raise Unavailable(f"{where} is unreachable: {exc}{hint}") from None
                self._notice(f"{where} is unreachable; reading the Kubernetes mirror instead")
        elif not config.cluster:
            raise NotConfigured("no job state: give --redis or set REDIS_URL, start the dev "
                                "stack with 'hpc-bridge dev', or give --kubeconfig to read "
                                "the Kubernetes mirror")
        self._state = _MirrorReader.open(config)
        return self._state

    def _call(self, call: Callable[..., Any], *args: Any) -> Any:
        try:
            return call(*args)
        except StoreUnavailable as exc:
            raise Unavailable(str(exc)) from None

    @property
    def reads(self) -> str:
        """``redis`` or ``mirror``: where job state comes from."""
        return self._reader().kind

    @property
    def reads_from(self) -> str:
        """Where job state comes from, for people: ``Redis at ...``, ``the Kubernetes
        mirror``."""
        return self._reader().description

    def _send(self, event_type: str, data: dict[str, Any]) -> events.CloudEvent:
        broker = self.config.broker
        if not broker:
            raise NotConfigured("no broker: give --broker, set HPCBRIDGE_BROKER, or start "
                                "the dev stack with 'hpc-bridge dev'")
        event = events.CloudEvent({"type": event_type, "source": self.source,
                                   "id": uuid.uuid4().hex,
                                   "datacontenttype": "application/json"}, data)
        headers, body = events.encode(event)
        where = f"{_safe_url(broker)}{self.config.origin('broker')}"
        try:
            answer = httpx.post(broker, headers=headers, content=body, timeout=30)
        except httpx.HTTPError as exc:
            raise Unavailable(f"cannot reach the broker at {where}: "
                              f"{type(exc).__name__}") from None
        if not answer.is_success:
            raise ClientError(f"the broker at {where} refused the event: "
                              f"{answer.status_code} {answer.text.strip()[:300]}")
        return event

    def _load_targets(self) -> Targets:
        if self._targets is None:
            from hpcbridge.targets import Targets

            try:
                self._targets = Targets.load(self.config.targets_file)
            except ConfigError as exc:
                raise ClientError(str(exc)) from None
        return self._targets

    def _job(self, job_id: str) -> _Job:
        job = self._call(self._reader().get, job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    # -- jobs -----------------------------------------------------------------------------

    def submit(self, request: Mapping[str, Any] | JobRequest, *,
               job_id: str | None = None) -> str:
        """Send ``hpcbridge.job.requested``; the job's id.

        ``request`` is a JobRequest or its JSON form; ``job_id`` overrides the one it
        names. Without an id the bridge derives one from the event, returned here. The
        request is validated first, and its target checked against the targets file when
        one is configured.
        """
        data = request.to_dict() if isinstance(request, JobRequest) else dict(request)
        if job_id is not None:
            data["job_id"] = job_id
        try:
            parsed = JobRequest.from_dict(data)
        except RequestError as exc:
            raise InvalidRequest(exc.field, exc.message) from None
        if self.config.targets_file:
            targets = self._load_targets()
            if parsed.target not in targets:
                raise InvalidRequest("target", f"unknown target {parsed.target!r} (the "
                                     f"targets file {self.config.targets_file} has "
                                     f"{', '.join(sorted(targets))})")
        event = self._send(events.REQUESTED, parsed.to_dict())
        return parsed.job_id or job_id_for_event(event["source"], event["id"])

    def status(self, job_id: str) -> JobStatus:
        return self._job(job_id).status

    def history(self, job_id: str) -> list[dict[str, Any]]:
        """The job's transitions, oldest first: ``at``, ``state`` and, when known,
        ``native_state``, ``reason`` and ``note``."""
        job = self._job(job_id)
        return self._call(self._reader().history, job)

    def jobs(self, *, targets: Sequence[str] = (), states: Sequence[State | str] = (),
             labels: Mapping[str, str] | None = None, limit: int = 50) -> list[JobStatus]:
        """Jobs newest first, those on any of ``targets``, in any of ``states`` and with
        all of ``labels`` (the request's labels)."""
        try:
            wanted = [State(str(s).upper()) for s in states]
        except ValueError:
            raise ClientError(f"unknown state in {', '.join(map(str, states))} (states: "
                              f"{', '.join(State)})") from None
        found = self._call(self._reader().jobs, list(targets), wanted, dict(labels or {}),
                           limit)
        return [j.status for j in found]

    def active(self, *, targets: Sequence[str] = ()) -> list[JobStatus]:
        """Jobs that have not ended, newest first."""
        return [j.status for j in self._call(self._reader().active, list(targets))]

    def wait(self, job_id: str, *, timeout_s: float | None = None,
             poll_s: float | None = None, missing_s: float = MISSING_S,
             on_change: Callable[[JobStatus], None] | None = None,
             on_poll: Callable[[JobStatus | None], None] | None = None) -> JobStatus:
        """Poll the job's state until it has ended; its terminal status.

        ``on_change`` gets each new (state, native state), ``on_poll`` every reading
        (None while the bridge has no record yet). :class:`JobNotFound` after
        ``missing_s`` without a record (the submit function refused the request: see its
        ``hpcbridge.job.rejected`` event), :class:`WaitTimeout` after ``timeout_s``; a
        store that stops answering is waited out for :data:`OUTAGE_S`.
        """
        reader = self._reader()
        interval = poll_s or reader.poll_s
        started = time.monotonic()
        last: JobStatus | None = None
        outage: float | None = None
        while True:
            now = time.monotonic()
            try:
                job = self._call(reader.get, job_id)
                outage = None
            except Unavailable:
                outage = outage or now
                if now - outage > OUTAGE_S:
                    raise
                job = None
            status = None if job is None else job.status
            if on_poll is not None and outage is None:
                on_poll(status)
            if status is not None:
                if last is None or (status.state, status.native_state) != (
                        last.state, last.native_state):
                    if on_change is not None:
                        on_change(status)
                last = status
                if status.state.terminal:
                    return status
            elif last is None and outage is None and now - started > missing_s:
                raise JobNotFound(job_id, f" after {missing_s:g} s: the bridge may have "
                                  "refused the request (see its hpcbridge.job.rejected "
                                  "event and the submit function's log)")
            if timeout_s is not None and now - started >= timeout_s:
                raise WaitTimeout(job_id, timeout_s, last)
            pause = interval if timeout_s is None else min(
                interval, max(0.0, started + timeout_s - time.monotonic()))
            time.sleep(pause)

    def cancel(self, job_id: str) -> JobStatus:
        """Send ``hpcbridge.job.cancel`` unless the job already ended; its status before.

        The cancel is asynchronous: :meth:`wait` for the CANCELLED (or other final) state.
        """
        status = self.status(job_id)
        if not status.state.terminal:
            self._send(events.CANCEL, {"job_id": job_id})
        return status

    # -- logs -----------------------------------------------------------------------------

    def _read_log(self, status: JobStatus, tail: int | None) -> str:
        if not status.native_id:
            return ""  # not on the manager yet: no output
        from adapters.base import AdapterError

        targets = self._load_targets()
        try:
            adapter = targets.adapter(status.target)
        except RequestError:
            where = self.config.targets_file or "the default targets (no targets file)"
            raise ClientError(
                f"the target {status.target!r} of {status.job_id} is not in {where}; give "
                "--targets or set HPCBRIDGE_TARGETS to the bridge's targets file") from None
        except AdapterError as exc:
            raise ClientError(str(exc)) from None
        if not adapter.capabilities.logs:
            raise ClientError(f"target {status.target!r} ({adapter.kind}) cannot fetch logs")
        try:
            return adapter.logs(status.native_id, tail)
        except AdapterError as exc:
            from hpcbridge.credentials import redact

            raise ClientError(redact(str(exc))) from None

    def logs(self, job_id: str, tail: int | None = None) -> str:
        """The job's output so far (its last ``tail`` lines), fetched from the manager."""
        return self._read_log(self.status(job_id), tail)

    def follow_logs(self, job_id: str, *, tail: int | None = None,
                    poll_s: float = 0.5, missing_s: float = MISSING_S) -> Iterator[str]:
        """The job's output as it is written, until the job has ended.

        The first chunk is the output so far (its last ``tail`` lines); then each
        reading yields only what is new. While the job runs, only complete lines are
        yielded; the rest comes when it ends. Each reading fetches the whole log, as the
        adapters read a log whole or by its last lines.
        """
        sent: int | None = None
        started = time.monotonic()
        while True:
            try:
                status = self.status(job_id)
            except JobNotFound:
                if time.monotonic() - started > missing_s:
                    raise
                time.sleep(poll_s)
                continue
            ended = status.state.terminal
            text = self._read_log(status, None)
            if sent is None:
                kept = text.splitlines(keepends=True)[-tail:] if tail else []
                sent = len(text) - len("".join(kept)) if tail is not None else 0
            sent = min(sent, len(text))  # a log that shrank: carry on from its end
            new = text[sent:]
            if not ended:
                new = new[:new.rfind("\n") + 1]
            if new:
                sent += len(new)
                yield new
            if ended:
                return
            time.sleep(poll_s)

    def log_tail(self, job_id: str) -> str:
        """The last lines of the job's output as the bridge keeps them: refreshed by the
        poll tick while the job runs (``HPCBRIDGE_LOG_TAIL_LINES``), final once it ended.
        Unlike :meth:`logs` it needs no access to the manager, only to Redis or the mirror.
        """
        job = self._job(job_id)
        return self._call(self._reader().log_tail, job) or ""

    # -- outputs --------------------------------------------------------------------------

    def outputs(self, job_id: str) -> dict[str, dict[str, Any]]:
        """What became of each output file the job named, by path: ``location`` (``redis``
        or ``s3://bucket/key``), ``bytes`` and ``sha256``, or an ``error``. Empty until
        the job has ended, and for a job that named none."""
        return {path: dict(entry) for path, entry in (self.status(job_id).outputs or {}).items()}

    def output(self, job_id: str, path: str) -> bytes:
        """The content of a collected output file, checked against its recorded digest.

        A file kept in Redis needs Redis (not the mirror); one in a bucket needs the
        bucket's settings (``HPCBRIDGE_S3_*``, see docs/configuration.md) here too.
        """
        job = self._job(job_id)
        entry = (job.status.outputs or {}).get(path)
        if entry is None:
            named = ", ".join(job.status.outputs or {}) or "none collected (yet)"
            raise ClientError(f"{job_id} has no output {path!r} (its outputs: {named})")
        if "error" in entry:
            raise ClientError(f"{path} of {job_id} was not collected: {entry['error']}")
        location = str(entry["location"])
        if location == REDIS:
            data = self._call(self._reader().output, job, path)
            if data is None:
                raise ClientError(f"{path} of {job_id} is kept in Redis, which this client "
                                  f"does not read ({self._reader().description}); give --redis")
        else:
            data = _fetch_from_bucket(location)
        if hashlib.sha256(data).hexdigest() != entry.get("sha256"):
            raise ClientError(f"{path} of {job_id} at {location} does not match the digest "
                              "recorded when it was collected")
        return data

    # -- targets --------------------------------------------------------------------------

    def targets(self) -> list[TargetReport]:
        """Every configured target: its kind, whether its manager answers (see
        :func:`_probe`; all are asked at the same time), and its active jobs."""
        targets = self._load_targets()
        names = list(targets)
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(names)))) as pool:
            probes = list(pool.map(lambda name: _probe(targets, name), names))
        counts: dict[str, int | None] = dict.fromkeys(names)
        try:
            reader = self._reader()
            for name in names:
                counts[name] = self._call(reader.active_count, name)
        except ClientError as exc:
            self._notice(f"active jobs unknown: {exc}")
        return [TargetReport(name, str(targets[name]["kind"]), answers, detail, counts[name],
                             capacity)
                for name, (answers, detail, capacity) in zip(names, probes, strict=True)]


def exit_code(status: JobStatus) -> int:
    """The exit status a pipeline step should end with: 0 for a job that succeeded, the
    job's own exit code when it ended with one (1-255), else 1."""
    if status.state is State.SUCCEEDED:
        return 0
    if status.exit_code is not None and 0 < status.exit_code <= 255:
        return status.exit_code
    return 1


def _fetch_from_bucket(location: str) -> bytes:
    from hpcbridge.s3 import Bucket, BucketConfig, BucketError, BucketUnavailable

    try:
        config = BucketConfig.from_env(os.environ)
    except ConfigError as exc:
        raise NotConfigured(f"cannot read {location}: {exc}") from None
    if config is None:
        raise NotConfigured(f"{location} is in a bucket: set HPCBRIDGE_S3_BUCKET, "
                            "HPCBRIDGE_S3_ENDPOINT and its credentials as the bridge has them")
    try:
        with Bucket(config) as bucket:
            return bucket.get(location)
    except BucketUnavailable as exc:
        raise Unavailable(str(exc)) from None
    except (BucketError, CredentialError) as exc:
        raise ClientError(str(exc)) from None


# -- one call each, configured from the environment ---------------------------------------

def submit(request: Mapping[str, Any] | JobRequest, *, broker: str | None = None,
           job_id: str | None = None, targets_file: str | None = None) -> str:
    """Submit ``request`` (a JobRequest or its JSON form); the job id."""
    with Client(broker=broker, targets_file=targets_file) as client:
        return client.submit(request, job_id=job_id)


def wait(job_id: str, *, timeout_s: float | None = None, redis_url: str | None = None,
         kubeconfig: str | None = None, poll_s: float | None = None,
         on_change: Callable[[JobStatus], None] | None = None) -> JobStatus:
    """Wait until the job has ended; its terminal status (see :meth:`Client.wait`)."""
    with Client(redis_url=redis_url, kubeconfig=kubeconfig) as client:
        return client.wait(job_id, timeout_s=timeout_s, poll_s=poll_s, on_change=on_change)


def status(job_id: str, *, redis_url: str | None = None,
           kubeconfig: str | None = None) -> JobStatus:
    """The job's status now."""
    with Client(redis_url=redis_url, kubeconfig=kubeconfig) as client:
        return client.status(job_id)


def logs(job_id: str, tail: int | None = None, *, redis_url: str | None = None,
         kubeconfig: str | None = None, targets_file: str | None = None) -> str:
    """The job's output so far (its last ``tail`` lines), fetched from its manager."""
    with Client(redis_url=redis_url, kubeconfig=kubeconfig,
                targets_file=targets_file) as client:
        return client.logs(job_id, tail)


def output(job_id: str, path: str, *, redis_url: str | None = None) -> bytes:
    """A collected output file of the job (see :meth:`Client.output`)."""
    with Client(redis_url=redis_url) as client:
        return client.output(job_id, path)


def cancel(job_id: str, *, broker: str | None = None, redis_url: str | None = None,
           kubeconfig: str | None = None) -> JobStatus:
    """Ask the bridge to cancel the job; its status before (see :meth:`Client.cancel`)."""
    with Client(broker=broker, redis_url=redis_url, kubeconfig=kubeconfig) as client:
        return client.cancel(job_id)

