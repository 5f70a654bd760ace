"""Helpers for the django_logging tests: requests over HTTP with curl inside the
container, the JSON and key=value log files parsed, the SMTP sink's mail and the
Sentry stand-in's events."""

import json
import os
import shlex
import time
from email import policy
from email.parser import BytesParser
from pathlib import Path

import yaml
from shop_project import HOME, LOGS

ROOT = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
VARS = yaml.safe_load((ROOT / "molecule/shared/playbooks/vars/logging.yml").read_text())
JSON_LOG = f"{LOGS}/django.json.log"
FLAT_LOG = f"{LOGS}/django.log"
SITE = VARS["test_logging_site"]
MAIL_DIR = VARS["test_logging_mail_dir"]
SENTRY_DIR = VARS["test_logging_sentry_dir"]
SETTINGS_FILE = f"{HOME}/src/shop/shop/settings/production.py"
MODULE_FILE = f"{HOME}/src/shop/shop/settings/djangoops_logging.py"
SECRETS_FILE = f"{HOME}/.djangoops/django_logging.json"
LOGROTATE_FILE = "/etc/logrotate.d/django-shop"


def request(host, path, site=SITE, headers=(), jar=None, form=None):
    """Returns (status, body). A form goes on stdin, never on a command line."""
    command = ["curl", "-sS", "-o", "/tmp/body", "-w", "%{http_code}", "--max-time", "30"]
    for header in headers:
        command += ["-H", header]
    if jar:
        command += ["-b", jar, "-c", jar]
    if form is not None:
        command += ["--data-binary", "@/tmp/form"]
        host.check_output("printf '%%s' %s > /tmp/form", form)
    result = host.run(shlex.join([*command, site + path]))
    assert result.rc == 0, result.stderr
    return int(result.stdout), host.file("/tmp/body").content_string


def log_text(host, path):
    """The current file and the one logrotate moved aside, oldest first."""
    text = ""
    for candidate in (path + ".1", path):
        if host.file(candidate).exists:
            text += host.file(candidate).content_string
    return text


def json_lines(host):
    # Every line must parse: a line that is not JSON fails the test here.
    return [json.loads(line) for line in log_text(host, JSON_LOG).splitlines() if line]


def wait_for(probe, timeout=30, what="the condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.5)


def events_for(host, marker, event=None):
    """JSON lines of the requests whose path holds the marker, and every line sharing their request_id."""
    lines = json_lines(host)
    ids = {line.get("request_id") for line in lines if marker in str(line.get("request", ""))}
    ids.discard(None)
    found = [line for line in lines if line.get("request_id") in ids]
    return [line for line in found if event is None or line["event"] == event]


def mails(host):
    """Every message the sink received: (envelope, parsed message)."""
    listing = host.run(f"ls -1 {MAIL_DIR}")
    received = []
    for name in sorted(listing.stdout.split()):
        if name.endswith(".eml"):
            stem = f"{MAIL_DIR}/{name[:-4]}"
            envelope = json.loads(host.file(stem + ".json").content_string)
            message = BytesParser(policy=policy.default).parsebytes(host.file(stem + ".eml").content)
            received.append((envelope, message))
    return received


def mails_mentioning(host, text):
    found = []
    for envelope, message in mails(host):
        body = "".join(part.get_content() for part in message.walk() if part.get_content_maintype() == "text")
        if text in str(message["Subject"]) or text in body:
            found.append((envelope, message))
    return found


def sentry_events(host):
    """The event items of every envelope the Sentry stand-in received."""
    events = []
    for name in sorted(host.run(f"ls -1 {SENTRY_DIR}").stdout.split()):
        if not name.endswith(".envelope"):
            continue
        lines = host.file(f"{SENTRY_DIR}/{name}").content_string.splitlines()[1:]
        for item_header, payload in zip(lines[::2], lines[1::2], strict=False):
            if json.loads(item_header).get("type") == "event":
                events.append(json.loads(payload))
    return events


def sentry_events_mentioning(host, text):
    return [event for event in sentry_events(host) if text in json.dumps(event)]


def manage(host, code, settings="shop.settings.production"):
    """Runs Python code in the project's Django as the project user (code on stdin)."""
    script = host.run(
        "cd /home/shop/src/shop && printf '%%s' %s | runuser -u shop -- env DJANGO_SETTINGS_MODULE=%s "
        "/home/shop/env/bin/python manage.py shell",
        code,
        settings,
    )
    assert script.rc == 0, script.stderr
    return script.stdout
