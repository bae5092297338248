"""A small client for S3-compatible object stores: put and get whole objects.

A finished job's output files are copied to a bucket when one is configured
(``HPCBRIDGE_S3_*``, see :meth:`BucketConfig.from_env`). Requests are signed with AWS
Signature Version 4 (header-based, single-chunk signed payload), written here from the
AWS documentation, and addressed path-style (``<endpoint>/<bucket>/<key>``), which every
S3-compatible server understands (MinIO, Ceph RGW, Garage, SeaweedFS, AWS itself).

Credentials are :class:`hpcbridge.credentials.Credential` objects, read when a request is
signed (a rotated Secret file is picked up) and registered with the redactor; no object
here keeps a secret in an attribute, and no message or ``repr()`` carries one.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import ipaddress
import re
from collections.abc import Iterable, Mapping
from urllib.parse import quote, urlsplit

import httpx

from adapters.base import ConfigError
from hpcbridge.credentials import Credential, CredentialError

__all__ = [
    "EMPTY_SHA256",
    "Bucket",
    "BucketConfig",
    "BucketError",
    "BucketRefused",
    "BucketUnavailable",
    "SigV4Request",
    "bucket_name_problem",
    "canonical_query",
    "canonical_request",
    "sign",
    "signing_key",
    "string_to_sign",
    "uri_encode",
]

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
DEFAULT_REGION = "us-east-1"
DEFAULT_PREFIX = "hpc-bridge/"
_MAX_KEY_BYTES = 1024

# --- AWS Signature Version 4 -------------------------------------------------------------


def uri_encode(text: str, *, keep_slash: bool = False) -> str:
    """``text`` encoded the way SigV4 wants it: every UTF-8 byte except the unreserved
    characters ``A-Z a-z 0-9 - . _ ~`` becomes ``%XY`` (upper-case hex), a space is
    ``%20`` (never ``+``); ``/`` is kept only for an object key's path.

    The result is both what goes on the wire and what is signed, so nothing is encoded
    twice: callers pass the raw key, never an already-encoded one.
    """
    return quote(text, safe="/" if keep_slash else "", encoding="utf-8", errors="strict")


def canonical_query(query: Mapping[str, str] | Iterable[tuple[str, str]]) -> str:
    """The canonical query string: names and values URI-encoded, sorted by name (then
    value); a parameter without a value (``?lifecycle``) is ``lifecycle=``."""
    pairs = query.items() if isinstance(query, Mapping) else query
    encoded = sorted((uri_encode(name), uri_encode(value)) for name, value in pairs)
    return "&".join(f"{name}={value}" for name, value in encoded)


def _canonical_headers(headers: Mapping[str, str]) -> tuple[str, str]:
    """(canonical headers block, signed header names): names lower-cased, values trimmed
    with inner runs of spaces collapsed, sorted by name."""
    folded: dict[str, str] = {}
    for name, value in headers.items():
        lowered = name.strip().lower()
        if lowered in folded:
            raise ValueError(f"header {lowered!r} given twice")
        folded[lowered] = " ".join(str(value).split())
    names = sorted(folded)
    block = "".join(f"{name}:{folded[name]}\n" for name in names)
    return block, ";".join(names)


def canonical_request(method: str, path: str, query: Mapping[str, str] |
                      Iterable[tuple[str, str]], headers: Mapping[str, str],
                      payload_sha256: str) -> tuple[str, str]:
    """(canonical request, signed headers) for a request whose encoded path is ``path``
    (see :func:`uri_encode`), signing every header in ``headers``."""
    block, signed = _canonical_headers(headers)
    text = "\n".join([method.upper(), path or "/", canonical_query(query), block, signed,
                      payload_sha256])
    return text, signed


def _scope(date: str, region: str, service: str) -> str:
    return f"{date}/{region}/{service}/aws4_request"


def string_to_sign(amz_date: str, scope: str, canonical: str) -> str:
    """The string to sign: the algorithm, the request time, the credential scope and the
    SHA-256 of the canonical request."""
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return "\n".join([ALGORITHM, amz_date, scope, digest])


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


def signing_key(secret_key: str, date: str, region: str, service: str = "s3") -> bytes:
    """The day's signing key: HMAC chained over the date, region, service and the
    terminator, seeded with ``"AWS4" + secret``."""
    key = _hmac(("AWS4" + secret_key).encode("utf-8"), date)
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    return key


@dataclasses.dataclass(frozen=True, slots=True)
class SigV4Request:
    """What a signature covers. ``path`` is already URI-encoded; ``headers`` must hold
    ``host`` and everything else to be signed (``x-amz-date`` and
    ``x-amz-content-sha256`` are added by :func:`sign`)."""

    method: str
    path: str
    headers: Mapping[str, str]
    payload_sha256: str = EMPTY_SHA256
    query: tuple[tuple[str, str], ...] = ()


def sign(request: SigV4Request, *, access_key: str, secret_key: str, region: str,
         now: dt.datetime, service: str = "s3") -> dict[str, str]:
    """The headers to send: ``request.headers`` plus ``x-amz-date``,
    ``x-amz-content-sha256`` and ``Authorization``, signed for the instant ``now``.

    ``now`` is explicit (an aware datetime) so the documented examples can be reproduced;
    :class:`Bucket` passes the current UTC time.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    instant = now.astimezone(dt.UTC)
    amz_date = instant.strftime("%Y%m%dT%H%M%SZ")
    date = amz_date[:8]
    headers = dict(request.headers)
    lowered = {name.lower() for name in headers}
    if "host" not in lowered:
        raise ValueError("the host header must be signed")
    if "x-amz-date" not in lowered:
        headers["x-amz-date"] = amz_date
    if "x-amz-content-sha256" not in lowered:
        headers["x-amz-content-sha256"] = request.payload_sha256
    canonical, signed = canonical_request(request.method, request.path, request.query,
                                          headers, request.payload_sha256)
    scope = _scope(date, region, service)
    signature = hmac.new(signing_key(secret_key, date, region, service),
                         string_to_sign(amz_date, scope, canonical).encode("utf-8"),
                         hashlib.sha256).hexdigest()
    headers["Authorization"] = (f"{ALGORITHM} Credential={access_key}/{scope},"
                                f"SignedHeaders={signed},Signature={signature}")
    return headers


# --- configuration -----------------------------------------------------------------------

_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_REGION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# From the S3 bucket naming rules: reserved prefixes and suffixes.
_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")


def bucket_name_problem(name: str) -> str | None:
    """Why ``name`` breaks the S3 bucket naming rules, or None when it follows them:
    3-63 characters of lower-case letters, digits, dots and hyphens, beginning and
    ending with a letter or digit, no two adjacent dots, not an IPv4 address, none of
    the reserved prefixes and suffixes."""
    if not 3 <= len(name) <= 63:
        return "must be 3 to 63 characters long"
    if not _BUCKET_RE.fullmatch(name):
        return ("must hold only lower-case letters, digits, dots and hyphens, and begin "
                "and end with a letter or digit")
    if ".." in name:
        return "must not hold two adjacent dots"
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        pass
    else:
        return "must not be formatted as an IP address"
    if name.startswith(_RESERVED_PREFIXES) or name.endswith(_RESERVED_SUFFIXES):
        return "uses a prefix or suffix S3 reserves"
    return None


def _key_problem(key: str) -> str | None:
    if not key:
        return "is empty"
    try:
        encoded = key.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode text"
    if len(encoded) > _MAX_KEY_BYTES:
        return f"is longer than {_MAX_KEY_BYTES} bytes"
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in key):
        return "holds a control character"
    # HTTP clients and servers resolve "." and ".." segments and many merge "//": the
    # object would be stored under another key than the one signed.
    if key.startswith("/") or any(part in ("", ".", "..") for part in key.split("/")[:-1]):
        return "has an empty, '.' or '..' segment"
    if key.split("/")[-1] in (".", ".."):
        return "has a '.' or '..' segment"
    return None


def _env(env: Mapping[str, str], name: str) -> str:
    return (env.get(name) or "").strip()


def _endpoint(raw: str) -> str:
    name = "HPCBRIDGE_S3_ENDPOINT"
    if not raw:
        raise ConfigError(f"{name} must be set when HPCBRIDGE_S3_BUCKET is")
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"{name} must be an http:// or https:// URL")
    if "@" in parts.netloc:
        # Never echo the value: user info in a URL is a credential.
        raise ConfigError(f"{name} must not carry user information; use "
                          f"HPCBRIDGE_S3_ACCESS_KEY_FILE and HPCBRIDGE_S3_SECRET_KEY_FILE")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        raise ConfigError(f"{name} has an invalid port: {raw!r}") from None
    if not host:
        raise ConfigError(f"{name} has no host: {raw!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(f"{name} must be scheme://host[:port] without a path, "
                          f"query or fragment (path-style addressing adds the bucket): "
                          f"{raw!r}")
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc = f"{netloc}:{port}"
    return f"{parts.scheme}://{netloc}"


def _credential(env: Mapping[str, str], file_var: str, env_var: str) -> Credential:
    path = _env(env, file_var)
    if path:
        credential = Credential(file=path)
        try:
            credential.value()  # fail at start-up, not at the first copy
        except CredentialError as exc:
            raise ConfigError(f"{file_var}: {exc}") from None
        return credential
    if _env(env, env_var):
        return Credential(env=env_var)
    raise ConfigError(f"set {file_var} (a mounted Secret file) or {env_var}")


@dataclasses.dataclass(frozen=True, slots=True)
class BucketConfig:
    """Where output files go. The credentials are references (a file or an environment
    variable), never values, so ``repr()`` shows where they come from only."""

    endpoint: str
    bucket: str
    access_key: Credential
    secret_key: Credential
    region: str = DEFAULT_REGION
    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        problem = bucket_name_problem(self.bucket)
        if problem:
            raise ConfigError(f"HPCBRIDGE_S3_BUCKET {self.bucket!r} {problem}")
        object.__setattr__(self, "endpoint", _endpoint(self.endpoint))
        if not _REGION_RE.fullmatch(self.region):
            raise ConfigError(f"HPCBRIDGE_S3_REGION {self.region!r} is not a region name")
        if self.prefix and (self.prefix.startswith("/") or "//" in self.prefix
                            or any(ord(c) < 0x20 for c in self.prefix)):
            raise ConfigError(f"HPCBRIDGE_S3_PREFIX {self.prefix!r} must not begin with "
                              f"'/', hold '//' or control characters")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> BucketConfig | None:
        """The configuration ``env`` describes, or None when ``HPCBRIDGE_S3_BUCKET`` is
        unset or empty (copying is off).

        ``HPCBRIDGE_S3_ENDPOINT`` is then required; ``HPCBRIDGE_S3_REGION`` defaults to
        us-east-1 and ``HPCBRIDGE_S3_PREFIX`` to ``hpc-bridge/`` (set it empty for no
        prefix). Each key comes from ``HPCBRIDGE_S3_ACCESS_KEY_FILE`` /
        ``HPCBRIDGE_S3_SECRET_KEY_FILE`` (read now to fail early, and again at each
        request) or else ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``, which
        :class:`Credential` reads from the process environment when a request is signed.
        Raises :class:`ConfigError` naming the variable at fault.
        """
        bucket = _env(env, "HPCBRIDGE_S3_BUCKET")
        if not bucket:
            return None
        prefix = env.get("HPCBRIDGE_S3_PREFIX")
        return cls(
            endpoint=_env(env, "HPCBRIDGE_S3_ENDPOINT") or "",
            bucket=bucket,
            region=_env(env, "HPCBRIDGE_S3_REGION") or DEFAULT_REGION,
            prefix=DEFAULT_PREFIX if prefix is None else prefix.strip(),
            access_key=_credential(env, "HPCBRIDGE_S3_ACCESS_KEY_FILE", "AWS_ACCESS_KEY_ID"),
            secret_key=_credential(env, "HPCBRIDGE_S3_SECRET_KEY_FILE",
                                   "AWS_SECRET_ACCESS_KEY"),
        )


# --- errors ------------------------------------------------------------------------------


class BucketError(Exception):
    """An object store request failed. ``code`` is S3's error code (``NoSuchKey``) when
    the server sent one, ``key`` the object's key; messages never carry credentials."""

    def __init__(self, message: str, *, code: str | None = None, key: str | None = None,
                 status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.key = key
        self.status = status


class BucketUnavailable(BucketError):
    """The store could not be reached, timed out, or answered 5xx / SlowDown: retry."""


class BucketRefused(BucketError):
    """The store refused the request (bad signature or key, access denied, no such bucket
    or key, other 4xx): retrying the same request will not help."""


# Codes that mean "later", whatever the status they arrive with.
_TRANSIENT_CODES = frozenset({"SlowDown", "InternalError", "ServiceUnavailable",
                              "RequestTimeout", "OperationAborted"})
_CODE_RE = re.compile(r"<Code>\s*([A-Za-z0-9.]{1,64})\s*</Code>")


def _error_code(response: httpx.Response) -> str | None:
    """S3's ``<Error><Code>`` from the XML body. A pattern, not an XML parser: the body
    comes from a server we do not control and only one short token is wanted."""
    match = _CODE_RE.search(response.content[:65536].decode("utf-8", errors="replace"))
    return match.group(1) if match else None


# --- the client --------------------------------------------------------------------------


class Bucket:
    """Puts and gets whole objects in the configured bucket over one kept-open
    :class:`httpx.Client` (its only state: safe to share between threads). ``transport``
    replaces httpx's own, for tests."""

    def __init__(self, config: BucketConfig, *, transport: httpx.BaseTransport | None = None,
                 timeout: float = 60.0) -> None:
        self.config = config
        self._timeout = timeout
        parts = urlsplit(config.endpoint)
        default_port = {"http": 80, "https": 443}[parts.scheme]
        host = parts.hostname or ""
        self._host = f"[{host}]" if ":" in host else host
        if parts.port is not None and parts.port != default_port:
            self._host = f"{self._host}:{parts.port}"
        self._client = httpx.Client(transport=transport, follow_redirects=False,
                                    timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)))

    def __repr__(self) -> str:
        return f"Bucket({self.config.endpoint}, bucket={self.config.bucket!r})"

    def __enter__(self) -> Bucket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    # --- keys ---------------------------------------------------------------------------

    def key_for(self, job_id: str, path: str) -> str:
        """The key for ``path`` (relative, ``/``-separated) of job ``job_id``:
        prefix + job id + ``/`` + path, with ``.`` and empty segments dropped. The key is
        raw text; it is URI-encoded, segment by segment, when a request is signed."""
        if not job_id or "/" in job_id or job_id in (".", ".."):
            raise ValueError(f"job id {job_id!r} cannot be a key segment")
        if path.startswith("/"):
            raise ValueError(f"path {path!r} must be relative")
        parts = [part for part in path.split("/") if part not in ("", ".")]
        if not parts or ".." in parts:
            raise ValueError(f"path {path!r} must name a file below the job's folder")
        key = f"{self.config.prefix}{job_id}/{'/'.join(parts)}"
        self._check_key(key)
        return key

    def location(self, key: str) -> str:
        """``s3://<bucket>/<key>``: the raw key, as the AWS tools print it."""
        return f"s3://{self.config.bucket}/{key}"

    def _key_of(self, key_or_location: str) -> str:
        if key_or_location.startswith("s3://"):
            bucket, _, key = key_or_location[len("s3://"):].partition("/")
            if bucket != self.config.bucket:
                raise ValueError(f"{key_or_location!r} is not in bucket "
                                 f"{self.config.bucket!r}")
            key_or_location = key
        self._check_key(key_or_location)
        return key_or_location

    @staticmethod
    def _check_key(key: str) -> None:
        problem = _key_problem(key)
        if problem:
            raise ValueError(f"object key {key!r} {problem}")

    # --- requests -----------------------------------------------------------------------

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        """Store ``data`` under ``key`` (a full key, e.g. from :meth:`key_for`), replacing
        any object there; returns its location ``s3://<bucket>/<key>``."""
        self._check_key(key)
        self._request("PUT", key, bytes(data), {"content-type": content_type}, "store")
        return self.location(key)

    def get(self, key_or_location: str) -> bytes:
        """The whole object at a key or at an ``s3://`` location of this bucket."""
        key = self._key_of(key_or_location)
        return self._request("GET", key, b"", {}, "read").content

    def _request(self, method: str, key: str, body: bytes, headers: Mapping[str, str],
                 what: str) -> httpx.Response:
        cfg = self.config
        where = self.location(key)
        path = f"/{uri_encode(cfg.bucket)}/{uri_encode(key, keep_slash=True)}"
        try:
            access_key, secret_key = cfg.access_key.value(), cfg.secret_key.value()
        except CredentialError as exc:
            raise BucketRefused(f"cannot {what} {where}: {exc}", key=key) from None
        signed = sign(SigV4Request(method=method, path=path,
                                   headers={"host": self._host, **headers},
                                   payload_sha256=hashlib.sha256(body).hexdigest()),
                      access_key=access_key, secret_key=secret_key, region=cfg.region,
                      now=dt.datetime.now(dt.UTC))
        del access_key, secret_key
        try:
            response = self._client.request(method, cfg.endpoint + path, content=body,
                                            headers=signed)
        except httpx.TimeoutException:
            raise BucketUnavailable(f"cannot {what} {where}: {cfg.endpoint} did not answer "
                                    f"within {self._timeout:g} s", key=key) from None
        except httpx.TransportError as exc:
            raise BucketUnavailable(f"cannot {what} {where}: cannot reach {cfg.endpoint} "
                                    f"({type(exc).__name__})", key=key) from None
        if response.is_success:
            return response
        code = _error_code(response)
        status = response.status_code
        message = f"cannot {what} {where}: {code or 'no error code'} (HTTP {status})"
        if status >= 500 or status == 429 or code in _TRANSIENT_CODES:
            raise BucketUnavailable(message, code=code, key=key, status=status)
        raise BucketRefused(message, code=code, key=key, status=status)
