"""Hypothesis strategies for hostile input: broken JobRequest fields, hostile text,
malformed CloudEvents.

The rules come from the contract (README: "JobRequest"), not from the bridge's code:
names of targets, queues and accounts are letters, digits, ``.``, ``_`` and ``-``;
job ids are lower-case letters, digits and ``-`` (at most 53); environment names are
shell identifiers; labels and namespaces follow Kubernetes. Every broken value here is
broken by construction, so the property can say which field the answer must name.
"""

from __future__ import annotations

import json
import string
from typing import Any

from hypothesis import strategies as st

from hpcbridge import events

__all__ = ["HEADER_TEXT", "broken_requests", "envelopes", "hostile_text"]

_NAME_CHARS = string.ascii_letters + string.digits + "._-"
#: Characters no name, id, key or label of the contract allows.
_FORBIDDEN = [*" \t\n\r\x00;|&$`'\"\\*?<>(){}[]!#%^=+,:~@/", "é", "ß", "\u202e", "😀"]
_JSON_ATOMS = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                        st.floats(allow_nan=False, allow_infinity=False),
                        st.text(max_size=20))
ANY_JSON = st.recursive(_JSON_ATOMS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)
NOT_A_STRING = st.one_of(st.booleans(), st.integers(), st.floats(allow_nan=False),
                         st.lists(_JSON_ATOMS, max_size=3),
                         st.dictionaries(st.text(max_size=5), _JSON_ATOMS, max_size=3))
NOT_AN_OBJECT = st.one_of(st.booleans(), st.integers(), st.text(max_size=10),
                          st.lists(_JSON_ATOMS, max_size=3))
#: Printable ASCII: what an HTTP header can carry.
HEADER_TEXT = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126),
                      max_size=40)


def _with_forbidden(allowed: str, *, slash: bool = True) -> st.SearchStrategy[str]:
    """A string with at least one character outside ``allowed`` (``/`` only if
    ``slash``: it separates a label key's prefix)."""
    part = st.text(alphabet=allowed, max_size=6)
    forbidden = _FORBIDDEN if slash else [c for c in _FORBIDDEN if c != "/"]
    return st.builds(lambda a, bad, b: a + bad + b, part, st.sampled_from(forbidden), part)


def _bad_name(limit: int, allowed: str = _NAME_CHARS) -> st.SearchStrategy[Any]:
    return st.one_of(NOT_A_STRING, st.just(""), _with_forbidden(allowed),
                     st.text(alphabet="a", min_size=limit + 1, max_size=limit + 40))


_ENV_KEY_BAD = st.one_of(st.just(""), _with_forbidden(string.ascii_letters + "_"),
                         st.builds(lambda d, s: d + s, st.sampled_from(string.digits),
                                   st.text(alphabet=string.ascii_letters, max_size=4)))
_LABEL_KEY_BAD = st.one_of(st.just(""), _with_forbidden(string.ascii_lowercase + "-.", slash=False),
                           st.text(alphabet="a", min_size=64, max_size=80))
_RESOURCES = ("nodes", "tasks", "cpus_per_task", "memory_mb", "gpus", "time_limit_s")


def _resources() -> st.SearchStrategy[tuple[Any, str]]:
    """(a broken ``resources`` value, the field the answer must name)."""
    whole = NOT_AN_OBJECT.map(lambda v: (v, "resources"))
    unknown = st.text(alphabet=string.ascii_lowercase + "_", min_size=1, max_size=10) \
        .filter(lambda k: k not in _RESOURCES) \
        .map(lambda k: ({k: 1}, f"resources.{k}"))

    def bad_count(name: str) -> st.SearchStrategy[tuple[Any, str]]:
        low = 0 if name == "gpus" else 1
        value = st.one_of(st.booleans(), st.floats(allow_nan=False), st.text(max_size=4),
                          st.integers(max_value=low - 1), st.integers(min_value=10**9 + 1),
                          st.lists(st.integers(), max_size=2))
        return value.map(lambda v: ({name: v}, f"resources.{name}"))

    return st.one_of(whole, unknown, st.sampled_from(_RESOURCES).flatmap(bad_count))


def _string_map(field: str, bad_key: st.SearchStrategy[str],
                bad_value: st.SearchStrategy[Any]) -> st.SearchStrategy[tuple[Any, str]]:
    good_key = st.text(alphabet=string.ascii_uppercase, min_size=1, max_size=6)
    return st.one_of(
        NOT_AN_OBJECT.map(lambda v: (v, field)),
        bad_key.map(lambda k: ({k: "x"}, f"{field}.{k}")),
        st.tuples(good_key, bad_value).map(lambda kv: ({kv[0]: kv[1]}, f"{field}.{kv[0]}")),
    )


def _command() -> st.SearchStrategy[Any]:
    return st.one_of(NOT_A_STRING.filter(lambda v: not (isinstance(v, list) and v and all(
                         isinstance(a, str) and a and "\x00" not in a for a in v))),
                     st.just([]), st.just([""]), st.text(min_size=1, max_size=10),
                     st.lists(st.text(max_size=5), max_size=2).map(lambda a: ["true", *a, 7]),
                     st.text(max_size=5).map(lambda a: ["echo", a + "\x00" + a]))


def broken_requests(target: str) -> st.SearchStrategy[tuple[dict[str, Any], str]]:
    """A JobRequest with exactly one broken field, and the field the answer must name."""
    base: dict[str, Any] = {"target": target, "command": ["true"]}
    cases: list[st.SearchStrategy[tuple[Any, str]]] = [
        # (field, value) pairs, as (value, expected field) under the field's name
        _bad_name(128).map(lambda v: ({"target": v}, "target")),
        st.text(alphabet=_NAME_CHARS, min_size=1, max_size=20).filter(
            lambda v: v != target and v[0] not in "._-").map(
            lambda v: ({"target": v}, "target")),  # well formed, not configured
        _bad_name(53, string.ascii_lowercase + string.digits + "-").map(
            lambda v: ({"job_id": v}, "job_id")),
        st.sampled_from(["-a", "a-", "-", "A", "a_b"]).map(lambda v: ({"job_id": v}, "job_id")),
        *[_bad_name(128).map(lambda v, f=f: ({f: v}, f)) for f in ("name", "queue", "account")],
        st.one_of(NOT_A_STRING, st.just(""), st.text(max_size=10).filter(
            lambda v: not v.startswith("/")), st.text(max_size=5).map(lambda v: "/" + v + "\x00"),
                  st.just("/" + "d" * 5000)).map(lambda v: ({"working_dir": v}, "working_dir")),
        _command().map(lambda v: ({"command": v}, "command")),
        st.one_of(NOT_A_STRING, st.sampled_from(["", " ", "\n\t "]),
                  st.text(max_size=5).map(lambda v: "echo " + v + "\x00")).map(
            lambda v: ({"script": v, "command": None}, "script")),
        st.just(({"script": "echo both"}, "script")),  # script and command
        st.just(({"command": None}, "script")),  # neither
        _resources().map(lambda vf: ({"resources": vf[0]}, vf[1])),
        _string_map("environment", _ENV_KEY_BAD,
                    st.one_of(NOT_A_STRING, st.text(max_size=5).map(lambda v: v + "\x00"),
                              st.just("x" * 40000))).map(
            lambda vf: ({"environment": vf[0]}, vf[1])),
        _string_map("labels", _LABEL_KEY_BAD,
                    st.one_of(NOT_A_STRING, _with_forbidden(string.ascii_letters),
                              st.text(alphabet="v", min_size=64, max_size=70))).map(
            lambda vf: ({"labels": vf[0]}, vf[1])),
        _bad_name(63, string.ascii_lowercase + string.digits + "-").map(
            lambda v: ({"namespace": v}, "namespace")),
        st.text(alphabet=string.ascii_lowercase + "_", min_size=1, max_size=12).filter(
            lambda k: k not in {"target", "script", "command", "job_id", "name", "resources",
                                "queue", "account", "working_dir", "environment", "labels",
                                "namespace"}).map(lambda k: ({k: "x"}, k)),
    ]

    def merge(change: tuple[dict[str, Any], str]) -> tuple[dict[str, Any], str]:
        fields, expected = change
        data = {**base, **fields}
        return {k: v for k, v in data.items() if v is not None or k == expected}, expected

    return st.one_of(cases).map(merge)


#: Text as a hostile pipeline would send it: control characters, newlines, shell
#: metacharacters, right-to-left marks, emoji (lone surrogates have a test of their own).
hostile_text = st.one_of(
    st.text(max_size=30),
    st.text(alphabet=st.sampled_from(_FORBIDDEN + list("abc \n")), max_size=30),
    st.sampled_from(["$(id)", "`id`", "; id", "| id", "&& id", "\nid\n", "'; id; '",
                     '"; id; "', "${IFS}", "%s%n", "../../etc/passwd", "\r\nX-Injected: 1"]),
)

_TYPES = [events.REQUESTED, events.CANCEL, events.TICK, events.PING, events.APISERVER_UPDATE,
          events.APISERVER_DELETE, events.SUBMITTED, "hpcbridge.job.requested.v2", ""]
_CONTENT_TYPES = ["application/json", "application/cloudevents+json", "text/plain",
                  "application/octet-stream", "application/cloudevents-batch+json",
                  "application/json; charset=latin-1", ""]


@st.composite
def envelopes(draw: st.DrawFn) -> tuple[dict[str, str], bytes]:
    """An HTTP request (headers, body) that may or may not be a CloudEvent."""
    body_json = draw(st.one_of(ANY_JSON, st.fixed_dictionaries(
        {}, optional={"target": st.one_of(st.just("fuzz"), ANY_JSON),
                      "command": st.one_of(st.just(["true"]), ANY_JSON),
                      "job_id": ANY_JSON, "targets": ANY_JSON,
                      "metadata": ANY_JSON})))
    body = draw(st.one_of(st.just(json.dumps(body_json).encode()),
                          st.binary(max_size=64), st.just(b"")))
    attributes = draw(st.fixed_dictionaries({}, optional={
        "specversion": st.one_of(st.sampled_from(["1.0", "0.3", "2.0", ""]), HEADER_TEXT),
        "type": st.one_of(st.sampled_from(_TYPES), HEADER_TEXT),
        "source": HEADER_TEXT, "id": HEADER_TEXT, "subject": HEADER_TEXT,
        "time": st.one_of(HEADER_TEXT, st.just("2026-11-23T10:00:00Z")),
        "traceparent": HEADER_TEXT}))
    if draw(st.booleans()):  # binary mode
        headers = {f"ce-{k}": v.strip(" \t") for k, v in attributes.items()}
        content_type = draw(st.sampled_from(_CONTENT_TYPES))
        if content_type:
            headers["content-type"] = content_type
        return headers, body
    document: dict[str, Any] = {**attributes}
    choice = draw(st.integers(0, 3))
    if choice == 1:
        document["data"] = body_json
    elif choice == 2:
        document["data_base64"] = draw(st.one_of(HEADER_TEXT, st.just("e30=")))
    elif choice == 3:
        document["data"] = body.decode("latin-1")
    extra = draw(st.dictionaries(HEADER_TEXT, ANY_JSON, max_size=2))
    payload = json.dumps({**extra, **document}).encode() if draw(st.booleans()) else \
        json.dumps(draw(ANY_JSON)).encode()
    return {"content-type": draw(st.sampled_from(
        ["application/cloudevents+json", "application/cloudevents+json; charset=utf-8"]))}, \
        payload
