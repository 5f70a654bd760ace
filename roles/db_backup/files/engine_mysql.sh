# shellcheck shell=bash
# shellcheck disable=SC2034 # ENGINE_* are read by lib/db.sh, which sources this file
# shellcheck disable=SC2016 # backquoted identifiers are literal on purpose
# djangoops.maintenance (role db_backup): lib/engine_mysql.sh, the engine_*
# functions of lib/db.sh for MySQL/MariaDB, which sources this file when DB_ENGINE is mysql.
# --- engine: MySQL / MariaDB ---------------------------------------------------------
# Host, port, user and password travel in an option file given with
# --defaults-extra-file; only the database name is an argument. Sessions use
# utf8mb4 throughout, so non-ASCII names and passwords arrive as they are.

# The Django ENGINE values these scripts accept (CREDENTIALS_SOURCE=django).
ENGINE_DJANGO_PATTERN='\.mysql$'
MYSQL_CLIENT=$(command -v mariadb || command -v mysql || true)
MYSQL_DUMP=$(command -v mariadb-dump || command -v mysqldump || true)
ENGINE_DUMP_NAME=${MYSQL_DUMP##*/}

# option_value STRING: double-quoted, with '\' and '"' escaped.
option_value() {
  local s=${1//\\/\\\\}
  s=${s//\"/\\\"}
  printf '"%s"' "$s"
}

engine_write_client_file() {
  printf '[client]\ndefault-character-set=utf8mb4\nuser=%s\npassword=%s\n' "$(option_value "$DB_USER")" "$(option_value "$1")"
  [[ -n $DB_HOST ]] && printf 'host=%s\n' "$(option_value "$DB_HOST")"
  [[ -n $DB_PORT && $DB_PORT != 0 ]] && printf 'port=%s\n' "$DB_PORT"
  return 0
}

engine_connection_setup() {
  [[ -n $MYSQL_CLIENT && -n $MYSQL_DUMP ]] || die "$EXIT_CONFIG" "the MariaDB/MySQL client tools (mariadb, mariadb-dump) are not installed"
}

# SQL literals and identifiers, for the few statements built here.
sql_string() {
  local s=${1//\\/\\\\}
  s=${s//\'/\\\'}
  printf "'%s'" "$s"
}
sql_ident() { printf '`%s`' "${1//\`/\`\`}"; }

# Every session waits on another one's lock for DB_LOCK_TIMEOUT seconds at most
# (the server's default is a day), and its statements carry this run's mark so
# that the exit hook can stop any still running on the server.
mysql_run() {
  "$MYSQL_CLIENT" --defaults-extra-file="$CONN_FILE" --batch --skip-column-names \
    --init-command="SET SESSION lock_wait_timeout = ${DB_LOCK_TIMEOUT:-86400}, SESSION innodb_lock_wait_timeout = ${DB_LOCK_TIMEOUT:-50}" "$@"
}
# mysql_do SQL...: statements whose errors explain a refusal (engine.err).
mysql_do() { mysql_run -e "/* $RUN_MARK */ $*" 2>"$RUN_DIR/engine.err"; }
RUN_MARK="djangoops:$$:$SCRIPT_NAME"

engine_check_connection() {
  local err
  if ! err=$(mysql_run --database="$DB_NAME" -e 'SELECT 1' 2>&1 >/dev/null); then
    die "$EXIT_DB_UNAVAILABLE" "cannot connect to database \"$DB_NAME\" as \"$DB_USER\" on ${DB_HOST:-the local socket}: ${err//$'\n'/ }"
  fi
}

engine_check_server() {
  local err
  if ! err=$(mysql_run -e 'SELECT 1' 2>&1 >/dev/null); then
    die "$EXIT_DB_UNAVAILABLE" "cannot connect to the server as \"$DB_USER\": ${err//$'\n'/ }"
  fi
}

# base_tables DATABASE: its tables (not views), one per line.
base_tables() {
  mysql_run --raw -e "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = $(sql_string "$1") AND TABLE_TYPE = 'BASE TABLE' ORDER BY 1"
}

# Sessions on DATABASE this user can see (its own; all with PROCESS).
visible_sessions() {
  mysql_run -e "SELECT CONCAT('id ', ID, ' (user ', USER, ', ', COMMAND, ' for ', TIME, ' s', IF(STATE = '', '', CONCAT(', ', STATE)), ')') FROM information_schema.PROCESSLIST WHERE DB = $(sql_string "$1") AND ID <> CONNECTION_ID()" 2>/dev/null | paste -sd ';' || true
}

end_own_sessions() {
  local id
  for id in $(mysql_run -e "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = $(sql_string "$1") AND ID <> CONNECTION_ID() AND USER = SUBSTRING_INDEX(CURRENT_USER(), '@', 1)" 2>/dev/null); do
    mysql_run -e "KILL CONNECTION $id" 2>/dev/null || true
  done
}

# Before anything is created: a lock another session holds on the live tables
# (an open transaction) would make the swap wait, and the site with it. Probe
# for it with a short LOCK TABLES; the site's own sessions are ended and the
# probe tried once more; a lock that stays is a refusal that says what it can.
engine_restore_precheck() {
  local live=$1 tables table stmt="" probe=$((DB_LOCK_TIMEOUT < 5 ? DB_LOCK_TIMEOUT : 5))
  ((live)) || return 0
  tables=$(base_tables "$DB_NAME") || die "$EXIT_DB_UNAVAILABLE" "could not list the tables of \"$DB_NAME\""
  while IFS= read -r table; do
    [[ -n $table ]] && stmt+="${stmt:+, }$(sql_ident "$DB_NAME").$(sql_ident "$table") WRITE"
  done <<<"$tables"
  [[ -n $stmt ]] || return 0
  stmt="SET SESSION lock_wait_timeout = $probe; LOCK TABLES $stmt; UNLOCK TABLES"
  mysql_do "$stmt" && return 0
  if ! grep -q 'Lock wait timeout' "$RUN_DIR/engine.err"; then
    warn "could not check for locks on \"$DB_NAME\" ($(last_error_line)); going on"
    return 0
  fi
  end_own_sessions "$DB_NAME"
  mysql_do "$stmt" && return 0
  die "$EXIT_REFUSED" "a session holds a lock on the tables of \"$DB_NAME\" (an open transaction?) and did not let go within $probe s; sessions user \"$DB_USER\" can see: $(visible_sessions "$DB_NAME"); other users' sessions are visible only with the PROCESS privilege (as root: SHOW PROCESSLIST; KILL ID); nothing was changed"
}

engine_list_databases() {
  mysql_run -e "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE LEFT(SCHEMA_NAME, $(printf %s "$1" | wc -m)) = $(sql_string "$1") ORDER BY 1" 2>/dev/null
}

# Databases have no name of their own to switch: what moves is tables.
engine_allow_connections() { :; }

# Loading streams from the compressed file: nothing to stage.
engine_stage() { :; }

# A query error is not "the database does not exist": that would skip the safety backup.
engine_database_exists() {
  local found
  found=$(mysql_run -e "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = $(sql_string "$1")") ||
    die "$EXIT_DB_UNAVAILABLE" "could not check whether database \"$1\" exists"
  [[ $found == 1 ]]
}

engine_dump() {
  local table args=() db=${DUMP_DB:-$DB_NAME}
  for table in "${EXCLUDED_TABLE_DATA[@]}"; do
    args+=("--ignore-table-data=$db.$table")
  done
  "$MYSQL_DUMP" --defaults-extra-file="$CONN_FILE" --single-transaction --quick --routines --triggers \
    --hex-blob --no-tablespaces --default-character-set=utf8mb4 "${args[@]}" -- "$db"
}

engine_count_stream() { python3 "$MANIFEST_TOOL" count mysql; }

# MariaDB cannot share a snapshot with another session (mariadb-dump's own
# START TRANSACTION WITH CONSISTENT SNAPSHOT is its alone): the rows are counted
# from the dump as it is written.
engine_counts_in_snapshot() { return 1; }

engine_manifest_fields() {
  local info cs coll version
  info=$(mysql_run -e "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME, VERSION() FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = $(sql_string "${DUMP_DB:-$DB_NAME}")")
  IFS=$'\t' read -r cs coll version <<<"$info"
  MANIFEST_ENCODING=$cs MANIFEST_COLLATE=$coll MANIFEST_SERVER_VERSION=$version "$@"
}

# charset_of BACKUP: "CHARACTER SET cs COLLATE coll" of the backup's database.
charset_of() {
  local cs coll
  cs=$(manifest_get "$1" encoding) || return
  coll=$(manifest_get "$1" collate) || return
  if [[ ! $cs =~ ^[A-Za-z0-9_]+$ || ! $coll =~ ^[A-Za-z0-9_]+$ ]]; then
    echo "the manifest of ${1##*/} lacks the database's character set or collation" >"$RUN_DIR/engine.err"
    return 1
  fi
  printf 'CHARACTER SET %s COLLATE %s' "$cs" "$coll"
}

# engine_create_database DATABASE BACKUP: new and empty, with the character
# set and collation the backup's database had.
engine_create_database() {
  local charset
  charset=$(charset_of "$2") || return
  info "creating database \"$1\""
  mysql_do "CREATE DATABASE $(sql_ident "$1") $charset"
}

# Drops one of the scripts' own databases (never the live one).
engine_drop_database() {
  end_own_sessions "$1"
  mysql_do "DROP DATABASE IF EXISTS $(sql_ident "$1")"
}

# A dump's views, triggers, routines and events cannot be moved to another
# database by RENAME TABLE; a Django database has none, so refuse rather than
# lose them.
engine_check_movable() {
  local found
  found=$(mysql_run -e "SELECT CONCAT_WS(', ',
      (SELECT CONCAT(COUNT(*), ' views') FROM information_schema.VIEWS WHERE TABLE_SCHEMA = $(sql_string "$1") HAVING COUNT(*) > 0),
      (SELECT CONCAT(COUNT(*), ' triggers') FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = $(sql_string "$1") HAVING COUNT(*) > 0),
      (SELECT CONCAT(COUNT(*), ' routines') FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = $(sql_string "$1") HAVING COUNT(*) > 0),
      (SELECT CONCAT(COUNT(*), ' events') FROM information_schema.EVENTS WHERE EVENT_SCHEMA = $(sql_string "$1") HAVING COUNT(*) > 0))") || return
  [[ -z $found ]] && return 0
  echo "the backup holds $found, which this restore cannot move into place (RENAME TABLE moves tables only); restore it by hand (README: restoring without the scripts)" >"$RUN_DIR/engine.err"
  return 1
}

# Ids the restored tables hand out must not be ones the live tables already
# gave to rows written after the backup (those rows live on in the safety
# copy). The live tables take writes until the rename, so the restored ones
# start a margin above the live counters, read in the same session as the
# rename, moments before it.
ID_MARGIN=1000

# auto_increment_sql FROM TO MARGIN: statements giving TO's tables FROM's next
# ids plus MARGIN (InnoDB keeps a counter above the table's highest id anyway).
auto_increment_sql() {
  mysql_run --raw -e "SELECT CONCAT('ALTER TABLE ', $(sql_string "$(sql_ident "$2")"), '.\`', REPLACE(f.TABLE_NAME, '\`', '\`\`'), '\` AUTO_INCREMENT = ', f.AUTO_INCREMENT + $3, ';')
    FROM information_schema.TABLES f JOIN information_schema.TABLES t ON t.TABLE_NAME = f.TABLE_NAME
    WHERE f.TABLE_SCHEMA = $(sql_string "$1") AND t.TABLE_SCHEMA = $(sql_string "$2") AND f.AUTO_INCREMENT IS NOT NULL"
}

# reused_ids ASIDE LIVE: tables whose restored counter fell below the old
# table's final one (more rows were written in the last instant than the margin).
reused_ids() {
  mysql_run -e "SELECT GROUP_CONCAT(f.TABLE_NAME) FROM information_schema.TABLES f JOIN information_schema.TABLES t ON t.TABLE_NAME = f.TABLE_NAME
    WHERE f.TABLE_SCHEMA = $(sql_string "$1") AND t.TABLE_SCHEMA = $(sql_string "$2") AND t.AUTO_INCREMENT - $ID_MARGIN < f.AUTO_INCREMENT
      AND f.AUTO_INCREMENT IS NOT NULL HAVING COUNT(*) > 0"
}

# rename_sql FROM TO [FROM2 TO2]: one RENAME TABLE statement moving every table
# of FROM into TO (and of FROM2 into TO2): all of it happens or none of it.
rename_sql() {
  local pairs="" table
  while (($# >= 2)); do
    while IFS= read -r table; do
      [[ -n $table ]] && pairs+="${pairs:+, }$(sql_ident "$1").$(sql_ident "$table") TO $(sql_ident "$2").$(sql_ident "$table")"
    done < <(base_tables "$1")
    shift 2
  done
  [[ -z $pairs ]] || printf '/* %s */ RENAME TABLE %s;\n' "$RUN_MARK" "$pairs"
}

# engine_swap LIVE NEW ASIDE: in one RENAME TABLE, the live tables go to ASIDE
# and the restored ones take their place. Writes acknowledged before it are in
# ASIDE, writes after it in the restored tables. A lock another session holds
# makes it wait DB_LOCK_TIMEOUT seconds at most, then fail with nothing moved.
engine_swap() {
  local live=$1 new=$2 aside=$3 charset reused
  charset=$(charset_of "$BACKUP_PATH") || return
  mysql_do "CREATE DATABASE $(sql_ident "$aside") $charset" || return
  rename_sql "$live" "$aside" "$new" "$live" >"$RUN_DIR/rename.sql" || return
  end_own_sessions "$live"
  info "moving the tables: writes to \"$live\" acknowledged before $(date '+%H:%M:%S') are in the safety copy, later ones in the restored database"
  # One session: the live counters are read, carried over and the tables
  # renamed within milliseconds.
  if ! { auto_increment_sql "$live" "$new" "$ID_MARGIN" && cat "$RUN_DIR/rename.sql"; } 2>"$RUN_DIR/engine.err" |
    mysql_run 2>>"$RUN_DIR/engine.err"; then
    mysql_run -e "DROP DATABASE IF EXISTS $(sql_ident "$aside")" 2>/dev/null || true
    grep -q "Lock wait timeout" "$RUN_DIR/engine.err" &&
      echo "a session held a lock on \"$live\" for over ${DB_LOCK_TIMEOUT} s (sessions user \"$DB_USER\" can see: $(visible_sessions "$live"); others need the PROCESS privilege to be seen)" >>"$RUN_DIR/engine.err"
    return 1
  fi
  reused=$(reused_ids "$aside" "$live" 2>/dev/null || true)
  [[ -z $reused ]] || warn "more rows were written in the last instant before the swap than the id margin ($ID_MARGIN) allows: new rows of $reused may take ids that rows in the safety copy have"
  mysql_do "ALTER DATABASE $(sql_ident "$live") $charset" || warn "could not set the character set of \"$live\": $(last_error_line)"
  mysql_do "DROP DATABASE $(sql_ident "$new")" || warn "could not drop the empty work database $new: $(last_error_line)"
  info "swapped: database \"$live\" holds the restored tables; the old ones are in $aside"
}

# engine_swap_undo LIVE NEW ASIDE: RENAME TABLE is all or nothing: if the work
# database still holds tables, the live one is unchanged.
engine_swap_undo() {
  local live=$1 new=$2 aside=$3
  if [[ -n $(engine_list_databases "$new") && -n $(base_tables "$new" 2>/dev/null) ]]; then
    engine_drop_database "$new" || true
    [[ -z $aside || -n $(base_tables "$aside" 2>/dev/null) ]] || mysql_run -e "DROP DATABASE IF EXISTS $(sql_ident "$aside")" 2>/dev/null || true
    return 0
  fi
  mysql_run -e "DROP DATABASE IF EXISTS $(sql_ident "$new")" 2>/dev/null || true
  return 1
}

# engine_put_in_place NEW LIVE: no live database to set aside (a new server).
engine_put_in_place() {
  local charset
  charset=$(charset_of "$BACKUP_PATH") || return
  mysql_do "CREATE DATABASE $(sql_ident "$2") $charset" || return
  rename_sql "$1" "$2" | mysql_run 2>"$RUN_DIR/engine.err" || return
  mysql_do "DROP DATABASE $(sql_ident "$1")" || warn "could not drop the empty work database $1: $(last_error_line)"
}

# Statements of this run still running on the server when it ends (a signal
# arrived while the client waited): stopped, so nothing outlives the script.
engine_stop_own_statements() {
  local id
  for id in $(mysql_run -e "SELECT ID FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() AND INFO LIKE $(sql_string "%$RUN_MARK %")" 2>/dev/null); do
    mysql_run -e "KILL QUERY $id" 2>/dev/null || true
  done
}

# engine_load BACKUP DATABASE: the client stops at the first error.
engine_load() {
  info "loading ${1##*/} into \"$2\""
  decompress "$1" 2>"$RUN_DIR/load.err" | mysql_run --database="$2" 2>>"$RUN_DIR/load.err"
}

engine_count_rows() {
  local db=$1 table query=""
  while IFS= read -r table; do
    [[ -n $table ]] || continue
    query+="${query:+ UNION ALL }SELECT $(sql_string "$table"), COUNT(*) FROM $(sql_ident "$db").$(sql_ident "$table")"
  done < <(mysql_run --raw -e "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = $(sql_string "$db") AND TABLE_TYPE = 'BASE TABLE'")
  [[ -z $query ]] || mysql_run --raw -e "$query"
}
