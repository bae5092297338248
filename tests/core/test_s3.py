"""hpcbridge.s3 against moto's S3 server, an EMULATOR of S3 (tests/services/s3_emulator.py),
on 127.0.0.1, with signature checking on unless a test says otherwise.

Signature correctness for every key is shown by the documented AWS examples in
test_s3_signing.py; here moto proves it on the wire for the keys it checks faithfully
(unreserved characters, spaces, folders) and refuses a wrong secret, an unknown key and a
forbidden action. Keys moto cannot check (unicode, ``+``, ``%``, ``=``) round-trip with
checking off, and the emulator's listing shows they are stored under exactly the raw key.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from adapters.base import ConfigError
from hpcbridge.s3 import (
    Bucket,
    BucketConfig,
    BucketError,
    BucketRefused,
    BucketUnavailable,
    bucket_name_problem,
)
from tests.services.s3_emulator import S3Emulator

JOB = "j-7bc808427d41c3f77fca7cb4"


@pytest.fixture(scope="module")
def emulator() -> Iterator[S3Emulator]:
    """moto's S3 emulator for this module, signature checking on, stopped by pid."""
    with S3Emulator() as server:
        yield server


def _env(tmp_path: Path, endpoint: str, bucket: str, access_key: str, secret: str,
         **extra: str) -> dict[str, str]:
    """The environment a poll function would see, credentials in mounted files."""
    (tmp_path / "access_key").write_text(access_key + "\n")
    (tmp_path / "secret_key").write_text(secret + "\n")
    return {"HPCBRIDGE_S3_BUCKET": bucket, "HPCBRIDGE_S3_ENDPOINT": endpoint,
            "HPCBRIDGE_S3_ACCESS_KEY_FILE": str(tmp_path / "access_key"),
            "HPCBRIDGE_S3_SECRET_KEY_FILE": str(tmp_path / "secret_key"), **extra}


def _config(tmp_path: Path, emulator: S3Emulator, *, bucket: str | None = None,
            access_key: str | None = None, secret: str | None = None) -> BucketConfig:
    config = BucketConfig.from_env(_env(
        tmp_path, emulator.url, bucket or emulator.bucket,
        emulator.access_key_id if access_key is None else access_key,
        emulator.secret_access_key if secret is None else secret))
    assert config is not None
    return config


def _bucket(config: BucketConfig) -> Bucket:
    # A transport of our own: loopback only, whatever HTTP(S)_PROXY says.
    return Bucket(config, transport=httpx.HTTPTransport())


@pytest.fixture
def bucket(tmp_path: Path, emulator: S3Emulator) -> Iterator[Bucket]:
    with _bucket(_config(tmp_path, emulator)) as client:
        yield client


# --- round trips, signatures checked by the emulator --------------------------------------

def test_all_byte_values_round_trip(bucket: Bucket, emulator: S3Emulator) -> None:
    data = bytes(range(256)) * 4
    key = bucket.key_for(JOB, "out/bytes.bin")
    assert key == f"hpc-bridge/{JOB}/out/bytes.bin"
    location = bucket.put(key, data)
    assert location == f"s3://{emulator.bucket}/hpc-bridge/{JOB}/out/bytes.bin"
    assert bucket.get(location) == data
    assert bucket.get(key) == data


def test_empty_object_round_trips(bucket: Bucket) -> None:
    location = bucket.put(bucket.key_for(JOB, "empty"), b"")
    assert bucket.get(location) == b""


def test_five_mib_object_round_trips(bucket: Bucket) -> None:
    data = random.Random(5).randbytes(5 << 20)
    location = bucket.put(bucket.key_for(JOB, "big.dat"), data)
    fetched = bucket.get(location)
    assert len(fetched) == len(data)
    assert hashlib.sha256(fetched).digest() == hashlib.sha256(data).digest()


def test_an_object_is_replaced(bucket: Bucket) -> None:
    key = bucket.key_for(JOB, "again.txt")
    bucket.put(key, b"first")
    bucket.put(key, b"second")
    assert bucket.get(key) == b"second"


@pytest.mark.parametrize("path", [
    "a file with spaces.txt",
    "nested/folders/deeper/still/out.log",
    "sub dir/two  spaces/x y",
    "~tilde_under-score.dot",
])
def test_keys_the_emulator_checks_are_signed_right(bucket: Bucket, emulator: S3Emulator,
                                                   path: str) -> None:
    key = bucket.key_for(JOB, path)
    data = path.encode() * 3
    assert bucket.get(bucket.put(key, data)) == data
    assert key in emulator.keys()


def test_content_type_is_stored(bucket: Bucket, emulator: S3Emulator) -> None:
    key = bucket.key_for(JOB, "report.json")
    bucket.put(key, b"{}", content_type="application/json")
    response = emulator.fetch(key)
    assert response.content == b"{}"
    assert response.headers["content-type"] == "application/json"


# --- keys the emulator cannot check: stored under exactly the raw key ---------------------

SPECIAL = [
    "unicodé/données €/日本語.txt",
    "plus+sign/a+b+c",
    "percent%/100%25 literal",
    "equals=/k=v&x=y",
    "mixed/ a+b%c=d é ",
    "punct/!$&'()*,;:@[]#?.txt",
]


def test_special_keys_round_trip_without_double_encoding(tmp_path: Path,
                                                         emulator: S3Emulator) -> None:
    with _bucket(_config(tmp_path, emulator)) as client, emulator.unchecked():
        keys = [client.key_for("j-special", path) for path in SPECIAL]
        for key in keys:
            data = key.encode("utf-8")
            location = client.put(key, data)
            assert location == f"s3://{emulator.bucket}/{key}"
            assert client.get(location) == data
        stored = [k for k in emulator.keys() if k.startswith("hpc-bridge/j-special/")]
    assert sorted(stored) == sorted(keys)


def test_the_wire_carries_each_segment_encoded_once(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    config = BucketConfig.from_env(_env(tmp_path, "http://127.0.0.1:9", "outputs", "AK", "SK"))
    assert config is not None
    with Bucket(config, transport=httpx.MockTransport(handler)) as client:
        client.put(client.key_for("j-1", "a b/c+d%e=f/é~.txt"), b"payload")
    (request,) = seen
    assert request.url.raw_path == (b"/outputs/hpc-bridge/j-1/a%20b/c%2Bd%25e%3Df/"
                                    b"%C3%A9~.txt")
    assert request.headers["x-amz-content-sha256"] == hashlib.sha256(b"payload").hexdigest()
    assert request.headers["host"] == "127.0.0.1:9"
    authorization = request.headers["authorization"]
    assert authorization.startswith("AWS4-HMAC-SHA256 Credential=AK/")
    assert "/us-east-1/s3/aws4_request," in authorization
    assert "SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date," in authorization
    assert request.content == b"payload"


# --- keys and locations -------------------------------------------------------------------

def test_key_for_drops_dot_and_empty_segments(bucket: Bucket) -> None:
    assert bucket.key_for("j-1", "./out//a.txt") == "hpc-bridge/j-1/out/a.txt"


@pytest.mark.parametrize(("job_id", "path"), [
    ("j-1", "../escape"), ("j-1", "a/../../b"), ("j-1", "/etc/passwd"), ("j-1", ""),
    ("j-1", "./"), ("a/b", "x"), ("", "x"), ("..", "x"),
])
def test_key_for_refuses_paths_outside_the_job(bucket: Bucket, job_id: str, path: str) -> None:
    with pytest.raises(ValueError):
        bucket.key_for(job_id, path)


@pytest.mark.parametrize("key", ["", "/abs", "a//b", "a/./b", "a/../b", "a/..", "x\ny",
                                 "k" * 1025])
def test_keys_servers_would_rewrite_are_refused(bucket: Bucket, key: str) -> None:
    with pytest.raises(ValueError):
        bucket.put(key, b"x")


def test_a_location_in_another_bucket_is_refused(bucket: Bucket) -> None:
    with pytest.raises(ValueError, match="not in bucket"):
        bucket.get("s3://some-other-bucket/hpc-bridge/x")


def test_an_empty_prefix_puts_the_job_at_the_top(tmp_path: Path, emulator: S3Emulator) -> None:
    env = _env(tmp_path, emulator.url, emulator.bucket, emulator.access_key_id,
               emulator.secret_access_key, HPCBRIDGE_S3_PREFIX="")
    config = BucketConfig.from_env(env)
    assert config is not None
    with _bucket(config) as client:
        key = client.key_for("j-top", "x.txt")
        assert key == "j-top/x.txt"
        assert client.get(client.put(key, b"top")) == b"top"


# --- refusals -----------------------------------------------------------------------------

def _assert_clean(error: BucketError, *secrets: str) -> None:
    for text in (str(error), repr(error), repr(error.args)):
        for secret in secrets:
            assert secret not in text


def test_a_wrong_secret_is_refused(tmp_path: Path, emulator: S3Emulator) -> None:
    wrong = emulator.secret_access_key[:-4] + "ABCD"
    with _bucket(_config(tmp_path, emulator, secret=wrong)) as client:
        key = client.key_for(JOB, "refused.txt")
        with pytest.raises(BucketRefused) as caught:
            client.put(key, b"nope")
        with pytest.raises(BucketRefused) as caught_get:
            client.get(client.key_for(JOB, "out/bytes.bin"))
    for error in (caught.value, caught_get.value):
        assert error.code == "SignatureDoesNotMatch"
        assert error.status == 403
        assert "SignatureDoesNotMatch" in str(error)
        _assert_clean(error, wrong, emulator.secret_access_key)
    assert key in str(caught.value)
    assert key not in emulator.keys()


def test_an_unknown_access_key_is_refused(tmp_path: Path, emulator: S3Emulator) -> None:
    with _bucket(_config(tmp_path, emulator, access_key="AKIAUNKNOWNKEY000000")) as client:
        with pytest.raises(BucketRefused) as caught:
            client.get(client.key_for(JOB, "anything"))
    assert caught.value.code == "InvalidAccessKeyId"
    _assert_clean(caught.value, emulator.secret_access_key)


def test_an_action_the_policy_forbids_is_refused(tmp_path: Path, emulator: S3Emulator) -> None:
    reader_key, reader_secret = emulator.create_user("reader", ["s3:GetObject"])
    with _bucket(_config(tmp_path, emulator, access_key=reader_key,
                         secret=reader_secret)) as client:
        with pytest.raises(BucketRefused) as caught:
            client.put(client.key_for(JOB, "forbidden.txt"), b"x")
    assert caught.value.code == "AccessDenied"
    _assert_clean(caught.value, reader_secret)


def test_a_missing_bucket_is_refused_with_its_code(tmp_path: Path,
                                                   emulator: S3Emulator) -> None:
    with _bucket(_config(tmp_path, emulator, bucket="no-such-bucket-here")) as client:
        key = client.key_for(JOB, "x.txt")
        with pytest.raises(BucketRefused, match="NoSuchBucket") as caught:
            client.put(key, b"x")
    assert caught.value.code == "NoSuchBucket"
    assert caught.value.status == 404
    assert caught.value.key == key
    assert "s3://no-such-bucket-here/" in str(caught.value)


def test_a_missing_key_is_refused_with_its_code(bucket: Bucket) -> None:
    with pytest.raises(BucketRefused, match="NoSuchKey") as caught:
        bucket.get(bucket.key_for(JOB, "never-written.txt"))
    assert caught.value.code == "NoSuchKey"


def test_a_stopped_server_is_unavailable(tmp_path: Path) -> None:
    server = S3Emulator(bucket="stopped-bucket")
    server.start()
    config = _config(tmp_path, server)
    with _bucket(config) as client:
        client.put(client.key_for(JOB, "before.txt"), b"up")
        server.stop()
        with pytest.raises(BucketUnavailable) as caught:
            client.get(client.key_for(JOB, "before.txt"))
    assert caught.value.code is None
    assert "cannot reach" in str(caught.value)
    _assert_clean(caught.value, server.secret_access_key)


def _answering(status: int, body: bytes = b"",
               exc: Exception | None = None) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        if exc is not None:
            raise exc
        return httpx.Response(status, content=body)
    return httpx.MockTransport(handler)


def _error(code: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>m</Message></Error>").encode()


@pytest.mark.parametrize(("transport", "code"), [
    (_answering(503, _error("SlowDown")), "SlowDown"),
    (_answering(500, _error("InternalError")), "InternalError"),
    (_answering(502, b"<html>bad gateway</html>"), None),
    (_answering(429), None),
    (_answering(400, _error("RequestTimeout")), "RequestTimeout"),
    (_answering(0, exc=httpx.ReadTimeout("slow")), None),
    (_answering(0, exc=httpx.ConnectError("refused")), None),
])
def test_transient_answers_are_unavailable(tmp_path: Path, transport: httpx.MockTransport,
                                           code: str | None) -> None:
    config = BucketConfig.from_env(_env(tmp_path, "http://127.0.0.1:9", "outputs", "AK", "SK"))
    assert config is not None
    with Bucket(config, transport=transport) as client:
        with pytest.raises(BucketUnavailable) as caught:
            client.get(client.key_for("j-1", "x"))
    assert caught.value.code == code


@pytest.mark.parametrize(("status", "body", "code"), [
    (400, _error("InvalidArgument"), "InvalidArgument"),
    (301, _error("PermanentRedirect"), "PermanentRedirect"),
    (403, _error("RequestTimeTooSkewed"), "RequestTimeTooSkewed"),
    (404, b"", None),
    # Whatever the server puts in <Code> that is not a plain token is not repeated.
    (400, _error("two words<script>"), None),
])
def test_other_refusals_are_refused(tmp_path: Path, status: int, body: bytes,
                                    code: str | None) -> None:
    config = BucketConfig.from_env(_env(tmp_path, "http://127.0.0.1:9", "outputs", "AK", "SK"))
    assert config is not None
    with Bucket(config, transport=_answering(status, body)) as client:
        with pytest.raises(BucketRefused) as caught:
            client.get(client.key_for("j-1", "x"))
    assert caught.value.code == code
    assert caught.value.status == status
    assert f"HTTP {status}" in str(caught.value)


# --- configuration ------------------------------------------------------------------------

def test_from_env_is_none_without_a_bucket(tmp_path: Path) -> None:
    assert BucketConfig.from_env({}) is None
    assert BucketConfig.from_env({"HPCBRIDGE_S3_BUCKET": "  "}) is None
    env = _env(tmp_path, "http://127.0.0.1:9", "", "AK", "SK")
    assert BucketConfig.from_env(env) is None


def test_from_env_defaults(tmp_path: Path) -> None:
    config = BucketConfig.from_env(_env(tmp_path, "https://s3.example.org:9000/", "outputs",
                                        "AK", "SK"))
    assert config is not None
    assert config.endpoint == "https://s3.example.org:9000"
    assert (config.region, config.prefix) == ("us-east-1", "hpc-bridge/")
    assert config.access_key.value() == "AK"
    assert config.secret_key.value() == "SK"


def test_from_env_reads_the_aws_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAENVKEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret-value")
    env = {"HPCBRIDGE_S3_BUCKET": "outputs", "HPCBRIDGE_S3_ENDPOINT": "http://127.0.0.1:9",
           "HPCBRIDGE_S3_REGION": "eu-west-3", "HPCBRIDGE_S3_PREFIX": "runs/",
           "AWS_ACCESS_KEY_ID": "AKIAENVKEY", "AWS_SECRET_ACCESS_KEY": "env-secret-value"}
    config = BucketConfig.from_env(env)
    assert config is not None
    assert (config.region, config.prefix) == ("eu-west-3", "runs/")
    assert config.access_key.where == "environment variable AWS_ACCESS_KEY_ID"
    assert config.secret_key.value() == "env-secret-value"
    assert "env-secret-value" not in repr(config)


def _config_error(env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as caught:
        BucketConfig.from_env(env)
    return str(caught.value)


def test_a_missing_endpoint_is_named(tmp_path: Path) -> None:
    env = _env(tmp_path, "", "outputs", "AK", "SK")
    assert "HPCBRIDGE_S3_ENDPOINT" in _config_error(env)


@pytest.mark.parametrize("endpoint", [
    "s3.example.org", "ftp://s3.example.org", "http://", "http://h/path", "http://h?x=1",
    "http://h:99999",
])
def test_a_bad_endpoint_is_named(tmp_path: Path, endpoint: str) -> None:
    assert "HPCBRIDGE_S3_ENDPOINT" in _config_error(_env(tmp_path, endpoint, "outputs",
                                                         "AK", "SK"))


def test_an_endpoint_with_user_info_is_not_echoed(tmp_path: Path) -> None:
    message = _config_error(_env(tmp_path, "http://me:hunter2@h:9000", "outputs", "AK", "SK"))
    assert "HPCBRIDGE_S3_ENDPOINT" in message
    assert "hunter2" not in message


@pytest.mark.parametrize("name", [
    "ab", "a" * 64, "Outputs", "out_puts", "-outputs", "outputs-", "out..puts",
    "192.168.1.10", "xn--outputs", "outputs-s3alias", "out puts", "outputs/x",
])
def test_a_bad_bucket_name_is_named(tmp_path: Path, name: str) -> None:
    assert bucket_name_problem(name) is not None
    assert "HPCBRIDGE_S3_BUCKET" in _config_error(_env(tmp_path, "http://h", name, "AK", "SK"))


@pytest.mark.parametrize("name", ["abc", "a" * 63, "my.bucket-01", "0-data"])
def test_good_bucket_names(name: str) -> None:
    assert bucket_name_problem(name) is None


def test_a_bad_region_is_named(tmp_path: Path) -> None:
    env = _env(tmp_path, "http://h", "outputs", "AK", "SK", HPCBRIDGE_S3_REGION="us/east")
    assert "HPCBRIDGE_S3_REGION" in _config_error(env)


def test_a_bad_prefix_is_named(tmp_path: Path) -> None:
    env = _env(tmp_path, "http://h", "outputs", "AK", "SK", HPCBRIDGE_S3_PREFIX="/abs/")
    assert "HPCBRIDGE_S3_PREFIX" in _config_error(env)


@pytest.mark.parametrize(("drop", "named"), [
    ("HPCBRIDGE_S3_ACCESS_KEY_FILE", ("HPCBRIDGE_S3_ACCESS_KEY_FILE", "AWS_ACCESS_KEY_ID")),
    ("HPCBRIDGE_S3_SECRET_KEY_FILE", ("HPCBRIDGE_S3_SECRET_KEY_FILE",
                                      "AWS_SECRET_ACCESS_KEY")),
])
def test_missing_credentials_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       drop: str, named: tuple[str, ...]) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    env = _env(tmp_path, "http://h", "outputs", "AK", "SK")
    del env[drop]
    message = _config_error(env)
    for name in named:
        assert name in message


@pytest.mark.parametrize("variable", ["HPCBRIDGE_S3_ACCESS_KEY_FILE",
                                      "HPCBRIDGE_S3_SECRET_KEY_FILE"])
def test_unreadable_or_empty_credential_files_are_named(tmp_path: Path, variable: str) -> None:
    env = _env(tmp_path, "http://h", "outputs", "AK", "SK")
    env[variable] = str(tmp_path / "missing")
    assert variable in _config_error(env)
    (tmp_path / "blank").write_text("\n")
    env[variable] = str(tmp_path / "blank")
    assert variable in _config_error(env)


# --- no secret in repr() ------------------------------------------------------------------

def test_no_secret_in_any_repr(bucket: Bucket, emulator: S3Emulator) -> None:
    secret = emulator.secret_access_key
    bucket.put(bucket.key_for(JOB, "repr.txt"), b"x")  # the secret has been read and used
    objects = [bucket, bucket.config, bucket.config.access_key, bucket.config.secret_key,
               emulator, *vars(bucket).values()]
    for thing in objects:
        assert secret not in repr(thing)
    assert secret not in repr(vars(bucket))
