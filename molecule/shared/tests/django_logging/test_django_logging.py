"""The django_logging role on a running site: gunicorn serves the shared Django
project with the role's settings module adopted; requests, errors, mails and a
log rotation are made over HTTP and judged by what lands in the logs and the
SMTP sink."""

import hashlib
import json
import re
import time
from email.header import decode_header, make_header
from urllib.parse import urlencode

from logging_helpers import (
    FLAT_LOG,
    JSON_LOG,
    LOGROTATE_FILE,
    MODULE_FILE,
    SECRETS_FILE,
    SETTINGS_FILE,
    VARS,
    events_for,
    json_lines,
    log_text,
    mails,
    mails_mentioning,
    manage,
    request,
    sentry_events_mentioning,
    wait_for,
)
from shop_project import LOGS


def result_of(host, code):
    out = manage(host, "import json\n" + code)
    return json.loads(out.split("RESULT:", 1)[1].strip())


# --- adoption and files --------------------------------------------------------------------


def test_settings_adopt_the_module_with_the_readme_lines(host):
    text = host.file(SETTINGS_FILE).content_string
    block = (
        "# BEGIN djangoops.maintenance.django_logging\n"
        "from shop.settings.djangoops_logging import configure as configure_logging  # noqa: E402\n"
        "configure_logging(globals())\n"
        "# END djangoops.maintenance.django_logging\n"
    )
    assert text.endswith(block)
    assert text.count("configure_logging(globals())") == 1


def test_the_running_site_uses_the_module(host):
    settings = result_of(
        host,
        "from django.conf import settings\n"
        "print('RESULT:' + json.dumps({'middleware': settings.MIDDLEWARE, 'apps': settings.INSTALLED_APPS,"
        " 'logging': sorted(settings.LOGGING['handlers'])}))",
    )
    assert settings["middleware"][-1] == "django_structlog.middlewares.RequestMiddleware"
    assert "django_structlog" in settings["apps"]
    assert settings["logging"] == ["console", "flat", "json", "mail_admins", "null"]


def test_mail_goes_through_the_settings_the_installed_django_expects(host):
    found = result_of(
        host,
        "import django\nfrom django.conf import settings\n"
        "mailers = getattr(settings, 'MAILERS', None)\n"
        "default = mailers and mailers['default']\n"
        "s = settings\n"
        "legacy = None if mailers is not None else [s.EMAIL_HOST, s.EMAIL_PORT, s.EMAIL_HOST_USER]\n"
        "print('RESULT:' + json.dumps({'version': django.VERSION[:2], 'legacy': legacy,"
        " 'mailer': default and [default['BACKEND'], default['OPTIONS']['host'], default['OPTIONS']['port'],"
        " default['OPTIONS']['username']]}))",
    )
    expected = ["127.0.0.1", VARS["test_logging_smtp_port"], VARS["test_logging_smtp_user"]]
    if found["version"] >= [6, 1]:
        assert found["mailer"] == ["django.core.mail.backends.smtp.EmailBackend", *expected]
        assert found["legacy"] is None
    else:
        assert found["legacy"] == expected
        assert found["mailer"] is None


def test_admins_have_the_form_the_installed_django_expects(host):
    found = result_of(
        host,
        "import django\nfrom django.conf import settings\n"
        "print('RESULT:' + json.dumps({'version': django.VERSION[:2], 'admins': settings.ADMINS}))",
    )
    if found["version"] >= [6, 0]:
        assert [str(make_header(decode_header(admin))) for admin in found["admins"]] == [
            "Ops Tëam <ops@example.com>",
            "oncall@example.com",
        ]
    else:
        assert found["version"] == [5, 2]
        assert found["admins"] == [["Ops Tëam", "ops@example.com"], ["oncall@example.com", "oncall@example.com"]]


def test_check_deploy_says_nothing_about_logging_or_mail(host):
    result = host.run(
        "cd /home/shop/src/shop && runuser -u shop -- /home/shop/env/bin/python -W always manage.py check --deploy"
    )
    output = result.stdout + result.stderr
    assert result.rc == 0, output
    assert "System check identified" in output  # it ran (the test project has deploy warnings of its own)
    words = ("LOGGING", "ADMINS", "EMAIL", "MAILERS", "mailer", "structlog", "djangoops_logging", "Traceback")
    for word in words:
        assert word not in output, output


def test_log_directory_and_files_belong_to_the_project_user(host):
    for path, mode in ((LOGS, 0o750), (JSON_LOG, 0o640), (FLAT_LOG, 0o640)):
        entry = host.file(path)
        assert (entry.user, entry.group, entry.mode) == ("shop", "shop", mode), path


def test_secrets_reach_only_the_project_user_and_the_smtp_server(host):
    secrets = host.file(SECRETS_FILE)
    assert (secrets.user, secrets.group, secrets.mode) == ("shop", "shop", 0o600)
    assert host.run(f"runuser -u nobody -- cat {SECRETS_FILE}").rc != 0
    password = VARS["test_logging_smtp_password"]
    assert json.loads(secrets.content_string)["EMAIL_HOST_PASSWORD"] == password
    assert password not in host.file(MODULE_FILE).content_string
    assert password not in host.file(SETTINGS_FILE).content_string
    assert host.file(MODULE_FILE).mode == 0o640
    journal = host.run("journalctl --no-pager -o cat").stdout
    assert password not in journal and "`id` \\ #x" not in journal


# --- request logs --------------------------------------------------------------------------


def test_request_lines_share_a_request_id_and_carry_the_status(host, marker):
    status, _body = request(host, f"/logging/hello/?marker={marker}")
    assert status == 200
    started = wait_for(lambda: events_for(host, marker, "request_started"), what="request_started")
    finished = wait_for(lambda: events_for(host, marker, "request_finished"), what="request_finished")
    assert len(started) == len(finished) == 1
    assert started[0]["request_id"] == finished[0]["request_id"]
    assert finished[0]["code"] == 200
    assert started[0]["ip"] == "127.0.0.1"
    assert "user_id" in started[0] and started[0]["user_id"] is None  # anonymous
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z$", finished[0]["timestamp"])
    assert finished[0]["level"] == "info"


def test_a_standard_logger_in_a_view_carries_the_request_context(host, marker):
    request(host, f"/logging/hello/?marker={marker}")
    lines = wait_for(
        lambda: [line for line in events_for(host, marker) if line["logger"] == "shop.logging_views"],
        what="the view's own line",
    )
    finished = events_for(host, marker, "request_finished")[0]
    assert lines[0]["event"] == f"hello viewed, marker {marker}"
    assert lines[0]["request_id"] == finished["request_id"]
    assert lines[0]["ip"] == "127.0.0.1"


def test_a_structlog_logger_in_a_view_carries_the_request_context(host, marker):
    request(host, f"/logging/structured/?marker={marker}")
    lines = wait_for(lambda: events_for(host, marker, "structured_view"), what="structured_view")
    finished = events_for(host, marker, "request_finished")[0]
    assert lines[0]["marker"] == marker
    assert lines[0]["request_id"] == finished["request_id"]
    assert lines[0]["logger"] == "shop.logging_views"


def test_a_missing_page_is_logged_with_its_status(host, marker):
    status, _body = request(host, f"/logging/nothing-{marker}/")
    assert status == 404
    finished = wait_for(lambda: events_for(host, marker, "request_finished"), what="request_finished")
    assert finished[0]["code"] == 404
    assert finished[0]["level"] == "warning"


def test_a_logged_in_user_is_named_by_user_id(host, marker):
    user_id = result_of(
        host,
        "from django.contrib.auth.models import User\n"
        f"print('RESULT:' + json.dumps(User.objects.get(username={VARS['test_logging_user']!r}).pk))",
    )
    jar = f"/tmp/jar-{marker}"
    form = urlencode({"username": VARS["test_logging_user"], "password": VARS["test_logging_user_password"]})
    status, _body = request(host, "/logging/login/", jar=jar, form=form)
    assert status == 200
    status, _body = request(host, f"/logging/hello/?marker={marker}", jar=jar)
    assert status == 200
    finished = wait_for(lambda: events_for(host, marker, "request_finished"), what="request_finished")
    started = events_for(host, marker, "request_started")
    assert [line["user_id"] for line in started + finished] == [user_id, user_id]
    assert isinstance(user_id, int)


def test_the_flat_file_has_the_same_events(host, marker):
    request(host, f"/logging/hello/?marker={marker}")
    finished = wait_for(lambda: events_for(host, marker, "request_finished"), what="request_finished")[0]
    request_id = finished["request_id"]
    flat = [line for line in log_text(host, FLAT_LOG).splitlines() if f"request_id={request_id}" in line]
    events = [re.search(r"\bevent=(\"[^\"]*\"|\S+)", line).group(1) for line in flat]
    assert events == ["request_started", f'"hello viewed, marker {marker}"', "request_finished"]
    assert all(line.startswith("timestamp=") for line in flat)
    assert " code=200 " in flat[-1] + " "
    assert " ip=127.0.0.1" in flat[-1]


def test_the_console_log_reaches_the_journal_without_colour_codes(host, marker):
    request(host, f"/logging/hello/?marker={marker}")
    journal = wait_for(
        lambda: [
            line
            for line in host.run("journalctl -u shop-gunicorn.service --no-pager -o cat").stdout.splitlines()
            if marker in line
        ],
        what="the request in the journal",
    )
    assert any("request_started" in line for line in journal)
    assert not any("\x1b[" in line for line in journal)


# --- error mails ---------------------------------------------------------------------------


def test_an_exception_sends_one_html_mail_to_the_admins(host, marker):
    status, _body = request(host, f"/logging/boom/?marker={marker}")
    assert status == 500
    # AdminEmailHandler sends before the response leaves: the mail is there now.
    received = mails_mentioning(host, f"boom {marker}")
    assert len(received) == 1, [str(message["Subject"]) for _envelope, message in mails(host)]
    envelope, message = received[0]
    assert sorted(envelope["rcpt_tos"]) == ["oncall@example.com", "ops@example.com"]
    assert envelope["mail_from"] == "shop@example.com"
    assert envelope["auth_user"] == VARS["test_logging_smtp_user"]
    assert envelope["auth_password_sha256"] == hashlib.sha256(VARS["test_logging_smtp_password"].encode()).hexdigest()
    assert str(message["Subject"]).startswith("[shop] ERROR")
    html = message.get_body(preferencelist=("html",))
    assert html is not None and html.get_content_type() == "text/html"
    page = html.get_content()
    assert "RuntimeError" in page and "Traceback" in page and f"local-value-{marker}" in page
    text = message.get_body(preferencelist=("plain",)).get_content()
    assert "Traceback" in text and f"boom {marker}" in text


def test_the_failure_is_logged_with_its_traceback(host, marker):
    request(host, f"/logging/boom/?marker={marker}")
    failed = wait_for(lambda: events_for(host, marker, "request_failed"), what="request_failed")
    assert failed[0]["code"] == 500
    frames = failed[0]["exception"]
    assert frames[0]["exc_type"] == "RuntimeError" and frames[0]["exc_value"] == f"boom {marker}"
    # Django's own line for the same request, from the `django.request` logger
    django_line = [line for line in events_for(host, marker) if line["logger"] == "django.request"]
    assert django_line and django_line[0]["request_id"] == failed[0]["request_id"]


def test_no_mail_while_debug_is_true(host, marker):
    unit = "shop-gunicorn-debug"
    host.run(f"systemctl stop {unit}")
    start = host.run(
        f"systemd-run --unit={unit} --uid=shop --gid=shop --working-directory=/home/shop/src/shop "
        "--setenv=DJANGO_SETTINGS_MODULE=shop.settings.debug_logging "
        "/home/shop/env/bin/gunicorn --workers 1 --bind 127.0.0.1:8001 'django.core.wsgi:get_wsgi_application()'"
    )
    assert start.rc == 0, start.stderr
    try:
        debug_site = VARS["test_logging_debug_site"]
        wait_for(lambda: host.run(f"curl -sf {debug_site}/logging/hello/").rc == 0, what="the DEBUG site")
        status, body = request(host, f"/logging/boom/?marker={marker}", site=debug_site)
        assert status == 500 and "Traceback" in body  # DEBUG's technical page: the setting is on
        wait_for(lambda: events_for(host, marker, "request_failed"), what="the failure in the log")
        assert mails_mentioning(host, marker) == []
    finally:
        host.run(f"systemctl stop {unit}")


def test_a_bad_host_header_sends_no_mail(host, marker):
    bad_host = f"evil-{marker}.example"
    status, _body = request(host, f"/logging/hello/?marker={marker}", headers=[f"Host: {bad_host}"])
    assert status == 400
    finished = wait_for(lambda: events_for(host, marker, "request_finished"), what="request_finished")
    assert finished[0]["code"] == 400
    assert mails_mentioning(host, bad_host) == []
    assert not [line for line in json_lines(host) if line["logger"] == "django.security.DisallowedHost"]


# --- Sentry (a stand-in that stores what sentry-sdk sends) -----------------------------------


def test_an_exception_reaches_sentry_once_with_the_log_as_breadcrumbs(host, marker):
    status, _body = request(host, f"/logging/boom/?marker={marker}")
    assert status == 500
    wait_for(lambda: sentry_events_mentioning(host, f"boom {marker}"), what="the Sentry event")
    time.sleep(3)  # time for a duplicate (django.request, request_failed) to arrive, if one were sent
    events = sentry_events_mentioning(host, marker)
    assert len(events) == 1, events
    event = events[0]
    assert [(value["type"], value["value"]) for value in event["exception"]["values"]] == [
        ("RuntimeError", f"boom {marker}")
    ]
    assert event["environment"] == "molecule"
    crumbs = [crumb.get("message") for crumb in event.get("breadcrumbs", {}).get("values", [])]
    assert f"about to fail, marker {marker}" in crumbs


def test_structlog_error_lines_make_no_sentry_event(host, marker):
    status, _body = request(host, f"/logging/structured-error/?marker={marker}")
    assert status == 200
    line = wait_for(lambda: events_for(host, marker, "structured_error"), what="the error line")[0]
    assert line["level"] == "error"
    time.sleep(3)
    assert sentry_events_mentioning(host, marker) == []


def test_the_sentry_dsn_is_kept_with_the_secrets(host):
    dsn = f"http://public@127.0.0.1:{VARS['test_logging_sentry_port']}/1"
    assert json.loads(host.file(SECRETS_FILE).content_string)["SENTRY_DSN"] == dsn
    assert dsn not in host.file(MODULE_FILE).content_string


# --- configuration details, in the running project's Django ----------------------------------


def test_django_log_level_comes_from_the_environment(host):
    code = "import logging\nprint('RESULT:' + json.dumps(logging.getLogger('django').level))"
    assert result_of(host, code) == 20  # django_logging_django_level: INFO
    out = host.run(
        "cd /home/shop/src/shop && printf '%%s' %s | runuser -u shop -- env DJANGO_LOG_LEVEL=ERROR "
        "/home/shop/env/bin/python manage.py shell",
        "import json\n" + code,
    )
    assert out.rc == 0, out.stderr
    assert json.loads(out.stdout.split("RESULT:", 1)[1]) == 40


def test_the_mail_handler_drops_unreadable_post_errors(host):
    verdicts = result_of(
        host,
        "import logging, sys\n"
        "from django.http import UnreadablePostError\n"
        "from django.utils.log import AdminEmailHandler\n"
        "[handler] = [h for h in logging.getLogger('django').handlers if isinstance(h, AdminEmailHandler)]\n"
        "def record(error):\n"
        "    try:\n"
        "        raise error\n"
        "    except Exception:\n"
        "        return logging.LogRecord('django.request', logging.ERROR, __file__, 1, 'x', (), sys.exc_info())\n"
        "print('RESULT:' + json.dumps([bool(handler.filter(record(UnreadablePostError('gone')))),"
        " bool(handler.filter(record(RuntimeError('real'))))]))",
    )
    assert verdicts == [False, True]


def test_the_file_handler_leaves_creating_the_new_file_to_logrotate(host):
    # logrotate's steps by hand, with the rendered module's handler: a line logged
    # between the rename and the create goes to the renamed file; the handler does
    # not create the file itself (logrotate would move such a file aside); after the
    # create, lines go to the new file.
    steps = result_of(
        host,
        "import logging, os, tempfile\n"
        "from shop.settings.djangoops_logging import RotationSafeFileHandler\n"
        "path = os.path.join(tempfile.mkdtemp(), 'x.log')\n"
        "handler = RotationSafeFileHandler(path, encoding='utf-8')\n"
        "def log(text):\n"
        "    handler.emit(logging.LogRecord('t', logging.INFO, __file__, 1, text, (), None))\n"
        "log('before')\n"
        "os.rename(path, path + '.1')\n"
        "log('between')\n"
        "exists_between = os.path.exists(path)\n"
        "open(path, 'x').close()\n"
        "log('after')\n"
        "read = lambda p: open(p).read().split()\n"
        "print('RESULT:' + json.dumps([read(path + '.1'), exists_between, read(path)]))",
    )
    assert steps == [["before", "between"], False, ["after"]]


# --- rotation --------------------------------------------------------------------------------


def test_logrotate_while_gunicorn_runs_loses_no_line(host, marker):
    count = 200
    url = f"{VARS['test_logging_site']}/logging/hello/?marker=rot-{marker}-"
    # Requests one after the other in the background; the rotation starts once
    # the 50th is in the log, while the others are being made.
    script = (
        f"for i in $(seq 1 {count}); do curl -s -o /dev/null '{url}'$i; done & "
        f"for n in $(seq 1 1500); do grep -q 'marker=rot-{marker}-50\"' {JSON_LOG} && break; sleep 0.02; done; "
        f"logrotate -f {LOGROTATE_FILE}; rc=$?; wait; exit $rc"
    )
    result = host.run(script)
    assert result.rc == 0, result.stderr

    def finished_in(path):
        found = {}
        for raw in host.file(path).content_string.splitlines():
            line = json.loads(raw)
            match = re.search(rf"marker=rot-{marker}-(\d+)$", str(line.get("request", "")))
            if line["event"] == "request_finished" and match:
                found[int(match.group(1))] = found.get(int(match.group(1)), 0) + 1
        return found

    rotated, current = finished_in(JSON_LOG + ".1"), finished_in(JSON_LOG)
    assert rotated and current, "the rotation did not happen while requests were made"
    assert sorted([*rotated, *current]) == list(range(1, count + 1))  # every request once, none twice
    assert max(rotated) < min(current)  # later lines in the new file
    for path in (JSON_LOG, FLAT_LOG):
        entry = host.file(path)
        assert (entry.user, entry.group, entry.mode) == ("shop", "shop", 0o640), path
    assert marker in host.file(FLAT_LOG).content_string
    assert host.run(f"ls {LOGS} | grep -c backup").stdout.strip() == "0"  # nothing moved aside
