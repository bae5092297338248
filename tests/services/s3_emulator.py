"""An EMULATOR of Amazon S3 for the tests: moto's server (PyPI ``moto[server]``).

moto is not S3: it is a Python re-implementation of the S3 REST API (and IAM) that keeps
objects in memory. It runs here as a subprocess (``python -m moto.server``) on 127.0.0.1
and a free port, answers path-style requests, and is stopped by its pid.

Signature checking. moto verifies SigV4 signatures once its ``INITIAL_NO_AUTH_ACTION_COUNT``
setting is exhausted, and only for access keys created through its IAM API: it looks the
secret up, recomputes the signature and answers 403 SignatureDoesNotMatch on a mismatch,
InvalidAccessKeyId for an unknown key and AccessDenied when the user's IAM policy does not
allow the action. Rather than counting set-up requests, :meth:`S3Emulator.start` leaves the
setting at its default (no checks), creates the IAM user, its access key, its policy and
the bucket, then sets the setting at run time through moto's ``/moto-api/reset-auth``
endpoint (which also resets moto's request counter): from then on every request is checked.
:meth:`S3Emulator.verify_signatures` turns checking off and on again.

Its limit, found by trying (moto 5.2): moto recomputes the signature from the request's
URL as werkzeug reports it, an IRI with the path percent-DECODED (``é``, ``+``, ``%``,
``=`` and most punctuation appear raw; only a space stays ``%20``), and hands that path to
an S3 signer that does not re-encode it. Its canonical URI then differs from the one the
SigV4 rules prescribe (``%C3%A9``, ``%2B``, ``%25``, ``%3D``...), so moto refuses correctly
signed requests for such keys. Keys of unreserved characters, ``/`` and spaces are
checked faithfully. Tests therefore prove signing on the wire with such keys (and a wrong
secret really refused), round-trip the other keys with checking off, and rely on the
examples AWS publishes (tests/core/test_s3_signing.py) for the encoding of the rest.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from urllib.parse import quote
from xml.sax.saxutils import unescape

import httpx

from hpcbridge.dev import free_port

__all__ = ["S3Emulator"]

# Unsigned set-up requests: moto routes by the service named in the credential scope.
_IAM_ROUTE = {"Authorization": "AWS4-HMAC-SHA256 Credential=setup/20240101/us-east-1/iam/"
                               "aws4_request, SignedHeaders=host, Signature=0"}
_S3_ROUTE = {"Authorization": "AWS4-HMAC-SHA256 Credential=setup/20240101/us-east-1/s3/"
                              "aws4_request, SignedHeaders=host, Signature=0"}


def _tag(xml: str, name: str) -> str:
    match = re.search(rf"<{name}>(.*?)</{name}>", xml, re.S)
    if not match:
        raise RuntimeError(f"moto's answer has no <{name}>: {xml[:300]}")
    return unescape(match.group(1))


class S3Emulator:
    """moto's S3 server (an emulator of S3) on 127.0.0.1, owned by this object.

    After :meth:`start`: ``url`` is the endpoint, ``bucket`` exists, ``access_key_id`` /
    ``secret_access_key`` belong to an IAM user allowed ``s3:*``, and signatures are
    verified.
    """

    def __init__(self, bucket: str = "hpc-bridge-test", *, startup_timeout: float = 60.0,
                 verify: bool = True) -> None:
        self.bucket = bucket
        self.url = ""
        self.access_key_id = ""
        self.secret_access_key = ""
        self._verify = verify
        self._timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._root: Path | None = None
        # A transport of our own: loopback only, whatever HTTP(S)_PROXY says.
        self._http = httpx.Client(transport=httpx.HTTPTransport(), timeout=30.0)

    def __repr__(self) -> str:
        return f"S3Emulator({self.url or 'not started'}, bucket={self.bucket!r})"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def log(self) -> Path:
        if self._root is None:
            raise RuntimeError("the S3 emulator is not started")
        return self._root / "moto.log"

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> S3Emulator:
        if self._proc is not None:
            raise RuntimeError("already started")
        self._root = Path(tempfile.mkdtemp(prefix="hpcbridge-moto-"))
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "inf"}
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            env.pop(name, None)
        with self.log.open("wb") as out:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                cwd=self._root, start_new_session=True)
        try:
            self._wait_until_up()
            self._set_up()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_up(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self._timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"moto exited with {self._proc.returncode}: "
                                   f"{self.log.read_text(errors='replace')[-2000:]}")
            with contextlib.suppress(httpx.TransportError):
                if self._http.get(f"{self.url}/moto-api/").status_code < 500:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"moto did not answer within {self._timeout:g} s")
            time.sleep(0.05)

    def _set_up(self) -> None:
        self.access_key_id, self.secret_access_key = self.create_user("bridge", ["s3:*"])
        self.create_bucket(self.bucket)
        self.verify_signatures(self._verify)

    def stop(self) -> None:
        """SIGTERM to the server's pid, SIGKILL to its process group if it lingers."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self._http.close()
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

    def __enter__(self) -> S3Emulator:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # --- administration (unsigned: run with checking off) ---------------------------------

    def verify_signatures(self, on: bool) -> None:
        """Set moto's ``INITIAL_NO_AUTH_ACTION_COUNT``: 0 checks every request from now on,
        ``inf`` none."""
        response = self._http.post(f"{self.url}/moto-api/reset-auth",
                                   content=b"0" if on else b"inf")
        response.raise_for_status()
        self._verify = on

    @contextlib.contextmanager
    def unchecked(self) -> Iterator[None]:
        """Signature checks off for the block (administration requests are unsigned)."""
        before = self._verify
        self.verify_signatures(False)
        try:
            yield
        finally:
            self.verify_signatures(before)

    def _iam(self, **params: str) -> str:
        response = self._http.post(f"{self.url}/", headers=_IAM_ROUTE,
                                   data={"Version": "2010-05-08", **params})
        if response.status_code != 200:
            raise RuntimeError(f"moto IAM {params['Action']}: {response.status_code} "
                               f"{response.text[:300]}")
        return response.text

    def create_user(self, name: str, actions: list[str]) -> tuple[str, str]:
        """An IAM user allowed ``actions`` on every resource; its (access key id, secret)."""
        with self.unchecked():
            self._iam(Action="CreateUser", UserName=name)
            answer = self._iam(Action="CreateAccessKey", UserName=name)
            policy = {"Version": "2012-10-17",
                      "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}
            self._iam(Action="PutUserPolicy", UserName=name, PolicyName=f"{name}-policy",
                      PolicyDocument=json.dumps(policy))
        return _tag(answer, "AccessKeyId"), _tag(answer, "SecretAccessKey")

    def create_bucket(self, name: str) -> None:
        with self.unchecked():
            response = self._http.put(f"{self.url}/{name}", headers=_S3_ROUTE)
        if response.status_code != 200:
            raise RuntimeError(f"moto CreateBucket {name}: {response.status_code} "
                               f"{response.text[:300]}")

    def fetch(self, key: str, bucket: str | None = None) -> httpx.Response:
        """moto's unsigned answer to GET ``key`` (checking off for the request)."""
        with self.unchecked():
            return self._http.get(f"{self.url}/{bucket or self.bucket}/{quote(key)}",
                                  headers=_S3_ROUTE)

    def keys(self, bucket: str | None = None) -> list[str]:
        """The keys stored in ``bucket`` (default: the test bucket), as S3 lists them."""
        with self.unchecked():
            response = self._http.get(f"{self.url}/{bucket or self.bucket}",
                                      params={"list-type": "2"}, headers=_S3_ROUTE)
        response.raise_for_status()
        if "<IsTruncated>true</IsTruncated>" in response.text:
            raise RuntimeError("more than one page of keys; list a narrower bucket")
        return [unescape(key) for key in re.findall(r"<Key>(.*?)</Key>", response.text, re.S)]
