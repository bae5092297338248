"""The job model every part of hpc-bridge speaks: requests, states, statuses.

A :class:`JobRequest` is what a pipeline sends; a :class:`JobStatus` is what the bridge
reports back. Validation is strict: an unknown or ill-typed field is a
:class:`RequestError` naming the field, never a silently dropped value.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "TERMINAL",
    "JobRequest",
    "JobStatus",
    "Reason",
    "RequestError",
    "Resources",
    "State",
    "job_id_for_event",
    "validate_job_id",
    "validate_namespace",
]


class RequestError(ValueError):
    """A client sent something the bridge refuses; ``field`` names the culprit."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


class State(enum.StrEnum):
    ACCEPTED = "ACCEPTED"
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUSPENDED = "SUSPENDED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    UNKNOWN = "UNKNOWN"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({State.SUCCEEDED, State.FAILED, State.CANCELLED})


class Reason(enum.StrEnum):
    """Why a job ended anywhere but SUCCEEDED."""

    EXIT_CODE = "exit_code"
    TIMEOUT = "timeout"
    OUT_OF_MEMORY = "out_of_memory"
    NODE_FAILURE = "node_failure"
    PREEMPTED = "preempted"
    CANCELLED = "cancelled"
    SUBMIT_ERROR = "submit_error"
    LOST = "lost"


# A job id becomes part of Kubernetes object names (``hpcbridge-<id>``, at most 63
# characters, DNS-1123) and of native job names, so it is kept to that alphabet.
_JOB_ID = re.compile(r"^[a-z0-9]([-a-z0-9]{0,51}[a-z0-9])?$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_MAX_SCRIPT = 1 << 20
_MAX_OUTPUTS = 32


def validate_job_id(value: Any, field: str = "job_id") -> str:
    if not isinstance(value, str):
        raise RequestError(field, "must be a string")
    if not _JOB_ID.match(value):
        raise RequestError(
            field,
            "must be 1-53 characters of lower-case letters, digits and '-', "
            "starting and ending with a letter or digit",
        )
    return value


def validate_namespace(value: Any, field: str = "namespace") -> str:
    """A Kubernetes namespace name (a DNS-1123 label)."""
    checked = _string({field: value}, field, pattern=_NAMESPACE, limit=63)
    if checked is None:
        raise RequestError(field, "must be a string")
    return checked


def job_id_for_event(source: str, event_id: str) -> str:
    """A job id derived from a CloudEvent's identity, so a redelivery names the same job."""
    digest = hashlib.sha256(f"{source}\0{event_id}".encode()).hexdigest()
    return f"j-{digest[:24]}"


def _unicode(value: str, field: str) -> str:
    """``value`` if it is text that UTF-8 can carry (no lone surrogates, no NUL)."""
    if "\x00" in value:
        raise RequestError(field, "must not contain NUL")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise RequestError(field, "must be valid Unicode text (it has a lone surrogate)") \
            from None
    return value


def _string(data: Mapping[str, Any], field: str, *, pattern: re.Pattern[str] | None = None,
            limit: int = 4096) -> str | None:
    value = data.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise RequestError(field, "must be a string")
    if not value or len(value) > limit:
        raise RequestError(field, f"must be 1 to {limit} characters")
    _unicode(value, field)
    if pattern is not None and not pattern.match(value):
        raise RequestError(field, "has characters that are not allowed")
    return value


def _string_map(value: Any, field: str, key_pattern: re.Pattern[str],
                value_pattern: re.Pattern[str] | None = None) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise RequestError(field, "must be an object of strings")
    result: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not key_pattern.match(key):
            raise RequestError(f"{field}.{key}", "is not an allowed key")
        if not isinstance(item, str):
            raise RequestError(f"{field}.{key}", "must be a string")
        if len(item) > 32768:
            raise RequestError(f"{field}.{key}", "must be under 32 KiB")
        _unicode(item, f"{field}.{key}")
        if value_pattern is not None and not value_pattern.match(item):
            raise RequestError(f"{field}.{key}", "is not an allowed value")
        result[key] = item
    return result


def _output_paths(value: Any) -> tuple[str, ...]:
    """Files to collect when the job ends: plain paths under its working directory.

    No absolute path, no ``..`` and no control characters: a path is only ever data,
    resolved by the adapter inside the job's working directory.
    """
    if value is None:
        return ()
    if not isinstance(value, list):
        raise RequestError("outputs", "must be a list of file paths relative to the job's "
                           "working directory")
    if len(value) > _MAX_OUTPUTS:
        raise RequestError("outputs", f"names at most {_MAX_OUTPUTS} files")
    for index, path in enumerate(value):
        field = f"outputs[{index}]"
        if not isinstance(path, str) or not path or len(path) > 1024:
            raise RequestError(field, "must be a path of 1 to 1024 characters")
        _unicode(path, field)
        if any(ord(c) < 32 or ord(c) == 127 for c in path):
            raise RequestError(field, "must not contain control characters")
        if path.startswith("/"):
            raise RequestError(field, "must be relative to the job's working directory")
        if any(part in ("", ".", "..") for part in path.split("/")):
            raise RequestError(field, "must not have empty, '.' or '..' segments")
        if path in value[:index]:
            raise RequestError(field, "names a file already named")
    return tuple(value)


def _reject_unknown(data: Mapping[str, Any], known: set[str], prefix: str = "") -> None:
    for key in data:
        if key not in known:
            raise RequestError(f"{prefix}{key}", "is not a known field")


@dataclasses.dataclass(frozen=True, slots=True)
class Resources:
    nodes: int | None = None
    tasks: int | None = None
    cpus_per_task: int | None = None
    memory_mb: int | None = None
    gpus: int | None = None
    time_limit_s: int | None = None

    @classmethod
    def from_dict(cls, data: Any) -> Resources:
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise RequestError("resources", "must be an object")
        fields = {f.name for f in dataclasses.fields(cls)}
        _reject_unknown(data, fields, "resources.")
        values: dict[str, int] = {}
        for name in fields:
            value = data.get(name)
            if value is None:
                continue
            # bool is an int in Python; a JSON true is not a count.
            if not isinstance(value, int) or isinstance(value, bool):
                raise RequestError(f"resources.{name}", "must be an integer")
            minimum = 0 if name == "gpus" else 1
            if not minimum <= value <= 10**9:
                raise RequestError(f"resources.{name}", f"must be between {minimum} and 10^9")
            values[name] = value
        return cls(**values)

    def to_dict(self) -> dict[str, int]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclasses.dataclass(frozen=True, slots=True)
class JobRequest:
    """What a pipeline asks for: one job on one target."""

    target: str
    script: str | None = None
    command: tuple[str, ...] | None = None
    job_id: str | None = None
    name: str | None = None
    resources: Resources = dataclasses.field(default_factory=Resources)
    queue: str | None = None
    account: str | None = None
    working_dir: str | None = None
    environment: Mapping[str, str] = dataclasses.field(default_factory=dict)
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    namespace: str | None = None
    #: files (relative to the working directory) collected when the job ends
    outputs: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, data: Any) -> JobRequest:
        if not isinstance(data, Mapping):
            raise RequestError(None, "the event data must be a JSON object (a JobRequest)")
        _reject_unknown(data, {f.name for f in dataclasses.fields(cls)})
        target = _string(data, "target", pattern=_NAME, limit=128)
        if target is None:
            raise RequestError("target", "is required")
        script = data.get("script")
        if script is not None and (not isinstance(script, str) or not script.strip()):
            raise RequestError("script", "must be a non-empty string")
        if script is not None and len(script) > _MAX_SCRIPT:
            raise RequestError("script", "must be under 1 MiB")
        if script is not None:
            _unicode(script, "script")
        command = data.get("command")
        if command is not None:
            if (not isinstance(command, list) or not command
                    or not all(isinstance(a, str) for a in command)):
                raise RequestError("command", "must be a non-empty list of strings")
            if sum(map(len, command)) > _MAX_SCRIPT:
                raise RequestError("command", "must be under 1 MiB")
            for argument in command:
                _unicode(argument, "command")
            if not command[0]:
                raise RequestError("command", "must start with a program name")
            command = tuple(command)
        if (script is None) == (command is None):
            raise RequestError("script", "give exactly one of 'script' or 'command'")
        job_id = data.get("job_id")
        working_dir = _string(data, "working_dir")
        if working_dir is not None and not working_dir.startswith("/"):
            raise RequestError("working_dir", "must be an absolute path")
        return cls(
            target=target,
            script=script,
            command=command,
            job_id=None if job_id is None else validate_job_id(job_id),
            name=_string(data, "name", pattern=_NAME, limit=128),
            resources=Resources.from_dict(data.get("resources")),
            queue=_string(data, "queue", pattern=_NAME, limit=128),
            account=_string(data, "account", pattern=_NAME, limit=128),
            working_dir=working_dir,
            environment=_string_map(data.get("environment"), "environment", _ENV_NAME),
            labels=_string_map(data.get("labels"), "labels", _LABEL_KEY, _LABEL_VALUE),
            namespace=None if data.get("namespace") is None
            else validate_namespace(data["namespace"]),
            outputs=_output_paths(data.get("outputs")),
        )

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"target": self.target}
        for name in ("script", "job_id", "name", "queue", "account", "working_dir",
                     "namespace"):
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        if self.command is not None:
            data["command"] = list(self.command)
        if resources := self.resources.to_dict():
            data["resources"] = resources
        if self.environment:
            data["environment"] = dict(self.environment)
        if self.labels:
            data["labels"] = dict(self.labels)
        if self.outputs:
            data["outputs"] = list(self.outputs)
        return data


@dataclasses.dataclass(frozen=True, slots=True)
class JobStatus:
    """The bridge's view of one job, as stored, mirrored and sent in events."""

    job_id: str
    target: str
    state: State
    native_state: str | None = None
    native_id: str | None = None
    exit_code: int | None = None
    reason: Reason | None = None
    submitted_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    updated_at: float | None = None
    #: the collected output files, by path: where each is kept, or why it is not
    outputs: Mapping[str, Mapping[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["state"] = str(self.state)
        data["reason"] = None if self.reason is None else str(self.reason)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobStatus:
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values["state"] = State(values["state"])
        if values.get("reason") is not None:
            values["reason"] = Reason(values["reason"])
        return cls(**values)

    def replace(self, **changes: Any) -> JobStatus:
        return dataclasses.replace(self, **changes)
