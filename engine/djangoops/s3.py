"""The few S3 requests restic does not make for us, signed with AWS Signature
Version 4, with the standard library only (the servers' own python3):

    versioning()             is the bucket's versioning Enabled, Suspended or never set
    enable_versioning()      (the bucket owner's keys: offsite_buckets.yml)
    arrivals(prefix)         when each object under PREFIX first arrived: the oldest
                             version's LastModified, which the S3 server sets and no
                             client's write can move while versioning is on
    put(key, data), delete(key, version_id)   the append-only check's canary

A repository is named as restic names it (s3:[http[s]://]HOST/BUCKET[/PREFIX]);
requests go path-style to that host. The keys are given to Client, never to a
command line; nothing here logs.
"""

import base64
import datetime
import hashlib
import hmac
import re
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from typing import NamedTuple

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
DEFAULT_REGION = "us-east-1"
AWS_REGION_HOST = re.compile(r"s3[.-]([a-z0-9-]+)\.amazonaws\.com\Z")
TIMEOUT = 60
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


class S3Error(Exception):
    """A request the S3 server refused (CODE: its error code, e.g. AccessDenied;
    STATUS: the HTTP status) or that could not be made (CODE None)."""

    def __init__(self, message, code=None, status=None, region=None):
        super().__init__(message)
        self.code = code
        self.status = status
        self.region = region


class Location(NamedTuple):
    endpoint: str  # scheme://host[:port]
    bucket: str
    prefix: str  # "" or "some/prefix" (no slash at either end)


def location(url):
    """A restic s3 repository URL as Location; ValueError when it names no bucket."""
    rest = url[3:] if url.startswith("s3:") else url
    if "://" not in rest:
        rest = "https://" + rest
    parts = urllib.parse.urlsplit(rest)
    path = [p for p in parts.path.split("/") if p]
    if parts.scheme not in ("http", "https") or not parts.netloc or not path:
        raise ValueError(f"{url} is not an s3 repository (s3:[https://]HOST/BUCKET[/PREFIX])")
    return Location(f"{parts.scheme}://{parts.netloc}", path[0], "/".join(path[1:]))


def _quote(text, safe="-_.~"):
    return urllib.parse.quote(text, safe=safe)


def signature_v4(method, url, headers, payload_sha256, access_key, secret_key, region, now, service="s3"):
    """The Authorization header of a request (HEADERS: every header to sign, by
    lower-case name, host included), as AWS Signature Version 4 makes it."""
    parts = urllib.parse.urlsplit(url)
    path = _quote(parts.path or "/", safe="/-_.~")
    pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    query = "&".join(f"{_quote(k)}={_quote(v)}" for k, v in sorted(pairs))
    names = sorted(headers)
    canonical = "\n".join(
        [
            method,
            path,
            query,
            "".join(f"{n}:{' '.join(str(headers[n]).split())}\n" for n in names),
            ";".join(names),
            payload_sha256,
        ]
    )
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    day = now.strftime("%Y%m%d")
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + secret_key).encode()
    for part in (day, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={';'.join(names)}, Signature={signature}"


def _error(body, status):
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return S3Error(f"HTTP {status}", status=status)
    code = root.findtext("Code") or root.findtext(f"{NS}Code")
    message = root.findtext("Message") or root.findtext(f"{NS}Message") or ""
    region = root.findtext("Region") or root.findtext(f"{NS}Region")
    return S3Error(f"{code or 'HTTP ' + str(status)}: {message}".rstrip(": "), code=code, status=status, region=region)


def _epoch(text):
    return int(datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


class Client:
    """Requests to the bucket of restic repository URL, signed with ACCESS_KEY
    and SECRET_KEY. OPEN (urllib's opener) and CLOCK are for tests."""

    def __init__(self, url, access_key, secret_key, region=None, timeout=TIMEOUT, open_url=None, clock=None):
        self.where = location(url)
        self.access_key = access_key
        self.secret_key = secret_key
        host = urllib.parse.urlsplit(self.where.endpoint).hostname or ""
        found = AWS_REGION_HOST.search(host)
        self.region = region or (found.group(1) if found else DEFAULT_REGION)
        self.timeout = timeout
        self.open_url = (
            open_url or urllib.request.build_opener(urllib.request.HTTPHandler, urllib.request.HTTPSHandler).open
        )
        self.clock = clock or (lambda: datetime.datetime.now(datetime.UTC))

    def _key(self, name):
        return f"{self.where.prefix}/{name}" if self.where.prefix else name

    def request(self, method, key="", query=(), body=b"", headers=None):
        """The response body of one request; S3Error when it is refused or
        cannot be made. A wrong region is corrected once, as the server says."""
        for attempt in (1, 2):
            try:
                return self._request(method, key, query, body, headers or {})
            except S3Error as error:
                if attempt == 1 and error.region and error.region != self.region:
                    self.region = error.region
                    continue
                raise
        raise AssertionError("unreachable")

    def _request(self, method, key, query, body, extra):
        path = f"/{self.where.bucket}" + (f"/{_quote(key, safe='/-_.~')}" if key else "")
        url = self.where.endpoint + path
        if query:
            url += "?" + "&".join(f"{_quote(k)}={_quote(v)}" for k, v in query)
        digest = hashlib.sha256(body).hexdigest()
        now = self.clock()
        headers = {
            "host": urllib.parse.urlsplit(self.where.endpoint).netloc,
            "x-amz-content-sha256": digest,
            "x-amz-date": now.strftime("%Y%m%dT%H%M%SZ"),
        }
        if body:
            headers["content-md5"] = base64.b64encode(hashlib.md5(body).digest()).decode()
            # Said, or urllib calls it a form, which a server may read as one.
            headers["content-type"] = "application/xml" if body.startswith(b"<") else "application/octet-stream"
        headers.update({k.lower(): v for k, v in extra.items()})
        # Signed: the host and the x-amz- headers (all SigV4 requires); the
        # others are sent as they are.
        signed = {n: v for n, v in headers.items() if n == "host" or n.startswith("x-amz-")}
        authorization = signature_v4(method, url, signed, digest, self.access_key, self.secret_key, self.region, now)
        request = urllib.request.Request(url, data=body if body else None, method=method)
        for name, value in headers.items():
            if name != "host":
                request.add_header(name, value)
        request.add_header("Authorization", authorization)
        try:
            with self.open_url(request, timeout=self.timeout) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            raise _error(exc.read(), exc.code) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise S3Error(f"{self.where.endpoint} cannot be reached ({reason})") from None

    # --- the bucket ------------------------------------------------------------------------------

    def exists(self):
        """Whether the bucket exists (HEAD: some servers answer a missing
        bucket's other requests as if it were there)."""
        try:
            self.request("HEAD")
        except S3Error as error:
            if error.status == 404:
                return False
            raise
        return True

    def versioning(self):
        """Enabled, Suspended, or "" (never turned on)."""
        root = ET.fromstring(self.request("GET", query=[("versioning", "")]) or b"<x/>")
        return root.findtext(f"{NS}Status") or root.findtext("Status") or ""

    def enable_versioning(self):
        body = (
            b'<VersioningConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            b"<Status>Enabled</Status></VersioningConfiguration>"
        )
        self.request("PUT", query=[("versioning", "")], body=body)

    def arrivals(self, prefix):
        """{name under PREFIX (of the repository): when its oldest version was
        written, in seconds since the epoch}: the time the object first
        arrived, whatever was written over it since. Deleted objects' versions
        count too; delete markers do not."""
        full = self._key(prefix).rstrip("/") + "/"
        found = {}
        key_marker = version_marker = None
        while True:
            # Asked without the last slash (and the names sorted out below): a
            # slash in the query string defeats some S3 stand-ins' signature
            # checks (moto's).
            query = [("versions", ""), ("prefix", full[:-1])]
            if key_marker is not None:
                query += [("key-marker", key_marker), ("version-id-marker", version_marker or "")]
            root = ET.fromstring(self.request("GET", query=sorted(query)))
            for version in root.iter(f"{NS}Version"):
                key = version.findtext(f"{NS}Key") or ""
                when = _epoch(version.findtext(f"{NS}LastModified") or "")
                name = key[len(full) :] if key.startswith(full) else ""
                if name and "/" not in name:
                    found[name] = min(when, found.get(name, when))
            if (root.findtext(f"{NS}IsTruncated") or "false") != "true":
                return found
            key_marker = root.findtext(f"{NS}NextKeyMarker")
            version_marker = root.findtext(f"{NS}NextVersionIdMarker")
            if not key_marker:
                raise S3Error("the listing of versions is truncated but names no next key")

    # --- objects ---------------------------------------------------------------------------------

    def put(self, key, data):
        self.request("PUT", self._key(key), body=data)

    def delete(self, key, version_id=None):
        query = [("versionId", version_id)] if version_id else ()
        self.request("DELETE", self._key(key), query=query)

    def versions(self, key):
        """The version ids of object KEY (delete markers included), newest first."""
        full = self._key(key)
        root = ET.fromstring(self.request("GET", query=sorted([("versions", ""), ("prefix", full)])))
        ids = []
        for element in root:
            if element.tag in (f"{NS}Version", f"{NS}DeleteMarker") and element.findtext(f"{NS}Key") == full:
                ids.append(element.findtext(f"{NS}VersionId"))
        return ids
