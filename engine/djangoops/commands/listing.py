"""list_db_backups.sh: the project's sets, newest first, with when each was
taken, its size, kind and checksum status (`*` marks latest) and, with off-site
repositories, which of them hold it; then the sets held off-site only.

With --json, the same as one JSON document for a report (playbooks/report.yml):
the sets, the room left in db_backups/'s file system, and what the commands'
metrics files last recorded (each job's last run, success and exit code, how
long the schedule lets it go without a success, each repository's last push).

Exit codes: 8 when a set is missing its checksum file or fails it, 14 when an
off-site repository could not be read (and nothing local is wrong)."""

import json
import os
import time

from .. import arrivals, manifest, metrics, sets
from ..errors import Exit, Failure
from . import common

USAGE = "Usage: list_db_backups.sh [--no-checksums] [--local] [--json]"
ROW = "{:<1} {:<52} {:<20} {:>8} {:<8} {:<9}{}"


def main(context, args):
    options, database, offsite = common.parse_and_load(
        context, args, USAGE, flags=("--no-checksums", "--local", "--json")
    )
    project = context.project.name
    directory = context.project.backups_dir
    show_offsite = bool(offsite.repositories) and not options.local
    where, unreadable = {}, []
    if show_offsite:
        from .offsite_commands import offsite_for

        context.open()
        where, unreadable = offsite_for(context, database, offsite).where()
        where = dict(where)
    latest = sets.latest_name(directory)
    local, bad = [], False
    for name in sets.list_sets(directory, project):
        path = os.path.join(directory, name)
        try:
            info = os.stat(path)
        except FileNotFoundError:
            continue  # pruned while listing
        taken = arrivals.stamp_epoch(name, project) or int(info.st_mtime)
        located = None
        if not os.path.isfile(path + ".sha256"):
            status = "missing"
            bad = True
        else:
            if options.no_checksums:
                status = "unchecked"
            elif manifest.check_sha256(path + ".sha256") is None:
                status = "ok"
            else:
                status = "MISMATCH"
                bad = True
            if show_offsite:
                try:
                    set_id = f"{name}@{manifest.sidecar_sha256(path + '.sha256')}"
                except (OSError, ValueError):
                    set_id = None  # an unreadable checksum file: MISMATCH above says so
                located = where.pop(set_id, "") if set_id else ""
        local.append(
            {
                "name": name,
                "latest": name == latest,
                "taken": taken,
                "size_bytes": info.st_size,
                "kind": sets.kind_of(name, project),
                "checksum": status,
                "offsite": None if located is None else [repo for repo in located.split(",") if repo],
            }
        )
    # Sets held off-site only (pruned here, or taken on a server that is gone).
    remote = [
        {"name": set_id.rsplit("@", 1)[0], "kind": sets.kind_of(set_id.rsplit("@", 1)[0], project),
         "offsite": where[set_id].split(",")}
        for set_id in sorted(where, reverse=True)
    ]  # fmt: skip
    if options.json:
        try:
            free, size = sets.disk_bytes(directory)
        except OSError:
            free = size = None  # no db_backups/ yet: no sets either, which says enough
        document = {
            "project": project,
            "engine": database.engine,
            "now": int(time.time()),
            "sets": local,
            "offsite_only": remote,
            "offsite_repositories": [repo.name for repo in offsite.repositories] if show_offsite else [],
            "offsite_unreadable": list(unreadable),
            "disk": {"free_bytes": free, "size_bytes": size},
            "recorded": metrics.recorded(context.project.metrics_dir, project),
        }
        print(json.dumps(document, indent=1, sort_keys=True))
    else:
        _print_table(local, remote, show_offsite)
    if unreadable:
        context.log.warn(
            f"off-site repository {' '.join(unreadable)} could not be read: the OFF-SITE column leaves it out"
        )
        if not bad:
            raise Failure(Exit.OFFSITE_FAILED, "an off-site repository could not be read")
    if bad:
        raise Failure(Exit.BAD_BACKUP, "a backup is missing its checksum file or does not match it")


def _print_table(local, remote, show_offsite):
    print(ROW.format("", "BACKUP", "TAKEN (UTC)", "SIZE", "KIND", "CHECKSUM", " OFF-SITE" if show_offsite else ""))
    for row in local:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(row["taken"]))
        located = "" if row["offsite"] is None else f" {','.join(row['offsite']) or '-'}"
        mark = "*" if row["latest"] else " "
        size = common.iec(row["size_bytes"]) + "B"
        print(ROW.format(mark, row["name"], when, size, row["kind"], row["checksum"], located))
    for row in remote:
        print(ROW.format("", row["name"], "", "", row["kind"], "off-site", f" {','.join(row['offsite'])}"))
