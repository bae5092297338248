"""Who sent this request: Knative's sender identity, checked with a TokenReview.

With Knative Eventing's ``authentication-oidc`` feature, every source and every Trigger
delivers with ``Authorization: Bearer <token>``: a Kubernetes service-account token
issued for the receiver's audience, the service account being the source's or Trigger's
own, in its namespace. The bridge asks the Kubernetes API whether the token is valid for
its audience (``POST /apis/authentication.k8s.io/v1/tokenreviews``); the answer's user
``system:serviceaccount:<namespace>:<name>`` says which namespace the request acts for.

Positive answers are kept for a short time, keyed by a hash of the token, so that a burst
of events costs one review. The token itself is never logged, stored or put into a
message. The ``kubernetes`` client is imported only when a review is configured.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from adapters.base import ConfigError
from hpcbridge.model import RequestError
from hpcbridge.settings import Settings

__all__ = ["AUTHORIZATION", "Forbidden", "ReviewUnavailable", "Sender", "TokenReviewer",
           "Unauthenticated", "identify"]

#: The header, and the field a refusal names.
AUTHORIZATION = "Authorization"
_SERVICE_ACCOUNT = "system:serviceaccount:"
#: How long a positive review is trusted (the kube-apiserver's own webhook token cache
#: keeps one for two minutes); a revoked token may act this long.
CACHE_S = 60.0
_CACHE_ENTRIES = 4096
_TIMEOUT_S = 5.0


class Unauthenticated(RequestError):
    """No valid token for the bridge's audience: 401, not retried by Knative."""

    status = 401

    def __init__(self, message: str) -> None:
        super().__init__(AUTHORIZATION, message)


class Forbidden(RequestError):
    """A known sender asking for what it may not do: 403, not retried by Knative."""

    status = 403


class ReviewUnavailable(Exception):
    """The Kubernetes API did not answer the review: 503, redelivered."""


@dataclasses.dataclass(frozen=True, slots=True)
class Sender:
    """An authenticated sender: its user name, its namespace (a service account's) and
    whether it may act on every namespace (``HPCBRIDGE_NAMESPACE_ADMINS``)."""

    username: str
    namespace: str | None
    admin: bool = False

    @classmethod
    def of(cls, username: str, admins: frozenset[str]) -> Sender:
        namespace = None
        if username.startswith(_SERVICE_ACCOUNT):
            parts = username[len(_SERVICE_ACCOUNT):].split(":")
            if len(parts) == 2 and all(parts):
                namespace = parts[0]
        return cls(username, namespace, username in admins)


#: ``review(token, audiences)`` answers the TokenReview's ``status`` as a dict.
Review = Callable[[str, list[str]], Mapping[str, Any]]


class TokenReviewer:
    """Turns an ``Authorization`` header into a :class:`Sender`, or refuses it."""

    def __init__(self, audience: str, admins: frozenset[str], review: Review, *,
                 cache_s: float = CACHE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.audience = audience
        self.admins = admins
        self._review = review
        self._cache_s = cache_s
        self._clock = clock
        self._lock = threading.Lock()
        self._known: dict[str, tuple[float, Sender]] = {}

    @classmethod
    def from_environment(cls, audience: str, admins: frozenset[str]) -> TokenReviewer:
        """A reviewer that asks the cluster the function runs in, else KUBECONFIG's."""
        return cls(audience, admins, _kubernetes_review())

    def sender(self, authorization: str | None) -> Sender:
        """The sender of a request whose ``Authorization`` header is ``authorization``."""
        scheme, _, token = (authorization or "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("a bearer token for audience "
                                  f"{self.audience!r} is required")
        key = hashlib.sha256(token.encode()).hexdigest()
        now = self._clock()
        with self._lock:
            known = self._known.get(key)
        if known is not None and known[0] > now:
            return known[1]
        status = self._review(token, [self.audience])
        audiences = status.get("audiences") or []
        username = (status.get("user") or {}).get("username")
        if not status.get("authenticated") or not isinstance(username, str):
            raise Unauthenticated(f"the token is not valid for audience {self.audience!r}")
        if self.audience not in audiences:
            # An authenticator that ignores audiences would accept any service-account
            # token, one meant for another receiver included.
            raise Unauthenticated(f"the token was not issued for audience {self.audience!r}")
        sender = Sender.of(username, self.admins)
        with self._lock:
            if len(self._known) >= _CACHE_ENTRIES:
                self._known = {k: v for k, v in self._known.items() if v[0] > now}
                if len(self._known) >= _CACHE_ENTRIES:
                    self._known.clear()
            self._known[key] = (now + self._cache_s, sender)
        return sender


def _kubernetes_review() -> Review:
    """A TokenReview through the official client (imported here: it is slow to import)."""
    import urllib3
    from kubernetes import client, config
    from kubernetes.client.rest import ApiException

    configuration = client.Configuration()
    try:
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=configuration)
        else:
            config.load_kube_config(config_file=os.environ.get("KUBECONFIG"),
                                    client_configuration=configuration)
    except (config.ConfigException, OSError) as exc:
        raise ConfigError(f"HPCBRIDGE_SENDER_AUTH=tokenreview but the cluster's settings "
                          f"cannot be read: {exc}") from None
    api = client.AuthenticationV1Api(client.ApiClient(configuration))

    def review(token: str, audiences: list[str]) -> Mapping[str, Any]:
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                "spec": {"token": token, "audiences": audiences}}
        try:
            answer = api.create_token_review(body, _request_timeout=_TIMEOUT_S)
        except ApiException as exc:
            # The answer echoes the token in its spec: only the code goes into the message.
            raise ReviewUnavailable(f"the Kubernetes API refused the TokenReview: "
                                    f"{exc.status} {exc.reason}") from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise ReviewUnavailable(f"the Kubernetes API did not answer the TokenReview "
                                    f"({type(exc).__name__})") from None
        status = answer.status
        user = status.user if status is not None else None
        return {"authenticated": bool(status and status.authenticated),
                "audiences": list(status.audiences or []) if status is not None else [],
                "user": {"username": user.username} if user is not None else {}}

    return review


_shared: dict[tuple[str, frozenset[str]], TokenReviewer] = {}
_shared_lock = threading.Lock()


def identify(settings: Settings, authorization: str | None) -> Sender | None:
    """The request's sender, or None when sender authentication is off."""
    if settings.sender_auth == "off":
        return None
    key = (settings.audience, settings.namespace_admins)
    with _shared_lock:
        reviewer = _shared.get(key)
        if reviewer is None:
            reviewer = _shared[key] = TokenReviewer.from_environment(*key)
    return reviewer.sender(authorization)
