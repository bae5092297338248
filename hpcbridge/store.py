"""Redis, the bridge's source of truth.

Keys (all under one prefix, ``hpcbridge:`` by default):

    job:<id>          hash: the JobStatus fields, the request, a version, the submit claim
    history:<id>      list: one JSON entry per transition
    active:<target>   set: ids of jobs the poller still watches
    jobs              sorted set: every job id by submission time
    lease:<target>    string with a TTL: who is polling that target now
    reachable:<target> "1" or "0": whether the target answered the last tick
    outbox            list: serialized events the sink refused, sent again at the next tick
    unmirrored        set: jobs changed since the Kubernetes mirror last showed them (kept
                      only when the mirror is on; each change adds its job atomically)
    tail:<id>         string: the last lines of the job's log, refreshed while it runs
    tailed:<target>   sorted set: running jobs by when their tail was last refreshed
    output:<id>       hash: collected output files kept in Redis, path -> base64 bytes
    collecting:<id>   string with a TTL: when collecting the job's outputs first failed

Every write that must not race is one Lua script, so it is atomic on the server and one
round trip on the wire: the claim of a job id, the recording of a native id, and the
application of a batch of transitions guarded by each job's version.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import redis

from hpcbridge.model import JobStatus, Reason, State

__all__ = ["Change", "Store", "StoreUnavailable", "StoredJob"]

_FLOATS = ("submitted_at", "started_at", "finished_at", "updated_at")
_TRACE = ("traceparent", "tracestate")
_STATUS_FIELDS = tuple(f.name for f in dataclasses.fields(JobStatus))
#: what :meth:`Store.load_many` reads of a job record, in this order
_RECORD_FIELDS = (*_STATUS_FIELDS, "version", "claim", "claim_until", "request", *_TRACE)
#: how a stored status field becomes a value again (the others are strings); the enums by
#: lookup, several times faster than calling the enum class, once per job and tick
_DECODE: dict[str, Callable[[str], Any]] = {
    **dict.fromkeys(_FLOATS, float), "exit_code": int, "outputs": json.loads,
    "state": {str(state): state for state in State}.__getitem__,
    "reason": {str(reason): reason for reason in Reason}.__getitem__,
}


class StoreUnavailable(Exception):
    """Redis cannot be reached; the caller answers 503 so that delivery is retried."""


@dataclasses.dataclass(frozen=True, slots=True)
class StoredJob:
    """A job's record as read from Redis.

    The request stays the stored JSON text until :attr:`request` is first used: a poll
    tick reads every active job's record but needs the request of only the few it mirrors.
    """

    status: JobStatus
    request_json: str
    version: int
    claim: str | None
    claim_until: float | None
    #: the W3C trace context of the request (CloudEvents distributed tracing extension)
    trace: dict[str, str] = dataclasses.field(default_factory=dict)
    _request: dict[str, Any] | None = dataclasses.field(default=None, init=False, repr=False,
                                                        compare=False)

    @property
    def job_id(self) -> str:
        return self.status.job_id

    @property
    def request(self) -> dict[str, Any]:
        """The stored JobRequest (as ``JobRequest.to_dict`` made it), decoded once."""
        request = self._request
        if request is None:
            request = json.loads(self.request_json or "{}")
            object.__setattr__(self, "_request", request)
        return request


@dataclasses.dataclass(frozen=True, slots=True)
class Change:
    """A new status for a job, applied only if the job is still at ``version``."""

    job: StoredJob
    status: JobStatus
    note: str | None = None


_CLAIM = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
redis.call('RPUSH', KEYS[4], ARGV[3])
if KEYS[5] then redis.call('SADD', KEYS[5], ARGV[1]) end
return 1
"""

_TAKE_OVER = """
if redis.call('HGET', KEYS[1], 'claim') ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], 'native_id') ~= '' then return 0 end
if tonumber(redis.call('HGET', KEYS[1], 'claim_until')) >= tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], 'claim', ARGV[2], 'claim_until', ARGV[4])
return 1
"""

_RELEASE_CLAIM = """
if redis.call('HGET', KEYS[1], 'claim') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'claim_until', ARGV[2])
return 1
"""

# ARGV: token, native id, job id, then the record's fields to answer with.
_RECORD_NATIVE = """
if redis.call('HGET', KEYS[1], 'claim') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'native_id', ARGV[2], 'claim', '', 'claim_until', '')
redis.call('HINCRBY', KEYS[1], 'version', 1)
if KEYS[2] then redis.call('SADD', KEYS[2], ARGV[3]) end
return redis.call('HMGET', KEYS[1], unpack(ARGV, 4))
"""

# ARGV: prefix, '1' to track the mirror, then per change: id, expected version, n,
# n field/value pairs, history entry, 'remove' or 'keep', target.
_APPLY = """
local prefix = ARGV[1]
local mirror = ARGV[2] == '1'
local applied = {}
local i = 3
while i <= #ARGV do
  local id, expected, n = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local key = prefix .. 'job:' .. id
  local after = i + 3 + 2 * n
  if redis.call('HGET', key, 'version') == expected then
    for j = i + 3, after - 1, 2 do redis.call('HSET', key, ARGV[j], ARGV[j + 1]) end
    redis.call('HINCRBY', key, 'version', 1)
    if ARGV[after] ~= '' then redis.call('RPUSH', prefix .. 'history:' .. id, ARGV[after]) end
    if ARGV[after + 1] == 'remove' then
      redis.call('SREM', prefix .. 'active:' .. ARGV[after + 2], id)
      redis.call('ZREM', prefix .. 'tailed:' .. ARGV[after + 2], id)
    end
    if mirror then redis.call('SADD', prefix .. 'unmirrored', id) end
    applied[#applied + 1] = id
  end
  i = after + 3
end
return applied
"""

# ARGV: prefix, then per job: id, the version the mirror shows.
_MARK_MIRRORED = """
local cleared = 0
for i = 2, #ARGV, 2 do
  if redis.call('HGET', ARGV[1] .. 'job:' .. ARGV[i], 'version') == ARGV[i + 1] then
    cleared = cleared + redis.call('SREM', ARGV[1] .. 'unmirrored', ARGV[i])
  end
end
return cleared
"""

# KEYS: job records; ARGV: the fields to read. One reply of values per record, without
# the field names that HGETALL would send along (nil for a missing field or record).
_LOAD = """
local records = {}
for i, key in ipairs(KEYS) do records[i] = redis.call('HMGET', key, unpack(ARGV)) end
return records
"""

_RELEASE_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _encode(value: Any) -> str:
    if isinstance(value, Mapping):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return "" if value is None else str(value)


def _status_fields(status: JobStatus) -> dict[str, str]:
    return {name: _encode(getattr(status, name)) for name in _STATUS_FIELDS}


def _stored_job(raw: Sequence[str | None]) -> StoredJob | None:
    """A record read as the values of :data:`_RECORD_FIELDS`; None for a missing job."""
    status_end = len(_STATUS_FIELDS)
    version, claim, claim_until, request, *trace = raw[status_end:]
    if version is None:
        return None
    return StoredJob(
        status=_decode_status(raw[:status_end]),
        request_json=request or "{}",
        version=int(version),
        claim=claim or None,
        claim_until=float(claim_until) if claim_until else None,
        trace={name: value for name, value in zip(_TRACE, trace, strict=True) if value},
    )


def _decode_status(raw: Sequence[str | None]) -> JobStatus:
    """The status from its stored fields, in the order of ``_STATUS_FIELDS``."""
    values: dict[str, Any] = {}
    for name, value in zip(_STATUS_FIELDS, raw, strict=True):
        decode = _DECODE.get(name)
        values[name] = None if not value else decode(value) if decode else value
    return JobStatus(**values)


def _history_entry(status: JobStatus, note: str | None = None) -> str:
    entry = {"at": status.updated_at, "state": str(status.state),
             "native_state": status.native_state}
    if status.reason is not None:
        entry["reason"] = str(status.reason)
    if note:
        entry["note"] = note
    return json.dumps(entry, separators=(",", ":"))


class Store:
    """Job records in Redis, with the few atomic operations the functions need."""

    def __init__(self, client: redis.Redis, prefix: str = "hpcbridge:", *,
                 track_mirror: bool = False) -> None:
        self._redis = client
        self._prefix = prefix
        self._track_mirror = track_mirror
        self._claim = client.register_script(_CLAIM)
        self._take_over = client.register_script(_TAKE_OVER)
        self._release_claim = client.register_script(_RELEASE_CLAIM)
        self._record_native = client.register_script(_RECORD_NATIVE)
        self._apply = client.register_script(_APPLY)
        self._release_lease = client.register_script(_RELEASE_LEASE)
        self._mark_mirrored = client.register_script(_MARK_MIRRORED)
        self._load = client.register_script(_LOAD)

    @classmethod
    def from_url(cls, url: str, prefix: str = "hpcbridge:", *,
                 track_mirror: bool = False) -> Store:
        client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=5,
                                      socket_connect_timeout=2, health_check_interval=30)
        return cls(client, prefix, track_mirror=track_mirror)

    def _unmirrored_key(self) -> list[str]:
        return [self._key("unmirrored")] if self._track_mirror else []

    def _key(self, *parts: str) -> str:
        return self._prefix + ":".join(parts)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise StoreUnavailable(f"Redis is unreachable: {type(exc).__name__}") from None

    def ping(self) -> None:
        with self._errors():
            self._redis.ping()

    # -- submission ---------------------------------------------------------------------

    def claim(self, status: JobStatus, request: dict[str, Any], token: str,
              claim_until: float, trace: Mapping[str, str] | None = None) -> bool:
        """Create the job record owned by ``token``; False if the id is already taken."""
        fields = _status_fields(status)
        fields.update(request=json.dumps(request, sort_keys=True), version="1",
                      claim=token, claim_until=repr(claim_until))
        fields.update({name: trace[name] for name in _TRACE if trace and trace.get(name)})
        pairs = [item for pair in fields.items() for item in pair]
        keys = [self._key("job", status.job_id), self._key("active", status.target),
                self._key("jobs"), self._key("history", status.job_id),
                *self._unmirrored_key()]
        with self._errors():
            created = self._claim(keys=keys, args=[status.job_id, status.submitted_at or 0,
                                                   _history_entry(status), *pairs])
        return bool(created)

    def take_over(self, job_id: str, stale_token: str, token: str, now: float,
                  claim_until: float) -> bool:
        """Take a submission whose claim expired before a native id was recorded."""
        with self._errors():
            return bool(self._take_over(keys=[self._key("job", job_id)],
                                        args=[stale_token, token, now, repr(claim_until)]))

    def release_claim(self, job_id: str, token: str, until: float) -> None:
        """End the claim at ``until`` (now, or when it would have ended anyway), so a
        redelivery may take the submission over from then on."""
        with self._errors():
            self._release_claim(keys=[self._key("job", job_id)], args=[token, repr(until)])

    def record_native(self, job_id: str, token: str, native_id: str) -> StoredJob | None:
        """Record the manager's id if ``token`` still owns the submission; the record as
        it is then (in the same round trip), or None when the claim was lost."""
        with self._errors():
            raw = self._record_native(keys=[self._key("job", job_id), *self._unmirrored_key()],
                                      args=[token, native_id, job_id, *_RECORD_FIELDS])
        return _stored_job(raw) if raw else None

    # -- reading ------------------------------------------------------------------------

    def load(self, job_id: str) -> StoredJob | None:
        return self.load_many([job_id]).get(job_id)

    def load_many(self, job_ids: Iterable[str]) -> dict[str, StoredJob]:
        """Several job records in one round trip; missing ids are absent."""
        ids = list(job_ids)
        if not ids:
            return {}
        with self._errors():
            raws = self._load(keys=[self._key("job", job_id) for job_id in ids],
                              args=_RECORD_FIELDS)
        jobs = {}
        for job_id, raw in zip(ids, raws, strict=True):
            job = _stored_job(raw)
            if job is not None:
                jobs[job_id] = job
        return jobs

    def mark_mirrored(self, shown: Iterable[tuple[str, int]]) -> None:
        """The mirror shows each (job id, version): done with every job still at that
        version. One round trip however many jobs a tick showed."""
        pairs = [item for pair in shown for item in pair]
        if not pairs:
            return
        with self._errors():
            self._mark_mirrored(keys=[], args=[self._prefix, *pairs])

    def unmirrored(self, limit: int = 500) -> list[str]:
        """Jobs the mirror does not show as they are (at most ``limit``)."""
        with self._errors():
            return list(self._redis.srandmember(self._key("unmirrored"), limit) or [])

    def active(self, target: str) -> set[str]:
        with self._errors():
            return set(self._redis.smembers(self._key("active", target)))

    def history(self, job_id: str) -> list[dict[str, Any]]:
        with self._errors():
            return [json.loads(e) for e in self._redis.lrange(self._key("history", job_id),
                                                              0, -1)]

    def recent(self, limit: int = 100, start: int = 0) -> list[str]:
        """Job ids, newest first, from the ``start``-th newest on."""
        with self._errors():
            return list(self._redis.zrevrange(self._key("jobs"), start, start + limit - 1))

    def active_jobs(self) -> dict[str, set[str]]:
        """Every target's active job ids: the active sets found by SCAN, read in one
        pipeline. Targets without active jobs are absent."""
        pattern = "".join("\\" + c if c in "\\*?[]" else c for c in self._key("active:"))
        with self._errors():
            keys = list(self._redis.scan_iter(match=pattern + "*", count=1000))
            pipe = self._redis.pipeline(transaction=False)
            for key in keys:
                pipe.smembers(key)
            members = pipe.execute()
        start = len(self._key("active:"))
        return {key[start:]: set(ids) for key, ids in zip(keys, members, strict=True) if ids}

    def active_count(self, target: str) -> int:
        with self._errors():
            return int(self._redis.scard(self._key("active", target)))

    # -- writing ------------------------------------------------------------------------

    def apply(self, changes: Sequence[Change]) -> set[str]:
        """Apply every change whose job is still at its version; return the applied ids.

        One script, one round trip: a poll tick's writes land together or not at all.
        """
        if not changes:
            return set()
        args: list[Any] = [self._prefix, "1" if self._track_mirror else "0"]
        for change in changes:
            fields = _status_fields(change.status)
            before = change.job.status
            changed = {k: v for k, v in fields.items() if v != _encode(getattr(before, k))}
            transition = change.status.state is not before.state or change.note
            args += [change.job.job_id, change.job.version, len(changed)]
            args += [item for pair in changed.items() for item in pair]
            args += [_history_entry(change.status, change.note) if transition else "",
                     "remove" if change.status.state.terminal else "keep",
                     change.status.target]
        with self._errors():
            return set(self._apply(keys=[], args=args))

    # -- log tails and outputs -----------------------------------------------------------

    def tails_due(self, target: str, job_ids: Sequence[str], count: int) -> list[str]:
        """The ``count`` jobs of ``job_ids`` whose tail is the oldest (never read first)."""
        if not job_ids or count <= 0:
            return []
        with self._errors():
            scores = self._redis.zmscore(self._key("tailed", target), list(job_ids))
        ranked = sorted(zip(scores, job_ids, strict=True),
                        key=lambda pair: -1.0 if pair[0] is None else pair[0])
        return [job_id for _, job_id in ranked[:count]]

    def keep_tails(self, target: str, tails: Mapping[str, str], now: float, *,
                   final: bool = False) -> set[str]:
        """Store each job's log tail; return the jobs whose tail changed.

        A running job's refresh time is recorded for :meth:`tails_due`; a ``final`` tail
        (the job ended) leaves the rotation.
        """
        if not tails:
            return set()
        ids = list(tails)
        with self._errors():
            pipe = self._redis.pipeline(transaction=False)
            for job_id in ids:
                pipe.set(self._key("tail", job_id), tails[job_id], get=True)
            if final:
                pipe.zrem(self._key("tailed", target), *ids)
            else:
                pipe.zadd(self._key("tailed", target), dict.fromkeys(ids, now))
            before = pipe.execute()[:len(ids)]
        return {job_id for job_id, old in zip(ids, before, strict=True)
                if old != tails[job_id]}

    def tail(self, job_id: str) -> str | None:
        """The log tail last stored for ``job_id``, if any."""
        with self._errors():
            return self._redis.get(self._key("tail", job_id))

    def keep_output(self, job_id: str, path: str, data: bytes) -> None:
        with self._errors():
            self._redis.hset(self._key("output", job_id), path,
                             base64.b64encode(data).decode("ascii"))

    def output(self, job_id: str, path: str) -> bytes | None:
        """A collected output file kept in Redis, or None."""
        with self._errors():
            encoded = self._redis.hget(self._key("output", job_id), path)
        return None if encoded is None else base64.b64decode(encoded)

    def collecting_since(self, job_id: str, now: float, ttl_s: float) -> float:
        """When collecting ``job_id``'s outputs first failed (``now`` on the first call)."""
        with self._errors():
            before = self._redis.set(self._key("collecting", job_id), repr(now), nx=True,
                                     get=True, px=max(1, int(ttl_s * 1000)))
        return now if before is None else float(before)

    # -- poll leases --------------------------------------------------------------------

    def acquire_lease(self, target: str, ttl_s: float) -> str | None:
        """A token if this caller may poll ``target`` now, None if another one does."""
        token = uuid.uuid4().hex
        with self._errors():
            taken = self._redis.set(self._key("lease", target), token, nx=True,
                                    px=max(1, int(ttl_s * 1000)))
        return token if taken else None

    def swap_reachable(self, target: str, reachable: bool) -> bool | None:
        """Record whether ``target`` answered; what was recorded before (None: nothing)."""
        with self._errors():
            before = self._redis.set(self._key("reachable", target), "1" if reachable else "0",
                                     get=True)
        return None if before is None else before == "1"

    def keep_undelivered(self, events: Sequence[str], limit: int = 100_000) -> None:
        """Keep serialized events the sink refused, to send again (oldest dropped past
        ``limit``: the states themselves are in the job records)."""
        if not events:
            return
        with self._errors():
            pipe = self._redis.pipeline(transaction=True)
            pipe.rpush(self._key("outbox"), *events)
            pipe.ltrim(self._key("outbox"), -limit, -1)
            pipe.execute()

    def take_undelivered(self, count: int = 1000) -> list[str]:
        """Up to ``count`` kept events, oldest first, removed from the store."""
        with self._errors():
            return list(self._redis.lpop(self._key("outbox"), count) or [])

    def release_lease(self, target: str, token: str) -> None:
        with self._errors():
            self._release_lease(keys=[self._key("lease", target)], args=[token])
