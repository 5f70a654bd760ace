# shellcheck shell=bash
# shellcheck disable=SC2034 # ENGINE_* are read by lib/db.sh, which sources this file
# djangoops.maintenance (role db_backup): lib/engine_postgresql.sh, the engine_*
# functions of lib/db.sh for PostgreSQL, which sources this file when DB_ENGINE is postgresql.
# --- engine: PostgreSQL ------------------------------------------------------------
# Connection parameters travel in PG* environment variables (exact, no quoting
# rules) and the password in a pgpass file: nothing secret on a command line.

# The Django ENGINE values these scripts accept (CREDENTIALS_SOURCE=django).
ENGINE_DJANGO_PATTERN='\.(postgresql(_psycopg2)?|postgis)$'

ENGINE_DUMP_NAME=pg_dump

# pgpass line for any host/port/database/user: ':' and '\' are escaped.
engine_write_client_file() {
  local p=${1//\\/\\\\}
  p=${p//:/\\:}
  printf '*:*:*:*:%s\n' "$p"
}

engine_connection_setup() {
  export PGPASSFILE=$CONN_FILE PGDATABASE=$DB_NAME PGUSER=$DB_USER PGCONNECT_TIMEOUT=10
  export PGAPPNAME="djangoops $SCRIPT_NAME" PGOPTIONS="-c client_min_messages=warning"
  unset PGPASSWORD PGSERVICE PGSERVICEFILE
  if [[ -n $DB_HOST ]]; then export PGHOST=$DB_HOST; else unset PGHOST; fi
  if [[ -n $DB_PORT && $DB_PORT != 0 ]]; then export PGPORT=$DB_PORT; else unset PGPORT; fi
}

# psql_on DATABASE ARGS...: psql against another database of the same server;
# every lock it waits for is waited for at most DB_LOCK_TIMEOUT seconds.
psql_on() {
  local db=$1
  shift
  PGDATABASE=$db PGOPTIONS="$PGOPTIONS -c lock_timeout=${DB_LOCK_TIMEOUT}s" psql -X -q -v ON_ERROR_STOP=1 "$@"
}

# maintenance SQL...: psql on the maintenance database, errors kept in
# engine.err for the message that explains a refusal.
maintenance() { psql_on "$PG_MAINTENANCE_DB" "$@" 2>"$RUN_DIR/engine.err"; }

engine_check_connection() {
  local err
  if ! err=$(psql -X -tA -c 'SELECT 1' 2>&1 >/dev/null); then
    die "$EXIT_DB_UNAVAILABLE" "cannot connect to database \"$DB_NAME\" as \"$DB_USER\" on ${DB_HOST:-the local socket}: ${err//$'\n'/ }"
  fi
}

# Restore checks the server through the maintenance database: the project's
# database may be missing after a failed restore, and restoring must still work.
engine_check_server() {
  local err
  if ! err=$(psql_on "$PG_MAINTENANCE_DB" -tA -c 'SELECT 1' 2>&1 >/dev/null); then
    die "$EXIT_DB_UNAVAILABLE" "cannot connect to the PostgreSQL server as \"$DB_USER\" (database $PG_MAINTENANCE_DB): ${err//$'\n'/ }"
  fi
}

# Sessions on DATABASE other than this one, one per line: pid, user,
# application, and whether this user may end them (t/f). Background workers
# (autovacuum) are left out: PostgreSQL ends them itself on RENAME and DROP.
sessions_on() {
  psql_on "$PG_MAINTENANCE_DB" -tA -F $'\t' -v db="$1" <<'SQL'
SELECT a.pid, r.rolname, coalesce(nullif(a.application_name, ''), '-'),
       (me.rolsuper OR (pg_has_role(current_user, a.usesysid, 'MEMBER') AND NOT r.rolsuper))
FROM pg_stat_activity a JOIN pg_roles r ON r.oid = a.usesysid
CROSS JOIN (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) me
WHERE a.datname = :'db' AND a.pid <> pg_backend_pid()
ORDER BY a.pid;
SQL
}

# Everything the restore will need, checked before anything is created: the
# right to create databases, ownership of the live one (to set it aside), and
# no session on it that this user may not end.
engine_restore_precheck() {
  local live=$1 rights may_create owns owner sessions pid user app mine blockers=()
  rights=$(psql_on "$PG_MAINTENANCE_DB" -tA -F $'\t' -v db="$DB_NAME" <<'SQL'
SELECT r.rolcreatedb OR r.rolsuper,
       coalesce((SELECT pg_has_role(current_user, d.datdba, 'MEMBER') OR r.rolsuper FROM pg_database d WHERE d.datname = :'db'), true),
       coalesce((SELECT pg_get_userbyid(d.datdba) FROM pg_database d WHERE d.datname = :'db'), '')
FROM pg_roles r WHERE r.rolname = current_user;
SQL
) || die "$EXIT_DB_UNAVAILABLE" "could not read the privileges of \"$DB_USER\""
  IFS=$'\t' read -r may_create owns owner <<<"$rights"
  [[ $may_create == t ]] ||
    die "$EXIT_CONFIG" "user \"$DB_USER\" may not create databases (CREATEDB), so it cannot load the backup beside \"$DB_NAME\"; nothing was changed"
  [[ $owns == t ]] ||
    die "$EXIT_CONFIG" "user \"$DB_USER\" does not own database \"$DB_NAME\" (its owner is \"$owner\"), so it cannot set it aside; make it the owner (ALTER DATABASE ... OWNER TO ...) or restore as the owner; nothing was changed"
  ((live)) || return 0
  sessions=$(sessions_on "$DB_NAME") || die "$EXIT_DB_UNAVAILABLE" "could not list the sessions on \"$DB_NAME\""
  while IFS=$'\t' read -r pid user app mine; do
    [[ -n $pid && $mine == f ]] && blockers+=("pid $pid (user \"$user\", $app)")
  done <<<"$sessions"
  ((${#blockers[@]} == 0)) ||
    die "$EXIT_REFUSED" "database \"$DB_NAME\" is in use by sessions that user \"$DB_USER\" may not end: ${blockers[*]}; end them (as their user or a superuser: SELECT pg_terminate_backend(PID)) and run the restore again; nothing was changed"
}

# Ends this user's own sessions on DATABASE (the site's, a left-over psql).
end_own_sessions() {
  psql_on "$PG_MAINTENANCE_DB" -tA -v db="$1" >/dev/null 2>>"$RUN_DIR/engine.err" <<'SQL'
SELECT pg_terminate_backend(a.pid)
FROM pg_stat_activity a JOIN pg_roles r ON r.oid = a.usesysid
CROSS JOIN (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) me
WHERE a.datname = :'db' AND a.pid <> pg_backend_pid()
  AND (me.rolsuper OR (pg_has_role(current_user, a.usesysid, 'MEMBER') AND NOT r.rolsuper));
SQL
}

engine_list_databases() {
  psql_on "$PG_MAINTENANCE_DB" -tA -v prefix="$1" <<<"SELECT datname FROM pg_database WHERE starts_with(datname, :'prefix') ORDER BY 1" 2>/dev/null
}

# A query error is not "the database does not exist": that would skip the safety backup.
engine_database_exists() {
  local found
  found=$(psql_on "$PG_MAINTENANCE_DB" -tA -v db="$1" <<<"SELECT count(*) FROM pg_database WHERE datname = :'db'") ||
    die "$EXIT_DB_UNAVAILABLE" "could not check whether database \"$1\" exists"
  [[ $found == 1 ]]
}

# A parallel restore reads a seekable file: decompress it before anything is
# dropped, so a full disk stops the run while the database is still intact.
STAGED=""
engine_stage() {
  [[ $1 == *.pgdump.* ]] && ((RESTORE_JOBS > 1)) || return 0
  STAGED="$BACKUPS_DIR/.restore.$$.partial"
  cleanup_on_exit "$STAGED"
  info "decompressing ${1##*/} for a parallel restore"
  decompress "$1" >"$STAGED" ||
    die "$EXIT_NO_SPACE" "could not decompress ${1##*/} into $BACKUPS_DIR$(no_space_hint); nothing was changed"
}

engine_dump() {
  local table args=()
  for table in "${EXCLUDED_TABLE_DATA[@]}"; do
    args+=("--exclude-table-data=$table")
  done
  [[ -z $DUMP_SNAPSHOT ]] || args+=("--snapshot=$DUMP_SNAPSHOT")
  if [[ $POSTGRESQL_FORMAT == custom ]]; then
    PGDATABASE=${DUMP_DB:-$DB_NAME} pg_dump --format=custom --compress=0 "${args[@]}"
  else
    PGDATABASE=${DUMP_DB:-$DB_NAME} pg_dump --format=plain "${args[@]}"
  fi
}

# The SQL text of a plain-format dump on stdin, to the row counter.
engine_count_stream() { python3 "$MANIFEST_TOOL" count postgresql; }

# A custom-format archive is not read back to count its rows (pg_restore would
# render it as SQL text for the counter: more CPU than compressing it). The rows
# are counted inside the very snapshot pg_dump reads, while pg_dump runs: one
# session exports a snapshot (pg_export_snapshot), pg_dump --snapshot and a
# counting session import it. The archive's table of contents then says which
# tables' rows it holds.
#
# No session of ours holds a table lock while it waits for another process:
# the exporting one touches no table (it only keeps the snapshot alive until
# pg_dump has ended), and the counting one holds its ACCESS SHARE locks only
# while it counts. A migration waiting for a lock therefore waits as it would
# for pg_dump alone, never in a circle through this script.
engine_counts_in_snapshot() { [[ $POSTGRESQL_FORMAT == custom ]]; }

# Every table's name (as pg_dump names it) and row count, for a SELECT: what the
# snapshot counts for the manifest and what a test restore is compared with.
PG_TABLE_ROWS="format('%I.%I', n.nspname, c.relname),
       (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM ONLY %I.%I', n.nspname, c.relname), false, true, '')))[1]::text
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'"

DUMP_SNAPSHOT=""
SNAP_PROCESS=""
SNAP_COUNTER=""
# engine_snapshot_begin: exports the snapshot into DUMP_SNAPSHOT (engine_dump
# passes it to pg_dump) and starts the counting session in the background.
engine_snapshot_begin() {
  local db=${DUMP_DB:-$DB_NAME}
  coproc PG_SNAP { PGDATABASE=$db psql -X -q -tA -v ON_ERROR_STOP=1 2>"$RUN_DIR/snapshot.err"; }
  SNAP_PROCESS=$PG_SNAP_PID
  exec {SNAP_IN}<&"${PG_SNAP[0]}" {SNAP_OUT}>&"${PG_SNAP[1]}"
  printf '%s\n' 'BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;' 'SELECT pg_export_snapshot();' >&"$SNAP_OUT"
  if ! IFS= read -r -u "$SNAP_IN" DUMP_SNAPSHOT || [[ -z $DUMP_SNAPSHOT ]]; then
    die "$EXIT_DB_UNAVAILABLE" "could not take a snapshot of database \"$db\" to dump: $(tail -n 2 "$RUN_DIR/snapshot.err" | tr '\n' ' ')"
  fi
  PGDATABASE=$db psql -X -q -tA -F $'\t' -v ON_ERROR_STOP=1 -v snapshot="$DUMP_SNAPSHOT" \
    >"$RUN_DIR/snapshot.tsv" 2>"$RUN_DIR/count.err" <<SQL &
BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;
SET TRANSACTION SNAPSHOT :'snapshot';
SELECT c.oid, $PG_TABLE_ROWS;
COMMIT;
SQL
  SNAP_COUNTER=$!
}

# engine_snapshot_abandon: after a failed dump, the sessions end.
engine_snapshot_abandon() {
  [[ -z $SNAP_COUNTER ]] || kill "$SNAP_COUNTER" 2>/dev/null || true
  [[ -z $SNAP_PROCESS ]] || kill "$SNAP_PROCESS" 2>/dev/null || true
}

# engine_snapshot_counts FILE NAME: once pg_dump has ended, the counts (JSON,
# as the stream counter writes them) for the archive FILE (named NAME).
engine_snapshot_counts() {
  local statuses
  wait "$SNAP_COUNTER" || { echo "counting in the dump's snapshot failed: $(tail -n 2 "$RUN_DIR/count.err" | tr '\n' ' ')" >&2; return 1; }
  SNAP_COUNTER=""
  # The snapshot is released only now: pg_dump has imported it and ended.
  printf 'COMMIT;\n\\q\n' >&"$SNAP_OUT"
  exec {SNAP_IN}<&- {SNAP_OUT}>&-
  wait "$SNAP_PROCESS" || { echo "the snapshot's session failed: $(tail -n 2 "$RUN_DIR/snapshot.err" | tr '\n' ' ')" >&2; return 1; }
  SNAP_PROCESS=""
  DUMP_SNAPSHOT=""
  # pg_restore reads only the table of contents, then stops reading.
  decompress "$1" "$2" 2>/dev/null | pg_restore --list >"$RUN_DIR/toc.txt"
  statuses=("${PIPESTATUS[@]}")
  ((statuses[1] == 0)) || { echo "pg_restore could not read the archive's table of contents" >&2; return 1; }
  python3 "$MANIFEST_TOOL" snapshot-counts "$RUN_DIR/snapshot.tsv" "$RUN_DIR/toc.txt"
}

# Runs "$@" with what the manifest needs to recreate the database as it was.
engine_manifest_fields() {
  local info enc coll ctype version
  info=$(PGDATABASE=${DUMP_DB:-$DB_NAME} psql -X -tA -F $'\t' -c "SELECT pg_encoding_to_char(encoding), datcollate, datctype, current_setting('server_version') FROM pg_database WHERE datname = current_database()")
  IFS=$'\t' read -r enc coll ctype version <<<"$info"
  MANIFEST_ENCODING=$enc MANIFEST_COLLATE=$coll MANIFEST_CTYPE=$ctype MANIFEST_SERVER_VERSION=$version "$@"
}

# engine_create_database DATABASE BACKUP: a new, empty database with the
# encoding and locale the backup's database had. Errors in engine.err.
engine_create_database() {
  local db=$1 backup=$2 enc coll ctype
  enc=$(manifest_get "$backup" encoding) || return
  coll=$(manifest_get "$backup" collate) || return
  ctype=$(manifest_get "$backup" ctype) || return
  if [[ -z $enc || -z $coll || -z $ctype ]]; then
    echo "the manifest of ${backup##*/} lacks the database's encoding or locale" >"$RUN_DIR/engine.err"
    return 1
  fi
  info "creating database \"$db\""
  maintenance -v db="$db" -v enc="$enc" -v coll="$coll" -v ctype="$ctype" <<'SQL'
CREATE DATABASE :"db" TEMPLATE template0 ENCODING :'enc' LC_COLLATE :'coll' LC_CTYPE :'ctype';
SQL
}

# Drops one of the scripts' own databases (never the live one). Plain DROP, not
# WITH (FORCE): PostgreSQL stops an autovacuum worker on it by itself, while
# FORCE needs the right to end every session, which a site user lacks.
engine_drop_database() {
  end_own_sessions "$1"
  maintenance -v db="$1" <<<'DROP DATABASE IF EXISTS :"db";'
}

engine_allow_connections() {
  maintenance -v db="$1" <<<'ALTER DATABASE :"db" ALLOW_CONNECTIONS true;'
}

# engine_swap LIVE NEW ASIDE: lock the site out of LIVE (no new connections,
# its sessions ended), carry its sequences over to NEW so that no id is handed
# out twice, then rename LIVE to ASIDE and NEW to LIVE in one transaction.
# On failure LIVE takes connections again and nothing has changed.
engine_swap() {
  local live=$1 new=$2 aside=$3 hold_pid line hold_in hold_out hold_process
  # A session of our own on LIVE reads its sequences once nobody else writes.
  # Its pipes are duplicated: bash closes a coprocess's own when it ends.
  coproc PG_HOLD { PGDATABASE=$live psql -X -q -tA -v ON_ERROR_STOP=1 2>>"$RUN_DIR/engine.err"; }
  hold_process=$PG_HOLD_PID
  exec {hold_in}<&"${PG_HOLD[0]}" {hold_out}>&"${PG_HOLD[1]}"
  printf 'SELECT pg_backend_pid();\n' >&"$hold_out"
  read -r -t "$DB_LOCK_TIMEOUT" -u "$hold_in" hold_pid || { echo "could not connect to \"$live\"" >>"$RUN_DIR/engine.err"; return 1; }
  RESTORE_LOCKED=1
  maintenance -tA -v db="$live" -v hold="$hold_pid" >/dev/null <<'SQL' || { swap_reopen "$live"; return 1; }
ALTER DATABASE :"db" ALLOW_CONNECTIONS false;
SELECT pg_terminate_backend(a.pid)
FROM pg_stat_activity a JOIN pg_roles r ON r.oid = a.usesysid
CROSS JOIN (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) me
WHERE a.datname = :'db' AND a.pid NOT IN (pg_backend_pid(), :hold)
  AND (me.rolsuper OR (pg_has_role(current_user, a.usesysid, 'MEMBER') AND NOT r.rolsuper));
SQL
  info "database \"$live\" takes no connections from $(date '+%H:%M:%S'): every write acknowledged before this moment is in the safety copy, and the site is down until the swap"
  cat >&"$hold_out" <<'SQL'
SELECT format('SELECT setval(%L, %s, true) FROM pg_sequences WHERE schemaname = %L AND sequencename = %L AND coalesce(last_value, 0) < %s;',
              format('%I.%I', schemaname, sequencename), last_value, schemaname, sequencename, last_value)
FROM pg_sequences WHERE last_value IS NOT NULL;
\echo __djangoops_end__
\q
SQL
  : >"$RUN_DIR/sequences.sql"
  while IFS= read -r -t "$DB_LOCK_TIMEOUT" -u "$hold_in" line; do
    [[ $line == __djangoops_end__ ]] && break
    printf '%s\n' "$line" >>"$RUN_DIR/sequences.sql"
  done
  exec {hold_in}<&- {hold_out}>&-
  wait "$hold_process" 2>/dev/null || true
  psql_on "$new" -tA >/dev/null 2>>"$RUN_DIR/engine.err" <"$RUN_DIR/sequences.sql" || { swap_reopen "$live"; return 1; }
  end_own_sessions "$new"
  maintenance -v live="$live" -v new="$new" -v aside="$aside" <<'SQL' || { swap_reopen "$live"; return 1; }
BEGIN;
ALTER DATABASE :"live" RENAME TO :"aside";
ALTER DATABASE :"new" RENAME TO :"live";
COMMIT;
SQL
  RESTORE_LOCKED=0
  info "swapped: database \"$live\" holds the restored backup and takes connections; the old one is $aside"
}

# After a refused swap: the live database takes connections again.
swap_reopen() {
  RESTORE_LOCKED=0
  psql_on "$PG_MAINTENANCE_DB" -v db="$1" <<<'ALTER DATABASE :"db" ALLOW_CONNECTIONS true;' 2>>"$RUN_DIR/engine.err" ||
    log ERROR "database \"$1\" still refuses connections: ALTER DATABASE ... ALLOW_CONNECTIONS true as its owner"
}

# engine_swap_undo LIVE NEW ASIDE: the restore was stopped during the swap.
# The rename is one transaction, so LIVE is either the old or the new
# database; reopen it, and drop NEW if it is still a work database.
engine_swap_undo() {
  local live=$1 new=$2
  [[ ${RESTORE_LOCKED:-0} == 1 ]] && swap_reopen "$live"
  if [[ -n $(engine_list_databases "$new") ]]; then
    engine_drop_database "$new" || true
    return 0
  fi
  return 1
}

# engine_put_in_place NEW LIVE: no live database to set aside (a new server).
engine_put_in_place() {
  end_own_sessions "$1"
  maintenance -v new="$1" -v live="$2" <<<'ALTER DATABASE :"new" RENAME TO :"live";'
}

# PostgreSQL renames whole databases: anything a dump can hold moves with them.
engine_check_movable() { :; }

# Every statement here waits at most DB_LOCK_TIMEOUT, and the renames are one
# transaction that ends with its session: nothing to stop.
engine_stop_own_statements() { :; }

# engine_load BACKUP DATABASE: stops at the first error; the tools' messages
# go to load.err, for the log.
engine_load() {
  local backup=$1 db=$2 conninfo quoted err="$RUN_DIR/load.err"
  # A conninfo string: the database name quoted, whatever it contains.
  quoted=${db//\\/\\\\}
  quoted=${quoted//\'/\\\'}
  conninfo="dbname='$quoted'"
  info "loading ${backup##*/} into \"$db\""
  case $backup in
    *.pgdump.*)
      if [[ -n $STAGED ]]; then
        # Called under `if !`/`||`, where set -e is off: every step returns its own failure.
        pg_restore --exit-on-error --no-owner --jobs="$RESTORE_JOBS" --dbname="$conninfo" -- "$STAGED" 2>"$err" || return
        rm -f -- "$STAGED"
      else
        decompress "$backup" 2>"$err" | pg_restore --exit-on-error --no-owner --dbname="$conninfo" 2>>"$err"
      fi
      ;;
    *)
      decompress "$backup" 2>"$err" | PGDATABASE=$db psql -X -q -v ON_ERROR_STOP=1 --single-transaction >/dev/null 2>>"$err"
      ;;
  esac
}

# TSV of "schema.table<TAB>rows", named as pg_dump names them.
engine_count_rows() {
  psql_on "$1" -tA -F $'\t' <<<"SELECT $PG_TABLE_ROWS ORDER BY 1;"
}
