"""list_db_backups.sh: the project's sets, newest first, with when each was
taken, its size, kind and checksum status (`*` marks latest) and, with off-site
repositories, which of them hold it; then the sets held off-site only.

Exit codes: 8 when a set is missing its checksum file or fails it, 14 when an
off-site repository could not be read (and nothing local is wrong)."""

import os
import time

from .. import manifest, sets
from ..errors import Exit, Failure
from . import common

USAGE = "Usage: list_db_backups.sh [--no-checksums] [--local]"
ROW = "{:<1} {:<52} {:<20} {:>8} {:<8} {:<9}{}"


def main(context, args):
    options, database, offsite = common.parse_and_load(context, args, USAGE, flags=("--no-checksums", "--local"))
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
    print(ROW.format("", "BACKUP", "TAKEN (UTC)", "SIZE", "KIND", "CHECKSUM", " OFF-SITE" if show_offsite else ""))
    bad = False
    for name in sets.list_sets(directory, project):
        path = os.path.join(directory, name)
        try:
            info = os.stat(path)
        except FileNotFoundError:
            continue  # pruned while listing
        stamp = sets.stamp_of(name, project)
        if stamp:
            when = f"{stamp[0:4]}-{stamp[4:6]}-{stamp[6:8]} {stamp[9:11]}:{stamp[11:13]}:{stamp[13:15]}"
        else:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(info.st_mtime))
        kind = sets.kind_of(name, project)
        located = ""
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
                located = where.pop(set_id, "-") if set_id else "-"
        mark = "*" if name == latest else " "
        size = common.iec(info.st_size) + "B"
        print(ROW.format(mark, name, when, size, kind, status, f" {located}" if located else ""))
    if show_offsite:
        # Sets held off-site only (pruned here, or taken on a server that is gone).
        for set_id in sorted(where, reverse=True):
            name = set_id.rsplit("@", 1)[0]
            print(ROW.format("", name, "", "", sets.kind_of(name, project), "off-site", f" {where[set_id]}"))
        if unreadable:
            context.log.warn(
                f"off-site repository {' '.join(unreadable)} could not be read: the OFF-SITE column leaves it out"
            )
            if not bad:
                raise Failure(Exit.OFFSITE_FAILED, "an off-site repository could not be read")
    if bad:
        raise Failure(Exit.BAD_BACKUP, "a backup is missing its checksum file or does not match it")
