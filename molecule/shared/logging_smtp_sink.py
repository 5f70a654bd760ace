"""A small SMTP server for the django_logging tests (Python 3.12 dropped smtpd):
EHLO/HELO, AUTH PLAIN, MAIL, RCPT, DATA, RSET, NOOP, QUIT. Each message is stored
as DIR/<n>.eml with DIR/<n>.json beside it (envelope, the AUTH user and the
sha256 of the AUTH password, never the password itself).
Usage: logging_smtp_sink.py PORT DIR"""

import base64
import hashlib
import itertools
import json
import os
import socketserver
import sys
import time

DIRECTORY = sys.argv[2]
COUNTER = itertools.count(int(time.time() * 1000))


class Session(socketserver.StreamRequestHandler):
    def reply(self, line):
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self):
        envelope = {"mail_from": None, "rcpt_tos": [], "auth_user": None, "auth_password_sha256": None}
        self.reply("220 sink ESMTP")
        while line := self.rfile.readline():
            command, _, argument = line.decode("utf-8", "replace").rstrip("\r\n").partition(" ")
            command = command.upper()
            if command == "EHLO":
                self.reply("250-sink")
                self.reply("250-8BITMIME")
                self.reply("250 AUTH PLAIN")
            elif command == "HELO":
                self.reply("250 sink")
            elif command == "AUTH":
                mechanism, _, initial = argument.partition(" ")
                if mechanism.upper() != "PLAIN":
                    self.reply("504 only PLAIN")
                    continue
                if not initial:
                    self.reply("334 ")
                    initial = self.rfile.readline().decode().strip()
                _, user, password = base64.b64decode(initial).split(b"\0", 2)
                envelope["auth_user"] = user.decode()
                envelope["auth_password_sha256"] = hashlib.sha256(password).hexdigest()
                self.reply("235 ok")
            elif command == "MAIL":
                envelope["mail_from"] = argument.partition(":")[2].split()[0].strip("<>")
                envelope["rcpt_tos"] = []
                self.reply("250 ok")
            elif command == "RCPT":
                envelope["rcpt_tos"].append(argument.partition(":")[2].split()[0].strip("<>"))
                self.reply("250 ok")
            elif command == "DATA":
                self.reply("354 end with .")
                data = bytearray()
                while (chunk := self.rfile.readline()) not in (b".\r\n", b".\n", b""):
                    data += chunk[1:] if chunk.startswith(b"..") else chunk
                self.store(envelope, bytes(data))
                self.reply("250 stored")
            elif command in ("RSET", "NOOP"):
                self.reply("250 ok")
            elif command == "QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("502 not implemented")

    @staticmethod
    def store(envelope, data):
        name = os.path.join(DIRECTORY, str(next(COUNTER)))
        with open(name + ".json.tmp", "w", encoding="utf-8") as meta:
            json.dump(envelope, meta)
        with open(name + ".eml.tmp", "wb") as message:
            message.write(data)
        # The .eml appears last and whole: a reader that sees it sees everything.
        os.rename(name + ".json.tmp", name + ".json")
        os.rename(name + ".eml.tmp", name + ".eml")


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


os.makedirs(DIRECTORY, exist_ok=True)
Server(("127.0.0.1", int(sys.argv[1])), Session).serve_forever()
