#!/usr/bin/env python
"""The backup and restore benchmark: the cookbook's method, the project's scripts and
the engine's floor, side by side on one server container. Run by tools/bench and by
the molecule/bench scenario; it needs only the standard library (matplotlib for the PNG).

    bench.py measure ENGINE CONTAINER --size-mb N --rounds R --json OUT
                     [--previous CONTAINER --previous-ref REF]
    bench.py offsite ENGINE CONTAINER --nights N --pattern P --json OUT
    bench.py pitr ENGINE CONTAINER --nights N --pattern P --load-seconds S --json OUT
    bench.py site INVENTORY --json OUT          (ansible-playbook site.yml twice)
    bench.py report JSON... --markdown OUT [--png OUT] [--check]

`measure` generates the database in the container, then runs rounds; each round
backs up with every method and restores with the seed's, the project's and
django-dbbackup's, in an order that rotates from round to round, and checks after
every restore that each table has the rows it had (the session rows, which the
backups leave out, are put back afterwards so that every backup sees the same
database).

With `--previous`, a second container holding an earlier version of the project's
scripts (tools/bench --previous REF installs it from this repository's history) is
measured in the same rounds: its backup and restore run in the rotation like any
other method, on its own copy of the same generated database, so that the two
versions compare round by round.
"""

import argparse
import itertools
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
IN_CONTAINER = "/opt/djangoops-bench"
DATA_DIR = "/var/tmp/djangoops-bench"
HOME = "/home/shop"
TABLE_COLUMNS = {
    "auth_user": "id, password, last_login, is_superuser, username, first_name, last_name, email, is_staff, "
    "is_active, date_joined",
    "django_session": "session_key, session_data, expire_date",
    "blog_article": "id, uuid, author_id, title, slug, body, metadata, status, view_count, created_at, updated_at",
    "blog_comment": "id, article_id, author_id, body, metadata, created_at",
}
METHODS = ["seed", "project", "dbbackup", "floor", "zstd"]
LABELS = {
    "seed": "cookbook (seed)",
    "project": "project scripts",
    "dbbackup": "django-dbbackup 5.4.0 (--compress)",
    "floor": "floor (dump → /dev/null)",
    "zstd": "dump piped to zstd at the project's level, no checks",
    "previous": "project scripts, previous version",
}
RESTORED = ["seed", "project", "dbbackup", "previous"]
# django-dbbackup as its documentation runs it (`dbbackup --compress`, `dbrestore
# --uncompress`), with django-admin from its virtualenv (bench/playbooks/prepare.yml).
DBBACKUP = f"DJANGO_SETTINGS_MODULE=dbbackup_settings PYTHONPATH={IN_CONTAINER} {HOME}/dbbackup/env/bin/django-admin"
# The project's scripts run with their defaults; the floor is the engine's own dump
# with no compression, written nowhere.
FLOOR = {
    "postgresql": "pg_dump --format=custom --compress=0 shop",
    "mysql": "mariadb-dump --single-transaction --quick --routines --triggers --hex-blob shop",
}


def methods_of(run):
    """The methods a run measured: every one, and the previous version only when it ran."""
    return [m for m in [*METHODS, "previous"] if m != "previous" or run["results"].get("previous")]


def label(run, method):
    if method == "previous":
        return f"{LABELS[method]} ({run['previous_ref']})"
    return LABELS[method]


def floor_command(engine):
    # The MariaDB user's password comes from an option file, as the project's does.
    if engine == "mysql":
        return FLOOR["mysql"].replace("mariadb-dump ", f"mariadb-dump --defaults-extra-file={HOME}/.bench-my.cnf ")
    return FLOOR[engine]


SEED = {
    "postgresql": ("backup_postgresql_db.sh", "restore_postgresql_db.sh", "latest.backup.gz"),
    "mysql": ("backup_mysql_db.sh", "restore_mysql_db.sh", "latest.sql.gz"),
}


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Server:
    def __init__(self, engine, container):
        self.engine, self.container = engine, container

    def run(self, command, user="root", stdin=None, check=True):
        argv = ["docker", "exec", *(["-i"] if stdin is not None else []), "-u", user, "-w", "/", self.container]
        result = subprocess.run(
            [*argv, "bash", "-c", command], input=stdin, capture_output=True, text=True, check=False
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{command!r} failed ({result.returncode}) on {self.container}:\n{result.stderr[-3000:]}"
            )
        return result

    def timed(self, command, user="shop"):
        """Wall, CPU (user+sys of the command and every child) and the largest RSS, by GNU time."""
        # Files of each user's own: /tmp is sticky, and root's would stop the project user's.
        time_file, out_file = f"/tmp/bench-{user}.time", f"/tmp/bench-{user}.out"
        wrapped = (
            f"cd {HOME} && /usr/bin/time -f '%e %U %S %M' -o {time_file} bash -c {shlex.quote(command)}"
            f" >{out_file} 2>&1; rc=$?; tail -n 1 {time_file}; exit $rc"
        )
        result = self.run(wrapped, user=user, check=False)
        if result.returncode != 0:
            out = self.run(f"tail -n 30 {out_file}", check=False).stdout
            raise RuntimeError(f"{command!r} failed ({result.returncode}) on {self.container}:\n{out}")
        wall, user_s, sys_s, rss_kb = result.stdout.split()[-4:]
        # Clients that carry on past errors (the cookbook's psql) only say so in their output.
        errors = self.run(f"grep -c ERROR {out_file}", check=False).stdout.strip() or "0"
        return {
            "wall_s": float(wall),
            "cpu_s": float(user_s) + float(sys_s),
            "rss_mib": int(rss_kb) / 1024,
            "output_errors": int(errors),
        }

    def sql(self, statement, database="shop"):
        if self.engine == "postgresql":
            cmd = f"runuser -u postgres -- psql -X -q -tA -F '\t' -v ON_ERROR_STOP=1 -d {database}"
        else:
            cmd = f"mariadb --batch --skip-column-names {database}"
        return self.run(cmd, stdin=statement).stdout

    def row_counts(self):
        if self.engine == "postgresql":
            tables = self.sql("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1").split()
        else:
            tables = self.sql(
                "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'shop' "
                "AND TABLE_TYPE = 'BASE TABLE' ORDER BY 1"
            ).split()
        query = " UNION ALL ".join(f"SELECT '{t}', COUNT(*) FROM {t}" for t in tables)
        counts = {}
        for line in self.sql(query + ";").splitlines():
            if line.strip():
                name, rows = line.split("\t")
                counts[name] = int(rows)
        return counts

    def database_mib(self):
        if self.engine == "postgresql":
            size = self.sql("SELECT pg_database_size('shop')")
        else:
            size = self.sql(
                "SELECT SUM(DATA_LENGTH + INDEX_LENGTH) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'shop'"
            )
        return int(size.strip()) / 2**20

    def file_size(self, path):
        return int(self.run(f"stat -L -c %s {shlex.quote(path)}").stdout.strip())


def copy_harness(server):
    server.run(f"rm -rf {IN_CONTAINER} && mkdir -p {IN_CONTAINER}")
    for part in ("gen_data.py", "seed", "sql", "dbbackup_settings.py"):
        subprocess.run(["docker", "cp", str(HERE / part), f"{server.container}:{IN_CONTAINER}/"], check=True)
    server.run(f"chmod -R a+rX {IN_CONTAINER}")


def load_table(server, table):
    files = f"{DATA_DIR}/{table}.*.tsv"
    columns = TABLE_COLUMNS[table]
    if server.engine == "postgresql":
        return (
            f"cat {files} | runuser -u shop -- psql -X -q -v ON_ERROR_STOP=1 -d shop "
            f"-c 'COPY {table} ({columns}) FROM STDIN'"
        )
    return (
        f"for f in {files}; do mariadb --local-infile=1 shop -e "
        f'"SET SESSION foreign_key_checks = 0, unique_checks = 0; '
        f"LOAD DATA LOCAL INFILE '$f' INTO TABLE {table} CHARACTER SET utf8mb4 ({columns})\" || exit 1; done"
    )


def generate(server, size_mb):
    started = time.monotonic()
    copy_harness(server)
    generated = server.run(f"rm -rf {DATA_DIR} && python3 {IN_CONTAINER}/gen_data.py {DATA_DIR} {size_mb}")
    counts = json.loads(generated.stdout)
    log(f"{server.engine}: generated rows {counts} in {time.monotonic() - started:.0f} s")
    engine = server.engine
    if engine == "postgresql":
        psql = "runuser -u shop -- psql -X -q -v ON_ERROR_STOP=1 -d shop"
        server.run(
            f"{psql} -c 'DROP TABLE IF EXISTS blog_comment, blog_article' "
            f"-c 'TRUNCATE auth_user, django_session CASCADE' -f {IN_CONTAINER}/sql/schema_postgresql.sql"
        )
    else:
        server.run(
            "mariadb shop -e 'SET foreign_key_checks = 0; DROP TABLE IF EXISTS blog_comment, blog_article; "
            f"DELETE FROM auth_user; DELETE FROM django_session' && mariadb shop < {IN_CONTAINER}/sql/schema_mysql.sql"
        )
    # The four tables load at once: two cores, and the server does most of the work.
    server.run(" & ".join(f"({load_table(server, t)})" for t in TABLE_COLUMNS) + " & wait")
    # `wait` alone does not report failures: the counts below do.
    if engine == "postgresql":
        server.run(f"{psql} -f {IN_CONTAINER}/sql/indexes_postgresql.sql >/dev/null && {psql} -c 'VACUUM ANALYZE'")
    else:
        server.run(
            f"mariadb shop < {IN_CONTAINER}/sql/indexes_mysql.sql && "
            "mariadb shop -e 'ANALYZE TABLE auth_user, django_session, blog_article, blog_comment' >/dev/null"
        )
    server.run(f"rm -f {DATA_DIR}/blog_*.tsv {DATA_DIR}/auth_user.*.tsv")
    counts = server.row_counts()
    for table in TABLE_COLUMNS:
        if not counts.get(table):
            raise RuntimeError(f"{table} is empty after loading")
    log(f"{engine}: database ready, {server.database_mib():.0f} MiB, in {time.monotonic() - started:.0f} s")
    return counts, time.monotonic() - started


def reset_sessions(server):
    """Backups leave session rows out (the seed's PostgreSQL one keeps them): put them back."""
    if server.engine == "postgresql":
        server.run(
            f"cat {DATA_DIR}/django_session.*.tsv | runuser -u shop -- psql -X -q -v ON_ERROR_STOP=1 -d shop "
            f"-c 'TRUNCATE django_session' -c 'COPY django_session ({TABLE_COLUMNS['django_session']}) FROM STDIN'"
        )
    else:
        server.run("mariadb shop -e 'DELETE FROM django_session'")
        server.run(load_table(server, "django_session"))


# The compressor's flags as the installed commands choose them (database.json, offsite.json).
ZSTD_FLAGS = """
import json
database = json.load(open("/etc/djangoops/shop/database.json"))
offsite = json.load(open("/etc/djangoops/shop/offsite.json"))
flags = [f"-{database['zstd_level']}", f"-T{database['threads']}"]
print(" ".join(flags + (["--rsyncable"] if offsite["repositories"] else [])))
"""


def backup(server, method):
    if method == "seed":
        script, _restore_script, latest = SEED[server.engine]
        result = server.timed(f"{IN_CONTAINER}/seed/{script}")
        result["size_bytes"] = server.file_size(f"{HOME}/seed_backups/{latest}")
    elif method == "project":
        result = server.timed("commands/backup_db.sh --quiet")
        result["size_bytes"] = server.file_size(f"{HOME}/db_backups/latest")
        lines = server.run(f"grep -h 'read in' {HOME}/logs/backup_db.log | tail -n 1", check=False).stdout
        found = re.search(r"read in ([0-9.]+) s", lines)
        result["credentials_log_s"] = float(found.group(1)) if found else None
        lines = server.run(f"grep -h 'published ' {HOME}/logs/backup_db.log | tail -n 1", check=False).stdout
        found = re.search(r" in ([0-9.]+) s$", lines.strip())
        result["publish_s"] = float(found.group(1)) if found else None
    elif method == "dbbackup":
        server.run(f"rm -f {HOME}/dbbackup/backups/*", user="shop")
        result = server.timed(f"{DBBACKUP} dbbackup --noinput --compress")
        result["size_bytes"] = server.file_size(dbbackup_file(server))
    elif method == "zstd":
        # What the project's pipeline costs without its checks: the same dump, compressed the
        # way the installed commands compress (their level and threads, from database.json).
        # (--rsyncable only with an off-site repository, as the commands decide.)
        flags = server.run("python3 -", user="shop", stdin=ZSTD_FLAGS).stdout.strip()
        result = server.timed(f"{floor_command(server.engine)} | zstd -q -c {flags} >{HOME}/bench-dump.zst")
        result["size_bytes"] = server.file_size(f"{HOME}/bench-dump.zst")
    else:
        command = floor_command(server.engine)
        result = server.timed(f"{command} >/dev/null")
    return result


def dbbackup_file(server):
    """The one backup django-dbbackup wrote (its .metadata file beside it is not the backup)."""
    names = server.run(f"ls {HOME}/dbbackup/backups", user="shop").stdout.split()
    backups = [n for n in names if not n.endswith(".metadata")]
    if len(backups) != 1:
        raise RuntimeError(f"expected one django-dbbackup backup, found {names}")
    return f"{HOME}/dbbackup/backups/{backups[0]}"


def mark(server):
    """Make the database differ from every backup before a restore: one extra user and three
    comments fewer. Only a restore that really replaced the data brings the counts back."""
    server.sql(
        "INSERT INTO auth_user (id, password, is_superuser, username, first_name, last_name, email, is_staff, "
        "is_active, date_joined) VALUES (999999999, 'x', false, 'bench-marker', '', '', '', false, true, now()); "
        "DELETE FROM blog_comment WHERE id IN (1, 2, 3);"
    )


def restore(server, method):
    if method == "seed":
        result = server.timed(f"{IN_CONTAINER}/seed/{SEED[server.engine][1]}")
    elif method == "dbbackup":
        name = dbbackup_file(server).rsplit("/", 1)[1]
        result = server.timed(f"{DBBACKUP} dbrestore --noinput --uncompress --input-filename {shlex.quote(name)}")
    else:
        result = server.timed("commands/restore_db.sh latest --yes --quiet")
        lines = server.run(f"grep -h 'restored .* into database' {HOME}/logs/restore_db.log | tail -n 1").stdout
        found = re.search(r"\(([0-9.]+) s\)", lines)
        result["load_s"] = float(found.group(1)) if found else None
        # The safety backup of what the live database held, taken after the swap.
        lines = server.run(f"grep -h 'published .*_safety' {HOME}/logs/restore_db.log | tail -n 1", check=False).stdout
        found = re.search(r" in ([0-9.]+) s$", lines.strip())
        result["safety_s"] = float(found.group(1)) if found else None
    return result


def credential_lookup(server):
    """One read of the Django settings the way the project's scripts read them, and one
    `manage.py shell` start-up as the cookbook does (once or three times per run)."""
    settings = "from django.conf import settings; settings.DATABASES['default']"
    project = server.timed(
        f"cd src/shop && DJANGO_SETTINGS_MODULE=shop.settings.production {HOME}/env/bin/python "
        f"-c {shlex.quote(settings)}"
    )
    seed = server.timed(
        "cd src/shop && echo \"from django.conf import settings; print(settings.DATABASES['default']['NAME'])\" "
        "| DJANGO_SETTINGS_MODULE=shop.settings.production ../../env/bin/python manage.py shell -i python"
    )
    return project["wall_s"], seed["wall_s"]


def measure(args):
    server = Server(args.engine, args.container)
    load_before = os.getloadavg()
    expected, gen_s = generate(server, args.size_mb)
    methods, targets = list(METHODS), {m: (server, m, expected) for m in METHODS}
    if args.previous:
        # The earlier version backs up and restores its own copy of the same data; it runs
        # the project's commands, so on that server it is the "project" method.
        previous = Server(args.engine, args.previous)
        previous_rows, _s = generate(previous, args.size_mb)
        if previous_rows != expected:
            raise RuntimeError(f"the two servers' databases differ: {expected} against {previous_rows}")
        previous.run(f"rm -rf {HOME}/db_backups/shop_* {HOME}/db_backups/latest")
        methods.append("previous")
        targets["previous"] = (previous, "project", previous_rows)
    # The floor's MariaDB dump needs the password without a command line.
    if args.engine == "mysql":
        server.run(
            f"umask 077; printf '[client]\\nuser=shop\\npassword=%s\\n' \"$(python3 -c "
            f"\"import json; print(json.load(open('{HOME}/.secrets/database.json'))['PASSWORD'])\")\" "
            f"> {HOME}/.bench-my.cnf && chown shop: {HOME}/.bench-my.cnf"
        )
    raw = int(server.run(f"cd {HOME} && {floor_command(args.engine)} | wc -c", user="shop").stdout.strip())
    server.run(f"rm -rf {HOME}/seed_backups {HOME}/db_backups/shop_* {HOME}/db_backups/latest")
    results = {m: {"backup": [], "restore": []} for m in methods}
    lookups = []
    restored_ok = []
    loads = []
    sequence = []  # (round, phase, method) in the order they ran
    for r in range(args.rounds):
        order = methods[r % len(methods) :] + methods[: r % len(methods)]
        for method in order:
            loads.append(os.getloadavg()[0])
            on, as_method, _rows = targets[method]
            res = backup(on, as_method)
            sequence.append([r, "backup", method])
            results[method]["backup"].append(res)
            log(f"{args.engine} round {r + 1}: {method} backup {res['wall_s']:.1f} s, cpu {res['cpu_s']:.1f} s")
        for method in [m for m in order if m in RESTORED]:
            loads.append(os.getloadavg()[0])
            on, as_method, rows = targets[method]
            mark(on)
            res = restore(on, as_method)
            sequence.append([r, "restore", method])
            after = on.row_counts()
            res["rows_match"] = all(after.get(t) == n for t, n in rows.items() if t != "django_session")
            restored_ok.append(res["rows_match"])
            results[method]["restore"].append(res)
            log(f"{args.engine} round {r + 1}: {method} restore {res['wall_s']:.1f} s, rows match {res['rows_match']}")
            if not res["rows_match"]:
                log(f"expected {rows}, found {after}")
            reset_sessions(on)
        lookups.append(credential_lookup(server))
    out = {
        "engine": args.engine,
        "container": args.container,
        "server_version": server.sql("SELECT version()").strip().splitlines()[0],
        "os": server.run("cat /etc/debian_version").stdout.strip(),
        "size_mb": args.size_mb,
        "rounds": args.rounds,
        "sequence": sequence,
        "rows": expected,
        "database_mib": server.database_mib(),
        "raw_dump_bytes": raw,
        "generate_s": gen_s,
        "cores": os.cpu_count(),
        "load_before": load_before,
        "load_during": loads,
        "results": results,
        "restores_ok": all(restored_ok) and bool(restored_ok),
        "previous_ref": args.previous_ref if args.previous else None,
        "credential_lookup_s": [project for project, _seed in lookups],
        "seed_django_startup_s": [seed for _project, seed in lookups],
    }
    Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    log(f"{args.engine}: results in {args.json}")


PATTERNS = {
    "uniform": "half updated in place anywhere in the tables, half new comments",
    "recent": "half updated in place among the newest tenth of the rows, half new comments",
}


def change(server, percent, pattern):
    """One day's changes, about PERCENT % of the rows of the two big tables: half of that updated
    in place (a view counted, an edit), half new comments (copies of random ones). The updates
    fall anywhere (`uniform`: the worst case for deduplication) or among the newest tenth of
    the rows (`recent`: what a site mostly edits)."""
    share = percent / 200
    rand = "random()" if server.engine == "postgresql" else "RAND()"
    now = "now()" if server.engine == "postgresql" else "NOW(6)"
    where = {"blog_article": f"{rand} < {share}", "blog_comment": f"{rand} < {share}"}
    if pattern == "recent":
        for table in where:
            low, high = (int(v) for v in server.sql(f"SELECT MIN(id), MAX(id) FROM {table}").split())
            where[table] = f"id > {high - (high - low) // 10} AND {rand} < {share * 10}"
    server.sql(
        f"UPDATE blog_article SET view_count = view_count + 1, updated_at = {now} WHERE {where['blog_article']}; "
        f"UPDATE blog_comment SET body = CONCAT(body, ' (edited)') WHERE {where['blog_comment']}; "
        "INSERT INTO blog_comment (id, article_id, author_id, body, metadata, created_at) "
        f"SELECT m.top + ROW_NUMBER() OVER (ORDER BY c.id), c.article_id, c.author_id, "
        f"CONCAT('re: ', c.body), c.metadata, {now} "
        f"FROM blog_comment c, (SELECT MAX(id) AS top FROM blog_comment) m WHERE {rand} < {share};"
    )


def prom_value(text, name):
    found = re.search(rf"^{name}{{[^}}]*}} (\S+)$", text, re.M)
    return float(found.group(1)) if found else None


def offsite(args):
    """Nightly backups pushed to an off-site repository (bench/playbooks/offsite.yml): a first
    backup, then NIGHTS nights each changing about CHANGE_PCT % of the rows. Per night: the
    backup's wall time, the push's own time and bytes (the scripts' metrics), and the
    repository's size on disk."""
    server = Server(args.engine, args.container)
    repo, metrics = "/srv/restic/shop", f"{HOME}/metrics/djangoops_shop_offsite_backuphost.prom"
    server.run(f"rm -rf {HOME}/db_backups/shop_* {HOME}/db_backups/latest")
    load_before = os.getloadavg()
    before = server.run(f"du -sb {repo} 2>/dev/null || echo 0", check=False).stdout.split()[0]
    initialized = server.run(f"test -f {repo}/config", check=False).returncode == 0
    nights = []
    for night in range(args.nights + 1):
        if night:
            change(server, args.change_pct, args.pattern)
            # Each night's set has a name of its own (names have a one-second stamp).
            time.sleep(1.1)
        result = server.timed("commands/backup_db.sh --quiet")
        text = server.run(f"cat {metrics}").stdout
        if prom_value(text, "djangoops_offsite_success") != 1:
            raise RuntimeError(f"night {night}: the push did not succeed:\n{text}")
        night_result = {
            "night": night,
            "backup_wall_s": result["wall_s"],
            "push_s": prom_value(text, "djangoops_offsite_push_duration_seconds"),
            "pushed_bytes": prom_value(text, "djangoops_offsite_pushed_bytes"),
            "repository_bytes": int(server.run(f"du -sb {repo}").stdout.split()[0]),
            "set_bytes": server.file_size(f"{HOME}/db_backups/latest"),
        }
        nights.append(night_result)
        log(
            f"{args.engine} night {night}: backup {result['wall_s']:.1f} s, push {night_result['push_s']} s, "
            f"repository {night_result['repository_bytes'] / 2**20:.1f} MiB"
        )
    restic = server.run("restic version").stdout.split()[1]
    out = {
        "engine": args.engine,
        "offsite": {
            "nights": nights,
            "change_pct": args.change_pct,
            "pattern": args.pattern,
            "restic": restic,
            "repository_bytes_before": int(before),
            "repository_initialized_before": initialized,
            "load_before": load_before,
        },
    }
    Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    log(f"{args.engine}: off-site results in {args.json}")


def site(args):
    """ansible-playbook site.yml twice against one host; the second run must change nothing."""
    runs = []
    for _run in range(2):
        started = time.monotonic()
        result = subprocess.run(
            ["ansible-playbook", "-i", args.inventory, "site.yml"], capture_output=True, text=True, check=False
        )
        wall = time.monotonic() - started
        if result.returncode != 0:
            sys.stderr.write(result.stdout[-3000:] + result.stderr[-2000:])
            raise SystemExit("site.yml failed")
        changed = sum(int(n) for n in re.findall(r"changed=(\d+)", result.stdout.split("PLAY RECAP")[-1]))
        runs.append({"wall_s": wall, "changed": changed})
        log(f"site.yml: {wall:.1f} s, {changed} changed")
    Path(args.json).write_text(json.dumps({"site": runs}, indent=2) + "\n")


# --- report ------------------------------------------------------------------------


def spread(values, fmt="{:.2f}"):
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    med = statistics.median(values)
    if len(values) == 1:
        return fmt.format(med)
    return f"{fmt.format(med)} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def paired(a, b):
    """Per-round ratios a/b (rounds are paired: same round, same conditions)."""
    return [x / y for x, y in zip(a, b, strict=False) if x is not None and y]


def summarize(run):
    res = run["results"]

    def col(method, phase, key):
        return [r.get(key) for r in res[method][phase]]

    ratios = {
        "backup time, project/seed": paired(col("project", "backup", "wall_s"), col("seed", "backup", "wall_s")),
        "backup time, project/floor": paired(col("project", "backup", "wall_s"), col("floor", "backup", "wall_s")),
        "backup time, project/(dump+zstd)": paired(col("project", "backup", "wall_s"), col("zstd", "backup", "wall_s")),
        "backup CPU, project/seed": paired(col("project", "backup", "cpu_s"), col("seed", "backup", "cpu_s")),
        "backup size, project/seed": paired(
            col("project", "backup", "size_bytes"), col("seed", "backup", "size_bytes")
        ),
        "restore time, project/seed": paired(col("project", "restore", "wall_s"), col("seed", "restore", "wall_s")),
        "restore load phase, project/seed": paired(
            col("project", "restore", "load_s"), col("seed", "restore", "wall_s")
        ),
        "backup time, project/django-dbbackup": paired(
            col("project", "backup", "wall_s"), col("dbbackup", "backup", "wall_s")
        ),
        "backup size, project/django-dbbackup": paired(
            col("project", "backup", "size_bytes"), col("dbbackup", "backup", "size_bytes")
        ),
        "restore time, project/django-dbbackup": paired(
            col("project", "restore", "wall_s"), col("dbbackup", "restore", "wall_s")
        ),
    }
    if "previous" in methods_of(run):
        for what, phase, key in (
            ("backup time", "backup", "wall_s"),
            ("backup CPU", "backup", "cpu_s"),
            ("restore time", "restore", "wall_s"),
            ("restore load phase", "restore", "load_s"),
            ("restore safety backup", "restore", "safety_s"),
        ):
            ratios[f"{what}, project/previous"] = paired(col("project", phase, key), col("previous", phase, key))
    return col, ratios


TARGETS = [
    ("backup time, project/seed", 0.2, "backup at least 5x faster than the seed's"),
    ("backup size, project/seed", 1.1, "backup no more than 1.1x the seed's size"),
    ("backup time, project/floor", 1.5, "backup within 1.5x of the floor"),
    ("restore time, project/seed", 0.7, "restore at most 0.7x the seed's time"),
    ("backup time, project/django-dbbackup", 1.0, "backup ahead of django-dbbackup"),
    ("restore time, project/django-dbbackup", 1.0, "restore ahead of django-dbbackup"),
    ("backup time, project/previous", 1.05, "backup no more than 5 % slower than the previous version"),
    ("restore time, project/previous", 1.05, "restore no more than 5 % slower than the previous version"),
]
# Ratios that are absent when the log lines they come from are (not a failure of the run).
OPTIONAL_RATIOS = ("restore load phase, project/seed", "restore load phase, project/previous",
                   "restore safety backup, project/previous")  # fmt: skip


def report(args):
    runs, site_runs, offsite_runs, pitr_runs = [], None, [], []
    for path in args.json:
        data = json.loads(Path(path).read_text())
        if "site" in data:
            site_runs = data["site"]
        elif "offsite" in data:
            offsite_runs.append(data)
        elif "pitr" in data:
            pitr_runs.append(data["pitr"])
        else:
            runs.append(data)
    lines = ["| engine | method | backup wall s | backup CPU s | peak RSS MiB | size MiB | restore wall s |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    ratio_lines = ["| engine | ratio | median (min-max) | target | met |", "|---|---|---|---|---|"]
    problems = []
    for run in runs:
        col, ratios = summarize(run)
        for method in methods_of(run):
            sizes = [s / 2**20 if s is not None else None for s in col(method, "backup", "size_bytes")]
            if method == "floor":
                sizes = [run["raw_dump_bytes"] / 2**20]
            restore = spread(col(method, "restore", "wall_s"), "{:.1f}") if method in RESTORED else "—"
            if method in ("project", "previous") and any(col(method, "restore", "load_s")):
                restore += f"; load phase {spread(col(method, 'restore', 'load_s'), '{:.1f}')}"
            if method in ("project", "previous") and any(col(method, "restore", "safety_s")):
                restore += f"; safety backup {spread(col(method, 'restore', 'safety_s'), '{:.1f}')}"
            lines.append(
                f"| {run['engine']} | {label(run, method)} | {spread(col(method, 'backup', 'wall_s'), '{:.1f}')} | "
                f"{spread(col(method, 'backup', 'cpu_s'), '{:.1f}')} | "
                f"{spread(col(method, 'backup', 'rss_mib'), '{:.0f}')} | "
                f"{spread(sizes, '{:.1f}')}{' (uncompressed)' if method == 'floor' else ''} | {restore} |"
            )
            if not col(method, "backup", "wall_s"):
                problems.append(f"{run['engine']}: no {method} backup measured")
        targets = {name: (limit, text) for name, limit, text in TARGETS}
        for name, values in ratios.items():
            if not values and name not in OPTIONAL_RATIOS:
                problems.append(f"{run['engine']}: ratio '{name}' is not a number")
            limit, text = targets.get(name, (None, ""))
            met = "—" if limit is None else ("yes" if values and statistics.median(values) <= limit else "**no**")
            ratio_lines.append(
                f"| {run['engine']} | {name} | {spread(values)} | {'≤ ' + str(limit) if limit else ''} | {met} |"
            )
        lookup = run["credential_lookup_s"]
        ratio_lines.append(
            f"| {run['engine']} | credential lookup, s (project: one Python start-up) | {spread(lookup, '{:.3f}')} | "
            f"< 0.2 | {'yes' if lookup and statistics.median(lookup) < 0.2 else '**no**'} |"
        )
        published = [r.get("publish_s") for r in run["results"]["project"]["backup"]]
        ratio_lines.append(
            f"| {run['engine']} | project backup: dump, count, test and publish, s (as logged; the rest is "
            f"start-up, lock, space check, retention) | {spread(published, '{:.1f}')} | | — |"
        )
        logged = [r.get("credentials_log_s") for r in run["results"]["project"]["backup"]]
        ratio_lines.append(
            f"| {run['engine']} | credential lookup as backup_db.sh logs it, s (0.1 s resolution) | "
            f"{spread(logged, '{:.1f}')} | < 0.2 | — |"
        )
        ratio_lines.append(
            f"| {run['engine']} | seed: one `manage.py shell` start-up, s "
            f"(x{1 if run['engine'] == 'postgresql' else 3} "
            f"per backup, x{3 if run['engine'] == 'postgresql' else 1}+dbshell per restore) | "
            f"{spread(run['seed_django_startup_s'], '{:.3f}')} | | — |"
        )
        if not run["restores_ok"]:
            problems.append(f"{run['engine']}: a restore did not bring back every table's rows")
    out = ["# Backup and restore benchmark", ""]
    out.append(
        "Generated by `tools/bench` (see [benchmark-method.md](benchmark-method.md) for what each row runs). "
        "Medians over the rounds, with (min-max); ratios are per round (same round, same conditions), "
        "then median (min-max)."
    )
    out.append("")
    for run in runs:
        rows = ", ".join(f"{t} {n:,}" for t, n in sorted(run["rows"].items()) if t in TABLE_COLUMNS)
        load = run["load_during"]
        out.append(
            f"- **{run['engine']}** {run['server_version'][:60]} on Debian {run['os']}: database "
            f"{run['database_mib']:.0f} MiB on disk, uncompressed dump {run['raw_dump_bytes'] / 2**20:.0f} MiB "
            f"({rows}); {run['rounds']} rounds; generated and loaded in {run['generate_s']:.0f} s; "
            f"{run['cores']} cores, load average {run['load_before'][0]:.2f} before, "
            f"{spread(load)} during the runs; every restore brought back every table's rows: "
            f"{'yes' if run['restores_ok'] else 'NO'} (checked against a marker row added and three rows "
            f"deleted before each restore); error lines printed by the restores: "
            f"seed {sum(r.get('output_errors', 0) for r in run['results']['seed']['restore'])}, "
            f"project {sum(r.get('output_errors', 0) for r in run['results']['project']['restore'])}, "
            f"django-dbbackup {sum(r.get('output_errors', 0) for r in run['results']['dbbackup']['restore'])}"
            + (
                f", previous version {sum(r.get('output_errors', 0) for r in run['results']['previous']['restore'])}"
                if "previous" in methods_of(run)
                else ""
            )
            + "."
        )
        if "previous" in methods_of(run):
            out.append(
                f"  The previous version ({run['previous_ref']}) ran in a second container from the same image, "
                "on its own copy of the same generated database, in the same rounds as the others."
            )
    out += ["", *lines, "", "Ratios and targets (lower is better):", "", *ratio_lines, ""]
    if offsite_runs:
        out += offsite_report(offsite_runs, problems)
    if pitr_runs:
        out += pitr_report(pitr_runs, problems)
    if site_runs:
        out.append("`ansible-playbook site.yml` against one fresh demo host:")
        out.append("")
        out.append("| run | wall s | changed tasks |")
        out.append("|---|---|---|")
        for i, r in enumerate(site_runs, 1):
            out.append(f"| {'first' if i == 1 else 'second'} | {r['wall_s']:.1f} | {r['changed']} |")
        out.append("")
        if site_runs[-1]["changed"] != 0:
            problems.append("site.yml's second run changed tasks")
    if args.png:
        out.append(f"![backup and restore times]({Path(args.png).name})")
        out.append("")
    text = "\n".join(out)
    Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
    Path(args.markdown).write_text(text)
    print(text)
    if args.png:
        chart(runs, args.png)
    if args.check and problems:
        for p in problems:
            log(f"CHECK FAILED: {p}")
        raise SystemExit(1)
    if args.check:
        log("check: every row measured, every ratio a number, every restore complete")


def offsite_report(offsite_runs, problems):
    """The off-site table: per engine and change pattern, a first backup and its push (the
    first into an empty repository, or one more run), then the nightly ones."""
    first = offsite_runs[0]["offsite"]
    out = [
        f"Off-site copies (`bench.py offsite`, restic {first['restic']} through `rclone serve restic "
        "--append-only` over SSH to the same container, so no network in between): a backup, then "
        f"{len(first['nights']) - 1} nights, each changing about {first['change_pct']:g} % of the rows of the "
        "two big tables: "
        + "; ".join(f"`{name}`: {text}" for name, text in PATTERNS.items())
        + ". The push time and bytes are the scripts' own metrics; the repository is its size on disk.",
        "",
        "| engine | changes | night | set MiB | backup with push, wall s | push s | pushed MiB | repository MiB "
        "| growth MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    summary = []
    for run in offsite_runs:
        data = run["offsite"]
        nights, pattern = data["nights"], data["pattern"]
        previous, empty = data["repository_bytes_before"], not data["repository_initialized_before"]
        for n in nights:
            label = n["night"] or ("first" if empty else "0")
            growth = (n["repository_bytes"] - previous) / 2**20
            pushed = "n/a" if n["pushed_bytes"] is None else f"{n['pushed_bytes'] / 2**20:.1f}"
            push = "n/a" if n["push_s"] is None else f"{n['push_s']:.1f}"
            out.append(
                f"| {run['engine']} | {pattern} | {label} | {n['set_bytes'] / 2**20:.1f} | "
                f"{n['backup_wall_s']:.1f} | {push} | {pushed} | {n['repository_bytes'] / 2**20:.1f} | {growth:.1f} |"
            )
            previous = n["repository_bytes"]
            if n["push_s"] is None or n["pushed_bytes"] is None:
                problems.append(f"{run['engine']}: night {n['night']}'s push has no metrics")
        later = nights[1:]
        if not later:
            problems.append(f"{run['engine']}: no nightly push measured")
            continue
        grew = (nights[-1]["repository_bytes"] - nights[0]["repository_bytes"]) / 2**20
        summary.append(
            f"- **{run['engine']}, {pattern}**: push {nights[0]['push_s']:.1f} s for the "
            f"{nights[0]['set_bytes'] / 2**20:.1f} MiB set of night 0; nightly pushes "
            f"{spread([n['push_s'] for n in later], '{:.1f}')} s; the repository grew "
            f"{grew:.1f} MiB over {len(later)} nights ({grew / len(later):.1f} MiB a night, "
            f"{100 * grew / len(later) / (nights[0]['set_bytes'] / 2**20):.0f} % of a set), against "
            f"{sum(n['set_bytes'] for n in later) / 2**20:.1f} MiB of new local sets."
        )
    return [*out, "", *summary, ""]


# Point-in-time recovery (bench/playbooks/pitr.yml turns db_backup_pitr on): pgBackRest's
# commands as the role installs them, run as root as the schedule runs them.
PITR_BIN = "/usr/local/lib/djangoops/shop/bin"
PITR_REPOSITORY = "/var/lib/pgbackrest"
# The writes of the load: a few hundred articles counted as viewed per statement, anywhere.
LOAD = (
    "end=$((SECONDS + {seconds})); top=$(psql -X -qtA -d shop -c 'SELECT max(id) FROM blog_article'); "
    "while ((SECONDS < end)); do s=$(( (RANDOM * 32768 + RANDOM) % top )); "
    'psql -X -q -d shop -c "UPDATE blog_article SET view_count = view_count + 1, updated_at = now() '
    'WHERE id BETWEEN $s AND $s + 300" || exit 1; done'
)


def wal_segment_now(server):
    """The WAL segment that holds everything committed so far (the insert position's), with a
    commit record in it: pg_switch_wal() leaves a segment that holds nothing that matters
    (after a backup's own switch) unswitched, and it would never be archived."""
    return server.sql(
        "SELECT txid_current(); SELECT pg_walfile_name(pg_current_wal_insert_lsn())", database="postgres"
    ).split()[-1]


def wait_archived(server, segment, timeout=600):
    """Seconds until PostgreSQL counts SEGMENT (or a later one) as archived: pgBackRest's
    archive-push has answered for it (asynchronously, once it is in the repositories)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        last = server.sql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver", database="postgres")
        # Segment names are fixed-width hex (timeline, log, segment): on one timeline they sort.
        if last.strip()[:24] >= segment:
            return time.monotonic() - started
        time.sleep(0.2)
    raise RuntimeError(f"segment {segment} was not archived within {timeout} s")


def local_backups(server):
    """The backups in the stanza's local repository, oldest first, as pgBackRest's info gives
    them; read as postgres, as the role's commands run pgBackRest (root would leave its own
    log file)."""
    described = server.run("runuser -u postgres -- pgbackrest --stanza=main --repo=1 --output=json info").stdout
    return json.loads(described)[0]["backup"]


def repository_bytes(server):
    sizes = {}
    for part in ("archive", "backup"):
        sizes[part] = int(server.run(f"du -sb {PITR_REPOSITORY}/{part}").stdout.split()[0])
    return sizes


def pitr(args):
    """Point-in-time recovery's figures on a server whose cluster archives (bench/playbooks/
    pitr.yml): a full base backup beside a dump backup; how long a write committed under a
    steady load waits before it is archived; a restore to a time beside a dump restore (both
    checked row by row); then NIGHTS nights, each changing about CHANGE_PCT % of the rows and
    running the backup the schedule runs (auto: none while the night's WAL is small beside the
    cluster, else differential), with the repository's growth."""
    if args.engine != "postgresql":
        raise SystemExit("bench.py pitr: point-in-time recovery is built for PostgreSQL only so far")
    server = Server(args.engine, args.container)
    load_before = os.getloadavg()
    server.run(f"rm -rf {HOME}/db_backups/shop_* {HOME}/db_backups/latest")
    # The markers' table is the site's, as its other tables are: its user dumps them.
    server.sql(
        "DROP TABLE IF EXISTS bench_pitr; CREATE TABLE bench_pitr (n int PRIMARY KEY, at timestamptz); "
        "ALTER TABLE bench_pitr OWNER TO shop"
    )
    rows = server.row_counts()
    cluster = server.sql("SELECT sum(pg_database_size(oid)) FROM pg_database", database="postgres")
    out = {
        "engine": args.engine,
        "server_version": server.sql("SELECT version()").strip().splitlines()[0],
        "pgbackrest": server.run("pgbackrest version").stdout.strip(),
        "os": server.run("cat /etc/debian_version").stdout.strip(),
        "database_bytes": int(server.sql("SELECT pg_database_size('shop')").strip()),
        "cluster_bytes": int(cluster.strip()),
        "load_before": load_before,
    }
    # The base backup beside the dump (the project's backup_db.sh, which the restore below uses).
    out["full_backup"] = server.timed(f"{PITR_BIN}/pitr_backup_db.sh --type full --quiet", user="root")
    out["full_backup"]["repository_bytes"] = local_backups(server)[-1]["info"]["repository"]["delta"]
    out["dump_backup"] = server.timed("commands/backup_db.sh --quiet")
    out["dump_bytes"] = server.file_size(f"{HOME}/db_backups/latest")
    log(f"pitr: full backup {out['full_backup']['wall_s']:.1f} s, dump {out['dump_backup']['wall_s']:.1f} s")
    # A write's wait for the archive under load: a marker row committed every few seconds
    # while the load runs, timed until its WAL segment counts as archived.
    lsn_before = server.sql("SELECT pg_current_wal_lsn()", database="postgres").strip()
    load = subprocess.Popen(
        ["docker", "exec", "-u", "shop", "-w", "/", args.container, "bash", "-c",
         LOAD.format(seconds=args.load_seconds)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    started, waits, n = time.monotonic(), [], 0
    time.sleep(2)
    while time.monotonic() - started < args.load_seconds - 2:
        n += 1
        server.sql(f"INSERT INTO bench_pitr VALUES ({n}, clock_timestamp())")
        waits.append(wait_archived(server, wal_segment_now(server)))
        time.sleep(1)
    load_errors = load.communicate()[1]
    if load.returncode != 0:
        raise RuntimeError(f"the load failed ({load.returncode}): {load_errors[-2000:]}")
    wal = server.sql(f"SELECT pg_current_wal_lsn() - '{lsn_before}'::pg_lsn", database="postgres").strip()
    out["load"] = {"seconds": args.load_seconds, "wal_bytes": int(float(wal)), "archive_waits_s": waits}
    log(f"pitr: {n} writes under load archived after {spread(waits, '{:.1f}')} s; WAL {float(wal) / 2**20:.0f} MiB")
    if not waits:
        raise RuntimeError("no write was timed under load (--load-seconds too short)")
    # The restore to a time: T after the load's last write, one marker after T; both archived.
    moment = server.sql("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')")
    time.sleep(1)
    server.sql(f"INSERT INTO bench_pitr VALUES ({n + 1}, clock_timestamp())")
    segment = wal_segment_now(server)
    server.sql("SELECT pg_switch_wal()", database="postgres")
    wait_archived(server, segment)
    at_moment = {**server.row_counts(), "bench_pitr": n}
    result = server.timed(f"{PITR_BIN}/restore_db.sh --to-time '{moment.strip()}+00:00' --yes --quiet", user="root")
    after = server.row_counts()
    result["rows_match"] = all(after.get(t) == c for t, c in at_moment.items() if t != "django_session")
    out["restore_to_time"] = result
    # The dump restore, of the dump taken before the load (no markers in it).
    before_load = {**rows, "bench_pitr": 0}
    result = server.timed("commands/restore_db.sh latest --yes --quiet")
    after = server.row_counts()
    result["rows_match"] = all(after.get(t) == c for t, c in before_load.items() if t != "django_session")
    out["dump_restore"] = result
    reset_sessions(server)
    log(
        f"pitr: restore to a time {out['restore_to_time']['wall_s']:.1f} s (rows match "
        f"{out['restore_to_time']['rows_match']}), dump restore {out['dump_restore']['wall_s']:.1f} s "
        f"(rows match {out['dump_restore']['rows_match']})"
    )
    # The nights: the day's changes, then the backup the schedule takes, its WAL archived.
    nights = []
    for night in range(args.nights + 1):
        held = local_backups(server)
        if night:
            change(server, args.change_pct, args.pattern)
            # The day's WAL archived before the night's run, which measures it.
            segment = wal_segment_now(server)
            server.sql("SELECT pg_switch_wal()", database="postgres")
            wait_archived(server, segment)
            result = server.timed(f"{PITR_BIN}/pitr_backup_db.sh --quiet", user="root")
        else:
            # The week starts with a full backup: the restores above loaded the database twice,
            # WAL that the nights' runs would otherwise count since the first one.
            server.run(f"{PITR_BIN}/pitr_backup_db.sh --type full --quiet")
            result = {"wall_s": 0.0}
        segment = wal_segment_now(server)
        server.sql("SELECT pg_switch_wal()", database="postgres")
        wait_archived(server, segment)
        after = local_backups(server)
        # auto takes no backup on a night whose WAL is small beside the cluster. (Not by count:
        # a new full backup retires the oldest.)
        newest = after[-1]["type"] if after[-1]["label"] != held[-1]["label"] else "none"
        nights.append({"night": night, "backup_wall_s": result["wall_s"], "kind": newest, **repository_bytes(server)})
        log(f"pitr night {night}: {newest} backup {result['wall_s']:.1f} s, repository {nights[-1]}")
    out["nights"] = {"pattern": args.pattern, "change_pct": args.change_pct, "list": nights}
    Path(args.json).write_text(json.dumps({"pitr": out}, indent=2) + "\n")
    log(f"pitr: results in {args.json}")


def pitr_report(pitr_runs, problems):
    """The point-in-time recovery table: per run (a change pattern), the base backup beside the
    dump, a write's wait for the archive under load, the restore to a time beside the dump
    restore, and the repository's growth per night."""
    first = pitr_runs[0]
    out = [
        f"Point-in-time recovery (`bench.py pitr`, {first['pgbackrest']} with its local repository; "
        f"PostgreSQL {first['server_version'].split()[1]}): the database {first['database_bytes'] / 2**20:.0f} MiB, "
        f"the cluster {first['cluster_bytes'] / 2**20:.0f} MiB. A full base backup (`pitr_backup_db.sh --type full`) "
        "beside the dump (`backup_db.sh`); a write committed every few seconds under a steady load of updates, "
        "timed until PostgreSQL counts its WAL segment archived; a restore to a time just after the load "
        "(`restore_db.sh --to-time`, the cluster recovered aside, the database swapped in) beside a restore of "
        "the dump, each checked table by table; then nights, each changing about "
        f"{first['nights']['change_pct']:g} % of the rows and taking the backup the schedule takes.",
        "",
        "| changes | full backup s | dump backup s | write archived after s (load WAL MiB/s) | restore to a time s "
        "| dump restore s | restore ratio, to a time/dump | growth per night MiB | % of the database | target ≤ 5 % |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for run in pitr_runs:
        nights = run["nights"]["list"]
        later = nights[1:]
        total = [n["archive"] + n["backup"] for n in nights]
        growth = [(b - a) / 2**20 for a, b in itertools.pairwise(total)]
        percent = [100 * g * 2**20 / run["database_bytes"] for g in growth]
        met = "yes" if percent and statistics.median(percent) <= 5 else "**no**"
        load = run["load"]
        ratio = run["restore_to_time"]["wall_s"] / run["dump_restore"]["wall_s"]
        out.append(
            f"| {run['nights']['pattern']} | {run['full_backup']['wall_s']:.1f} | {run['dump_backup']['wall_s']:.1f} "
            f"| {spread(load['archive_waits_s'], '{:.1f}')} ({load['wal_bytes'] / 2**20 / load['seconds']:.1f}) "
            f"| {run['restore_to_time']['wall_s']:.1f} | {run['dump_restore']['wall_s']:.1f} | {ratio:.2f} "
            f"| {spread(growth, '{:.1f}')} | {spread(percent, '{:.1f}')} | {met} |"
        )
        if not later:
            problems.append(f"pitr ({run['nights']['pattern']}): no night measured")
        for what in ("restore_to_time", "dump_restore"):
            if not run[what]["rows_match"]:
                problems.append(f"pitr ({run['nights']['pattern']}): {what} did not bring back every table's rows")
        if later:
            # What the nights added, apart: the archived WAL and the backups.
            wal = (later[-1]["archive"] - nights[0]["archive"]) / len(later) / 2**20
            backups = (later[-1]["backup"] - nights[0]["backup"]) / len(later) / 2**20
            kinds = sorted({n["kind"] for n in later})
            full = run["full_backup"].get("repository_bytes")
            weekly = (
                f"; the full backup, weekly by default, stored {full / 2**20:.1f} MiB, a seventh of which is "
                f"{100 * full / 7 / run['database_bytes']:.1f} % of the database"
                if full
                else ""
            )
            notes.append(
                f"- **{run['nights']['pattern']}**: per night, the archived WAL grew {wal:.1f} MiB "
                f"({100 * wal * 2**20 / run['database_bytes']:.1f} % of the database) and the backups the "
                f"nightly runs took ({', '.join(kinds)}; {spread([n['backup_wall_s'] for n in later], '{:.1f}')} s "
                f"each run) {backups:.1f} MiB ({100 * backups * 2**20 / run['database_bytes']:.1f} %); the dump was "
                f"{run['dump_bytes'] / 2**20:.1f} MiB{weekly}."
            )
    return [*out, "", *notes, ""]


def chart(runs, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs), figsize=(5.5 * len(runs), 5.0), squeeze=False)
    colors = {"seed": "#b0b0b0", "project": "#2b7bba", "dbbackup": "#e08a3c", "floor": "#6ab04c", "zstd": "#9ccf7f",
              "previous": "#8fb8de"}  # fmt: skip
    for ax, run in zip(axes[0], runs, strict=False):
        col, _ratios = summarize(run)
        groups = ["backup", "restore"]
        methods = methods_of(run)
        width = 0.8 / len(methods)
        for i, method in enumerate(methods):
            meds, errs = [], [[], []]
            for phase in groups:
                vals = [v for v in col(method, phase, "wall_s") if v is not None]
                m = statistics.median(vals) if vals else 0
                meds.append(m)
                errs[0].append(m - min(vals) if vals else 0)
                errs[1].append(max(vals) - m if vals else 0)
            xs = [g + (i - (len(methods) - 1) / 2) * width for g in range(len(groups))]
            ax.bar(xs, meds, width, yerr=errs, capsize=3, color=colors[method], label=label(run, method))
            if method == "project":
                loads = [v for v in col(method, "restore", "load_s") if v is not None]
                if loads:
                    ax.bar(
                        xs[1],
                        statistics.median(loads),
                        width,
                        fill=False,
                        hatch="//",
                        label="project restore: load phase",
                    )
        ax.set_xticks(range(len(groups)), groups)
        ax.set_ylabel("wall time, s (median, min-max)")
        ax.set_title(f"{run['engine']}, {run['raw_dump_bytes'] / 2**20:.0f} MiB dump, {run['rounds']} rounds")
    # One legend for both engines, below the plots, where it hides no bar.
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize="small")
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    fig.savefig(path, dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("measure")
    m.add_argument("engine", choices=["postgresql", "mysql"])
    m.add_argument("container")
    m.add_argument("--size-mb", type=float, default=500)
    m.add_argument("--rounds", type=int, default=3)
    m.add_argument("--json", required=True)
    m.add_argument("--previous", metavar="CONTAINER", help="a container with an earlier version of the scripts")
    m.add_argument("--previous-ref", default="previous", help="that version, as the report names it")
    # offsite and pitr: nights of changes on a server.
    for name in ("offsite", "pitr"):
        n = sub.add_parser(name)
        n.add_argument("engine", choices=["postgresql", "mysql"])
        n.add_argument("container")
        n.add_argument("--nights", type=int, default=5)
        n.add_argument("--change-pct", type=float, default=1.0)
        n.add_argument("--pattern", choices=sorted(PATTERNS), default="uniform")
        n.add_argument("--json", required=True)
        if name == "pitr":
            n.add_argument("--load-seconds", type=int, default=60)
    s = sub.add_parser("site")
    s.add_argument("inventory")
    s.add_argument("--json", required=True)
    r = sub.add_parser("report")
    r.add_argument("json", nargs="+")
    r.add_argument("--markdown", required=True)
    r.add_argument("--png")
    r.add_argument("--check", action="store_true")
    args = parser.parse_args()
    {"measure": measure, "offsite": offsite, "pitr": pitr, "site": site, "report": report}[args.command](args)


if __name__ == "__main__":
    main()
