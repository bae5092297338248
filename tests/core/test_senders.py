"""Sender identity: the settings that turn it on, and the reviewer's rules and cache.

The reviewer is given a fake TokenReview here; the functions' tests in
tests/reliability/test_namespaces.py run it against the Kubernetes API emulator.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from adapters.base import ConfigError
from hpcbridge.senders import CACHE_S, Sender, TokenReviewer, Unauthenticated
from hpcbridge.settings import Settings

ADMIN = "system:serviceaccount:hpc-bridge:apiserversource-oidc"


class FakeReview:
    """Answers as a TokenReview would, counting the calls and the tokens it saw."""

    def __init__(self, answers: Mapping[str, Mapping[str, Any]]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, list[str]]] = []

    def __call__(self, token: str, audiences: list[str]) -> Mapping[str, Any]:
        self.calls.append((token, audiences))
        return self.answers.get(token, {"user": {}, "error": "invalid bearer token"})


def ok(username: str, *audiences: str) -> dict[str, Any]:
    return {"authenticated": True, "user": {"username": username},
            "audiences": list(audiences)}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_settings_of_sender_authentication() -> None:
    assert Settings.from_env({}).sender_auth == "off"
    on = Settings.from_env({"HPCBRIDGE_SENDER_AUTH": "tokenreview", "KUBECONFIG": "/k",
                            "HPCBRIDGE_AUDIENCE": "bridge",
                            "HPCBRIDGE_NAMESPACE_ADMINS": f" {ADMIN}, ops ,"})
    assert (on.sender_auth, on.audience, on.namespace_admins) == (
        "tokenreview", "bridge", frozenset({ADMIN, "ops"}))
    with pytest.raises(ConfigError, match="HPCBRIDGE_SENDER_AUTH=tokenreview but no cluster"):
        Settings.from_env({"HPCBRIDGE_SENDER_AUTH": "tokenreview"})
    with pytest.raises(ConfigError, match="HPCBRIDGE_SENDER_AUTH must be off or tokenreview"):
        Settings.from_env({"HPCBRIDGE_SENDER_AUTH": "oidc"})


def test_a_service_account_acts_for_its_namespace_an_admin_for_all() -> None:
    assert Sender.of("system:serviceaccount:team-a:pipeline", frozenset()) == Sender(
        "system:serviceaccount:team-a:pipeline", "team-a", False)
    assert Sender.of(ADMIN, frozenset({ADMIN})).admin
    assert Sender.of("alice", frozenset()).namespace is None
    assert Sender.of("system:serviceaccount:team-a", frozenset()).namespace is None


def test_only_a_bearer_token_reviewed_for_the_audience_is_a_sender() -> None:
    review = FakeReview({"good": ok("system:serviceaccount:team-a:p", "hpc-bridge"),
                         "elsewhere": ok("system:serviceaccount:team-a:p", "other"),
                         "unaware": ok("system:serviceaccount:team-a:p")})
    reviewer = TokenReviewer("hpc-bridge", frozenset(), review)
    assert reviewer.sender("Bearer good").namespace == "team-a"
    assert review.calls == [("good", ["hpc-bridge"])]
    for header in (None, "", "Bearer", "Basic good", "Bearer bad", "Bearer elsewhere",
                   "Bearer unaware"):
        with pytest.raises(Unauthenticated) as refused:
            reviewer.sender(header)
        assert refused.value.field == "Authorization" and refused.value.status == 401
        assert "good" not in str(refused.value) and "elsewhere" not in str(refused.value)


def test_positive_answers_are_cached_by_hash_for_a_short_time() -> None:
    clock = Clock()
    review = FakeReview({"good": ok("system:serviceaccount:team-a:p", "hpc-bridge")})
    reviewer = TokenReviewer("hpc-bridge", frozenset(), review, clock=clock)
    for _ in range(50):
        reviewer.sender("Bearer good")
    with pytest.raises(Unauthenticated):
        reviewer.sender("Bearer bad")
    with pytest.raises(Unauthenticated):
        reviewer.sender("Bearer bad")
    assert [token for token, _ in review.calls] == ["good", "bad", "bad"], \
        "one review per burst; refusals are not cached"
    assert "good" not in repr(reviewer._known), "keyed by a hash, never the token"
    clock.now += CACHE_S
    reviewer.sender("Bearer good")
    assert len(review.calls) == 4, "reviewed again once the answer is old"
