"""Namespaces: an event for one namespace can neither see nor cancel another's jobs,
unless the configuration allows it (``HPCBRIDGE_NAMESPACE_ISOLATION=off``).

Every path that cancels is tried from the wrong namespace: a cancel event, the
ApiServerSource event of a deleted pod, and the tick that finds pods being deleted (a pod
someone in another namespace labelled with the job's id). Without sender authentication
the namespace is whatever the event names; with it (``HPCBRIDGE_SENDER_AUTH=tokenreview``,
Knative's OIDC sender identity) it is the sender's: the last tests run functions that
review the token of each request with the emulated Kubernetes API, tokens it issued for
service accounts of team-a, team-b and an admin.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from kubernetes import client

from hpcbridge import events
from hpcbridge.naming import JOB_ID_LABEL, MANAGED_BY, node_name, object_name
from tests.emulators.kube_apiserver import KubeApiEmulator
from tests.reliability import (
    EVIDENCE,
    FIGURES,
    Stack,
    deliver,
    dump_redis,
    post,
    tick,
    tick_until,
)
from tests.reliability.conftest import SecretRedis

TEAM_A, TEAM_B = "team-a", "team-b"
AUDIENCE = "hpc-bridge"
ADMIN = ("default", "bridge-operator")  # namespace, service account


@pytest.fixture(scope="module")
def core(kube: KubeApiEmulator) -> client.CoreV1Api:
    api = client.CoreV1Api(kube.api_client())
    existing = {n["metadata"]["name"] for n in kube.objects("namespaces")}
    for name in (TEAM_A, TEAM_B):
        if name not in existing:
            api.create_namespace({"metadata": {"name": name}})
    return api


@pytest.fixture
def bridge(mirrored: Stack, core: client.CoreV1Api) -> Stack:
    """The shared mirrored bridge, with namespaces team-a and team-b in the cluster."""
    return mirrored


def running_job(stack: Stack, namespace: str) -> str:
    answer = deliver(stack.submit_url, events.REQUESTED,
                     {"target": "local", "command": ["sleep", "300"], "namespace": namespace})
    assert answer.status_code == 200, answer.text
    job_id = answer.headers["ce-subject"]
    tick_until(stack, [job_id], "RUNNING")
    return job_id


def untouched(stack: Stack, job_id: str) -> None:
    """Still running, in Redis and on the manager (no cancel request reached it)."""
    tick(stack)
    assert stack.states([job_id]) == {job_id: "RUNNING"}
    jobdir = Path(stack.targets["local"]["workdir"]) / "jobs" / job_id
    assert not (jobdir / "cancel").exists() and not (jobdir / "exit.json").exists()


def cancelled_by_its_own(stack: Stack, job_id: str, namespace: str) -> None:
    answer = post(stack.cancel_url, events.CANCEL, {"job_id": job_id, "namespace": namespace})
    assert answer.headers.get("ce-type") == "hpcbridge.job.cancelled", answer.text


def test_a_cancel_for_another_namespace_does_not_reach_the_job(bridge: Stack) -> None:
    job_id = running_job(bridge, TEAM_A)
    for stranger in ({"job_id": job_id}, {"job_id": job_id, "namespace": TEAM_B},
                     {"job_id": job_id, "namespace": "default"}):
        FIGURES.add("inputs")
        answer = post(bridge.cancel_url, events.CANCEL, stranger)
        assert (answer.status_code, answer.content) == (200, b"")
        assert answer.headers["hpcbridge-outcome"] == "unknown-job", "no sign it exists"
    untouched(bridge, job_id)
    cancelled_by_its_own(bridge, job_id, TEAM_A)


def impostor_pod(core: client.CoreV1Api, job_id: str) -> dict:
    """A pod someone in team-b made, labelled as the proxy of team-a's job, bound to the
    target's node (so that deleting it leaves it marked, waiting for the kubelet)."""
    name = f"impostor-{uuid.uuid4().hex[:6]}"
    core.create_namespaced_pod(TEAM_B, {
        "metadata": {"name": name, "labels": {MANAGED_BY[0]: MANAGED_BY[1],
                                              JOB_ID_LABEL: job_id}},
        "spec": {"nodeName": node_name("local"), "containers": [
            {"name": "c", "image": "registry.k8s.io/pause:3.9"}]}})
    core.delete_namespaced_pod(name, TEAM_B)
    pod = json.loads(core.read_namespaced_pod(name, TEAM_B, _preload_content=False).data)
    assert pod["metadata"]["deletionTimestamp"]
    return pod


def test_a_deleted_pod_in_another_namespace_does_not_cancel_the_job(
        bridge: Stack, core: client.CoreV1Api, kube: KubeApiEmulator) -> None:
    job_id = running_job(bridge, TEAM_A)
    pod = impostor_pod(core, job_id)
    FIGURES.add("inputs")
    answer = post(bridge.cancel_url, events.APISERVER_UPDATE, pod)  # ApiServerSource
    assert answer.headers["hpcbridge-outcome"] == "unknown-job"
    untouched(bridge, job_id)
    impostor_pod(core, job_id)
    untouched(bridge, job_id)  # the tick that finds pods being deleted
    proxies = {p["metadata"]["name"] for p in kube.objects("pods", TEAM_A)}
    assert object_name(job_id) in proxies, "the job's own pod is still there"
    core.delete_namespaced_pod(object_name(job_id), TEAM_A)
    tick(bridge)
    assert bridge.states([job_id]) == {job_id: "CANCELLED"}, "its own pod's deletion does"


def test_another_namespace_sees_nothing_of_the_job(bridge: Stack,
                                                   kube: KubeApiEmulator) -> None:
    job_id = running_job(bridge, TEAM_A)
    secret_word = f"only-team-a-{uuid.uuid4().hex[:6]}"
    FIGURES.add("inputs")
    answer = post(bridge.submit_url, events.REQUESTED,
                  {"target": "local", "job_id": job_id, "namespace": TEAM_B,
                   "command": ["echo", secret_word]})
    assert answer.status_code == 400
    body = answer.json()
    assert set(body) == {"error", "field"} and body["field"] == "job_id"
    for detail in ("RUNNING", "ACCEPTED", "sleep", "300", TEAM_A):
        assert detail not in answer.text, f"the answer shows {detail!r}: {answer.text}"
    shown_to_b = json.dumps(kube.objects("configmaps", TEAM_B) + kube.objects("pods", TEAM_B)
                            + kube.objects("events", TEAM_B))
    assert job_id not in shown_to_b, "the mirror shows a job only in its own namespace"
    cancelled_by_its_own(bridge, job_id, TEAM_A)


def test_isolation_is_off_only_by_configuration(bridge: Stack, tmp_path: Path) -> None:
    job_id = running_job(bridge, TEAM_A)
    with bridge.one_function("cancel", tmp_path / "open",
                             HPCBRIDGE_NAMESPACE_ISOLATION="off") as url:
        answer = post(url, events.CANCEL, {"job_id": job_id, "namespace": TEAM_B})
    assert answer.headers.get("ce-type") == "hpcbridge.job.cancelled", answer.text


# -- sender identity: the namespace is the sender's, not the event's ----------------------


@pytest.fixture(scope="module")
def tokens(core: client.CoreV1Api) -> dict[str, str]:
    """Bearer tokens for the bridge's audience, as Knative's OIDC identities would carry:
    team-a's and team-b's pipelines, the admin, and team-b's for another receiver."""
    accounts = {"a": (TEAM_A, "pipeline"), "b": (TEAM_B, "pipeline"), "admin": ADMIN}
    issued = {}
    for who, (namespace, name) in accounts.items():
        with contextlib.suppress(client.ApiException):  # the module ran before
            core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
        issued[who] = issue(core, namespace, name)
    issued["b-elsewhere"] = issue(core, TEAM_B, "pipeline", "another-receiver")
    return issued


def issue(core: client.CoreV1Api, namespace: str, name: str, audience: str = AUDIENCE) -> str:
    answer = core.create_namespaced_service_account_token(
        name, namespace, {"spec": {"audiences": [audience], "expirationSeconds": 3600}})
    return EVIDENCE.credential(f"sender token {namespace}/{name} for {audience}",
                               answer.status.token)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def guarded_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("guarded")


@pytest.fixture(scope="module")
def guarded(mirrored: Stack, tokens: dict[str, str],
            guarded_base: Path) -> Iterator[dict[str, str]]:
    """The three functions of the shared bridge again, with sender authentication on."""
    with contextlib.ExitStack() as functions:
        yield {name: functions.enter_context(mirrored.one_function(
            name, guarded_base / name, HPCBRIDGE_SENDER_AUTH="tokenreview",
            HPCBRIDGE_AUDIENCE=AUDIENCE,
            HPCBRIDGE_NAMESPACE_ADMINS=f"system:serviceaccount:{ADMIN[0]}:{ADMIN[1]}"))
            for name in ("submit", "poll", "cancel")}


def guarded_job(bridge: Stack, guarded: dict[str, str], token: str) -> str:
    """A running job submitted with ``token`` and no namespace: it is the sender's."""
    answer = post(guarded["submit"], events.REQUESTED,
                  {"target": "local", "command": ["sleep", "300"]}, headers=bearer(token))
    assert answer.status_code == 200, answer.text
    job_id = answer.headers["ce-subject"]
    tick_until(bridge, [job_id], "RUNNING")
    return job_id


def guarded_cancel(guarded: dict[str, str], token: str, **data: str) -> httpx.Response:
    FIGURES.add("inputs")
    return post(guarded["cancel"], events.CANCEL, data, headers=bearer(token),
                source=f"/apis/v1/namespaces/{TEAM_B}/pipelines/intruder")


def test_a_sender_of_another_namespace_cannot_cancel_by_naming_the_jobs_namespace(
        bridge: Stack, guarded: dict[str, str], tokens: dict[str, str]) -> None:
    job_id = guarded_job(bridge, guarded, tokens["a"])
    job = bridge.store.load(job_id)
    assert job is not None and job.request["namespace"] == TEAM_A, "the sender's namespace"
    nowhere = guarded_cancel(guarded, tokens["b"], job_id=f"j-{uuid.uuid4().hex[:24]}")
    for stranger in ({"job_id": job_id, "namespace": TEAM_A}, {"job_id": job_id},
                     {"job_id": job_id, "namespace": TEAM_B}):
        answer = guarded_cancel(guarded, tokens["b"], **stranger)
        assert (answer.status_code, answer.content, answer.headers["hpcbridge-outcome"]) == (
            nowhere.status_code, nowhere.content, nowhere.headers["hpcbridge-outcome"]) == (
            200, b"", "unknown-job"), "the same as for a job that does not exist"
    untouched(bridge, job_id)
    own = guarded_cancel(guarded, tokens["a"], job_id=job_id)
    assert own.headers.get("ce-type") == "hpcbridge.job.cancelled", own.text


def test_without_a_valid_token_nothing_is_done(bridge: Stack, guarded: dict[str, str],
                                               tokens: dict[str, str]) -> None:
    job_id = f"j-{uuid.uuid4().hex[:24]}"
    request = {"target": "local", "job_id": job_id, "command": ["true"]}
    for headers in ({}, bearer(tokens["b-elsewhere"]), bearer("not-a-token"),
                    {"Authorization": f"Basic {tokens['a']}"}, {"Authorization": "Bearer"}):
        FIGURES.add("inputs")
        for url, kind, data in ((guarded["submit"], events.REQUESTED, request),
                                (guarded["cancel"], events.CANCEL, {"job_id": job_id}),
                                (guarded["poll"], events.TICK, None)):
            answer = post(url, kind, data, headers=headers)
            assert answer.status_code == 401, answer.text
            assert answer.headers["ce-type"] == "hpcbridge.job.rejected"
            assert answer.json()["field"] == "Authorization"
            assert answer.headers["www-authenticate"].startswith("Bearer")
    assert bridge.store.load(job_id) is None


def test_a_sender_submits_only_into_its_own_namespace(
        bridge: Stack, guarded: dict[str, str], tokens: dict[str, str],
        kube: KubeApiEmulator) -> None:
    job_id = f"j-{uuid.uuid4().hex[:24]}"
    FIGURES.add("inputs")
    answer = post(guarded["submit"], events.REQUESTED,
                  {"target": "local", "job_id": job_id, "command": ["true"],
                   "namespace": TEAM_A}, headers=bearer(tokens["b"]))
    assert answer.status_code == 403, answer.text
    assert answer.json()["field"] == "namespace"
    assert bridge.store.load(job_id) is None
    own = guarded_job(bridge, guarded, tokens["b"])
    shown = {c["metadata"]["name"] for c in kube.objects("configmaps", TEAM_B)}
    assert object_name(own) in shown, "the mirror is in the sender's namespace"
    answer = guarded_cancel(guarded, tokens["b"], job_id=own, namespace=TEAM_B)
    assert answer.headers.get("ce-type") == "hpcbridge.job.cancelled", answer.text


def test_an_admin_acts_on_every_namespace_and_alone_sends_pod_events(
        bridge: Stack, guarded: dict[str, str], tokens: dict[str, str],
        core: client.CoreV1Api) -> None:
    answer = post(guarded["submit"], events.REQUESTED,
                  {"target": "local", "command": ["sleep", "300"], "namespace": TEAM_A},
                  headers=bearer(tokens["admin"]))
    assert answer.status_code == 200, answer.text
    job_id = answer.headers["ce-subject"]
    tick_until(bridge, [job_id], "RUNNING")
    pod = impostor_pod(core, job_id)
    for who in ("a", "b"):
        FIGURES.add("inputs")
        refused = post(guarded["cancel"], events.APISERVER_UPDATE, pod,
                       headers=bearer(tokens[who]))
        assert refused.status_code == 403 and refused.json()["field"] == "type", refused.text
    impostor = post(guarded["cancel"], events.APISERVER_UPDATE, pod,
                    headers=bearer(tokens["admin"]))
    assert impostor.headers["hpcbridge-outcome"] == "unknown-job", "a pod of team-b"
    for who in ("b", "admin"):
        assert post(guarded["poll"], events.TICK, None,
                    headers=bearer(tokens[who])).status_code == 200, "any sender ticks"
    untouched(bridge, job_id)
    done = guarded_cancel(guarded, tokens["admin"], job_id=job_id, namespace=TEAM_A)
    assert done.headers.get("ce-type") == "hpcbridge.job.cancelled", done.text


def test_the_kubernetes_api_down_is_503_and_nothing_is_stored(
        bridge: Stack, guarded: dict[str, str], core: client.CoreV1Api,
        kube: KubeApiEmulator) -> None:
    fresh = issue(core, TEAM_A, "pipeline")  # never reviewed: no cached answer
    job_id = f"j-{uuid.uuid4().hex[:24]}"
    request = {"target": "local", "job_id": job_id, "command": ["true"]}
    FIGURES.add("outages")
    kube.stop()
    try:
        answer = post(guarded["submit"], events.REQUESTED, request, headers=bearer(fresh))
        assert answer.status_code == 503, answer.text
        assert fresh not in answer.text
        assert bridge.store.load(job_id) is None
    finally:
        kube.start()
    with httpx.Client(headers=bearer(fresh)) as redelivery:  # as the Broker would
        answer = deliver(guarded["submit"], events.REQUESTED, request, client=redelivery)
    assert answer.status_code == 200, answer.text


def test_the_tokens_show_nowhere(bridge: Stack, guarded: dict[str, str], guarded_base: Path,
                                 tokens: dict[str, str], kube: KubeApiEmulator,
                                 secret_redis: SecretRedis) -> None:
    """Not in Redis, the functions' logs, the events the broker saw or the mirror; the
    suite's secrets scan looks again at the end, with every other piece of evidence."""
    client_ = redis.Redis.from_url(secret_redis.url, decode_responses=True)
    try:
        stored = dump_redis(client_)
    finally:
        client_.close()
    assert bridge.dev.broker is not None
    logs = "".join(path.read_text(errors="replace")
                   for root in (bridge.logs, guarded_base) for path in root.rglob("*")
                   if path.is_file())
    shown = json.dumps([bridge.dev.broker.seen(), kube.objects("configmaps"),
                        kube.objects("events"), kube.objects("pods")], default=str)
    assert "rejected: Authorization" in logs, "the guarded functions' logs were read"
    for who, token in tokens.items():
        for where, text in (("redis", stored), ("logs", logs), ("events", shown)):
            assert token not in text, f"the token of {who} is in the {where}"
