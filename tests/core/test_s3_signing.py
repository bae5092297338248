"""hpcbridge.s3's Signature Version 4 against the examples AWS publishes.

The four requests, keys and expected signatures are those of "Signature Calculations for
the Authorization Header: Transferring Payload in a Single Chunk (AWS Signature Version
4)", section "Examples: Signature Calculations":
https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html
(also https://docs.amazonaws.cn/AmazonS3/latest/API/sig-v4-header-based-auth.html).
They are documentation facts: access key AKIAIOSFODNN7EXAMPLE, the example secret,
bucket examplebucket (virtual-hosted), region us-east-1, 20130524T000000Z.
"""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest

from hpcbridge.s3 import (
    EMPTY_SHA256,
    SigV4Request,
    canonical_query,
    canonical_request,
    sign,
    uri_encode,
)

ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
HOST = "examplebucket.s3.amazonaws.com"
WHEN = dt.datetime(2013, 5, 24, 0, 0, 0, tzinfo=dt.UTC)
SCOPE = f"{ACCESS_KEY}/20130524/us-east-1/s3/aws4_request"


def _sign(request: SigV4Request) -> dict[str, str]:
    return sign(request, access_key=ACCESS_KEY, secret_key=SECRET_KEY, region="us-east-1",
                now=WHEN)


def _signature(headers: dict[str, str]) -> str:
    return headers["Authorization"].rpartition("Signature=")[2]


def test_get_object_with_range() -> None:
    headers = _sign(SigV4Request("GET", "/test.txt", {"host": HOST, "range": "bytes=0-9"}))
    assert headers["Authorization"] == (
        f"AWS4-HMAC-SHA256 Credential={SCOPE},"
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")
    assert headers["x-amz-date"] == "20130524T000000Z"
    assert headers["x-amz-content-sha256"] == EMPTY_SHA256


def test_get_object_canonical_request() -> None:
    # The canonical request the documentation prints for the GET Object example.
    text, signed = canonical_request(
        "GET", "/test.txt", (),
        {"host": HOST, "range": "bytes=0-9", "x-amz-content-sha256": EMPTY_SHA256,
         "x-amz-date": "20130524T000000Z"}, EMPTY_SHA256)
    assert signed == "host;range;x-amz-content-sha256;x-amz-date"
    assert text == (
        "GET\n/test.txt\n\n"
        f"host:{HOST}\nrange:bytes=0-9\n"
        "x-amz-content-sha256:"
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
        "x-amz-date:20130524T000000Z\n\n"
        "host;range;x-amz-content-sha256;x-amz-date\n"
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")


def test_put_object() -> None:
    body = b"Welcome to Amazon S3."
    payload = hashlib.sha256(body).hexdigest()
    assert payload == "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"
    path = "/" + uri_encode("test$file.text", keep_slash=True)
    assert path == "/test%24file.text"
    headers = _sign(SigV4Request(
        "PUT", path,
        {"Host": HOST, "Date": "Fri, 24 May 2013 00:00:00 GMT",
         "x-amz-storage-class": "REDUCED_REDUNDANCY"},
        payload_sha256=payload))
    assert headers["Authorization"] == (
        f"AWS4-HMAC-SHA256 Credential={SCOPE},"
        "SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class,"
        "Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd")
    assert headers["x-amz-content-sha256"] == payload


def test_get_bucket_lifecycle() -> None:
    assert canonical_query([("lifecycle", "")]) == "lifecycle="
    headers = _sign(SigV4Request("GET", "/", {"host": HOST}, query=(("lifecycle", ""),)))
    assert _signature(headers) == (
        "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543")


def test_get_bucket_list_objects() -> None:
    # Given out of order: the canonical query string is sorted by name.
    query = (("prefix", "J"), ("max-keys", "2"))
    assert canonical_query(query) == "max-keys=2&prefix=J"
    headers = _sign(SigV4Request("GET", "/", {"host": HOST}, query=query))
    assert _signature(headers) == (
        "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7")


def test_the_signature_depends_on_the_secret_and_the_key() -> None:
    base = SigV4Request("GET", "/test.txt", {"host": HOST, "range": "bytes=0-9"})
    reference = _signature(_sign(base))
    other_secret = sign(base, access_key=ACCESS_KEY, secret_key=SECRET_KEY + "x",
                        region="us-east-1", now=WHEN)
    other_key = _sign(SigV4Request("GET", "/test.txt2", base.headers))
    assert _signature(other_secret) != reference
    assert _signature(other_key) != reference


@pytest.mark.parametrize(("raw", "encoded"), [
    ("a b", "a%20b"),
    ("a+b", "a%2Bb"),
    ("100%", "100%25"),
    ("k=v", "k%3Dv"),
    ("~-._AZaz09", "~-._AZaz09"),
    ("é€", "%C3%A9%E2%82%AC"),
    ("dir/sub dir/f", "dir/sub%20dir/f"),
    ("a%20b", "a%2520b"),  # a raw key with a literal "%20" is not decoded
])
def test_uri_encode_object_keys(raw: str, encoded: str) -> None:
    assert uri_encode(raw, keep_slash=True) == encoded


def test_uri_encode_query_values_encode_the_slash() -> None:
    assert uri_encode("a/b c") == "a%2Fb%20c"


def test_sign_requires_an_aware_time_and_a_host() -> None:
    request = SigV4Request("GET", "/", {"host": HOST})
    with pytest.raises(ValueError, match="timezone"):
        sign(request, access_key=ACCESS_KEY, secret_key=SECRET_KEY, region="us-east-1",
             now=dt.datetime(2013, 5, 24))  # naive on purpose
    with pytest.raises(ValueError, match="host"):
        _sign(SigV4Request("GET", "/", {}))
