"""The machinery behind the three functions: submit, poll and cancel.

The functions in ``functions/`` only decode an HTTP request and hand the event to a
:class:`Bridge`; everything the three share (the store, the targets, the state machine,
the event contract) is wired here, once per process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from adapters.base import (
    Adapter,
    AdapterError,
    AuthenticationFailed,
    ConfigError,
    ManagerRejected,
    ManagerUnavailable,
)
from hpcbridge import events, metrics
from hpcbridge.credentials import CredentialError, redact
from hpcbridge.emitter import Emitter
from hpcbridge.events import CloudEvent
from hpcbridge.faults import fault_point
from hpcbridge.model import (
    JobRequest,
    JobStatus,
    Reason,
    RequestError,
    State,
    job_id_for_event,
    validate_job_id,
    validate_namespace,
)
from hpcbridge.naming import JOB_ID_LABEL
from hpcbridge.outputs import Collector
from hpcbridge.s3 import Bucket, BucketError
from hpcbridge.senders import Forbidden, Sender
from hpcbridge.settings import Settings
from hpcbridge.states import advance, declare_lost
from hpcbridge.store import Change, Store, StoredJob, StoreUnavailable
from hpcbridge.targets import Targets

if TYPE_CHECKING:
    from hpcbridge.mirror import Mirror

__all__ = ["TRANSIENT", "Bridge", "Busy", "Reply"]

log = logging.getLogger(__name__)


class Busy(Exception):
    """Another instance is still working on the same job; try again later."""


#: The end states at which a job's named output files are collected.
_COLLECTED = frozenset({State.SUCCEEDED, State.FAILED})

#: Errors that say "not now": the HTTP answer is 503 and Knative redelivers.
TRANSIENT = (StoreUnavailable, ManagerUnavailable, AuthenticationFailed, ConfigError,
             CredentialError, Busy)


@dataclasses.dataclass(frozen=True, slots=True)
class Reply:
    """What a function answers: an HTTP status, maybe a reply event, and an outcome word."""

    event: CloudEvent | None = None
    outcome: str = "ok"
    status: int = 200
    #: more than the outcome word, for people (a header and the log line)
    detail: str | None = None


@dataclasses.dataclass(slots=True)
class TickReport:
    polled: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)
    unreachable: list[str] = dataclasses.field(default_factory=list)
    transitions: int = 0
    events: list[CloudEvent] = dataclasses.field(default_factory=list)
    #: the active jobs the tick looked at, and those it mirrored, for the repair pass
    active: set[str] = dataclasses.field(default_factory=set)
    shown: set[str] = dataclasses.field(default_factory=set)

    def summary(self) -> str:
        return (f"polled={','.join(self.polled) or '-'} skipped={','.join(self.skipped) or '-'} "
                f"unreachable={','.join(self.unreachable) or '-'} "
                f"transitions={self.transitions}")


class Bridge:
    """One process's view of the bridge: settings, store, targets and event sink."""

    def __init__(self, settings: Settings, store: Store, targets: Targets, emitter: Emitter,
                 mirror: Mirror | None = None, clock: Callable[[], float] = time.time,
                 bucket: Bucket | None = None) -> None:
        self.settings = settings
        self.store = store
        self.targets = targets
        self.emitter = emitter
        self.mirror = mirror
        self.collector = Collector(store, bucket, redis_bytes=settings.outputs_redis_bytes,
                                   file_bytes=settings.outputs_file_bytes)
        self._clock = clock

    @classmethod
    def from_settings(cls, settings: Settings) -> Bridge:
        mirror = None
        if settings.mirror:
            from hpcbridge.mirror import Mirror  # the kubernetes client is slow to import

            mirror = Mirror.from_environment(settings.namespace, settings.pod_image)
        store = Store.from_url(settings.redis_url, settings.redis_prefix,
                               track_mirror=mirror is not None)
        bucket = None if settings.bucket is None else Bucket(settings.bucket)
        return cls(settings, store, Targets.load(settings.targets_file), Emitter(settings.sink),
                   mirror, bucket=bucket)

    _shared: Bridge | None = None
    _shared_lock = threading.Lock()

    @classmethod
    def shared(cls) -> Bridge:
        """The process-wide bridge, built from the environment on first use."""
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls.from_settings(Settings.from_env())
                # What start-up made (modules, the client libraries) lives as long as the
                # process: keep it out of every later collection.
                gc.freeze()
            return cls._shared

    def close(self) -> None:
        self.targets.close()
        self.emitter.close()

    # -- submit -------------------------------------------------------------------------

    def submit(self, event: CloudEvent, sender: Sender | None = None) -> Reply:
        """``hpcbridge.job.requested``: run the job exactly once, however often delivered.

        A known ``sender`` submits into its own namespace: the request's, if it names
        one, must be it (unless the sender is a namespace admin).
        """
        _expect_type(event, events.REQUESTED)
        request = _for_sender(JobRequest.from_dict(events.event_data(event)), sender)
        job_id = request.job_id or job_id_for_event(event["source"], event["id"])
        adapter = self.targets.adapter(request.target)
        if request.command is not None and not adapter.capabilities.runs_commands:
            raise RequestError("command", f"target {request.target!r} runs programs given "
                               "as 'script' (e.g. an OpenQASM circuit), not commands")
        if request.outputs and not adapter.capabilities.collect_outputs:
            raise RequestError("outputs", f"target {request.target!r} ({adapter.kind}) "
                               "cannot collect a job's files")
        stored_request = request.to_dict()
        now = self._clock()
        token = uuid.uuid4().hex
        status = JobStatus(job_id=job_id, target=request.target, state=State.ACCEPTED,
                           submitted_at=now, updated_at=now)
        if self.store.claim(status, stored_request, token, now + self.settings.submit_claim_s,
                            events.trace_context(event)):
            return self._submit_owned(job_id, request, adapter, token, adopt=False)
        return self._await_submission(job_id, request, adapter)

    def _await_submission(self, job_id: str, request: JobRequest, adapter: Adapter) -> Reply:
        """A duplicate delivery: wait for the owner's answer, or take over a dead owner's."""
        deadline = self._clock() + self.settings.submit_wait_s
        while True:
            job = self.store.load(job_id)
            if job is None:
                raise Busy(f"job {job_id} vanished from the store while being submitted")
            if job.request != request.to_dict():
                raise RequestError("job_id", f"job {job_id} already exists with another request")
            if job.status.native_id or job.status.state.terminal:
                return self._submit_reply(job)
            now = self._clock()
            if job.claim_until is None or job.claim_until < now:
                token = uuid.uuid4().hex
                if self.store.take_over(job_id, job.claim or "", token, now,
                                        now + self.settings.submit_claim_s):
                    return self._submit_owned(job_id, request, adapter, token, adopt=True)
                continue
            if now >= deadline:
                raise Busy(f"job {job_id} is still being submitted by another instance")
            time.sleep(0.02)

    def _submit_owned(self, job_id: str, request: JobRequest, adapter: Adapter, token: str,
                      *, adopt: bool) -> Reply:
        """Submit (or adopt by tag) a job whose claim this call holds."""
        native_id = None
        try:
            if adopt and adapter.capabilities.find_by_tag:
                native_id = adapter.find_by_tag(job_id)
            if native_id is None:
                fault_point("submit.before_manager")
                native_id = adapter.submit(request, job_id)
        except (ManagerUnavailable, AuthenticationFailed, ConfigError, CredentialError):
            self.store.release_claim(job_id, token, self._clock())
            raise
        except ManagerRejected as exc:
            return self._submit_refused(job_id, exc)
        fault_point("submit.after_manager")
        job = self.store.record_native(job_id, token, native_id)
        if job is None:
            # Our claim expired and another instance took over; it adopts our job by tag.
            return self._await_submission(job_id, request, adapter)
        fault_point("submit.after_record")
        if job.status.state is State.CANCELLED:
            adapter.cancel(native_id)  # the cancel arrived while we were submitting
        self._show(job, job.status, job.version, transition=True)
        log.info("submitted %s as %s%s", job_id, native_id, " (adopted)" if adopt else "",
                 extra={"job_id": job_id, "target": request.target})
        return self._submit_reply(job)

    def _submit_refused(self, job_id: str, error: ManagerRejected) -> Reply:
        job = self._load(job_id)
        now = self._clock()
        failed = job.status.replace(state=State.FAILED, reason=Reason.SUBMIT_ERROR,
                                    native_state="REJECTED", finished_at=now, updated_at=now)
        message = redact(str(error))
        fault_point("submit.after_refusal")
        self.store.apply([Change(job, failed, note=message)])
        log.warning("target refused %s: %s", job_id, message, extra={"job_id": job_id})
        return self._submit_reply(self._load(job_id))

    def _submit_reply(self, job: StoredJob) -> Reply:
        status = job.status
        if status.state.terminal and status.native_id is None:
            return Reply(self._announce(job, status), "not-submitted")
        return Reply(self._announce(job, status, events.SUBMITTED), "submitted")

    def _announce(self, job: StoredJob, status: JobStatus,
                  event_type: str | None = None) -> CloudEvent:
        """The event about ``job`` at ``status``, with its trace context and namespace."""
        return events.status_event(self.settings.source, status, event_type, job.trace,
                                   job.request.get("namespace") or self.settings.namespace)

    def _load(self, job_id: str) -> StoredJob:
        job = self.store.load(job_id)
        if job is None:
            raise Busy(f"job {job_id} vanished from the store")
        return job

    # -- poll ---------------------------------------------------------------------------

    def poll(self, event: CloudEvent, sender: Sender | None = None) -> Reply:
        """A tick: ask every target once about all its active jobs and record what changed.

        Any authenticated ``sender`` may tick: a tick shows and changes nothing of its own.
        """
        _expect_type(event, events.TICK, events.PING)
        names = list(self.targets)
        # A PingSource's data is whatever its manifest says; a tick's is ours to check.
        data = events.event_data(event, required=False) if event["type"] == events.TICK else None
        if data is not None:
            if not isinstance(data, Mapping):
                raise RequestError(None, "the tick's data must be absent or an object "
                                   "{\"targets\": [...]}")
            unknown = set(data) - {"targets"}
            if unknown:
                raise RequestError(sorted(unknown)[0], "is not a known field")
            if data.get("targets") is not None:
                names = _target_names(data["targets"], self.targets)
        started = time.perf_counter()
        report = TickReport()
        with _COLLECTOR.paused():
            for name in names:
                try:
                    self._poll_target(name, report)
                except (AdapterError, CredentialError) as exc:
                    # One target's trouble (expired token, bad settings) must not stop the
                    # others; Redis trouble does stop the tick (503, redelivered).
                    report.unreachable.append(name)
                    log.warning("target %s not polled: %s", name, redact(str(exc)),
                                extra={"target": name})
            if self.mirror is not None:
                self._tend_mirror(names, report)
            self._emit(report.events)
        metrics.TICK_SECONDS.observe(time.perf_counter() - started)
        return Reply(None, "ticked", detail=report.summary())

    def _poll_target(self, name: str, report: TickReport) -> None:
        ids = self.store.active(name)
        if not ids:
            return
        lease = self.store.acquire_lease(name, self.settings.poll_lease_s)
        if lease is None:
            report.skipped.append(name)
            return
        try:
            adapter = self.targets.adapter(name)
            jobs = self.store.load_many(ids)
            report.active.update(jobs)
            watched = {j.status.native_id: j for j in jobs.values() if j.status.native_id}
            now = self._clock()
            changes: list[Change] = []
            if watched:
                try:
                    seen = adapter.status_many(list(watched))
                except (AdapterError, CredentialError):
                    self._show_reachability(name, adapter, reachable=False)
                    raise
                self._show_reachability(name, adapter, reachable=True)
                for native_id, job in watched.items():
                    new = advance(job.status, seen.get(native_id), now,
                                  self.settings.lost_after_s)
                    change = None if new is None else self._with_outputs(adapter, job, new, now)
                    if change is not None:
                        changes.append(change)
            for job in jobs.values():
                if job.status.native_id is None and not job.status.state.terminal:
                    changes.extend(self._settle_stalled_submission(job, adapter, now))
            applied = self.store.apply(changes)
            report.polled.append(name)
            final_tails: dict[str, str] = {}
            shown: list[tuple[str, int]] = []
            for change in changes:
                if change.job.job_id not in applied:
                    continue
                moved = change.status.state is not change.job.status.state
                if moved:
                    report.transitions += 1
                    metrics.TRANSITIONS.inc(name, str(change.status.state))
                    report.events.append(self._announce(change.job, change.status))
                tail = self._log_tail(adapter, change.status) if moved else None
                if tail is not None:
                    final_tails[change.job.job_id] = tail
                self._show(change.job, change.status, change.job.version + 1,
                           transition=moved, log_tail=tail, shown=shown)
            self._mark_shown(shown)
            self.store.keep_tails(name, final_tails, now, final=True)
            report.shown.update(applied)
            _count_active(name, jobs, changes, applied)
            self._refresh_tails(name, adapter, jobs, changes, applied, now)
        finally:
            self.store.release_lease(name, lease)

    def _with_outputs(self, adapter: Adapter, job: StoredJob, new: JobStatus,
                      now: float) -> Change | None:
        """The change to ``new``, with the job's output files collected if it just ended
        having named some; None to leave the job as it is until the next tick, when the
        files or the bucket could not be reached (for at most ``lost_after_s``)."""
        native_id = new.native_id
        if new.state not in _COLLECTED or not job.request.get("outputs") or native_id is None:
            return Change(job, new)
        request = JobRequest.from_dict(job.request)
        try:
            collected = self.collector.collect(adapter, job.job_id, native_id, request)
        except (AdapterError, BucketError, CredentialError) as exc:
            why = redact(str(exc))
            since = self.store.collecting_since(job.job_id, now, 2 * self.settings.lost_after_s)
            if now - since < self.settings.lost_after_s:
                log.warning("outputs of %s not collected, tried again next tick: %s",
                            job.job_id, why, extra={"job_id": job.job_id})
                return None
            collected = Collector.not_collected(request, why)
        return Change(job, new.replace(outputs=collected))

    def _refresh_tails(self, name: str, adapter: Adapter, jobs: Mapping[str, StoredJob],
                       changes: list[Change], applied: set[str], now: float) -> None:
        """Refresh the log tail of the running jobs whose tail is the oldest, at most
        ``log_tail_jobs`` of them, in Redis and in their ConfigMaps (when it changed).

        A bounded number per tick keeps the tick's cost independent of how many jobs run:
        with more running jobs than that, each tail is refreshed every few ticks.
        """
        lines = self.settings.log_tail_lines
        if not lines or not adapter.capabilities.logs:
            return
        statuses = {job_id: job.status for job_id, job in jobs.items()}
        statuses.update({c.job.job_id: c.status for c in changes if c.job.job_id in applied})
        running = {job_id: status.native_id for job_id, status in statuses.items()
                   if status.state is State.RUNNING and status.native_id}
        tails: dict[str, str] = {}
        for job_id in self.store.tails_due(name, list(running), self.settings.log_tail_jobs):
            try:
                tails[job_id] = adapter.logs(running[job_id], lines)
            except (AdapterError, CredentialError) as exc:
                log.info("log tails of %s not refreshed this tick: %s", name,
                         redact(str(exc)), extra={"target": name})
                break
        changed = self.store.keep_tails(name, tails, now)
        if self.mirror is None:
            return
        for job_id in changed:
            try:
                self.mirror.show_log_tail(job_id, jobs[job_id].request.get("namespace"),
                                          tails[job_id])
            except Exception as exc:
                log.warning("log tail of %s not mirrored: %s", job_id, redact(str(exc)),
                            extra={"job_id": job_id})

    def _settle_stalled_submission(self, job: StoredJob, adapter: Adapter,
                                   now: float) -> list[Change]:
        """A submission whose owner died: adopt the native job by its tag, or give up late.

        Knative redelivers the request and the redelivery takes over; this is for when no
        redelivery comes (retries exhausted), so that no native job runs unwatched.
        """
        if job.claim_until is None or job.claim_until >= now:
            return []
        token = uuid.uuid4().hex
        if not self.store.take_over(job.job_id, job.claim or "", token, now,
                                    now + self.settings.submit_claim_s):
            return []
        native_id = adapter.find_by_tag(job.job_id) if adapter.capabilities.find_by_tag \
            else None
        if native_id is not None and self.store.record_native(job.job_id, token, native_id):
            log.info("adopted %s as %s", job.job_id, native_id, extra={"job_id": job.job_id})
            return []
        if now - job.claim_until >= self.settings.lost_after_s:
            failed = declare_lost(job.status, now).replace(reason=Reason.SUBMIT_ERROR)
            return [Change(self._load(job.job_id), failed, note="submission never completed")]
        # Not lost yet: the claim keeps its old end, from which "lost" is counted.
        self.store.release_claim(job.job_id, token, job.claim_until)
        return []

    def _emit(self, fresh: list[CloudEvent]) -> None:
        """Send what the sink refused before, then this tick's events; keep what it
        refuses now for the next tick (at least once, in order)."""
        if self.emitter.sink is None:
            return
        kept = [events.loads(text) for text in self.store.take_undelivered()]
        undelivered = self.emitter.emit([*kept, *fresh])
        self.store.keep_undelivered([events.dumps(event) for event in undelivered])

    # -- cancel -------------------------------------------------------------------------

    def cancel(self, event: CloudEvent, sender: Sender | None = None) -> Reply:
        """``hpcbridge.job.cancel``, or a proxy pod being deleted: stop the job.

        A known ``sender`` cancels only jobs of its own namespace; pod events are taken
        from namespace admins only (the bridge's ApiServerSource).
        """
        _expect_type(event, events.CANCEL, events.APISERVER_UPDATE, events.APISERVER_DELETE)
        if event["type"] != events.CANCEL and sender is not None and not sender.admin:
            raise Forbidden("type", "pod events are taken only from the senders named in "
                            "HPCBRIDGE_NAMESPACE_ADMINS")
        data = events.event_data(event)
        if event["type"] == events.CANCEL:
            if not isinstance(data, Mapping):
                raise RequestError(None, "the event data must be an object with 'job_id'")
            unknown = set(data) - {"job_id", "namespace"}
            if unknown:
                raise RequestError(sorted(unknown)[0], "is not a known field")
            namespace = data.get("namespace")
            return self.cancel_job(validate_job_id(data.get("job_id")),
                                   None if namespace is None else validate_namespace(namespace),
                                   sender)
        pod = _deleted_pod(data, deleted=event["type"] == events.APISERVER_DELETE)
        if pod is None:
            return Reply(None, "ignored")
        reply = self.cancel_job(pod.job_id, pod.namespace)
        fault_point("cancel.before_pod_finished")
        self._finish_pod(pod.namespace, pod.name)
        return reply

    def cancel_job(self, job_id: str, namespace: str | None = None,
                   sender: Sender | None = None) -> Reply:
        """Cancel ``job_id``; a finished or unknown job is a no-op, said as such.

        With namespace isolation on (the default), a job is cancelled only by a request
        for its own namespace (the request's, else the bridge's default); to any other,
        it does not exist. A known ``sender`` that is no namespace admin acts for its own
        namespace only, whatever the request names.
        """
        if sender is not None and not sender.admin and self.settings.namespace_isolation:
            if sender.namespace is None or namespace not in (None, sender.namespace):
                return Reply(None, "unknown-job")
            namespace = sender.namespace
        for _ in range(5):
            job = self.store.load(job_id)
            if job is None or not self._same_namespace(job, namespace):
                return Reply(None, "unknown-job")
            if job.status.state is State.CANCELLED:
                # A redelivery: the same answer again, so the cancel is announced even
                # if the first answer was lost with the process that gave it.
                return Reply(self._announce(job, job.status), "already-cancelled")
            if job.status.state.terminal:
                return Reply(None, "already-finished")
            adapter = self.targets.adapter(job.status.target)
            native_id = job.status.native_id
            if native_id is None and adapter.capabilities.find_by_tag:
                native_id = adapter.find_by_tag(job_id)  # a submission still in flight
            fault_point("cancel.before_manager")
            if native_id is not None:
                try:
                    adapter.cancel(native_id)
                except ManagerRejected as exc:
                    raise ManagerUnavailable(f"target refused to cancel {job_id}: "
                                             f"{redact(str(exc))}") from None
            fault_point("cancel.after_manager")
            now = self._clock()
            cancelled = job.status.replace(state=State.CANCELLED, reason=Reason.CANCELLED,
                                           finished_at=now, updated_at=now)
            if self.store.apply([Change(job, cancelled)]):
                fault_point("cancel.after_record")
                log.info("cancelled %s", job_id, extra={"job_id": job_id})
                self._show(job, cancelled, job.version + 1, transition=True)
                return Reply(self._announce(job, cancelled), "cancelled")
        raise Busy(f"job {job_id} kept changing while being cancelled")

    def _same_namespace(self, job: StoredJob, namespace: str | None) -> bool:
        if not self.settings.namespace_isolation:
            return True
        own = job.request.get("namespace") or self.settings.namespace
        return own == (namespace or self.settings.namespace)

    # -- mirror -------------------------------------------------------------------------
    # A mirror failure is logged and never fails the call: Redis has the truth, and the
    # next tick repairs the mirror from it.

    def _show(self, job: StoredJob, status: JobStatus, version: int, *, transition: bool,
              log_tail: str | None = None, shown: list[tuple[str, int]] | None = None) -> None:
        """Mirror ``status`` (the job's record at ``version``) and note that it is shown:
        at once, or, given ``shown``, by adding it there for :meth:`_mark_shown` to note
        with the others (one Redis round trip for a tick's changes).

        A finished job's pod is never created: if it is missing, someone deleted it.
        """
        if self.mirror is None:
            return
        try:
            self.mirror.show(status, job.request, transition=transition, log_tail=log_tail,
                             create_pod=not status.state.terminal)
        except Exception as exc:
            log.warning("mirror of %s not written (repaired at the next tick): %s",
                        status.job_id, redact(str(exc)), extra={"job_id": status.job_id})
            return
        if shown is None:
            self._mark_shown([(job.job_id, version)])
        else:
            shown.append((job.job_id, version))

    def _mark_shown(self, shown: list[tuple[str, int]]) -> None:
        """Note that the mirror shows these (job id, version); if Redis cannot be told,
        the next tick shows the jobs again."""
        try:
            self.store.mark_mirrored(shown)
        except Exception as exc:
            log.warning("mirror of %d jobs written but not noted (shown again at the next "
                        "tick): %s", len(shown), redact(str(exc)))

    def _show_reachability(self, name: str, adapter: Adapter, *, reachable: bool) -> None:
        """Record whether the target answered; on a change, tell its virtual Node."""
        if self.store.swap_reachable(name, reachable) is reachable or self.mirror is None:
            return
        try:
            capacity = adapter.capacity() if reachable and \
                adapter.capabilities.report_capacity else None
            self.mirror.ensure_node(name)
            self.mirror.node_ready(name, reachable, capacity)
        except Exception as exc:
            log.warning("node of %s not updated: %s", name, redact(str(exc)),
                        extra={"target": name})

    def _log_tail(self, adapter: Adapter, status: JobStatus) -> str | None:
        if not (status.state.terminal and status.native_id and adapter.capabilities.logs):
            return None
        try:
            return adapter.logs(status.native_id, self.settings.log_tail_lines)
        except Exception as exc:
            log.info("no log tail for %s: %s", status.job_id, redact(str(exc)),
                     extra={"job_id": status.job_id})
            return None

    def _finish_pod(self, namespace: str, name: str) -> None:
        if self.mirror is None:
            return
        try:
            self.mirror.finish_pod(namespace, name)
        except Exception as exc:
            log.warning("pod %s/%s not finished: %s", namespace, name, redact(str(exc)))

    def _tend_mirror(self, names: list[str], report: TickReport) -> None:
        """Once per tick: heartbeats, pods being deleted, and pods that went missing."""
        assert self.mirror is not None
        try:
            for name in names:
                self.mirror.ensure_node(name)
                self.mirror.renew_lease(name)
            pods = self.mirror.pods()
        except Exception as exc:
            log.warning("mirror unreachable this tick: %s", redact(str(exc)))
            return
        for pod in self.mirror.deleted(pods):
            try:
                self.cancel_job(pod.job_id, pod.namespace)
            except TRANSIENT as exc:
                log.warning("cancel of %s for its deleted pod failed, retried next tick: %s",
                            pod.job_id, redact(str(exc)), extra={"job_id": pod.job_id})
                continue
            self._finish_pod(pod.namespace, pod.name)
        # Repair: jobs whose last mirror write failed or never happened (the process died
        # after the change), and active jobs whose pod someone removed.
        with_pods = {(pod["metadata"].get("labels") or {}).get(JOB_ID_LABEL) for pod in pods}
        repair = (set(self.store.unmirrored()) | (report.active - with_pods)) - report.shown
        shown: list[tuple[str, int]] = []
        for job in self.store.load_many(repair).values():
            self._show(job, job.status, job.version, transition=False, shown=shown)
        self._mark_shown(shown)


class _CollectorPause:
    """Python's cyclic garbage collector, off while any tick of this process runs.

    A tick over 10,000 jobs keeps enough objects alive at once to set off several full
    collections of the heap, about 0.15 s each (bench/poll_scaling.py measures them).
    Reference counting frees the tick's objects when it ends; the collector, back on,
    sweeps whatever cycles are left. A collector that was off before stays off.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ticks = 0
        self._was_enabled = False

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        with self._lock:
            if self._ticks == 0:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._ticks += 1
        try:
            yield
        finally:
            with self._lock:
                self._ticks -= 1
                if self._ticks == 0 and self._was_enabled:
                    gc.enable()


_COLLECTOR = _CollectorPause()


def _count_active(target: str, jobs: Mapping[str, StoredJob], changes: list[Change],
                  applied: set[str]) -> None:
    """Set the active-jobs gauge of ``target`` from what this tick saw and recorded."""
    states = {job_id: job.status.state for job_id, job in jobs.items()}
    states.update({c.job.job_id: c.status.state for c in changes if c.job.job_id in applied})
    counts: dict[str, int] = {}
    for state in states.values():
        if not state.terminal:
            counts[str(state)] = counts.get(str(state), 0) + 1
    metrics.ACTIVE_JOBS.clear(target)
    for state, count in counts.items():
        metrics.ACTIVE_JOBS.set(target, state, value=count)


def _for_sender(request: JobRequest, sender: Sender | None) -> JobRequest:
    """The request as ``sender`` may make it: in its own namespace, unless an admin."""
    if sender is None or sender.admin:
        return request
    if sender.namespace is None:
        raise Forbidden("namespace", f"{sender.username} is not a service account of a "
                        "namespace, nor named in HPCBRIDGE_NAMESPACE_ADMINS")
    if request.namespace is None:
        return dataclasses.replace(request, namespace=sender.namespace)
    if request.namespace != sender.namespace:
        raise Forbidden("namespace", f"a sender of namespace {sender.namespace!r} submits "
                        "only into its own namespace")
    return request


def _expect_type(event: CloudEvent, *types: str) -> None:
    if event["type"] not in types:
        raise RequestError("type", f"this function takes {' or '.join(types)}, "
                           f"not {event['type']!r}")


def _target_names(value: Any, targets: Targets) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RequestError("targets", "must be a list of target names")
    unknown = [v for v in value if v not in targets]
    if unknown:
        raise RequestError("targets", f"unknown target {unknown[0]!r}")
    return value


@dataclasses.dataclass(frozen=True, slots=True)
class _DeletedPod:
    namespace: str
    name: str
    job_id: str


def _deleted_pod(pod: Any, *, deleted: bool) -> _DeletedPod | None:
    """The proxy pod in an ApiServerSource event, if it is being deleted."""
    if not isinstance(pod, Mapping) or not isinstance(pod.get("metadata"), Mapping):
        raise RequestError("metadata", "the event data must be a Kubernetes object")
    metadata = pod["metadata"]
    labels = metadata.get("labels") or {}
    job_id = labels.get(JOB_ID_LABEL) if isinstance(labels, Mapping) else None
    if job_id is None or not (deleted or metadata.get("deletionTimestamp")):
        return None
    for field in ("name", "namespace"):
        if not isinstance(metadata.get(field), str):
            raise RequestError(f"metadata.{field}", "is required")
    return _DeletedPod(metadata["namespace"], metadata["name"],
                       validate_job_id(job_id, f"metadata.labels.{JOB_ID_LABEL}"))
