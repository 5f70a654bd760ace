"""A Sentry stand-in for the django_logging tests: accepts what sentry-sdk POSTs
to /api/<project>/envelope/ and stores each envelope, decompressed, as DIR/<n>.envelope
(newline-delimited JSON: envelope header, then item header and payload pairs).
Usage: logging_sentry_sink.py PORT DIR"""

import gzip
import itertools
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DIRECTORY = sys.argv[2]
COUNTER = itertools.count(int(time.time() * 1000))


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        name = os.path.join(DIRECTORY, str(next(COUNTER)))
        with open(name + ".tmp", "wb") as envelope:
            envelope.write(body)
        os.rename(name + ".tmp", name + ".envelope")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


os.makedirs(DIRECTORY, exist_ok=True)
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
