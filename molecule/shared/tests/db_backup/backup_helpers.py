"""Helpers for the backup scenarios' tests (db_backup's, and offsite's): engine-specific
SQL run as the database superuser, the test database's name and credentials, ps samples
taken while a script runs, the files that hold a secret, the scripts' logs, and playbooks run
from the controller."""

import json
import os
import subprocess
from pathlib import Path

import yaml
from shop_project import COMMANDS, HOME, LOGS, quote

ROOT = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
VARS = yaml.safe_load((ROOT / "molecule/shared/playbooks/vars/backup.yml").read_text())
BACKUPS = f"{HOME}/db_backups"
DB_NAME = VARS["test_db_name"]
DB_USER = VARS["test_db_user"]
PASSWORD = VARS["test_db_password"]


class Engine:
    service = ""

    def __init__(self, host):
        self.host = host

    def stop(self):
        # Some releases socket-activate the server (MariaDB 10.11 on Debian 12):
        # the socket unit must stop too, or the next connection starts it again.
        self.host.run(f"systemctl stop {self.service}.socket")
        # Debian's postgresql.service only stands for the clusters, postgresql@VERSION-main:
        # stopping it returns before they are down, and a script started then still
        # connected (and its dump was refused a moment later). So the real units too.
        self.host.run_expect([0], f"systemctl stop {self.service}.service '{self.service}@*.service'")

    def start(self):
        self.host.run_expect([0], f"systemctl start {self.service}.service")


class PostgreSQL(Engine):
    service = "postgresql"
    dump_process = "pg_dump"
    checksum_sql = (
        "SELECT md5(string_agg(concat_ws('|', id, name, body, data::text, created), '#' ORDER BY id)) FROM catalog_item"
    )
    damage_sql = "UPDATE catalog_item SET name = 'damaged' WHERE id < 50; DELETE FROM catalog_item WHERE id > 400"

    # SQL goes on stdin: a command line (and runuser's journal entry) would show it.
    # SOCKET_DIR and PORT reach another cluster than the server's own (a scratch one).
    def sql(self, statement, database=DB_NAME, check=True, socket_dir=None, port=None):
        where = f" -h {quote(socket_dir)} -p {int(port)}" if port else ""
        result = self.host.run(
            "printf '%%s' %s | runuser -u postgres -- env PGDATABASE=%s psql -X -tA -v ON_ERROR_STOP=1" + where,
            statement,
            database,
        )
        if check:
            assert result.rc == 0, result.stderr
        return result.stdout.strip()

    def client_command(self):
        return f"runuser -u postgres -- env PGDATABASE={quote(DB_NAME)} psql -X -q -v ON_ERROR_STOP=1"

    def database_exists(self, name):
        literal = "'" + name.replace("'", "''") + "'"
        return self.sql(f"SELECT count(*) FROM pg_database WHERE datname = {literal}", database="postgres") == "1"

    def table_exists(self, name):
        return self.sql(f"SELECT to_regclass('public.{name}') IS NOT NULL") == "t"

    def set_password(self, password):
        user = '"' + DB_USER.replace('"', '""') + '"'
        literal = "'" + password.replace("'", "''") + "'"
        self.sql(f"ALTER ROLE {user} PASSWORD {literal}", database="postgres")

    def set_createdb(self, allowed):
        user = '"' + DB_USER.replace('"', '""') + '"'
        self.sql(f"ALTER ROLE {user} {'CREATEDB' if allowed else 'NOCREATEDB'}", database="postgres")

    def lock_table_command(self, seconds):
        return (
            f"runuser -u postgres -- env PGDATABASE={quote(DB_NAME)} psql -X -q -c "
            f'"BEGIN; LOCK TABLE catalog_item IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep({seconds});"'
        )

    def release_locks(self):
        self.sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE query LIKE '%pg_sleep%' AND pid <> pg_backend_pid()",
            database="postgres",
        )

    def other_user_session_command(self, seconds):
        """A superuser's session left open on the site's database, as a forgotten psql is."""
        return f'runuser -u postgres -- env PGDATABASE={quote(DB_NAME)} psql -X -q -c "SELECT pg_sleep({seconds})"'

    def indexes(self, table):
        return self.sql(
            f"SELECT string_agg(indexdef, ';' ORDER BY indexname) FROM pg_indexes WHERE tablename = '{table}'"
        )


class MariaDB(Engine):
    service = "mariadb"
    dump_process = "mariadb-dump"
    checksum_sql = (
        "SET SESSION group_concat_max_len = 1073741824; "
        "SELECT MD5(GROUP_CONCAT(CONCAT_WS('|', id, name, body, data, created) ORDER BY id SEPARATOR '#')) "
        "FROM catalog_item"
    )
    damage_sql = "UPDATE catalog_item SET name = 'damaged' WHERE id < 50; DELETE FROM catalog_item WHERE id > 400"

    def sql(self, statement, database=DB_NAME, check=True):
        args = ["mariadb --default-character-set=utf8mb4 --batch --skip-column-names"]
        if database:
            args.append(f"--database={quote(database)}")
        result = self.host.run("printf '%%s' %s | " + " ".join(args), statement)
        if check:
            assert result.rc == 0, result.stderr
        return result.stdout.strip()

    def client_command(self):
        return f"mariadb --default-character-set=utf8mb4 --database={quote(DB_NAME)}"

    def database_exists(self, name):
        literal = "'" + name.replace("\\", "\\\\").replace("'", "\\'") + "'"
        return (
            self.sql(f"SELECT count(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {literal}", database=None)
            == "1"
        )

    def table_exists(self, name):
        return self.sql(f"SELECT count(*) FROM information_schema.TABLES WHERE TABLE_NAME = '{name}'") == "1"

    def set_password(self, password):
        user = "'" + DB_USER.replace("\\", "\\\\").replace("'", "\\'") + "'"
        literal = "'" + password.replace("\\", "\\\\").replace("'", "\\'") + "'"
        for client_host in ("localhost", "127.0.0.1"):
            self.sql(f"ALTER USER {user}@'{client_host}' IDENTIFIED BY {literal}", database=None)

    def lock_table_command(self, seconds):
        return (
            f"mariadb --default-character-set=utf8mb4 --database={quote(DB_NAME)} -e "
            f'"LOCK TABLES catalog_item WRITE; SELECT SLEEP({seconds});"'
        )

    def release_locks(self):
        ids = self.sql("SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT SLEEP%'", database=None)
        for thread in ids.split():
            self.sql(f"KILL {thread}", database=None, check=False)

    def other_user_session_command(self, seconds):
        """root's transaction left open on a table of the site (it holds a metadata lock)."""
        return (
            f"mariadb --default-character-set=utf8mb4 --database={quote(DB_NAME)} -e "
            f'"BEGIN; SELECT COUNT(*) FROM catalog_item; SELECT SLEEP({seconds});"'
        )

    def indexes(self, table):
        return self.sql(
            "SELECT GROUP_CONCAT(CONCAT_WS(' ', INDEX_NAME, COLUMN_NAME, NON_UNIQUE) ORDER BY INDEX_NAME, SEQ_IN_INDEX)"
            f" FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '{table}'"
        )


def sample_ps_during(host, command, out="/root/ps.txt"):
    """Runs COMMAND (a script of commands/, with its arguments) while ps records every
    process's arguments, again and again until it ends: (its result, the samples)."""
    result = host.run(
        f"{COMMANDS}/{command} </dev/null & pid=$!; : > {out}; "
        f"while kill -0 $pid 2>/dev/null; do ps -eo args >> {out}; done; wait $pid"
    )
    return result, host.file(out).content_string


# Everywhere a script, a client tool or a server could write something down.
WRITABLE_PLACES = "/home /root /tmp /var /etc /srv /opt /usr/local /dev/shm /run"


def files_holding(host, *needles):
    """Every file in WRITABLE_PLACES that holds any of NEEDLES: one pass over them all (each
    pass reads the database servers' files, the virtualenvs and the logs)."""
    patterns = " ".join(["-e %s"] * len(needles))
    result = host.run(f"grep -rlF -D skip {patterns} -- {WRITABLE_PLACES}", *needles)
    return {path for path in result.stdout.split("\n") if path}


def last_log_lines(host, script, n=15):
    return host.run(f"tail -n {n} {LOGS}/{script}.log").stdout


def playbook(*args, inventory=None):
    """ansible-playbook from the controller, on the scenario's inventory (or another)."""
    return subprocess.run(
        ["ansible-playbook", "-i", str(inventory or os.environ["MOLECULE_INVENTORY_FILE"]), *args],
        capture_output=True,
        text=True,
        cwd=str(ROOT),
        check=False,
    )


def recovery_vars(tmp_path, **more):
    """A file of extra variables for playbooks/recover.yml: what the inventory and the vault
    hold for the site's database (the credentials converge_backup.yml gives the role), its
    name confirmed, and MORE; returns its path for `-e @PATH`."""
    path = tmp_path / "vars.json"
    values = {
        "db_backup_database_name": DB_NAME,
        "db_backup_database_user": VARS["test_db_user"],
        "db_backup_database_password": VARS["test_db_password"],
        "db_backup_database_host": "127.0.0.1",
        "confirm_database": DB_NAME,
    }
    path.write_text(json.dumps({**values, **more}))
    return path
