"""Cold start: process start to first answered event, submit function vs a no-op function.

Both run under functions-framework (gunicorn) on loopback; the submit function answers a
real ``hpcbridge.job.requested`` with Redis and the local target behind it, the no-op
answers an empty 200. Runs alternate so that both see the same machine.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from hpcbridge import events
from tests.services.redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent


def first_answer_s(source: Path, target: str, env: dict[str, str], event: events.CloudEvent,
                   expect: int) -> float:
    port = free_port()
    headers, body = events.encode(event)
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "functions_framework", "--source", str(source), "--target",
         target, "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with httpx.Client(timeout=30) as client:
            while True:
                try:
                    answer = client.post(f"http://127.0.0.1:{port}/", headers=headers,
                                         content=body)
                    break
                except httpx.TransportError:
                    time.sleep(0.005)
        elapsed = time.perf_counter() - started
        if answer.status_code != expect:
            raise RuntimeError(f"{target} answered {answer.status_code}: {answer.text}")
        return elapsed
    finally:
        process.terminate()
        process.wait()


def run(rounds: int = 5) -> dict[str, float]:
    import os

    with tempfile.TemporaryDirectory() as tmp:
        redis = RedisServer(Path(tmp) / "redis").start()
        targets = Path(tmp) / "targets.yaml"
        targets.write_text(f"targets:\n  local:\n    kind: local\n    workdir: {tmp}/local\n")
        env = {**os.environ, "REDIS_URL": redis.url, "HPCBRIDGE_TARGETS": str(targets)}
        noop, submit = [], []
        try:
            for _ in range(rounds):
                tick = events.CloudEvent({"type": "bench", "source": "/bench",
                                          "id": uuid.uuid4().hex}, None)
                noop.append(first_answer_s(ROOT / "bench" / "noop" / "main.py", "noop", env,
                                           tick, 200))
                request = events.CloudEvent(
                    {"type": events.REQUESTED, "source": "/bench", "id": uuid.uuid4().hex,
                     "datacontenttype": "application/json"},
                    {"target": "local", "command": ["true"]})
                submit.append(first_answer_s(ROOT / "functions" / "submit" / "main.py",
                                             "submit", env, request, 200))
        finally:
            redis.stop()
    result = {"noop_s": statistics.median(noop), "submit_s": statistics.median(submit)}
    result["ratio"] = result["submit_s"] / result["noop_s"]
    return result


def main() -> None:
    result = run()
    print(f"cold start to first answer (median of 5): no-op {result['noop_s']:.3f} s, "
          f"submit {result['submit_s']:.3f} s, ratio {result['ratio']:.2f}x")


if __name__ == "__main__":
    main()
