#!/usr/bin/env python3
# One pipeline step = one HPC job: send hpcbridge.job.requested to the Broker, follow the
# job's mirror ConfigMap (hpcbridge-<job id>) until the job ends, print its output tail,
# and exit with the job's exit code. Runs in the hpc-bridge image (Python, httpx, the
# Kubernetes client and hpcbridge itself); Argo (examples/argo/submit-and-wait.yaml) and
# Tekton (examples/tekton/hpc-job-task.yaml) embed this file verbatim, and
# tests/examples checks that the copies agree and runs it against a bridge.
#
# Everything comes from the environment, so no parameter value is ever pasted into code:
#   HPCBRIDGE_BROKER   the Broker's address
#   JOB_ID             the job id; stable across retries of the step, so that a retried
#                      step finds the same job instead of starting a second one
#   JOB_TARGET         the target (a name in the bridge's targets.yaml)
#   JOB_SCRIPT         the batch script
#   JOB_NAMESPACE      where the job's mirror goes: the pipeline's own namespace, where
#                      this step's service account may read ConfigMaps
#   JOB_NAME, JOB_TIME_LIMIT_S                     optional
#   ACCEPT_TIMEOUT_S   how long the mirror may take to appear (default 300)
#   POLL_INTERVAL_S    seconds between looks at the mirror (default 10)
#   RESULT_JOB_ID_FILE, RESULT_STATE_FILE          optional: files to write the job id
#                      and the final state to (Argo output parameters, Tekton results)
#
# If the step is stopped (the workflow is terminated, the TaskRun cancelled), it asks the
# bridge to cancel the job before it exits.
"""Submit one job to hpc-bridge, wait for its end, exit with its exit code."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import uuid

import httpx
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from hpcbridge.model import JobRequest, RequestError

TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")
SOURCE = "/examples/pipeline-step"


class Stopped(Exception):
    """The step was asked to stop (SIGTERM)."""


def say(message: str) -> None:
    print(message, flush=True)


def send(broker: str, event_type: str, data: dict, subject: str) -> None:
    """POST one binary-mode CloudEvent; a Broker answers 202 with an empty body.

    Network errors and 5xx are retried: the job id is fixed, so a second delivery of the
    same request is the same job.
    """
    headers = {"ce-specversion": "1.0", "ce-type": event_type, "ce-source": SOURCE,
               "ce-id": uuid.uuid4().hex, "ce-subject": subject,
               "content-type": "application/json"}
    delay = 1.0
    for attempt in range(6):
        try:
            answer = httpx.post(broker, headers=headers, content=json.dumps(data), timeout=30)
        except httpx.HTTPError as exc:
            problem = f"cannot reach {broker}: {type(exc).__name__}"
        else:
            if answer.is_success:
                return
            if answer.status_code < 500:
                sys.exit(f"{event_type} refused: HTTP {answer.status_code} {answer.text[:2000]}")
            problem = f"HTTP {answer.status_code} from {broker}"
        if attempt < 5:
            say(f"{problem}; again in {delay:g} s")
            time.sleep(delay)
            delay *= 2
    sys.exit(problem)


def kubernetes_api() -> client.CoreV1Api:
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()
    else:
        config.load_kube_config()
    return client.CoreV1Api()


def mirror(api: client.CoreV1Api, job_id: str, namespace: str) -> dict | None:
    """The job's ConfigMap, or None while there is none."""
    try:
        answer = api.read_namespaced_config_map(f"hpcbridge-{job_id}", namespace,
                                                _preload_content=False)
    except ApiException as exc:
        if exc.status == 404:
            return None
        if exc.status == 403:
            sys.exit(f"may not read ConfigMaps in {namespace}: give this step's service "
                     "account 'get' on configmaps there")
        raise
    return json.loads(answer.data)


def write_result(variable: str, value: str) -> None:
    path = os.environ.get(variable)
    if path:
        with open(path, "w") as handle:
            handle.write(value)


def exit_code(status: dict) -> int:
    if status["state"] == "SUCCEEDED":
        return 0
    code = status.get("exit_code")
    # A shell cannot exit with more than 255 (or 0 for a job that failed).
    return code if isinstance(code, int) and 1 <= code <= 255 else 1


def main() -> int:
    env = os.environ
    broker, job_id, namespace = (env["HPCBRIDGE_BROKER"], env["JOB_ID"],
                                 env["JOB_NAMESPACE"])
    request = {"target": env["JOB_TARGET"], "script": env["JOB_SCRIPT"], "job_id": job_id,
               "namespace": namespace}
    if env.get("JOB_NAME"):
        request["name"] = env["JOB_NAME"]
    if env.get("JOB_TIME_LIMIT_S"):
        request["resources"] = {"time_limit_s": int(env["JOB_TIME_LIMIT_S"])}
    try:
        JobRequest.from_dict(request)  # the bridge's own validation, before sending
    except RequestError as exc:
        sys.exit(f"invalid job: {exc}")
    accept_s = float(env.get("ACCEPT_TIMEOUT_S") or 300)
    interval_s = float(env.get("POLL_INTERVAL_S") or 10)

    api = kubernetes_api()
    send(broker, "hpcbridge.job.requested", request, job_id)
    write_result("RESULT_JOB_ID_FILE", job_id)
    say(f"submitted {job_id} to {request['target']}")

    def stop(signum: int, frame: object) -> None:
        raise Stopped

    signal.signal(signal.SIGTERM, stop)
    deadline = time.monotonic() + accept_s
    seen = None
    try:
        while True:
            found = mirror(api, job_id, namespace)
            if found is None:
                if time.monotonic() > deadline:
                    sys.exit(f"the bridge has not accepted {job_id} after {accept_s:g} s: "
                             "was it rejected? (the submit function's log says why)")
            else:
                status = json.loads(found["data"]["status.json"])
                now = (status["state"], status.get("native_state"))
                if now != seen:
                    say(f"{job_id}: {status['state']} (native id {status.get('native_id')},"
                        f" native state {status.get('native_state')})")
                    seen = now
                if status["state"] in TERMINAL:
                    tail = found["data"].get("log_tail")
                    if tail:
                        say(f"--- last lines of the job's output ---\n{tail.rstrip()}")
                    write_result("RESULT_STATE_FILE", status["state"])
                    say(f"{job_id} ended {status['state']}, reason {status.get('reason')}, "
                        f"exit code {status.get('exit_code')}")
                    return exit_code(status)
            time.sleep(interval_s)
    except Stopped:
        say(f"stopped: cancelling {job_id}")
        send(broker, "hpcbridge.job.cancel", {"job_id": job_id, "namespace": namespace},
             job_id)
        write_result("RESULT_STATE_FILE", "CANCELLED")
        return 143


if __name__ == "__main__":
    sys.exit(main())
