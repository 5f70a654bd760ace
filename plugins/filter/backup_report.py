"""Filters of playbooks/report.yml: backup_report judges what each server's
`list_db_backups.sh --json` says (or that the server could not be reached) with
the alert rules' thresholds, and backup_report_table lays the result out as
one table. Their documentation is in backup_report.yml and
backup_report_table.yml beside this file.

A backup is stale when the newest good set (its checksum file present and
matching; safety sets do not count) is older than its schedule's longest gap
and an hour (djangoops_job_expected_interval_seconds, which the schedule role
writes), or 26 hours where no schedule is recorded; a test restore when its
last success is older than its own gap and an hour, or 8 days and an hour. The
figures recorded by the commands' metrics (project_metrics_dir) are read when
they are there; without them a report says what the sets alone show.
"""

import json

from ansible.errors import AnsibleFilterError

HOUR = 3600
DAY = 86400
BACKUP_FALLBACK = 26 * HOUR
VERIFY_FALLBACK = 8 * DAY + HOUR
GRACE = HOUR
LISTING_EXITS = (0, 8, 14)  # a listing that says what it found (8: a bad set, 14: a repository unreadable)
STATES = ("unreachable", "error", "stale", "failing", "warning", "ok")  # worst first


def duration(seconds):
    """SECONDS as the report prints an age: 40s, 25m, 3h 5m, 2d 4h."""
    if seconds is None:
        return "-"
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < HOUR:
        return f"{seconds // 60}m"
    if seconds < DAY:
        hours, rest = divmod(seconds, HOUR)
        return f"{hours}h {rest // 60}m" if rest // 60 else f"{hours}h"
    days, rest = divmod(seconds, DAY)
    return f"{days}d {rest // HOUR}h" if rest // HOUR else f"{days}d"


def size(value):
    """Bytes, 1024-based, one decimal: 168.0MiB."""
    if value is None:
        return "-"
    value = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)}B" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _limit(override, recorded, fallback, what, host):
    if override not in (None, ""):
        try:
            value = int(override)
        except (TypeError, ValueError):
            raise AnsibleFilterError(f"{host}: {what} must be a number of seconds, got {override!r}") from None
        if value <= 0:
            raise AnsibleFilterError(f"{host}: {what} must be a positive number of seconds, got {value}")
        return value
    return recorded + GRACE if recorded else fallback


def _document(stdout):
    """The listing's JSON document, or None when STDOUT is not one."""
    try:
        document = json.loads(stdout or "")
    except (TypeError, ValueError):
        return None
    if not isinstance(document, dict) or not _number(document.get("now")):
        return None
    return document


def _number(value):
    """VALUE when it is a number (not a boolean), else None."""
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _sets(document):
    """The document's sets that carry what the report reads; ValueError for one that does not."""
    out = []
    for entry in document.get("sets") or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ValueError(f"a set that is not described: {entry!r}")
        if _number(entry.get("taken")) is None or _number(entry.get("size_bytes")) is None:
            raise ValueError(f"set {entry['name']} has no time or size")
        out.append(entry)
    return out


def _mapping(value):
    return value if isinstance(value, dict) else {}


def _judge(host, entry):
    """One row of the report for HOST."""
    row = {"host": host, "problems": [], "warnings": []}
    if entry is None or entry == {}:  # no entry: report.yml gives {} for a host it stopped on
        row.update(state="error", problems=["the play stopped on this host before its listing (see above)"])
        return row
    if not isinstance(entry, dict):
        raise AnsibleFilterError(f"{host}: expected a mapping, got {type(entry).__name__}")
    if entry.get("unreachable"):
        message = " ".join(str(entry.get("msg") or "no answer").split())
        row.update(state="unreachable", problems=[f"unreachable: {message}"])
        return row
    rc, document = entry.get("rc"), _document(entry.get("stdout"))
    try:
        rc = int(rc)
    except (TypeError, ValueError):
        rc = None
    if rc not in LISTING_EXITS or document is None:
        detail = str(entry.get("error") or "").strip().splitlines()
        row.update(
            state="error",
            problems=[f"list_db_backups.sh --json failed (exit {rc})" + (f": {detail[-1]}" if detail else "")],
        )
        return row
    try:
        return _judge_listing(row, document, _mapping(entry.get("limits")), host)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        # A document that is not what list_db_backups.sh writes: this server only.
        row.update(state="error", problems=[f"the listing could not be read: {exc}"], warnings=[])
        return row


def _judge_listing(row, document, limits, host):
    now = _number(document["now"])
    recorded = _mapping(document.get("recorded"))
    jobs, expected = _mapping(recorded.get("jobs")), _mapping(recorded.get("expected"))
    pushes = _mapping(recorded.get("offsite"))
    row.update(project=document.get("project"), engine=document.get("engine"))
    problems, warnings = row["problems"], row["warnings"]
    stale = False

    def limit_of(script, override, fallback, what):
        return _limit(override, _number(expected.get(script)), fallback, what, host)

    def last_success(job):
        return _number(_mapping(job).get("last_success_timestamp_seconds")) or None

    # The newest good set: its checksum file there and matching; safety sets do not count.
    sets = _sets(document)
    good = [s for s in sets if s.get("checksum") in ("ok", "unchecked") and s.get("kind") != "safety"]
    newest = max(good, key=lambda s: s["taken"], default=None)
    backup_limit = limit_of("backup_db", limits.get("backup_max_age"), BACKUP_FALLBACK, "report_backup_max_age")
    row["newest"] = newest and {k: newest[k] for k in ("name", "taken", "size_bytes")}
    row["backup_age_seconds"] = None if newest is None else now - newest["taken"]
    row["backup_max_age_seconds"] = backup_limit
    if newest is None:
        problems.append("no good backup")
        stale = True
    elif row["backup_age_seconds"] > backup_limit:
        problems.append(
            f"newest good backup {duration(row['backup_age_seconds'])} old (allowed {duration(backup_limit)})"
        )
        stale = True
    bad = [s["name"] for s in sets if s.get("checksum") in ("missing", "MISMATCH")]
    if bad:
        problems.append(f"checksum missing or not matching: {', '.join(bad)}")

    # The jobs, as DjangoopsJobFailed and DjangoopsJobStale see them: a backup's failure
    # always, a scheduled job's failure, and a scheduled job (not the backup, judged by its
    # sets above) whose last success is older than its schedule allows.
    for script in sorted(jobs):
        job = _mapping(jobs[script])
        code = _number(job.get("exit_code"))
        scheduled = _number(expected.get(script)) is not None
        if code and (scheduled or script == "backup_db"):
            problems.append(f"last {script}.sh exited {code:g}")
        if scheduled and script not in ("backup_db", "verify_db"):
            allowed = _number(expected[script]) + GRACE
            succeeded = last_success(job)
            if succeeded is not None and now - succeeded > allowed:
                problems.append(f"{script}.sh has not succeeded for {duration(now - succeeded)} "
                                f"(allowed {duration(allowed)})")  # fmt: skip

    verify = _mapping(jobs.get("verify_db"))
    verify_limit = limit_of("verify_db", limits.get("verify_max_age"), VERIFY_FALLBACK, "report_verify_max_age")
    verified = last_success(verify)
    row["test_restore_age_seconds"] = None if verified is None else now - verified
    row["test_restore_max_age_seconds"] = verify_limit
    if verify and "verify_db" not in expected and _number(verify.get("exit_code")):
        problems.append(f"last verify_db.sh exited {verify['exit_code']:g}")
    if verify and (verified is None or now - verified > verify_limit):
        problems.append(
            "no good test restore"
            + ("" if verified is None else f" for {duration(now - verified)} (allowed {duration(verify_limit)})")
        )
    elif not verify:
        warnings.append("no test restore recorded" + ("" if jobs else " (no metrics)"))

    # Off-site: each repository holds the newest good set, or has had a push that worked
    # recently enough (DjangoopsOffsiteBehind's threshold: what a backup may wait).
    row["offsite"] = {}
    unreadable = document.get("offsite_unreadable") or []
    for repo in document.get("offsite_repositories") or []:
        pushed = _mapping(pushes.get(repo))
        last = last_success(pushed)
        state = {
            "holds_good_sets": sum(1 for s in good if repo in (s.get("offsite") or [])),
            "newest_good_held": newest is not None and repo in (newest.get("offsite") or []),
            "last_success_age_seconds": None if last is None else now - last,
            "unreadable": repo in unreadable,
        }
        row["offsite"][repo] = state
        if state["unreadable"]:
            problems.append(f"off-site {repo} could not be read")
        elif newest is not None and not state["newest_good_held"]:
            if last is None or now - last > backup_limit:
                problems.append(f"off-site {repo} lacks the newest good backup")
            else:
                warnings.append(f"off-site {repo} lacks the newest good backup yet")
        if pushed.get("success") == 0 and pushed.get("last_attempt_timestamp_seconds"):
            warnings.append(f"last push to {repo} failed")

    # Room for the next backup, as DjangoopsBackupDiskFull and DjangoopsBackupDiskFilling see it.
    disk = _mapping(document.get("disk"))
    free = _number(disk.get("free_bytes"))
    row["disk"] = {"free_bytes": free, "size_bytes": _number(disk.get("size_bytes"))}
    if newest is not None and free is not None:
        if free < 1.5 * newest["size_bytes"]:
            problems.append(f"no room for the next backup ({size(free)} free)")
        elif free < 3 * newest["size_bytes"]:
            warnings.append(f"room for two more backups at most ({size(free)} free)")

    row["state"] = "stale" if stale else "failing" if problems else "warning" if warnings else "ok"
    return row


def backup_report(hosts):
    """The report of HOSTS ({inventory name: entry}): rows in inventory order,
    the hosts by state, and `ok`, false when any host is stale, failing,
    unreachable or could not be read."""
    if not isinstance(hosts, dict):
        raise AnsibleFilterError(f"backup_report expects a mapping of hosts, got {type(hosts).__name__}")
    rows = [_judge(host, entry) for host, entry in hosts.items()]
    by_state = {state: [r["host"] for r in rows if r["state"] == state] for state in STATES}
    return {
        "hosts": rows,
        **by_state,
        "ok": bool(rows) and all(r["state"] in ("ok", "warning") for r in rows),
    }


COLUMNS = ("HOST", "PROJECT", "NEWEST GOOD BACKUP", "AGE", "SIZE", "TEST RESTORE", "OFF-SITE", "DISK FREE", "STATE")


def _offsite_word(state):
    return "unreadable" if state["unreadable"] else "ok" if state["newest_good_held"] else "behind"


def backup_report_table(report):
    """The report as lines of text: a header, one line per host, then what is
    wrong on each host that has something wrong."""
    if not isinstance(report, dict) or "hosts" not in report:
        raise AnsibleFilterError("backup_report_table expects what backup_report returns")
    table = [COLUMNS]
    for row in report["hosts"]:
        newest = row.get("newest") or {}
        offsite = row.get("offsite") or {}
        disk = row.get("disk") or {}
        table.append(
            (
                row["host"],
                row.get("project") or "-",
                newest.get("name") or "-",
                duration(row.get("backup_age_seconds")),
                size(newest.get("size_bytes")),
                duration(row.get("test_restore_age_seconds")),
                ", ".join(f"{repo} {_offsite_word(o)}" for repo, o in offsite.items()) or "-",
                size(disk.get("free_bytes")),
                row["state"].upper() if row["state"] != "ok" else "ok",
            )
        )
    widths = [max(len(str(line[i])) for line in table) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in table
    ]
    for row in report["hosts"]:
        for problem in row["problems"]:
            lines.append(f"{row['host']}: {problem}")
        for warning in row.get("warnings") or []:
            lines.append(f"{row['host']}: (warning) {warning}")
    return lines


class FilterModule:
    def filters(self):
        return {"backup_report": backup_report, "backup_report_table": backup_report_table}
