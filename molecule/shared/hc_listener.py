"""A Healthchecks stand-in for the tests: answers 200 to any GET or POST and
appends "<epoch> <method> <path>" to a log file. Usage: hc_listener.py PORT LOGFILE"""

import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def _record(self):
        with open(sys.argv[2], "a", encoding="utf-8") as log:
            log.write(f"{time.time():.3f} {self.command} {self.path}\n")
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"OK")

    do_GET = do_POST = do_HEAD = _record

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
