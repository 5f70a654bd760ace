"""Healthchecks-style pings: GET <url>/start when a command starts and
GET <url>/<exit code> when it ends, as common.sh's ping_healthcheck did with
curl --fail --max-time 10 --retry 3.

The URL's path is the check's secret key (whoever has it can report a failed
backup as good), so it never appears in what ping() returns; a ping that fails
is a warning, never a reason to fail the command.
"""

import time
import urllib.error
import urllib.parse
import urllib.request

from .log import redact

TIMEOUT_SECONDS = 10
RETRIES = 3
# The statuses curl --retry takes as passing trouble; any other 4xx (a wrong
# key, a deleted check) will not get better by asking again.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
USER_AGENT = "djangoops-healthcheck"
# Healthchecks answers "OK"; more is not read.
MAX_BODY_BYTES = 1024


def ping(url, what, *, opener=None, timeout=TIMEOUT_SECONDS, retries=RETRIES, sleep=time.sleep):
    """Ping URL (its trailing slashes dropped) + "/" + WHAT ("start" or the
    exit code). Returns None when the ping went through or there is no URL,
    otherwise a warning without the URL in it. Network trouble, timeouts and
    the statuses of RETRY_STATUSES are tried again RETRIES times, after 1, 2,
    4... seconds as curl --retry does. OPENER (an urllib OpenerDirector, by
    default one that honours the proxy variables as curl did) and SLEEP are
    for tests. Never raises."""
    if not url:
        return None
    what = str(what)
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        return f"health-check ping ({what}) skipped: the configured URL is not an http(s) URL"
    target = url.rstrip("/") + "/" + urllib.parse.quote(what, safe="")
    # Whatever an error message quotes of the URL goes: the whole of it, any
    # password in it, and each path segment long enough to be a key.
    secrets = [url, target, parts.path, parts.query, parts.password]
    secrets += [segment for segment in parts.path.split("/") if len(segment) >= 6]
    if opener is None:
        opener = urllib.request.build_opener()
    delay = 1
    attempt = 0
    while True:
        reason, again = _attempt(opener, target, timeout)
        if reason is None:
            return None
        if not again or attempt >= retries:
            return f"health-check ping ({what}) failed: {redact(reason, secrets)}"
        sleep(delay)
        delay *= 2
        attempt += 1


def _attempt(opener, target, timeout):
    """One GET of TARGET: (None, False) when it worked, otherwise (why, whether
    trying again could help)."""
    request = urllib.request.Request(target, headers={"User-Agent": USER_AGENT}, method="GET")
    try:
        with opener.open(request, timeout=timeout) as response:
            status = response.status
            response.read(MAX_BODY_BYTES)
    except urllib.error.HTTPError as exc:
        exc.close()
        return f"HTTP status {exc.code}", exc.code in RETRY_STATUSES
    except urllib.error.URLError as exc:
        return _why(exc.reason), True
    except OSError as exc:
        # A timeout or a reset while reading the answer.
        return _why(exc), True
    except Exception as exc:
        # http.client's protocol errors, and whatever a proxy handler raises:
        # a ping must not end the command.
        return f"{type(exc).__name__}", True
    if status >= 400:
        # An opener without urllib's error processor hands these back.
        return f"HTTP status {status}", status in RETRY_STATUSES
    return None, False


def _why(reason):
    """A short reason from an error: its system message rather than its repr,
    which can quote the host and more."""
    if isinstance(reason, TimeoutError):
        return "timed out"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__
