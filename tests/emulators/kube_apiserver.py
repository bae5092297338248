"""KubeApiEmulator: an EMULATOR of the Kubernetes API server (1.28) for tests.

No kube-apiserver can run in this workplace. Tests of the Kubernetes mirror talk to this
instead: a real HTTP server on 127.0.0.1 that the official ``kubernetes`` Python client
(v37) uses unchanged, through :meth:`KubeApiEmulator.api_client` or a kubeconfig from
:meth:`KubeApiEmulator.write_kubeconfig`. State lives in memory and survives
:meth:`~KubeApiEmulator.stop` / :meth:`~KubeApiEmulator.start` on the same port, as a
cluster's state survives its API server being down.

It follows the Kubernetes API reference and API conventions, and reproduces what
shared/REFERENCE.md ("A real kube-apiserver (1.28) behaves like this") lists:

* Resources: core/v1 namespaces (+status), serviceaccounts (+token), configmaps, pods
  (+status), nodes (+status), events; coordination.k8s.io/v1 leases;
  authentication.k8s.io/v1 tokenreviews (create only, nothing stored). Verbs get, list (label
  selectors with =, ==, !=, in, notin, exists, !exists, >, <; the field selectors each
  resource supports, e.g. spec.nodeName and status.phase on pods), create, update (PUT),
  patch (strategic merge, JSON merge, JSON patch) and delete.
* One global resourceVersion: every effective write, delete included, takes the next
  one; a write that changes nothing keeps the object and its version. A PUT or patch
  carrying a stale ``metadata.resourceVersion`` (or a DELETE with stale preconditions)
  gets 409 Conflict; without one the write is unconditional. Create sets uid,
  creationTimestamp and resourceVersion, supports generateName and answers 409
  AlreadyExists, 404 when the namespace is missing, 403 when it is terminating.
  ``metadata.generation`` is not set: none of these kinds tracks it in 1.28.
* Status only through ``/status``: the main resource keeps the stored status, and a
  ``/status`` write keeps the stored spec (and, for pods, ownerReferences) but, like
  the real status strategies, does apply metadata such as labels and annotations.
* Pods: the defaults and admission changes of a default apiserver (service account
  ``default`` and its ``kube-api-access-*`` volume unless automount is off,
  not-ready/unreachable NoExecute tolerations of 300 s unless already tolerated,
  restartPolicy Always, grace period 30 s, dnsPolicy, schedulerName, priority,
  enableServiceLinks, imagePullPolicy, ...); status reset to Pending with the computed
  qosClass; 403 Forbidden when the service account does not exist; spec immutable on
  update but for images, activeDeadlineSeconds and added tolerations; no way back from
  a terminated container state unless restartPolicy is Always. Graceful deletion: a pod
  bound to a node (and not finished) gets deletionTimestamp = now + grace and stays
  until deleted again with a shorter grace period down to 0; unbound or finished pods go
  at once. Objects with finalizers stay, marked, until an update empties them.
* Nodes get the ``node.kubernetes.io/not-ready:NoSchedule`` taint at creation, and the
  TTL controller's annotation right after it, so a status PUT carrying the
  creation-time resourceVersion gets 409. :meth:`~KubeApiEmulator.node_lifecycle` runs
  one pass of the node lifecycle controller and taint-based eviction at the injected
  clock: heartbeats (Lease renewals, Ready heartbeats) older than 40 s make a node
  Unknown and unreachable-tainted, its pods NotReady, and pods without a forever
  toleration are evicted (gracefully deleted) when their tolerationSeconds have run out.
* New namespaces get a ``default`` ServiceAccount and the ``kube-root-ca.crt``
  ConfigMap (their controllers), unless ``populate_namespaces`` is false; a deleted
  ``default`` account comes back. Deleting a namespace leaves it Terminating.
* Events expire one hour after their last write, by the injected clock.
* Service-account tokens: TokenRequest (``POST .../serviceaccounts/{name}/token`` with
  ``spec.audiences``, default the API server's own, and ``spec.expirationSeconds``,
  default 3600, at least 600) answers ``status.token`` and ``status.expirationTimestamp``;
  404 for a missing account. TokenReview authenticates only a token this emulator
  issued, not expired by the injected clock, whose account still exists (same uid), and
  whose audiences intersect the review's (default the API server's): ``status.user`` is
  ``system:serviceaccount:<namespace>:<name>`` with its groups and ``status.audiences``
  the intersection; anything else is ``authenticated`` absent with ``status.error``.
  Tokens are opaque random strings, where a real cluster issues signed JWTs.
* Errors are ``Status`` objects with the real reasons, messages and codes.

The official client sends a dict patch body as ``application/strategic-merge-patch+json``
and a list as ``application/json-patch+json`` (pass ``_content_type`` for a JSON merge
patch); its POST and PUT bodies carry no Content-Type, which the apiserver, and so this
emulator, reads as JSON. It never calls discovery (/api, /apis).

What it does not do: authenticate its callers and RBAC (any caller may do anything:
compare :meth:`~KubeApiEmulator.calls` with a Role instead; it reviews tokens for
others, above, but never checks its own callers'), watch, deletecollection,
server-side apply, dryRun, pagination (``limit`` is ignored, which the API allows),
resourceVersion semantics on reads, managedFields, schemas (unknown fields are stored,
not dropped; types are only checked for string maps), most validation, the
events.k8s.io group, discovery (the typed client never asks for it), the namespace
controller emptying a Terminating namespace, the pod garbage collector, and any
controller running on its own: the ones emulated act synchronously or when a test
calls them.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

import kubernetes.client
import yaml

from tests.emulators.kube_semantics import (
    NOT_READY,
    UNREACHABLE,
    ApiError,
    FieldError,
    Obj,
    admit_pod,
    bad_request,
    config_map_errors,
    default_pod,
    dig,
    field_value,
    generated_suffix,
    invalid,
    json_patch,
    merge_patch,
    metadata_errors,
    parse_field_selector,
    parse_label_selector,
    pod_errors,
    pod_status_errors,
    pod_update_errors,
    qos_class,
    strategic_merge_patch,
    string_map_error,
    toleration_seconds,
)

__all__ = ["ApiCall", "KubeApiEmulator"]

NODE_MONITOR_GRACE_S = 40  # kube-controller-manager --node-monitor-grace-period
EVENT_TTL_S = 3600  # kube-apiserver --event-ttl
NODE_LEASE_NAMESPACE = "kube-node-lease"
_BUILT_IN_NAMESPACES = ("default", "kube-system", "kube-public", NODE_LEASE_NAMESPACE)
_IMMORTAL_NAMESPACES = ("default", "kube-system", "kube-public")
_CONDITION_TAINTS = {  # node condition (type, status) -> taint key, per the lifecycle controller
    ("Ready", "False"): NOT_READY, ("Ready", "Unknown"): UNREACHABLE,
    ("MemoryPressure", "True"): "node.kubernetes.io/memory-pressure",
    ("DiskPressure", "True"): "node.kubernetes.io/disk-pressure",
    ("PIDPressure", "True"): "node.kubernetes.io/pid-pressure",
    ("NetworkUnavailable", "True"): "node.kubernetes.io/network-unavailable",
}
_UNSCHEDULABLE = "node.kubernetes.io/unschedulable"
_REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
            405: "MethodNotAllowed", 409: "Conflict", 410: "Expired", 415: "UnsupportedMediaType",
            422: "Invalid", 429: "TooManyRequests", 500: "InternalError",
            503: "ServiceUnavailable", 504: "Timeout"}
_WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
#: The audience of tokens issued without one, and of reviews that name none.
API_AUDIENCES = ("https://kubernetes.default.svc.cluster.local",)
AUTHENTICATION = "authentication.k8s.io"
_MIN_TOKEN_S, _MAX_TOKEN_S, _DEFAULT_TOKEN_S = 600, 2 ** 32, 3600


@dataclasses.dataclass(frozen=True, slots=True)
class Resource:
    """How the apiserver's registry treats one resource."""

    plural: str
    kind: str
    group: str = ""
    namespaced: bool = True
    status: bool = False  # has a /status subresource
    create_on_update: bool = False  # a PUT of a missing object creates it
    return_deleted: bool = False  # DELETE answers with the object, not a Status
    graceful: bool = False  # supports graceful deletion
    token: bool = False  # has a /token subresource (TokenRequest)
    create_only: bool = False  # a virtual resource: create answers, nothing is stored
    fields: tuple[tuple[str, str], ...] = ()  # field selector label -> object path

    @property
    def api_version(self) -> str:
        return f"{self.group}/v1" if self.group else "v1"

    @property
    def group_resource(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def selectable(self) -> dict[str, str]:
        base = ["metadata.name", "metadata.namespace"] if self.namespaced else ["metadata.name"]
        return {**{f: f for f in base}, **dict(self.fields)}

    def details(self, name: str) -> Obj:
        details: Obj = {"name": name, "kind": self.plural}
        if self.group:
            details["group"] = self.group
        return details


def _same(*paths: str) -> tuple[tuple[str, str], ...]:
    return tuple((p, p) for p in paths)


_EVENT_FIELDS = (*_same(*(f"involvedObject.{f}" for f in (
    "kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")),
    "reason", "reportingComponent", "type"), ("source", "source.component"))
RESOURCES = {r.plural: r for r in (
    Resource("namespaces", "Namespace", namespaced=False, status=True,
             fields=_same("status.phase")),
    Resource("serviceaccounts", "ServiceAccount", return_deleted=True, token=True),
    Resource("configmaps", "ConfigMap"),
    Resource("pods", "Pod", status=True, return_deleted=True, graceful=True,
             fields=_same("spec.nodeName", "spec.restartPolicy", "spec.schedulerName",
                          "spec.serviceAccountName", "spec.hostNetwork", "status.phase",
                          "status.podIP", "status.nominatedNodeName")),
    Resource("nodes", "Node", namespaced=False, status=True, fields=_same("spec.unschedulable")),
    Resource("events", "Event", create_on_update=True, fields=_EVENT_FIELDS),
    Resource("leases", "Lease", group="coordination.k8s.io", create_on_update=True),
    Resource("tokenreviews", "TokenReview", group=AUTHENTICATION, namespaced=False,
             create_only=True),
)}
PODS, NODES = RESOURCES["pods"], RESOURCES["nodes"]


@dataclasses.dataclass(frozen=True, slots=True)
class ApiCall:
    """One request as the apiserver's request-info resolver (and so RBAC) sees it."""

    method: str
    path: str
    query: dict[str, str]
    verb: str  # get, list, watch, create, update, patch, delete, deletecollection
    group: str
    resource: str
    subresource: str
    namespace: str
    name: str
    content_type: str
    code: int  # the status answered; 0 when the connection was dropped

    @property
    def rbac(self) -> tuple[str, str, str]:
        """(apiGroup, resource[/subresource], verb): what a Role rule must allow."""
        resource = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        return self.group, resource, self.verb

    @property
    def is_write(self) -> bool:
        return self.verb in _WRITE_VERBS


@dataclasses.dataclass(frozen=True, slots=True)
class _Route:
    verb: str
    group: str = ""
    resource: Resource | None = None
    namespace: str = ""
    name: str = ""
    subresource: str = ""
    error: ApiError | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class _Token:
    """A token the emulator issued: whose, for what, until when."""

    namespace: str
    name: str
    uid: str
    audiences: tuple[str, ...]
    expires: float
    jti: str


@dataclasses.dataclass(frozen=True, slots=True)
class _Failure:
    method: str
    resource: str
    subresource: str
    status: int | Literal["drop"]


def _timestamp(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def _not_found_path() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


def _route(method: str, path: str, query: dict[str, str]) -> _Route:
    """Resolve a path as ``RequestInfoFactory`` does, for the resources emulated."""
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, rest = "", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis" and parts[2] == "v1":
        group, rest = parts[1], parts[3:]
    else:
        return _Route("", error=_not_found_path())
    namespace = ""
    if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] != "status":
        namespace, rest = rest[1], rest[2:]
    res = RESOURCES.get(rest[0]) if rest else None
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""
    if (res is None or res.group != group or len(rest) > 3 or (namespace and not res.namespaced)
            or (name and res.namespaced and not namespace)
            or (subresource and not ((subresource == "status" and res.status)
                                     or (subresource == "token" and res.token)))):
        return _Route("", group, error=_not_found_path())
    if method == "GET":
        verb = "get" if name else "watch" if query.get("watch") in ("1", "true") else "list"
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch",
                "DELETE": "delete" if name else "deletecollection"}[method]
    error = None
    refused = "the server does not allow this method on the requested resource"
    if subresource == "token":  # TokenRequest: create on a named account, nothing else
        if verb != "create":
            error = ApiError(405, "MethodNotAllowed", refused, {})
    elif (verb == "create" and name) or (verb in ("update", "patch") and not name) or (
            res.create_only and verb != "create"):
        error = ApiError(405, "MethodNotAllowed", refused, {})
    elif verb in ("watch", "deletecollection"):
        error = ApiError(405, "MethodNotAllowed",
                         f"{refused} ({verb} is not implemented by KubeApiEmulator)", {})
    elif "dryRun" in query:
        error = bad_request("dryRun is not implemented by KubeApiEmulator")
    return _Route(verb, group, res, namespace, name, subresource, error)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    emulator: KubeApiEmulator


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self.server.emulator._serve(self)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the emulator's record is :meth:`KubeApiEmulator.calls`."""



def _wants_metadata_only(accept: str) -> bool:
    """Whether the client's first choice is the metadata-only list form the real
    apiserver serves for ``application/json;as=PartialObjectMetadataList;g=meta.k8s.io;
    v=v1`` (client-go's metadata client asks for it, with plain JSON as the fallback)."""
    first = accept.split(",")[0]
    kind, *parameters = [part.strip() for part in first.split(";")]
    wanted = dict(p.split("=", 1) for p in parameters if "=" in p)
    return kind == "application/json" and wanted == {
        "as": "PartialObjectMetadataList", "g": "meta.k8s.io", "v": "v1"}


def _partial_metadata_list(answer: Obj) -> Obj:
    """A list as PartialObjectMetadataList: each item only its metadata."""
    return {"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
            "metadata": answer["metadata"],
            "items": [{"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                       "metadata": item["metadata"]} for item in answer["items"]]}

class KubeApiEmulator:
    """An in-process Kubernetes API server emulator; see the module docstring.

    ``clock`` gives the time for timestamps, graceful deletion, event expiry and node
    heartbeats (tests pass a fake one and move it). With ``populate_namespaces`` false,
    namespaces created through the API get no ``default`` ServiceAccount, as right after
    creation on a real cluster, so pod creation there is refused with 403.
    """

    def __init__(self, *, clock: Callable[[], float] = time.time,
                 populate_namespaces: bool = True) -> None:
        self.clock = clock
        self.populate_namespaces = populate_namespaces
        self._lock = threading.RLock()
        self._objects: dict[tuple[str, str, str], Obj] = {}
        self._revision = 0
        self._event_writes: dict[tuple[str, str, str], float] = {}
        self._heartbeats: dict[str, float] = {}  # node -> when a renewal was seen
        self._observed_ready: dict[str, str | None] = {}
        self._calls: list[ApiCall] = []
        self._failures: list[_Failure] = []
        self._tokens: dict[str, _Token] = {}
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._port = 0
        for name in _BUILT_IN_NAMESPACES:
            self._create(RESOURCES["namespaces"], "", {"metadata": {"name": name}}, populate=True)

    # -- lifecycle and client access ---------------------------------------------------

    def start(self) -> KubeApiEmulator:
        """Listen on 127.0.0.1: a free port the first time, the same port after a stop."""
        if self._server is not None:
            raise RuntimeError("KubeApiEmulator is already running")
        server = _Server(("127.0.0.1", self._port), _Handler)
        server.emulator = self
        self._port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="kube-api-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop answering (connections are refused); the stored objects stay."""
        if self._server is None or self._thread is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        self._server = self._thread = None

    def __enter__(self) -> KubeApiEmulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if not self._port:
            raise RuntimeError("KubeApiEmulator has not been started")
        return f"http://127.0.0.1:{self._port}"

    def api_client(self) -> kubernetes.client.ApiClient:
        """An official-client ApiClient pointed at this emulator (plain HTTP, no auth)."""
        return kubernetes.client.ApiClient(kubernetes.client.Configuration(host=self.url))

    def write_kubeconfig(self, path: str | Path, namespace: str = "default") -> Path:
        """A kubeconfig for ``config.load_kube_config``, as for a real cluster."""
        path = Path(path)
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "preferences": {},
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "emulator", "user": {"token": "emulator"}}],
            "contexts": [{"name": "emulator", "context": {
                "cluster": "emulator", "user": "emulator", "namespace": namespace}}],
            "current-context": "emulator",
        }))
        return path

    # -- observation and fault injection -----------------------------------------------

    def calls(self, **match: Any) -> list[ApiCall]:
        """Requests received so far, oldest first, those whose fields equal ``match``."""
        with self._lock:
            return [c for c in self._calls
                    if all(getattr(c, field) == value for field, value in match.items())]

    def reset_calls(self) -> None:
        with self._lock:
            self._calls.clear()

    def objects(self, resource: str, namespace: str | None = None) -> list[Obj]:
        """Copies of the stored objects of a resource (plural or Kind), by namespace/name."""
        res = next((r for r in RESOURCES.values() if resource in (r.plural, r.kind)), None)
        if res is None:
            raise KeyError(resource)
        with self._lock:
            self._expire_events()
            return [copy.deepcopy(obj) for (plural, ns, _), obj in sorted(self._objects.items())
                    if plural == res.plural and namespace in (None, ns)]

    def fail_next(self, method: str, resource: str, status: int | Literal["drop"], *,
                  subresource: str = "") -> None:
        """Make the next matching request fail without effect.

        ``status`` is an HTTP code, answered with a Status of the matching reason, or
        ``"drop"``: the connection is closed without an answer. urllib3 retries a dropped
        GET, PUT or DELETE by itself, as against a real server; a POST or PATCH fails.
        """
        with self._lock:
            self._failures.append(_Failure(method.upper(), resource, subresource, status))

    # -- controllers driven by tests ---------------------------------------------------

    def node_lifecycle(self) -> None:
        """One pass of the node lifecycle controller and the NoExecute taint manager.

        At ``clock()``: a node whose last heartbeat (its Lease's renewTime or its Ready
        condition's lastHeartbeatTime changing; else its creation) is more than 40 s old
        gets its conditions set Unknown and its pods' Ready condition False. NoSchedule
        taints follow the conditions (Ready False: not-ready, Unknown: unreachable, ...),
        NoExecute taints follow Ready alone. Pods on a node with NoExecute taints are
        evicted (deleted as with no grace period given) once the first matching
        toleration's tolerationSeconds, counted from the taint's timeAdded, have passed,
        at once if a taint is not tolerated, never if tolerated without a limit.
        """
        with self._lock:
            now = self.clock()
            self._expire_events()
            for key in [k for k in sorted(self._objects) if k[0] == "nodes"]:
                node = self._objects[key]
                name = key[2]
                new = copy.deepcopy(node)
                seen = self._heartbeats.get(name, _epoch(node["metadata"]["creationTimestamp"]))
                if now - seen > NODE_MONITOR_GRACE_S:
                    self._node_unknown(new, now)
                conditions = dig(new, "status.conditions") or []
                ready = next((c.get("status") for c in conditions if c.get("type") == "Ready"),
                             None)
                self._node_taints(new, conditions, ready, now)
                node = self._write(NODES, key, node, new)
                self._heartbeats[name] = seen  # the controller's own write is no heartbeat
                if self._observed_ready.get(name) == "True" and ready != "True":
                    self._mark_pods_not_ready(name, now)
                self._observed_ready[name] = ready
                self._evict(node, now)

    # -- HTTP --------------------------------------------------------------------------

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        url = urlsplit(handler.path)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        content_type = (handler.headers.get("Content-Type") or "").split(";")[0].strip()
        metadata_only = _wants_metadata_only(handler.headers.get("Accept") or "")
        route = _route(handler.command, url.path, query)
        payload = None
        code = 0
        with self._lock:
            failure = self._take_failure(handler.command, route)
            if failure is None or failure.status != "drop":
                try:
                    if route.error is not None:
                        raise route.error
                    if failure is not None:
                        raise self._injected(route, int(failure.status))
                    self._expire_events()
                    code, answer = self._dispatch(route, query, body, content_type)
                    if metadata_only and route.verb == "list" and code == 200:
                        answer = _partial_metadata_list(answer)
                except ApiError as error:
                    code, answer = error.code, error.status()
                except Exception as exc:  # an emulator bug: visible, not a hung client
                    code, answer = 500, ApiError(500, "InternalError",
                                                 f"KubeApiEmulator failed: {exc!r}").status()
                payload = json.dumps(answer).encode()
            res = route.resource
            self._calls.append(ApiCall(
                handler.command, url.path, query, route.verb, route.group,
                res.plural if res else "", route.subresource, route.namespace, route.name,
                content_type, code))
        if payload is None:
            handler.close_connection = True
            return
        handler.send_response(code)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    def _take_failure(self, method: str, route: _Route) -> _Failure | None:
        resource = route.resource.plural if route.resource else ""
        for failure in self._failures:
            if (failure.method, failure.resource, failure.subresource) == (
                    method, resource, route.subresource):
                self._failures.remove(failure)
                return failure
        return None

    @staticmethod
    def _injected(route: _Route, status: int) -> ApiError:
        details = route.resource.details(route.name) if route.resource else {}
        return ApiError(status, _REASONS.get(status, "InternalError"),
                        f"injected by KubeApiEmulator.fail_next ({status})", details)

    def _dispatch(self, route: _Route, query: dict[str, str], body: bytes,
                  content_type: str) -> tuple[int, Obj]:
        res = route.resource
        assert res is not None  # an unresolved route carries an error
        ns, name, sub = route.namespace, route.name, route.subresource
        if route.verb == "get":
            return 200, self._stored(res, ns, name)
        if route.verb == "list":
            return 200, self._list(res, ns, query)
        if route.verb == "delete":
            return 200, self._delete(res, ns, name, query, body)
        document = self._json(body)
        if res.plural == "tokenreviews":
            return 201, self._token_review(document)
        if sub == "token":
            return 201, self._token_request(ns, name, document)
        if route.verb == "create":
            return 201, self._create(res, ns, self._body(res, document))
        if route.verb == "update":
            return self._update(res, ns, name, sub, self._body(res, document))
        return 200, self._patch(res, ns, name, sub, document, content_type)

    @staticmethod
    def _json(body: bytes) -> Any:
        try:
            return json.loads(body or b"null")
        except ValueError as exc:
            raise bad_request(f"invalid JSON in request body: {exc}") from None

    @staticmethod
    def _body(res: Resource, document: Any) -> Obj:
        if not isinstance(document, dict) or not isinstance(document.get("metadata", {}), dict):
            raise bad_request(f'{res.kind} in version "v1" cannot be handled as a {res.kind}')
        return document

    # -- service-account tokens --------------------------------------------------------

    def _token_request(self, namespace: str, name: str, document: Any) -> Obj:
        """``serviceaccounts/token``: a token for the account, its audiences, its lifetime."""
        if not isinstance(document, dict) or document.get("kind", "TokenRequest") != \
                "TokenRequest":
            raise bad_request("the body must be a TokenRequest")
        account = self._stored(RESOURCES["serviceaccounts"], namespace, name)
        spec = document.get("spec") or {}
        audiences = spec.get("audiences") or list(API_AUDIENCES)
        seconds = spec.get("expirationSeconds", _DEFAULT_TOKEN_S)
        errors = []
        if not isinstance(audiences, list) or not all(
                isinstance(a, str) and a for a in audiences):
            errors.append(FieldError("spec.audiences", "Invalid", "must be a list of "
                                     "non-empty strings", audiences))
        if not isinstance(seconds, int) or isinstance(seconds, bool):
            errors.append(FieldError("spec.expirationSeconds", "Invalid", "must be an integer",
                                     seconds))
        elif seconds < _MIN_TOKEN_S:
            errors.append(FieldError("spec.expirationSeconds", "Invalid",
                                     "may not specify a duration less than 10 minutes", seconds))
        elif seconds > _MAX_TOKEN_S:
            errors.append(FieldError("spec.expirationSeconds", "Invalid",
                                     "may not specify a duration larger than 2^32 seconds",
                                     seconds))
        if errors:
            raise invalid("TokenRequest", name, AUTHENTICATION, errors)
        now = self.clock()
        token = secrets.token_urlsafe(48)
        self._tokens[token] = _Token(namespace, name, account["metadata"]["uid"],
                                     tuple(audiences), now + seconds, str(uuid.uuid4()))
        return {"kind": "TokenRequest", "apiVersion": f"{AUTHENTICATION}/v1",
                "metadata": {"name": name, "namespace": namespace,
                             "creationTimestamp": _timestamp(now)},
                "spec": {"audiences": list(audiences), "expirationSeconds": seconds,
                         "boundObjectRef": None},
                "status": {"token": token, "expirationTimestamp": _timestamp(now + seconds)}}

    def _token_review(self, document: Any) -> Obj:
        """``tokenreviews``: is the token one of ours, alive, for one of these audiences?"""
        if not isinstance(document, dict) or document.get("kind", "TokenReview") != \
                "TokenReview":
            raise bad_request("the body must be a TokenReview")
        spec = document.get("spec") or {}
        token = spec.get("token")
        if not isinstance(token, str) or not token:
            raise bad_request("token is required for TokenReview in authentication")
        wanted = spec.get("audiences") or list(API_AUDIENCES)
        if not isinstance(wanted, list) or not all(isinstance(a, str) for a in wanted):
            raise bad_request("spec.audiences must be a list of strings")
        status: Obj = {"user": {}}
        issued = self._tokens.get(token)
        account = self._objects.get(("serviceaccounts", issued.namespace, issued.name)) \
            if issued is not None else None
        common = [a for a in wanted if issued is not None and a in issued.audiences]
        if issued is None:
            status["error"] = "[invalid bearer token, token is not a service account token]"
        elif self.clock() >= issued.expires:
            status["error"] = "[invalid bearer token, service account token has expired]"
        elif account is None or account["metadata"]["uid"] != issued.uid:
            status["error"] = "[invalid bearer token, service account token has been invalidated]"
        elif not common:
            status["error"] = (f"[invalid bearer token, token audiences "
                               f"{json.dumps(list(issued.audiences))} is invalid for the target "
                               f"audiences {json.dumps(wanted)}]")
        else:
            status = {"authenticated": True, "audiences": common, "user": {
                "username": f"system:serviceaccount:{issued.namespace}:{issued.name}",
                "uid": issued.uid,
                "groups": ["system:serviceaccounts",
                           f"system:serviceaccounts:{issued.namespace}",
                           "system:authenticated"],
                "extra": {"authentication.kubernetes.io/credential-id": [
                    f"JTI={issued.jti}"]}}}
        return {"kind": "TokenReview", "apiVersion": f"{AUTHENTICATION}/v1",
                "metadata": {"creationTimestamp": None}, "spec": spec, "status": status}

    # -- verbs -------------------------------------------------------------------------

    def _stored(self, res: Resource, namespace: str, name: str) -> Obj:
        obj = self._objects.get((res.plural, namespace, name))
        if obj is None:
            raise ApiError(404, "NotFound", f'{res.group_resource} "{name}" not found',
                           res.details(name))
        return obj

    def _list(self, res: Resource, namespace: str, query: dict[str, str]) -> Obj:
        labels = parse_label_selector(query.get("labelSelector", ""))
        fields = parse_field_selector(query.get("fieldSelector", ""), res.selectable())
        items = []
        for (plural, ns, _), obj in sorted(self._objects.items()):
            if plural != res.plural or (namespace and ns != namespace):
                continue
            if all(r.matches(obj["metadata"].get("labels") or {}) for r in labels) and all(
                    (field_value(obj, path) == value) == equal for path, equal, value in fields):
                # List items carry no kind/apiVersion; the list does.
                items.append({k: v for k, v in obj.items() if k not in ("kind", "apiVersion")})
        return {"kind": f"{res.kind}List", "apiVersion": res.api_version,
                "metadata": {"resourceVersion": str(self._revision)}, "items": items}

    def _identify(self, res: Resource, namespace: str, name: str, obj: Obj) -> Obj:
        """Check kind, apiVersion, namespace and name against the URL; fill them in."""
        if obj.get("kind", res.kind) != res.kind or obj.get(
                "apiVersion", res.api_version) != res.api_version:
            raise bad_request(f"the API version or kind in the data ({obj.get('apiVersion')}, "
                              f"{obj.get('kind')}) does not match the expected "
                              f"({res.api_version}, {res.kind})")
        obj["kind"], obj["apiVersion"] = res.kind, res.api_version
        meta = obj.setdefault("metadata", {})
        if res.namespaced:
            if meta.get("namespace", namespace) != namespace:
                raise bad_request("the namespace of the provided object does not match the "
                                  "namespace sent on the request")
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if name and meta.get("name") != name:
            raise bad_request(f"the name of the object ({meta.get('name')}) does not match "
                              f"the name on the URL ({name})")
        paths = ["metadata.labels", "metadata.annotations"]
        if res.plural == "configmaps":
            paths += ["data", "binaryData"]
        error = string_map_error(res.kind, obj, paths)
        if error is not None:
            raise error
        return meta

    def _create(self, res: Resource, namespace: str, obj: Obj, *,
                populate: bool | None = None) -> Obj:
        meta = self._identify(res, namespace, "", obj)
        if meta.get("resourceVersion"):
            raise bad_request("resourceVersion should not be set on objects to be created")
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + generated_suffix()
        name = meta.get("name") or ""
        for field in ("uid", "creationTimestamp", "deletionTimestamp",
                      "deletionGracePeriodSeconds", "generation", "selfLink"):
            meta.pop(field, None)
        if res.namespaced:
            self._admit_namespace(res, namespace, name)
        self._admit(res, obj)
        self._validate(res, obj)
        key = (res.plural, namespace, name)
        if key in self._objects:
            raise ApiError(409, "AlreadyExists", f'{res.group_resource} "{name}" already exists',
                           res.details(name))
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _timestamp(self.clock())
        created = copy.deepcopy(self._write(res, key, None, obj))
        if res.plural == "namespaces" and (
                self.populate_namespaces if populate is None else populate):
            self._populate(name)
        if res.plural == "nodes":  # the TTL controller annotates every new node at once
            annotated = copy.deepcopy(obj)
            annotations = annotated["metadata"].setdefault("annotations", {})
            annotations["node.alpha.kubernetes.io/ttl"] = "0"
            self._write(res, key, obj, annotated)
        return created

    def _admit_namespace(self, res: Resource, namespace: str, name: str) -> None:
        """NamespaceLifecycle admission: the namespace must exist and not be terminating."""
        found = self._objects.get(("namespaces", "", namespace))
        if found is None:
            raise ApiError(404, "NotFound", f'namespaces "{namespace}" not found',
                           {"name": namespace, "kind": "namespaces"})
        if found["metadata"].get("deletionTimestamp"):
            raise ApiError(403, "Forbidden", f'{res.group_resource} "{name}" is forbidden: '
                           f"unable to create new content in namespace {namespace} because it "
                           "is being terminated", res.details(name))

    def _admit(self, res: Resource, obj: Obj) -> None:
        """Defaults, admission plugins and the create strategy of each kind."""
        meta = obj["metadata"]
        if res.plural == "pods":
            default_pod(obj)
            spec = obj["spec"]
            account = spec.get("serviceAccountName") or "default"
            found = self._objects.get(("serviceaccounts", meta["namespace"], account))
            if found is None:
                raise ApiError(403, "Forbidden", f'pods "{meta.get("name", "")}" is forbidden: '
                               f"error looking up service account {meta['namespace']}/{account}: "
                               f'serviceaccount "{account}" not found',
                               PODS.details(meta.get("name", "")))
            admit_pod(obj, found)
            obj["status"] = {"phase": "Pending", "qosClass": qos_class(spec)}
        elif res.plural == "nodes":  # TaintNodesByCondition admission
            taints = obj.setdefault("spec", {}).setdefault("taints", [])
            if not any(t.get("key") == NOT_READY and t.get("effect") == "NoSchedule"
                       for t in taints):
                taints.append({"key": NOT_READY, "effect": "NoSchedule"})
        elif res.plural == "namespaces":
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta.get("name", "")
            obj["spec"] = {"finalizers": ["kubernetes"]}
            obj["status"] = {"phase": "Active"}

    def _populate(self, namespace: str) -> None:
        """What the serviceaccount and root-ca-cert-publisher controllers add."""
        self._create(RESOURCES["serviceaccounts"], namespace, {"metadata": {"name": "default"}})
        self._create(RESOURCES["configmaps"], namespace, {
            "metadata": {"name": "kube-root-ca.crt"},
            "data": {"ca.crt": "-----BEGIN CERTIFICATE-----\nKubeApiEmulator has no CA\n"
                               "-----END CERTIFICATE-----\n"}})

    def _validate(self, res: Resource, obj: Obj, old: Obj | None = None,
                  subresource: str = "") -> None:
        meta = obj["metadata"]
        errors = metadata_errors(meta, label_name=res.plural == "namespaces")
        if res.plural == "configmaps":
            errors += config_map_errors(obj)
        elif res.plural == "pods":
            errors += pod_errors(obj)
            if old is not None:
                errors += (pod_status_errors if subresource else pod_update_errors)(old, obj)
        elif res.plural == "events":
            involved = dig(obj, "involvedObject.namespace") or ""
            if (involved and involved != meta["namespace"]) or (
                    not involved and meta["namespace"] not in ("", "default")):
                errors.append(FieldError("involvedObject.namespace", "Invalid",
                                         "does not match event.namespace", involved))
        if errors:
            raise invalid(res.kind, meta.get("name") or "", res.group, errors)

    def _update(self, res: Resource, namespace: str, name: str, subresource: str,
                obj: Obj) -> tuple[int, Obj]:
        meta = self._identify(res, namespace, name, obj)
        old = self._objects.get((res.plural, namespace, name))
        if old is None and res.create_on_update and not subresource:
            meta.pop("resourceVersion", None)
            return 201, self._create(res, namespace, obj)
        old = self._stored(res, namespace, name)
        self._precondition(res, old, meta.get("resourceVersion"), meta.get("uid"))
        return 200, self._replace(res, old, obj, subresource)

    def _patch(self, res: Resource, namespace: str, name: str, subresource: str,
               patch: Any, content_type: str) -> Obj:
        old = self._stored(res, namespace, name)
        if content_type == "application/json-patch+json":
            new = json_patch(old, patch)
        elif content_type in ("application/merge-patch+json",
                              "application/strategic-merge-patch+json"):
            if not isinstance(patch, dict):
                raise bad_request("a merge patch must be a JSON object")
            merge = (merge_patch if content_type == "application/merge-patch+json"
                     else strategic_merge_patch)
            new = merge(old, patch)
        else:
            raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an "
                           "unknown format - accepted media types include: "
                           "application/json-patch+json, application/merge-patch+json, "
                           "application/strategic-merge-patch+json (server-side apply, "
                           "application/apply-patch+yaml, is not implemented by "
                           "KubeApiEmulator)", {})
        meta = self._identify(res, namespace, name, self._body(res, new))
        # A resourceVersion the patch sets (else the stored one) is a precondition.
        self._precondition(res, old, meta.get("resourceVersion"), meta.get("uid"))
        return self._replace(res, old, new, subresource)

    @staticmethod
    def _precondition(res: Resource, old: Obj, version: str | None, uid: str | None) -> None:
        name, meta = old["metadata"]["name"], old["metadata"]
        if uid and uid != meta["uid"]:
            problem = f"Precondition failed: UID in precondition: {uid}, UID in object meta: " \
                      f"{meta['uid']}"
        elif version and version != meta["resourceVersion"]:
            problem = ("the object has been modified; please apply your changes to the latest "
                       "version and try again")
        else:
            return
        raise ApiError(409, "Conflict",
                       f'Operation cannot be fulfilled on {res.group_resource} "{name}": {problem}',
                       res.details(name))

    def _replace(self, res: Resource, old: Obj, new: Obj, subresource: str) -> Obj:
        """The update strategy: keep system metadata and the half the caller may not write."""
        meta, old_meta = new["metadata"], old["metadata"]
        for field in ("uid", "creationTimestamp", "deletionTimestamp",
                      "deletionGracePeriodSeconds", "generation"):
            if field in old_meta:
                meta[field] = old_meta[field]
            else:
                meta.pop(field, None)
        if res.status:
            kept = "spec" if subresource else "status"
            if kept in old:
                new[kept] = copy.deepcopy(old[kept])
            else:
                new.pop(kept, None)
        if res.plural == "pods":
            default_pod(new)
            if subresource:
                if "ownerReferences" in old_meta:
                    meta["ownerReferences"] = copy.deepcopy(old_meta["ownerReferences"])
                else:
                    meta.pop("ownerReferences", None)
                status = new.setdefault("status", {})
                if not status.get("qosClass"):  # immutable; backfilled as 1.28 does
                    status["qosClass"] = old["status"]["qosClass"]
        elif res.plural == "namespaces":
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
            new["spec"] = copy.deepcopy(old.get("spec"))
        self._validate(res, new, old, subresource)
        key = (res.plural, meta.get("namespace", ""), meta["name"])
        grace = old_meta.get("deletionGracePeriodSeconds")
        if old_meta.get("deletionTimestamp") and not meta.get("finalizers") and not grace:
            # The last finalizer of an object whose deletion is due: it goes now.
            gone = self._write(res, key, old, new)
            self._remove(key)
            return gone
        return self._write(res, key, old, new)

    def _delete(self, res: Resource, namespace: str, name: str, query: dict[str, str],
                body: bytes) -> Obj:
        old = self._stored(res, namespace, name)
        if body:  # DeleteOptions in the body win over the query
            options = self._json(body)
            if not isinstance(options, dict):
                raise bad_request("DeleteOptions must be a JSON object")
        else:
            options = {}
            if "gracePeriodSeconds" in query:
                try:
                    options["gracePeriodSeconds"] = int(query["gracePeriodSeconds"])
                except ValueError:
                    raise bad_request("gracePeriodSeconds must be an integer") from None
        preconditions = options.get("preconditions") or {}
        self._precondition(res, old, preconditions.get("resourceVersion"),
                           preconditions.get("uid"))
        grace = options.get("gracePeriodSeconds")
        if grace is not None and grace < 0:
            grace = 1
        if res.plural == "namespaces":
            return self._terminate(old)
        return self._delete_object(res, old, grace)

    def _delete_object(self, res: Resource, old: Obj, grace: int | None) -> Obj:
        """``BeforeDelete`` and the generic store's Delete, graceful or not."""
        new = copy.deepcopy(old)
        meta = new["metadata"]
        now = self.clock()
        remaining = 0
        if res.graceful:
            current = meta.get("deletionGracePeriodSeconds")
            if not meta.get("deletionTimestamp"):
                period = grace if grace is not None else new["spec"].get(
                    "terminationGracePeriodSeconds") or 0
                if not new["spec"].get("nodeName") or dig(new, "status.phase") in (
                        "Succeeded", "Failed"):
                    period = 0
                if period < 0:
                    period = 1
                meta["deletionTimestamp"] = _timestamp(now + period)
                meta["deletionGracePeriodSeconds"] = period
            elif current and grace is not None and grace < current:  # only ever shortened
                meta["deletionTimestamp"] = _timestamp(
                    _epoch(meta["deletionTimestamp"]) - current + grace)
                meta["deletionGracePeriodSeconds"] = grace
            elif current:
                return old  # graceful deletion already pending: nothing changes
            remaining = meta.get("deletionGracePeriodSeconds") or 0
        elif meta.get("finalizers"):
            stamp = meta.get("deletionTimestamp")
            if stamp is None or _epoch(stamp) > now:
                meta["deletionTimestamp"] = _timestamp(now)
            meta["deletionGracePeriodSeconds"] = 0
        key = (res.plural, meta.get("namespace", ""), meta["name"])
        stored = self._write(res, key, old, new)
        if meta.get("finalizers") or remaining:
            return stored
        self._remove(key)
        if res.plural == "serviceaccounts" and meta["name"] == "default" and \
                self.populate_namespaces and not self._terminating(key[1]):
            self._create(res, key[1], {"metadata": {"name": "default"}})
        if res.return_deleted:
            return stored
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": {**res.details(meta["name"]), "uid": meta["uid"]}}

    def _terminating(self, namespace: str) -> bool:
        return bool(dig(self._objects.get(("namespaces", "", namespace)),
                        "metadata.deletionTimestamp"))

    def _terminate(self, old: Obj) -> Obj:
        """Namespace deletion: Terminating until a namespace controller (not emulated) ends it."""
        name = old["metadata"]["name"]
        res = RESOURCES["namespaces"]
        if name in _IMMORTAL_NAMESPACES:
            raise ApiError(403, "Forbidden", f'namespaces "{name}" is forbidden: this namespace '
                           "may not be deleted", res.details(name))
        if old["metadata"].get("deletionTimestamp"):
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on namespaces '
                           f'"{name}": The system is ensuring all content is removed from this '
                           "namespace.  Upon completion, this namespace will automatically be "
                           "purged by the system.", res.details(name))
        new = copy.deepcopy(old)
        new["metadata"]["deletionTimestamp"] = _timestamp(self.clock())
        new["metadata"]["deletionGracePeriodSeconds"] = 0
        new["status"]["phase"] = "Terminating"
        return self._write(res, ("namespaces", "", name), old, new)

    # -- storage -----------------------------------------------------------------------

    def _write(self, res: Resource, key: tuple[str, str, str], old: Obj | None,
               new: Obj) -> Obj:
        """Store ``new`` with the next resourceVersion, unless it equals ``old``."""
        meta = new["metadata"]
        if old is not None:
            meta["resourceVersion"] = old["metadata"]["resourceVersion"]
            if new == old:
                return old
        self._revision += 1
        meta["resourceVersion"] = str(self._revision)
        self._objects[key] = new
        now = self.clock()
        if res.plural == "events":
            self._event_writes[key] = now
        if res.plural == "leases" and key[1] == NODE_LEASE_NAMESPACE and (
                dig(old, "spec.renewTime") != dig(new, "spec.renewTime")):
            self._heartbeats[key[2]] = now
        if res.plural == "nodes" and self._ready(old).get("lastHeartbeatTime") != self._ready(
                new).get("lastHeartbeatTime"):
            self._heartbeats[key[2]] = now
        return new

    def _remove(self, key: tuple[str, str, str]) -> None:
        self._revision += 1
        del self._objects[key]
        self._event_writes.pop(key, None)

    def _expire_events(self) -> None:
        now = self.clock()
        for key, written in list(self._event_writes.items()):
            if now - written >= EVENT_TTL_S:
                self._remove(key)

    # -- node lifecycle ----------------------------------------------------------------

    @staticmethod
    def _ready(node: Obj | None) -> Obj:
        return next((c for c in dig(node, "status.conditions") or []
                     if c.get("type") == "Ready"), {})

    @staticmethod
    def _node_unknown(node: Obj, now: float) -> None:
        """What the controller writes for a node that stopped posting status."""
        conditions = node.setdefault("status", {}).setdefault("conditions", [])
        stamp = _timestamp(now)
        for kind in ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure"):
            found = next((c for c in conditions if c.get("type") == kind), None)
            if found is None:
                conditions.append({"type": kind, "status": "Unknown",
                                   "reason": "NodeStatusNeverUpdated",
                                   "message": "Kubelet never posted node status.",
                                   "lastHeartbeatTime": node["metadata"]["creationTimestamp"],
                                   "lastTransitionTime": stamp})
            elif found.get("status") != "Unknown":
                found.update(status="Unknown", reason="NodeStatusUnknown",
                             message="Kubelet stopped posting node status.",
                             lastTransitionTime=stamp)

    @staticmethod
    def _node_taints(node: Obj, conditions: list[Obj], ready: str | None, now: float) -> None:
        spec = node.setdefault("spec", {})
        taints = list(spec.get("taints") or [])
        wanted = {(_CONDITION_TAINTS[(c.get("type"), c.get("status"))], "NoSchedule")
                  for c in conditions if (c.get("type"), c.get("status")) in _CONDITION_TAINTS}
        if spec.get("unschedulable"):
            wanted.add((_UNSCHEDULABLE, "NoSchedule"))
        managed = {(k, "NoSchedule") for k in [*_CONDITION_TAINTS.values(), _UNSCHEDULABLE]}
        if ready is not None:  # NoExecute taints follow the Ready condition alone
            managed |= {(NOT_READY, "NoExecute"), (UNREACHABLE, "NoExecute")}
            execute = {"False": NOT_READY, "Unknown": UNREACHABLE}.get(ready)
            if execute:
                wanted.add((execute, "NoExecute"))
        present = {(t.get("key"), t.get("effect")) for t in taints}
        taints = [t for t in taints if (t.get("key"), t.get("effect")) not in managed - wanted]
        taints += [{"key": key, "effect": effect, "timeAdded": _timestamp(now)}
                   for key, effect in sorted(wanted - present)]
        if taints:
            spec["taints"] = taints
        else:
            spec.pop("taints", None)

    def _pods_on(self, node: str) -> list[tuple[tuple[str, str, str], Obj]]:
        return [(k, o) for k, o in sorted(self._objects.items())
                if k[0] == "pods" and dig(o, "spec.nodeName") == node]

    def _mark_pods_not_ready(self, node: str, now: float) -> None:
        for key, pod in self._pods_on(node):
            new = copy.deepcopy(pod)
            for condition in dig(new, "status.conditions") or []:
                if condition.get("type") == "Ready" and condition.get("status") != "False":
                    condition.update(status="False", lastTransitionTime=_timestamp(now))
            self._write(PODS, key, pod, new)

    def _evict(self, node: Obj, now: float) -> None:
        taints = [t for t in dig(node, "spec.taints") or [] if t.get("effect") == "NoExecute"]
        if not taints:
            return
        since = max(_epoch(t["timeAdded"]) if t.get("timeAdded") else now for t in taints)
        for key, pod in self._pods_on(node["metadata"]["name"]):
            if pod["metadata"].get("deletionTimestamp"):
                continue
            seconds = toleration_seconds(pod["spec"].get("tolerations") or [], taints)
            if seconds is None or now < since + seconds:
                continue
            marked = copy.deepcopy(pod)
            marked.setdefault("status", {}).setdefault("conditions", []).append({
                "type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager",
                "message": "Taint manager: deleting due to NoExecute taint",
                "lastTransitionTime": _timestamp(now)})
            self._delete_object(PODS, self._write(PODS, key, pod, marked), None)
