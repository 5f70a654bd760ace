"""djangoops.s3: requests signed as AWS Signature Version 4 says (AWS's own published
examples), restic's repository URLs, the listing of versions read page by page with the
oldest version's time as an object's arrival, and refusals told by their S3 error code."""

import calendar
import datetime
import io
import re
import urllib.error

import pytest
from djangoops import s3

AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
WHEN = datetime.datetime(2013, 5, 24, tzinfo=datetime.UTC)


def headers(**extra):
    return {
        "host": "examplebucket.s3.amazonaws.com",
        "x-amz-content-sha256": s3.EMPTY_SHA256,
        "x-amz-date": "20130524T000000Z",
        **extra,
    }


@pytest.mark.parametrize(
    ("url", "extra", "signature"),
    [
        # AWS's examples in "Signature Calculations for the Authorization Header".
        ("/test.txt", {"range": "bytes=0-9"}, "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"),
        ("/?lifecycle", {}, "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"),
        ("/?max-keys=2&prefix=J", {}, "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"),
    ],
)
def test_requests_are_signed_as_aws_publishes(url, extra, signature):
    signed = s3.signature_v4(
        "GET",
        "https://examplebucket.s3.amazonaws.com" + url,
        headers(**extra),
        s3.EMPTY_SHA256,
        AWS_KEY,
        AWS_SECRET,
        "us-east-1",
        WHEN,
    )
    assert signed.endswith(f"Signature={signature}")
    assert signed.startswith(f"AWS4-HMAC-SHA256 Credential={AWS_KEY}/20130524/us-east-1/s3/aws4_request, ")


@pytest.mark.parametrize(
    ("url", "where"),
    [
        ("s3:http://10.0.0.5:5000/web1", s3.Location("http://10.0.0.5:5000", "web1", "")),
        ("s3:https://s3.example.com/backups/shop/prod", s3.Location("https://s3.example.com", "backups", "shop/prod")),
        ("s3:s3.amazonaws.com/backups/shop", s3.Location("https://s3.amazonaws.com", "backups", "shop")),
    ],
)
def test_repository_urls_name_the_endpoint_bucket_and_prefix(url, where):
    assert s3.location(url) == where


@pytest.mark.parametrize("url", ["s3:https://s3.example.com/", "s3:ftp://x/b", "s3:"])
def test_a_url_without_a_bucket_is_refused(url):
    with pytest.raises(ValueError, match="is not an s3 repository"):
        s3.location(url)


def test_the_region_comes_from_an_aws_host():
    assert s3.Client("s3:https://s3.eu-west-1.amazonaws.com/b", "k", "s").region == "eu-west-1"
    assert s3.Client("s3:https://minio.example/b", "k", "s").region == "us-east-1"


class Server:
    """urllib's opener: records each request, answers from ANSWERS in turn."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.requests = []

    def __call__(self, request, timeout):
        self.requests.append(request)
        status, body = self.answers.pop(0)
        if status >= 400:
            raise urllib.error.HTTPError(request.full_url, status, "refused", {}, io.BytesIO(body))
        return io.BytesIO(body)


def versions_page(entries, truncated=False, next_key=None, next_version=None):
    items = "".join(
        f"<{kind}><Key>{key}</Key><VersionId>{vid}</VersionId><LastModified>{when}</LastModified></{kind}>"
        for kind, key, vid, when in entries
    )
    more = (
        f"<NextKeyMarker>{next_key}</NextKeyMarker><NextVersionIdMarker>{next_version}</NextVersionIdMarker>"
        if truncated
        else ""
    )
    return (
        '<ListVersionsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>{more}{items}</ListVersionsResult>"
    ).encode()


def client(server, url="s3:http://10.0.0.5:5000/web1/shop"):
    return s3.Client(url, "server-key", "server-secret", open_url=server, clock=lambda: WHEN)


def test_an_objects_arrival_is_its_oldest_version_across_pages():
    server = Server(
        (
            200,
            versions_page(
                [
                    ("Version", "shop/snapshots/aa", "v3", "2026-12-06T10:00:00.000Z"),  # written over
                    ("Version", "shop/snapshots/aa", "v1", "2026-12-01T02:05:00.000Z"),
                    ("DeleteMarker", "shop/snapshots/bb", "v9", "2026-12-06T11:00:00.000Z"),
                ],
                truncated=True,
                next_key="shop/snapshots/bb",
                next_version="v9",
            ),
        ),
        (
            200,
            versions_page(
                [
                    ("Version", "shop/snapshots/bb", "v2", "2026-12-02T02:05:00.000Z"),
                    ("Version", "shop/snapshots/sub/cc", "v4", "2026-12-02T02:05:00.000Z"),
                    ("Version", "shop/snapshotsx", "v5", "2026-12-02T02:05:00.000Z"),
                ]
            ),
        ),
    )
    found = client(server).arrivals("snapshots")
    assert found == {"aa": calendar.timegm((2026, 12, 1, 2, 5, 0)), "bb": calendar.timegm((2026, 12, 2, 2, 5, 0))}
    first, second = server.requests
    assert first.full_url == "http://10.0.0.5:5000/web1?prefix=shop%2Fsnapshots&versions="
    assert second.full_url.endswith(
        "key-marker=shop%2Fsnapshots%2Fbb&prefix=shop%2Fsnapshots&version-id-marker=v9&versions="
    )
    assert first.get_header("Authorization").startswith("AWS4-HMAC-SHA256 Credential=server-key/20130524/us-east-1/s3/")
    assert "server-secret" not in first.get_header("Authorization")


def test_a_refusal_is_told_by_its_code():
    server = Server((403, b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"))
    with pytest.raises(s3.S3Error) as raised:
        client(server).delete("snapshots/aa")
    assert (raised.value.code, raised.value.status, str(raised.value)) == (
        403 and "AccessDenied",
        403,
        "AccessDenied: Access Denied",
    )
    assert server.requests[0].get_method() == "DELETE"
    assert server.requests[0].full_url == "http://10.0.0.5:5000/web1/shop/snapshots/aa"


def test_a_wrong_region_is_corrected_once():
    wrong = b"<Error><Code>AuthorizationHeaderMalformed</Code><Region>eu-west-1</Region></Error>"
    server = Server((400, wrong), (200, b"<VersioningConfiguration><Status>Enabled</Status></VersioningConfiguration>"))
    api = client(server)
    assert api.versioning() == "Enabled"
    assert api.region == "eu-west-1"
    assert "/eu-west-1/s3/" in server.requests[1].get_header("Authorization")
    # The same region again: no second try.
    refused = Server((400, wrong.replace(b"eu-west-1", b"us-east-1")))
    with pytest.raises(s3.S3Error, match="AuthorizationHeaderMalformed"):
        client(refused).versioning()
    assert len(refused.requests) == 1


def test_versioning_read_and_enabled():
    server = Server((200, b'<VersioningConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"/>'), (200, b""))
    api = client(server)
    assert api.versioning() == ""
    api.enable_versioning()
    put = server.requests[1]
    assert (put.get_method(), put.full_url) == ("PUT", "http://10.0.0.5:5000/web1?versioning=")
    assert b"<Status>Enabled</Status>" in put.data
    assert put.get_header("Content-md5")


def test_an_unreachable_server_is_an_s3_error():
    def refuse(request, timeout):
        raise urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))

    with pytest.raises(s3.S3Error, match=re.escape("http://10.0.0.5:5000 cannot be reached")):
        client(refuse).versioning()


def test_a_missing_bucket_is_told_by_head():
    assert client(Server((200, b""))).exists()
    missing = Server((404, b""))
    assert not client(missing).exists()
    assert missing.requests[0].get_method() == "HEAD"
    with pytest.raises(s3.S3Error):
        client(Server((403, b"<Error><Code>AccessDenied</Code></Error>"))).exists()


def test_an_objects_versions_newest_first_delete_markers_included():
    page = versions_page(
        [
            ("DeleteMarker", "shop/check", "m3", "2026-12-06T10:00:02.000Z"),
            ("Version", "shop/check", "v2", "2026-12-06T10:00:01.000Z"),
            ("Version", "shop/check-other", "v9", "2026-12-06T10:00:01.000Z"),
            ("Version", "shop/check", "v1", "2026-12-06T10:00:00.000Z"),
        ]
    )
    server = Server((200, page), (204, b""))
    api = client(server)
    assert api.versions("check") == ["m3", "v2", "v1"]
    api.delete("check", "v1")
    assert server.requests[1].full_url == "http://10.0.0.5:5000/web1/shop/check?versionId=v1"


def test_a_truncated_listing_without_its_next_key_is_an_error():
    server = Server((200, versions_page([], truncated=True, next_key="", next_version="")))
    with pytest.raises(s3.S3Error, match="truncated but names no next key"):
        client(server).arrivals("snapshots")


def test_an_object_is_written_with_its_checksum_and_type():
    server = Server((200, b""))
    client(server).put("check", b"canary")
    put = server.requests[0]
    assert (put.get_method(), put.full_url, put.data) == ("PUT", "http://10.0.0.5:5000/web1/shop/check", b"canary")
    assert put.get_header("Content-type") == "application/octet-stream"
    assert put.get_header("Content-md5") == "GpO1nJpMnam4UllEfmeMdg=="
    # Signed: the host and the x-amz- headers only.
    assert "SignedHeaders=host;x-amz-content-sha256;x-amz-date," in put.get_header("Authorization")
