"""Backup manifests and the other small file formats of a backup set.

A set's manifest (NAME.manifest.json) says what its dump holds: every table with
its row count, plus what the backup knew (project, engine, database, sizes...).
A restore or a verify compares a test restore with it, so the counts must
describe exactly the bytes that were stored: for a text dump they are counted
from the very stream being compressed (count_postgresql, count_mysql); for a
PostgreSQL archive they are counted inside the snapshot pg_dump reads
(snapshot_counts), which is the same data without reading the archive back.

Also here: the sha256 sidecar (sha256sum's "HEX  NAME" lines, which operators
can check with `sha256sum --check`) and the list of sets an off-site restic
repository holds.

Ported from roles/db_backup/files/backup_manifest.py. The formats are unchanged,
so that sets written by the shell scripts are read here and the other way round.
"""

import hashlib
import io
import json
import os
import re
from collections.abc import Mapping
from typing import NamedTuple

MANIFEST_VERSION = 1

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

# `pg_restore --list` lines: "ID; TABLEOID OID DESC ...". A table is "1259 OID
# TABLE"; its rows are "0 OID TABLE DATA", OID being the table's.
TOC_ENTRY = re.compile(r"^\d+; (\d+) (\d+) (TABLE DATA|TABLE) ")

# One line of a .sha256 sidecar, as `sha256sum` writes it (text or binary mode).
SUM_LINE = re.compile(r"([0-9a-f]{64}) [ *](.+)")

# Written by write_manifest itself; a field of the same name would overwrite them.
RESERVED_FIELDS = ("manifest_version", "excluded_table_data", "tables", "rows")


class ManifestError(ValueError):
    """A manifest that cannot be read, or does not hold what the writer writes.
    The message names the file and what is wrong with it."""


class Counts(NamedTuple):
    """The tables of a dump with their row counts (sorted by name), and whether
    the dump ended with its end-of-dump marker: one without it was cut short and
    must not be published."""

    tables: dict[str, int]
    complete: bool


class Comparison(NamedTuple):
    """A test restore compared with its manifest: one line per difference, or
    none and the summary that goes into the log."""

    problems: list[str]
    summary: str

    @property
    def ok(self):
        return not self.problems


class Snapshot(NamedTuple):
    """One backup set held by an off-site repository, as the push tagged it."""

    name: str
    sha256: str
    snapshot_id: str
    time: str
    paths: tuple[str, ...]
    host: str
    tags: tuple[str, ...]


# --- row counts ---------------------------------------------------------------------


def mysql_rows(piece):
    """The rows a piece of an extended INSERT holds: its "(" outside quoted strings.
    Escaped backslashes go first (so that the quote after one still closes its
    string), then escaped quotes; the quotes left alternate string and code, and
    a doubled quote (NO_BACKSLASH_ESCAPES) opens and closes at once. Byte
    operations only: three times faster than a regular expression over 500 MB."""
    parts = piece.replace(b"\\\\", b"").replace(b"\\'", b"").split(b"'")
    return b"".join(parts[::2]).count(b"(")


def count_postgresql(stream):
    """Counts of a plain-text pg_dump read from STREAM (a binary file object, or
    any iterable of byte lines): the rows of each COPY block."""
    tables, table, complete = {}, None, False
    for line in stream:
        if table is not None:
            if line.startswith(b"\\.") and line.rstrip(b"\r\n") == b"\\.":
                table = None
            else:
                tables[table] += 1
            continue
        if line.startswith(b"CREATE "):
            found = PG_TABLE.match(line)
            if found:
                tables.setdefault(found.group(1).decode(), 0)
        elif line.startswith(b"COPY "):
            found = PG_COPY.match(line.rstrip(b"\r\n"))
            if found:
                table = found.group(1).decode()
                tables.setdefault(table, 0)
        elif line.startswith(PG_DONE):
            complete = True
    return Counts(dict(sorted(tables.items())), complete and table is None)


def count_mysql(stream):
    """Counts of a mysqldump / mariadb-dump read from STREAM (a binary file object,
    or any iterable of byte lines): the rows of each extended INSERT."""
    tables, table, complete = {}, None, False
    for line in stream:
        if table is None:
            if line.startswith(b"INSERT INTO "):
                found = MY_INSERT.match(line)
                if not found:
                    continue
                table = found.group(1).replace(b"``", b"`").decode()
                tables.setdefault(table, 0)
                line = line[found.end() :]
            else:
                if line.startswith(b"CREATE TABLE "):
                    found = MY_TABLE.match(line)
                    if found:
                        tables.setdefault(found.group(1).replace(b"``", b"`").decode(), 0)
                elif line.startswith(MY_DONE):
                    complete = True
                continue
        tables[table] += mysql_rows(line)
        if line.rstrip().endswith(b";"):
            table = None
    return Counts(dict(sorted(tables.items())), complete and table is None)


def _text_lines(text, errors="strict"):
    """TEXT (str, or UTF-8 bytes decoded with ERRORS) line by line, with the
    universal newlines of a file opened in text mode, so that a value reads the
    same as the file the shell version read."""
    if isinstance(text, bytes):
        return io.TextIOWrapper(io.BytesIO(text), encoding="utf-8", errors=errors)
    return io.StringIO(text, newline=None)


def snapshot_counts(tsv, toc):
    """Counts of a PostgreSQL archive, from TSV ("oid<TAB>table<TAB>rows" counted in
    the dump's own snapshot) and TOC (the archive's `pg_restore --list`): the
    tables it creates or fills, with rows only where it holds their data (a table
    left out with --exclude-table-data counts 0). Either may be str or bytes.
    Raises ValueError on a TSV line that is not three fields."""
    created, filled = set(), set()
    # The list quotes object names as the server has them: never fatal.
    for line in _text_lines(toc, errors="replace"):
        found = TOC_ENTRY.match(line)
        if found:
            (filled if found.group(3) == "TABLE DATA" else created).add(found.group(2))
    tables = {}
    for number, line in enumerate(_text_lines(tsv), 1):
        if not line.strip():
            continue
        fields = line.rstrip("\n").split("\t")
        if len(fields) != 3:
            raise ValueError(f"snapshot counts, line {number}: {line[:80]!r} is not OID<TAB>TABLE<TAB>ROWS")
        oid, table, rows = fields
        if oid in filled:
            tables[table] = int(rows)
        elif oid in created:
            tables[table] = 0
    return Counts(dict(sorted(tables.items())), True)


# --- the manifest -------------------------------------------------------------------


def _field_text(value):
    """A manifest value as the shell saw it: strings as they are, anything else as
    JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, int | float) and not isinstance(value, bool)


def _text_field(key):
    """A read-only attribute: the manifest's KEY as Manifest.text() reads it."""
    return property(lambda manifest: manifest.text(key), doc=f"The {key} field, as text.")


class Manifest(Mapping):
    """A read manifest: a read-only mapping of its top-level fields, with typed
    access. Built only from a dict that has the shape write_manifest gives it, so
    that later reads cannot fail halfway through a restore."""

    def __init__(self, data, source="manifest"):
        self.source = str(source)
        if not isinstance(data, dict):
            raise ManifestError(f"{self.source}: not a JSON object")
        for key, value in data.items():
            # The shell loaded fields NUL-separated and refused a NUL; so does this.
            if "\0" in key or "\0" in _field_text(value):
                raise ManifestError(f"{self.source}: a NUL in {key!r}")
            if key in ("manifest_version", "rows") or key.endswith(("_bytes", "_files")):
                if not _is_int(value):
                    raise ManifestError(f"{self.source}: {key} is {value!r}, not a whole number")
            elif key.endswith("_seconds"):
                if not _is_number(value):
                    raise ManifestError(f"{self.source}: {key} is {value!r}, not a number")
            elif key == "excluded_table_data":
                if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
                    raise ManifestError(f"{self.source}: excluded_table_data is not a list of table names")
        tables = data.get("tables")
        if not isinstance(tables, dict) or not all(_is_int(rows) for rows in tables.values()):
            raise ManifestError(f"{self.source}: no tables, or not an object of table names and row counts")
        self._data = dict(data)

    @classmethod
    def read(cls, path):
        """The manifest at PATH; ManifestError says why it cannot be used."""
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise ManifestError(f"{path}: {e.strerror}") from e
        except UnicodeDecodeError as e:
            raise ManifestError(f"{path}: not UTF-8 text") from e
        return cls.from_json(text, path)

    @classmethod
    def from_json(cls, text, source="manifest"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ManifestError(f"{source}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from e
        return cls(data, source)

    def __getitem__(self, key):
        return self._data[key]

    def __iter__(self):
        return iter(self._data)

    def __len__(self):
        return len(self._data)

    def __repr__(self):
        return f"Manifest({self.source!r})"

    def text(self, key):
        """KEY's value as the shell scripts read it: a string as it is, any other
        value as JSON, "" when there is none."""
        return _field_text(self._data[key]) if key in self._data else ""

    def integer(self, key):
        return self._checked(key, _is_int, "a whole number")

    def number(self, key):
        return float(self._checked(key, _is_number, "a number"))

    def _checked(self, key, valid, what):
        """KEY's value; ManifestError if there is none or VALID(value) is false."""
        if key not in self._data:
            raise ManifestError(f"{self.source}: no {key}")
        value = self._data[key]
        if not valid(value):
            raise ManifestError(f"{self.source}: {key} is {value!r}, not {what}")
        return value

    # The text fields, as text() reads them.
    project = _text_field("project")
    engine = _text_field("engine")
    database = _text_field("database")
    kind = _text_field("kind")
    created = _text_field("created")
    sha256 = _text_field("sha256")
    media_file = _text_field("media_file")

    @property
    def tables(self):
        return dict(self._data["tables"])

    @property
    def rows(self):
        """The manifest's total; the sum of the tables' counts if it has none."""
        return self._data.get("rows", sum(self._data["tables"].values()))

    @property
    def excluded_table_data(self):
        return list(self._data.get("excluded_table_data", []))


def write_manifest(path, fields, tables, excluded_table_data=()):
    """Write the manifest of a set to PATH: manifest_version, FIELDS (lower-case
    names; *_bytes and *_files as whole numbers, *_seconds as numbers, any other
    as a string), excluded_table_data, TABLES (name -> rows) and their total.
    The keys come in the order the shell version wrote them (the fields sorted as
    their MANIFEST_* variable names sort), so that files compare equal.
    EXCLUDED_TABLE_DATA may be a list or one name per line. Returns the Manifest."""
    entries = {}
    for key, value in fields.items():
        name = key.lower()
        if name in RESERVED_FIELDS:
            raise ValueError(f"{name} is written by the manifest itself, not given as a field")
        if name.endswith(("_bytes", "_files")):
            value = int(value)
        elif name.endswith("_seconds"):
            value = float(value)
        else:
            value = str(value)
        entries[name] = value
    if isinstance(excluded_table_data, str):
        excluded_table_data = excluded_table_data.split("\n")
    entries["excluded_table_data"] = [t for t in excluded_table_data if t]
    data = {"manifest_version": MANIFEST_VERSION}
    data.update(sorted(entries.items(), key=lambda item: item[0].upper()))
    data["tables"] = dict(sorted(tables.items()))
    data["rows"] = sum(data["tables"].values())
    written = Manifest(data, path)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, ensure_ascii=False)
        f.write("\n")
    return written


def parse_table_counts(text):
    """{table: rows} from the "table<TAB>rows" lines a test restore's count query
    prints (str or UTF-8 bytes). A name may hold a tab: the count is the last
    field. Raises ValueError on a count that is not a number."""
    counts = {}
    for line in _text_lines(text):
        line = line.rstrip("\n")
        if line:
            name, _tab, rows = line.rpartition("\t")
            counts[name] = int(rows)
    return counts


def compare_counts(expected, actual):
    """EXPECTED (the manifest's tables) against ACTUAL (what the test restore
    holds): a Comparison with each difference, sorted by table, or with the
    one-line summary when they agree."""
    problems = []
    for name in sorted(set(expected) | set(actual)):
        if name not in actual:
            problems.append(f"table {name} is in the backup's manifest but missing after the restore")
        elif name not in expected:
            problems.append(f"table {name} appeared after the restore but is not in the manifest")
        elif expected[name] != actual[name]:
            problems.append(f"table {name}: {actual[name]} rows restored, the manifest says {expected[name]}")
    if problems:
        return Comparison(problems, "")
    return Comparison([], f"{len(expected)} tables, {sum(expected.values())} rows, as in the manifest")


# --- checksums ----------------------------------------------------------------------


def sha256_of(path):
    """PATH's sha256, hex (OpenSSL's through hashlib: several times faster than
    coreutils' sha256sum where the CPU has SHA extensions)."""
    digest = hashlib.sha256()
    buffer = bytearray(1 << 20)
    view = memoryview(buffer)
    with open(path, "rb") as f:
        while size := f.readinto(buffer):
            digest.update(view[:size])
    return digest.hexdigest()


def check_sha256(sums_path):
    """Check the files a .sha256 sidecar names (beside it) as `sha256sum --check
    --strict` does, stopping at the first fault. Returns None when every file
    matches, else the reason, naming the file: the caller logs it."""
    directory = os.path.dirname(os.path.abspath(sums_path))
    try:
        with open(sums_path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        return f"{sums_path}: {e.strerror}"
    except UnicodeDecodeError:
        return f"{sums_path}: not UTF-8 text"
    if not lines:
        return f"{sums_path}: no checksum lines"
    for line in lines:
        found = SUM_LINE.fullmatch(line)
        if not found:
            return f"{sums_path}: improperly formatted line: {line[:80]!r}"
        want, name = found.groups()
        try:
            actual = sha256_of(os.path.join(directory, name))
        except OSError as e:
            return f"{name}: {e.strerror}"
        if actual != want:
            return f"{name}: does not match its sha256"
    return None


def sidecar_sha256(sums_path):
    """The first hash a .sha256 sidecar holds: the dump's, as the push tags it
    (the shell's `read -r sha _ <NAME.sha256`)."""
    with open(sums_path, encoding="utf-8") as f:
        first = f.readline().split()
    return first[0] if first else ""


# --- off-site snapshots ---------------------------------------------------------------


def snapshots(data, project):
    """PROJECT's sets in the output of `restic snapshots --json` (str, bytes, or
    already parsed), oldest first. Sets are tagged djangoops, set=NAME and
    sha256=SHA by the push; anything else in the repository (another project, a
    snapshot made by hand) is left out. Raises ValueError on output that is not
    a list of snapshots."""
    # Imported here: sets.py reads manifests, and the name pattern is its own.
    from djangoops.sets import set_name_pattern

    if isinstance(data, str | bytes):
        data = json.loads(data)
    data = data or []
    if not isinstance(data, list):
        raise ValueError("restic snapshots --json did not print a list")
    # Whole names, as the scripts match them (project `shop` never takes `shop_x`'s sets).
    own = set_name_pattern(project)
    rows = []
    for snap in data:
        if not isinstance(snap, dict):
            raise ValueError(f"restic snapshots --json: {str(snap)[:80]} is not a snapshot")
        tag_list = tuple(snap.get("tags") or ())
        tags = dict(t.split("=", 1) for t in tag_list if "=" in t)
        name = tags.get("set", "")
        if "djangoops" not in tag_list or not own.match(name):
            continue
        if "time" not in snap or "id" not in snap:
            raise ValueError(f"restic snapshots --json: the snapshot of {name} has no time or no id")
        rows.append(
            Snapshot(
                name=name,
                sha256=tags.get("sha256", ""),
                snapshot_id=snap["id"],
                time=snap["time"],
                paths=tuple(snap.get("paths") or ()),
                host=snap.get("hostname") or "",
                tags=tag_list,
            )
        )
    # The shell version sorted (time, name, sha256, id, paths): the same order.
    return sorted(rows, key=lambda s: (s.time, s.name, s.sha256, s.snapshot_id, s.paths))
