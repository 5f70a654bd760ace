#!/usr/bin/python3
"""Backup manifests for the djangoops.maintenance backup scripts.

  count ENGINE            read a dump as SQL text on stdin; print a JSON object with
                          the row count of every table and whether the dump is complete
  write COUNTS OUT        write the manifest: the counts plus the MANIFEST_* environment
  get MANIFEST KEY        print one top-level value of a manifest
  compare MANIFEST ACTUAL compare the counts with a TSV of "table<TAB>rows" from a test
                          restore; print each difference, exit 1 if there is any
  snapshots PROJECT       read `restic snapshots --json` on stdin; print the backup sets
                          of PROJECT it holds, oldest first, one per line:
                          SET<TAB>SHA256<TAB>SNAPSHOT_ID<TAB>TIME<TAB>PATH...

Counting reads the dump as it is written (the backup script tees the stream here),
so the manifest describes exactly what the file holds.
"""

import json
import os
import re
import sys

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
MY_STRING = re.compile(rb"'[^'\\]*(?:\\.[^'\\]*)*'")
MY_DONE = b"-- Dump completed"


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
                line = line[m.end():]
            else:
                if line.startswith(b"CREATE TABLE "):
                    m = MY_TABLE.match(line)
                    if m:
                        tables.setdefault(m.group(1).replace(b"``", b"`").decode(), 0)
                elif line.startswith(MY_DONE):
                    complete = True
                continue
        rest = MY_STRING.sub(b"", line)
        tables[table] += rest.count(b"(")
        if rest.rstrip().endswith(b";"):
            table = None
    return tables, complete and table is None


def cmd_count(engine):
    counter = {"postgresql": count_postgresql, "mysql": count_mysql}[engine]
    tables, complete = counter(sys.stdin.buffer)
    json.dump({"tables": dict(sorted(tables.items())), "complete": complete}, sys.stdout)
    sys.stdout.write("\n")
    return 0


def cmd_write(counts_path, out_path):
    with open(counts_path, encoding="utf-8") as f:
        counts = json.load(f)
    manifest = {"manifest_version": 1}
    for key, value in sorted(os.environ.items()):
        if key.startswith("MANIFEST_"):
            name = key[len("MANIFEST_"):].lower()
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
                name, _, rows = line.rpartition("\t")
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


def cmd_snapshots(project):
    """Sets are tagged set=NAME and sha256=SHA by the push; anything else in the
    repository (another project, a snapshot made by hand) is left out."""
    snapshots = json.load(sys.stdin) or []
    # Whole names, as the scripts match them (project `shop` never takes `shop_x`'s sets).
    own = re.compile(
        re.escape(project)
        + r"_(?:[0-9]{8}T[0-9]{6}Z_(?:daily|weekly|monthly|safety)|[0-6]-[A-Za-z]+)\.(?:pgdump|sql)\.(?:zst|gz)$"
    )
    rows = []
    for snap in snapshots:
        tags = dict(t.split("=", 1) for t in snap.get("tags") or [] if "=" in t)
        name = tags.get("set", "")
        if "djangoops" not in (snap.get("tags") or []) or not own.match(name):
            continue
        rows.append((snap["time"], name, tags.get("sha256", ""), snap["id"], snap.get("paths") or []))
    for time, name, sha, snap_id, paths in sorted(rows):
        print("\t".join([name, sha, snap_id, time, *paths]))
    return 0


def main(argv):
    commands = {
        "count": (cmd_count, 1),
        "write": (cmd_write, 2),
        "get": (cmd_get, 2),
        "compare": (cmd_compare, 2),
        "snapshots": (cmd_snapshots, 1),
    }
    if len(argv) < 2 or argv[1] not in commands or len(argv) - 2 != commands[argv[1]][1]:
        sys.stderr.write(__doc__)
        return 2
    function, _ = commands[argv[1]]
    return function(*argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
