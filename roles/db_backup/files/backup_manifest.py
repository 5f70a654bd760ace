"""Backup manifests for the djangoops.maintenance backup scripts.

  count ENGINE            read a dump as SQL text on stdin; print a JSON object with
                          the row count of every table and whether the dump is complete
  snapshot-counts TSV TOC the counts (as `count` prints them) of a PostgreSQL archive from
                          a TSV of "oid<TAB>table<TAB>rows" counted in the dump's own
                          snapshot and the archive's `pg_restore --list`: the tables it
                          creates or fills, with rows only where it holds their data
  write COUNTS OUT        write the manifest: the counts plus the MANIFEST_* environment
  get MANIFEST KEY        print one top-level value of a manifest
  compare MANIFEST ACTUAL compare the counts with a TSV of "table<TAB>rows" from a test
                          restore; print each difference, exit 1 if there is any
  fields MANIFEST         print every top-level value of a manifest, as KEY NUL VALUE NUL
                          pairs (what a restore needs, in one call)
  sha256 FILE             print FILE's sha256 (OpenSSL's, through hashlib: several times
                          faster than coreutils' sha256sum where the CPU has SHA extensions)
  check-sha256 SUMS       check the files SUMS names (sha256sum's "HEX  NAME" lines, the
                          files beside SUMS) as `sha256sum --check --strict` does; exit 1 on
                          any mismatch, missing file or malformed line
  snapshots PROJECT       read `restic snapshots --json` on stdin; print the backup sets
                          of PROJECT it holds, oldest first, one per line:
                          SET<TAB>SHA256<TAB>SNAPSHOT_ID<TAB>TIME<TAB>PATH...
  kind DIR PROJECT STAMP  the kind of a new backup taken at STAMP (YYYYmmddTHHMMSSZ, UTC)
                          among PROJECT's sets in DIR: monthly, weekly or daily
  name DIR PROJECT EXTENSION ROTATION STAMP [safety]
                          the name and kind of a new set: NAME<TAB>KIND (ROTATION gfs or
                          weekday; a safety backup, taken by a restore, says so)
  prune DIR PROJECT KINDS KEEP [PROTECTED...]
                          the sets of PROJECT in DIR that retention removes, one per line:
                          NAME<TAB>KIND<TAB>KEPT. KINDS: "daily,weekly,monthly" or "safety";
                          KEEP: "daily=7,weekly=4,monthly=12,safety=2"

Counting reads the dump as it is written (the backup script tees the stream here),
so the manifest describes exactly what the file holds; for a PostgreSQL archive the
rows are counted inside the snapshot pg_dump reads (snapshot-counts), which is the
same data without reading the archive back.

The decisions (a set's kind, what retention removes) are made here rather than in
the shell, so that tests/unit/roles can try them on any calendar without a server:
- The first backup of a calendar month (UTC) is monthly; otherwise the first of an
  ISO 8601 week (which may start in the previous month or year) is weekly; any other
  is daily. Safety backups (taken by a restore) and weekday-rotation files count for
  neither.
- Retention keeps the KEEP newest sets of each kind and removes the older ones, but
  never the set `latest` points at, nor a PROTECTED one (the set a restore is
  restoring from). Only whole names of PROJECT's sets count: another project's files
  in the same directory are never seen.
"""

import datetime
import hashlib
import json
import os
import re
import sys
import time

KINDS = ("daily", "weekly", "monthly", "safety")

# PostgreSQL: pg_dump / pg_restore output. Names are schema-qualified and quoted
# the way format('%I.%I') quotes them.
PG_IDENT = rb'(?:"(?:[^"]|"")+"|[^\s."(]+)'
PG_TABLE = re.compile(rb"^CREATE (?:UNLOGGED )?TABLE (" + PG_IDENT + rb"\." + PG_IDENT + rb") \(")
PG_COPY = re.compile(rb"^COPY (" + PG_IDENT + rb"\." + PG_IDENT + rb") .*FROM stdin;$")
PG_DONE = b"-- PostgreSQL database dump complete"

# MySQL/MariaDB: mysqldump output. A quoted string never spans lines (newlines are
# escaped), so each line can be stripped of its strings on its own; what is left
# of an INSERT holds one "(" per row.
MY_TABLE = re.compile(rb"^CREATE TABLE `((?:[^`]|``)+)` \(")
MY_INSERT = re.compile(rb"^INSERT INTO `((?:[^`]|``)+)` VALUES ?")
MY_DONE = b"-- Dump completed"


def my_rows(line):
    """The rows a piece of an extended INSERT holds: its "(" outside quoted strings.
    Escaped backslashes go first (so that the quote after one still closes its
    string), then escaped quotes; the quotes left alternate string and code, and
    a doubled quote (NO_BACKSLASH_ESCAPES) opens and closes at once. Byte
    operations only: three times faster than a regular expression over 500 MB."""
    parts = line.replace(b"\\\\", b"").replace(b"\\'", b"").split(b"'")
    return b"".join(parts[::2]).count(b"(")


def count_postgresql(stream):
    tables, table, complete = {}, None, False
    for line in stream:
        if table is not None:
            if line.startswith(b"\\.") and line.rstrip(b"\r\n") == b"\\.":
                table = None
            else:
                tables[table] += 1
            continue
        if line.startswith(b"CREATE "):
            m = PG_TABLE.match(line)
            if m:
                tables.setdefault(m.group(1).decode(), 0)
        elif line.startswith(b"COPY "):
            m = PG_COPY.match(line.rstrip(b"\r\n"))
            if m:
                table = m.group(1).decode()
                tables.setdefault(table, 0)
        elif line.startswith(PG_DONE):
            complete = True
    return tables, complete and table is None


def count_mysql(stream):
    tables, table, complete = {}, None, False
    for line in stream:
        if table is None:
            if line.startswith(b"INSERT INTO "):
                m = MY_INSERT.match(line)
                if not m:
                    continue
                table = m.group(1).replace(b"``", b"`").decode()
                tables.setdefault(table, 0)
                line = line[m.end() :]
            else:
                if line.startswith(b"CREATE TABLE "):
                    m = MY_TABLE.match(line)
                    if m:
                        tables.setdefault(m.group(1).replace(b"``", b"`").decode(), 0)
                elif line.startswith(MY_DONE):
                    complete = True
                continue
        tables[table] += my_rows(line)
        if line.rstrip().endswith(b";"):
            table = None
    return tables, complete and table is None


# `pg_restore --list` lines: "ID; TABLEOID OID DESC ...". A table is "1259 OID
# TABLE"; its rows are "0 OID TABLE DATA", OID being the table's.
TOC_ENTRY = re.compile(r"^\d+; (\d+) (\d+) (TABLE DATA|TABLE) ")


def cmd_snapshot_counts(tsv_path, toc_path):
    created, filled = set(), set()
    with open(toc_path, encoding="utf-8", errors="replace") as f:
        for line in f:
            found = TOC_ENTRY.match(line)
            if found:
                (filled if found.group(3) == "TABLE DATA" else created).add(found.group(2))
    tables = {}
    with open(tsv_path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            oid, table, rows = line.rstrip("\n").split("\t")
            if oid in filled:
                tables[table] = int(rows)
            elif oid in created:
                tables[table] = 0
    json.dump({"tables": dict(sorted(tables.items())), "complete": True}, sys.stdout)
    sys.stdout.write("\n")
    return 0


def cmd_count(engine):
    counter = {"postgresql": count_postgresql, "mysql": count_mysql}[engine]
    tables, complete = counter(sys.stdin.buffer)
    json.dump({"tables": dict(sorted(tables.items())), "complete": complete}, sys.stdout)
    sys.stdout.write("\n")
    return 0


def sha256_of(path):
    digest = hashlib.sha256()
    buffer = bytearray(1 << 20)
    view = memoryview(buffer)
    with open(path, "rb") as f:
        while size := f.readinto(buffer):
            digest.update(view[:size])
    return digest.hexdigest()


def cmd_sha256(path):
    print(sha256_of(path))
    return 0


SUM_LINE = re.compile(r"([0-9a-f]{64}) [ *](.+)")


def cmd_check_sha256(sums_path):
    directory = os.path.dirname(os.path.abspath(sums_path))
    with open(sums_path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    if not lines:
        sys.stderr.write(f"{sums_path}: no checksum lines\n")
        return 1
    for line in lines:
        found = SUM_LINE.fullmatch(line)
        if not found:
            sys.stderr.write(f"{sums_path}: improperly formatted line: {line[:80]!r}\n")
            return 1
        want, name = found.groups()
        try:
            actual = sha256_of(os.path.join(directory, name))
        except OSError as e:
            sys.stderr.write(f"{name}: {e.strerror}\n")
            return 1
        if actual != want:
            sys.stderr.write(f"{name}: does not match its sha256\n")
            return 1
    return 0


def cmd_write(counts_path, out_path):
    with open(counts_path, encoding="utf-8") as f:
        counts = json.load(f)
    manifest = {"manifest_version": 1}
    for key, value in sorted(os.environ.items()):
        if key.startswith("MANIFEST_"):
            name = key[len("MANIFEST_") :].lower()
            if name.endswith(("_bytes", "_files")):
                value = int(value)
            elif name.endswith("_seconds"):
                value = float(value)
            manifest[name] = value
    manifest["excluded_table_data"] = [t for t in os.environ.get("MANIFEST_EXCLUDED_TABLE_DATA", "").split("\n") if t]
    manifest["tables"] = counts["tables"]
    manifest["rows"] = sum(counts["tables"].values())
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, ensure_ascii=False)
        f.write("\n")
    return 0


def cmd_get(manifest_path, key):
    with open(manifest_path, encoding="utf-8") as f:
        value = json.load(f).get(key, "")
    sys.stdout.write(value if isinstance(value, str) else json.dumps(value))
    return 0


def cmd_compare(manifest_path, actual_path):
    with open(manifest_path, encoding="utf-8") as f:
        expected = json.load(f)["tables"]
    actual = {}
    with open(actual_path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if line:
                name, _tab, rows = line.rpartition("\t")
                actual[name] = int(rows)
    problems = []
    for name in sorted(set(expected) | set(actual)):
        if name not in actual:
            problems.append(f"table {name} is in the backup's manifest but missing after the restore")
        elif name not in expected:
            problems.append(f"table {name} appeared after the restore but is not in the manifest")
        elif expected[name] != actual[name]:
            problems.append(f"table {name}: {actual[name]} rows restored, the manifest says {expected[name]}")
    for problem in problems:
        print(problem)
    if not problems:
        print(f"{len(expected)} tables, {sum(expected.values())} rows, as in the manifest")
    return 1 if problems else 0


def cmd_fields(manifest_path):
    with open(manifest_path, encoding="utf-8") as f:
        manifest = json.load(f)
    out = sys.stdout.buffer
    for key, value in manifest.items():
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        if "\0" in key or "\0" in text:
            sys.stderr.write(f"{manifest_path}: a NUL in {key!r}\n")
            return 1
        out.write(key.encode() + b"\0" + text.encode() + b"\0")
    return 0


def set_name_pattern(project):
    """A whole backup set name of PROJECT: PROJECT_STAMP_KIND.EXT, or PROJECT_D-Day.EXT
    (weekday rotation)."""
    return re.compile(
        re.escape(project)
        + r"_(?:(?P<stamp>[0-9]{8}T[0-9]{6}Z)_(?P<kind>daily|weekly|monthly|safety)|(?P<weekday>[0-6]-[A-Za-z]+))"
        r"\.(?:pgdump|sql)\.(?:zst|gz)$"
    )


def sets_in(directory, project):
    """PROJECT's published sets in DIRECTORY (regular files), newest first."""
    pattern = set_name_pattern(project)
    names = [
        entry.name
        for entry in os.scandir(directory)
        if pattern.match(entry.name) and entry.is_file(follow_symlinks=False)
    ]
    return sorted(names, reverse=True)


def stamp_date(stamp):
    return datetime.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").date()


def gfs_kind(stamp, names, project):
    """The kind of a backup taken at STAMP, given the names of the sets already there."""
    day = stamp_date(stamp)
    pattern = set_name_pattern(project)
    month_seen = week_seen = False
    for name in names:
        m = pattern.match(name)
        if not m or not m.group("stamp") or m.group("kind") == "safety":
            continue
        other = stamp_date(m.group("stamp"))
        month_seen |= (other.year, other.month) == (day.year, day.month)
        week_seen |= other.isocalendar()[:2] == day.isocalendar()[:2]
    if not month_seen:
        return "monthly"
    return "daily" if week_seen else "weekly"


def new_set_name(stamp, names, project, extension, rotation, safety=False, now=None):
    """(name, kind) of a set taken at STAMP: PROJECT_STAMP_KIND.EXTENSION, or with the
    weekday rotation PROJECT_D-Day.EXTENSION (local time, as `date +%w-%A`)."""
    if safety:
        kind = "safety"
    elif rotation == "weekday":
        day = time.localtime(now)
        return f"{project}_{time.strftime('%w-%A', day)}.{extension}", "weekday"
    else:
        kind = gfs_kind(stamp, names, project)
    return f"{project}_{stamp}_{kind}.{extension}", kind


def prune_plan(names, kinds, keep, project, latest="", protected=()):
    """[(name, kind, kept)] that retention removes from NAMES (newest first)."""
    pattern = set_name_pattern(project)
    plan = []
    for kind in kinds:
        seen = 0
        for name in names:
            m = pattern.match(name)
            if not m or (m.group("kind") or "weekday") != kind:
                continue
            seen += 1
            if seen > keep[kind] and name != latest and name not in protected:
                plan.append((name, kind, keep[kind]))
    return plan


def cmd_kind(directory, project, stamp):
    print(gfs_kind(stamp, sets_in(directory, project), project))
    return 0


def cmd_name(directory, project, extension, rotation, stamp, *safety):
    if rotation not in ("gfs", "weekday") or safety not in ((), ("safety",)):
        sys.stderr.write(f"name: rotation {rotation!r} (gfs or weekday), then optionally 'safety'\n")
        return 2
    name, kind = new_set_name(stamp, sets_in(directory, project), project, extension, rotation, bool(safety))
    print(f"{name}\t{kind}")
    return 0


def cmd_prune(directory, project, kinds, keep, *protected):
    kinds = kinds.split(",")
    keep = {k: int(v) for k, v in (item.split("=", 1) for item in keep.split(","))}
    unknown = [k for k in kinds if k not in KINDS or k not in keep]
    if unknown or any(v < 1 for v in keep.values()):
        sys.stderr.write(f"prune: kinds {kinds} need a count of at least 1 each in {keep}\n")
        return 2
    try:
        latest = os.readlink(os.path.join(directory, "latest"))
    except OSError:
        latest = ""
    plan = prune_plan(sets_in(directory, project), kinds, keep, project, os.path.basename(latest), protected)
    for name, kind, kept in plan:
        print(f"{name}\t{kind}\t{kept}")
    return 0


def cmd_snapshots(project):
    """Sets are tagged set=NAME and sha256=SHA by the push; anything else in the
    repository (another project, a snapshot made by hand) is left out."""
    snapshots = json.load(sys.stdin) or []
    # Whole names, as the scripts match them (project `shop` never takes `shop_x`'s sets).
    own = set_name_pattern(project)
    rows = []
    for snap in snapshots:
        tags = dict(t.split("=", 1) for t in snap.get("tags") or [] if "=" in t)
        name = tags.get("set", "")
        if "djangoops" not in (snap.get("tags") or []) or not own.match(name):
            continue
        rows.append((snap["time"], name, tags.get("sha256", ""), snap["id"], snap.get("paths") or []))
    for taken, name, sha, snap_id, paths in sorted(rows):
        print("\t".join([name, sha, snap_id, taken, *paths]))
    return 0


def main(argv):
    commands = {
        "count": (cmd_count, 1),
        "write": (cmd_write, 2),
        "snapshot-counts": (cmd_snapshot_counts, 2),
        "get": (cmd_get, 2),
        "compare": (cmd_compare, 2),
        "fields": (cmd_fields, 1),
        "snapshots": (cmd_snapshots, 1),
        "sha256": (cmd_sha256, 1),
        "check-sha256": (cmd_check_sha256, 1),
        "kind": (cmd_kind, 3),
        "prune": (cmd_prune, 4),
        "name": (cmd_name, 5),
    }
    # prune takes any number of protected names after its four arguments; name
    # takes "safety" after its five.
    extra = {"prune": 100, "name": 1}.get(argv[1] if len(argv) > 1 else "", 0)
    if len(argv) < 2 or argv[1] not in commands or not 0 <= len(argv) - 2 - commands[argv[1]][1] <= extra:
        sys.stderr.write(__doc__)
        return 2
    function, _arity = commands[argv[1]]
    return function(*argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
