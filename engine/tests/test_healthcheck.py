"""Health-check pings against a local HTTP server and a fake opener: what is
requested, what is retried, and that the URL never reaches the warning."""

import http.client
import http.server
import io
import pathlib
import sys
import threading
import urllib.error

import pytest

ENGINE = pathlib.Path(__file__).resolve().parents[1]
if str(ENGINE) not in sys.path:
    sys.path.insert(0, str(ENGINE))

from djangoops import healthcheck  # noqa: E402

KEY = "0f3c9a4e-5b7d-4c1e-9a2b-secretkey000"


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


@pytest.fixture
def server(monkeypatch):
    """A server on 127.0.0.1 answering each path with the statuses listed in
    server.answers (the last one repeats), recording every request."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    requests = []
    answers = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append((self.command, self.path, self.headers.get("User-Agent")))
            queue = answers.get(self.path, [404])
            status = queue.pop(0) if len(queue) > 1 else queue[0]
            body = b"OK" if status == 200 else b"nope"
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    httpd.requests = requests
    httpd.answers = answers
    httpd.base = f"http://127.0.0.1:{httpd.server_address[1]}/ping/{KEY}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def no_sleep(record):
    return record.append


def test_start_and_exit_code_pings(server):
    server.answers[f"/ping/{KEY}/start"] = [200]
    server.answers[f"/ping/{KEY}/0"] = [200]
    assert healthcheck.ping(server.base, "start") is None
    # Trailing slashes are dropped, and the exit code may be an int.
    assert healthcheck.ping(server.base + "//", 0) is None
    assert server.requests == [
        ("GET", f"/ping/{KEY}/start", "djangoops-healthcheck"),
        ("GET", f"/ping/{KEY}/0", "djangoops-healthcheck"),
    ]


def test_server_errors_are_retried_then_succeed(server):
    server.answers[f"/ping/{KEY}/3"] = [503, 500, 200]
    sleeps = []
    assert healthcheck.ping(server.base, 3, sleep=no_sleep(sleeps)) is None
    assert len(server.requests) == 3
    assert sleeps == [1, 2]


def test_server_errors_give_up_after_three_retries(server):
    server.answers[f"/ping/{KEY}/7"] = [502]
    sleeps = []
    warning = healthcheck.ping(server.base, 7, sleep=no_sleep(sleeps))
    assert warning == "health-check ping (7) failed: HTTP status 502"
    assert len(server.requests) == 4
    assert sleeps == [1, 2, 4]


def test_wrong_key_is_not_retried(server):
    sleeps = []
    warning = healthcheck.ping(server.base, "start", sleep=no_sleep(sleeps))
    assert warning == "health-check ping (start) failed: HTTP status 404"
    assert len(server.requests) == 1
    assert sleeps == []
    assert KEY not in warning


def test_refused_connection_never_names_the_url(server):
    # A port nobody listens on: the server's, once it is closed.
    url = server.base
    server.shutdown()
    server.server_close()
    sleeps = []
    warning = healthcheck.ping(url, "start", retries=1, sleep=no_sleep(sleeps))
    assert warning.startswith("health-check ping (start) failed: ")
    assert "refused" in warning.lower()
    assert KEY not in warning and "127.0.0.1" not in warning
    assert sleeps == [1]


def test_timeout_against_a_silent_server(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY"):
        monkeypatch.delenv(name, raising=False)
    # A socket that accepts connections (the kernel's backlog) but never answers.
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/{KEY}"
        warning = healthcheck.ping(url, "start", timeout=0.2, retries=0)
    assert warning == "health-check ping (start) failed: timed out"


def test_no_url_means_no_ping():
    assert healthcheck.ping("", "start", opener=FakeOpener([])) is None
    assert healthcheck.ping(None, "start", opener=FakeOpener([])) is None


@pytest.mark.parametrize("url", [f"ftp://hc.example/{KEY}", f"file:///{KEY}", KEY, "http://[::1/x", "https:///x"])
def test_not_http_is_skipped_without_naming_it(url):
    opener = FakeOpener([])
    warning = healthcheck.ping(url, "start", opener=opener)
    assert warning == "health-check ping (start) skipped: the configured URL is not an http(s) URL"
    assert opener.requests == []


class Response(io.BytesIO):
    def __init__(self, status):
        super().__init__(b"OK")
        self.status = status


class FakeOpener:
    """Answers each open() with the next of OUTCOMES: a status, or an
    exception to raise."""

    def __init__(self, outcomes):
        self.outcomes = list(outcomes)
        self.requests = []

    def open(self, request, timeout):
        self.requests.append((request.get_method(), request.full_url, timeout))
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return Response(outcome)


def test_fake_opener_request_and_timeout():
    opener = FakeOpener([200])
    assert healthcheck.ping(f"https://hc.example/ping/{KEY}/", "start", opener=opener) is None
    assert opener.requests == [("GET", f"https://hc.example/ping/{KEY}/start", 10)]


@pytest.mark.parametrize(
    ("outcome", "why", "again"),
    [
        (urllib.error.URLError(TimeoutError("timed out")), "timed out", True),
        (urllib.error.URLError(OSError(-2, "Name or service not known")), "Name or service not known", True),
        (urllib.error.URLError(f"bad thing at https://hc.example/ping/{KEY}/1"), "bad thing at [redacted]", True),
        (urllib.error.URLError(""), "str", True),
        (TimeoutError("The read operation timed out"), "timed out", True),
        (ConnectionResetError(104, "Connection reset by peer"), "Connection reset by peer", True),
        (OSError(f"no errno, {KEY}"), "no errno, [redacted]", True),
        (http.client.RemoteDisconnected("closed"), "Remote end closed connection", True),
        (http.client.BadStatusLine("x"), "BadStatusLine", True),
        (urllib.error.HTTPError("u", 429, "slow down", {}, io.BytesIO()), "HTTP status 429", True),
        (urllib.error.HTTPError("u", 410, "gone", {}, io.BytesIO()), "HTTP status 410", False),
        (500, "HTTP status 500", True),
        (403, "HTTP status 403", False),
    ],
)
def test_failures_and_retries(outcome, why, again):
    if isinstance(outcome, http.client.RemoteDisconnected):
        # RemoteDisconnected is a ConnectionResetError without an errno.
        why = "closed"
    opener = FakeOpener([outcome] * 4)
    sleeps = []
    warning = healthcheck.ping(f"https://hc.example/ping/{KEY}", "1", opener=opener, sleep=no_sleep(sleeps))
    assert warning == f"health-check ping (1) failed: {why}"
    assert len(opener.requests) == (4 if again else 1)
    assert KEY not in warning


def test_unexpected_exception_never_raises():
    class Weird(Exception):
        pass

    opener = FakeOpener([Weird(f"https://hc.example/ping/{KEY}")] * 4)
    warning = healthcheck.ping(f"https://hc.example/ping/{KEY}", "start", opener=opener, sleep=lambda s: None)
    assert warning == "health-check ping (start) failed: Weird"


def test_retry_then_success_with_fake_opener():
    opener = FakeOpener([urllib.error.URLError(TimeoutError()), 200])
    sleeps = []
    assert healthcheck.ping(f"http://hc.example/{KEY}", "0", opener=opener, sleep=no_sleep(sleeps)) is None
    assert sleeps == [1]


def test_password_in_the_url_is_redacted():
    url = "https://monitor:pa55word@hc.example/ping/abc"
    opener = FakeOpener([urllib.error.URLError("proxy said no to monitor:pa55word")])
    warning = healthcheck.ping(url, "start", opener=opener, retries=0)
    assert warning == "health-check ping (start) failed: proxy said no to monitor:[redacted]"


def test_negative_retries_still_try_once():
    opener = FakeOpener([500])
    assert healthcheck.ping("https://hc.example/x", "0", opener=opener, retries=-1) == (
        "health-check ping (0) failed: HTTP status 500"
    )
    assert len(opener.requests) == 1
