# shellcheck shell=bash
# shellcheck disable=SC2016 # psql's :"var" and the Python below are literal on purpose
# djangoops.maintenance (role db_backup): the database library, installed as
# /usr/local/lib/djangoops/PROJECT/lib/db.sh: backup, restore, verify, list and the off-site commands
# for PostgreSQL and MySQL/MariaDB. A static file, the same for every project:
# the project's values are in CONF_DIR/db.conf (and offsite.conf), rendered by
# the role; the engine's functions are lib/engine_<engine>.sh, chosen here from
# DB_ENGINE; the credentials source (vars or django) is chosen the same way.
# Sourced by the entry points (bin/<command>.sh, db_command.sh installed under
# each command's name), which set LIB_DIR, CONF_DIR and SCRIPT_NAME first and
# already run as the project user.

# shellcheck source=roles/project/files/common.sh
source "$LIB_DIR/common.sh"
# shellcheck source=/dev/null
source "$CONF_DIR/db.conf"
HEALTHCHECK_URL=${HEALTHCHECK_URLS[$SCRIPT_NAME]-}
MANIFEST_TOOL="$LIB_DIR/backup_manifest.py"
LOCK_FILE="$BACKUPS_DIR/.lock"
# Held by whatever talks to the off-site repositories and changes them.
OFFSITE_LOCK_FILE="$BACKUPS_DIR/.offsite.lock"

# release_lock: let go of the lock acquire_lock took.
release_lock() {
  [[ -n ${LOCK_FD:-} ]] || return 0
  exec {LOCK_FD}>&-
  LOCK_FD=""
}
# The work databases: derived from the project name, never the real one, and
# short enough for any server (PostgreSQL: 63 bytes).
SCRATCH_DB="djangoops_verify_${PROJECT_NAME:0:40}"
# A restore loads here, where no client of the site connects, then swaps it in.
RESTORE_DB="djangoops_restore_${PROJECT_NAME:0:40}"
# The database the restore set aside; stamped, so it never meets another one.
ASIDE_PREFIX="djangoops_before_${PROJECT_NAME:0:30}_"

CONN_FILE=""
# The database a backup dumps when it is not DB_NAME (a restore's set-aside copy).
DUMP_DB=""
# Backups prune() must keep whatever their kind (the one being restored).
declare -a PROTECTED=()

# Off-site copies: the repositories (offsite.conf) and the code (offsite.sh).
# shellcheck source=/dev/null
source "$CONF_DIR/offsite.conf"
# shellcheck source=roles/db_backup/files/offsite.sh
source "$LIB_DIR/offsite.sh"

case $DB_ENGINE in
  postgresql | mysql) ;;
  *) die "$EXIT_CONFIG" "DB_ENGINE in $CONF_DIR/db.conf is '$DB_ENGINE', not postgresql or mysql" ;;
esac
# shellcheck source=roles/db_backup/files/engine_postgresql.sh
source "$LIB_DIR/engine_$DB_ENGINE.sh"

# --- credentials ------------------------------------------------------------------

# Credentials from Django's settings (CREDENTIALS_SOURCE=django): one Python
# start-up reads ENGINE NAME USER PASSWORD HOST PORT, NUL-separated;
# only the settings module is imported (no django.setup()). The password stays
# in this shell and in the 0600 client file of this run's private directory.
read -r -d '' READ_SETTINGS_PY <<'PY' || true
import sys
try:
    from django.conf import settings
    db = settings.DATABASES[sys.argv[1]]
except Exception as exc:  # the message, never a traceback that could quote settings
    sys.stderr.write(f"{type(exc).__name__}: {exc}\n")
    sys.exit(1)
keys = ("ENGINE", "NAME", "USER", "PASSWORD", "HOST", "PORT")
sys.stdout.write("".join(f"{'' if db.get(k) is None else db.get(k)}\0" for k in keys))
PY

load_credentials_from_django() {
  local started=$EPOCHREALTIME fields=()
  [[ -x $DJANGO_PYTHON ]] || die "$EXIT_CONFIG" "no Python at $DJANGO_PYTHON (project_venv_dir)"
  [[ -d $DJANGO_SRC_DIR ]] || die "$EXIT_CONFIG" "no Django project at $DJANGO_SRC_DIR (project_src_dir)"
  mapfile -d '' -t fields < <(cd "$DJANGO_SRC_DIR" &&
    DJANGO_SETTINGS_MODULE=$DJANGO_SETTINGS "$DJANGO_PYTHON" -c "$READ_SETTINGS_PY" "$DJANGO_DB_ALIAS" 2>"$RUN_DIR/settings.err")
  wait "$!" || die "$EXIT_CONFIG" "reading DATABASES['$DJANGO_DB_ALIAS'] from $DJANGO_SETTINGS failed: $(tail -n 1 "$RUN_DIR/settings.err")"
  ((${#fields[@]} == 6)) || die "$EXIT_CONFIG" "DATABASES['$DJANGO_DB_ALIAS'] in $DJANGO_SETTINGS could not be read"
  [[ ${fields[0]} =~ $ENGINE_DJANGO_PATTERN ]] ||
    die "$EXIT_CONFIG" "DATABASES['$DJANGO_DB_ALIAS'] uses ENGINE ${fields[0]}, but these scripts were set up for $DB_ENGINE (db_backup_engine)"
  DB_NAME=${fields[1]} DB_USER=${fields[2]} DB_HOST=${fields[4]} DB_PORT=${fields[5]}
  [[ -n $DB_NAME ]] || die "$EXIT_CONFIG" "DATABASES['$DJANGO_DB_ALIAS'] has no NAME"
  CONN_FILE="$RUN_DIR/client"
  engine_write_client_file "${fields[3]}" >"$CONN_FILE"
  fields=()
  engine_connection_setup
  info "database \"$DB_NAME\" as \"$DB_USER\" from $DJANGO_SETTINGS, read in $(elapsed "$started") s"
}

# Credentials from the role's client file (CREDENTIALS_SOURCE=vars).
load_credentials_from_file() {
  [[ -r $CLIENT_FILE ]] || die "$EXIT_CONFIG" "the credentials file $CLIENT_FILE is missing or unreadable"
  CONN_FILE=$CLIENT_FILE
  engine_connection_setup
  info "database \"$DB_NAME\" as \"$DB_USER\" from $CLIENT_FILE"
}

load_credentials() {
  case $CREDENTIALS_SOURCE in
    django) load_credentials_from_django ;;
    vars) load_credentials_from_file ;;
    *) die "$EXIT_CONFIG" "CREDENTIALS_SOURCE in $CONF_DIR/db.conf is '$CREDENTIALS_SOURCE', not vars or django" ;;
  esac
}

# --- files ---------------------------------------------------------------------------

# --rsyncable, so that restic deduplicates the nightly sets off-site: zstd's
# output then falls back into step shortly after each change, where plain zstd
# differs from the first change to the end. Measured with tools/bench (500 MB,
# about 1 % of rows changed a night among the newest rows): the repository grew
# 33 MiB a night instead of 83 (PostgreSQL) and 21 instead of 64 (MariaDB), a
# set being 168 MiB, at the same size and backup time; changes spread over
# every table defeat deduplication either way (about 160 MiB a night).
# Without an off-site repository it only costs CPU (0.9 s more than level 1's
# 2.3 s for the benchmark's 500 MB dump), so it is left out there.
compress() {
  local rsyncable=()
  ((${#OFFSITE_REPOS[@]} == 0)) || rsyncable=(--rsyncable)
  case $COMPRESSION in
    zstd) zstd -q -c "-$ZSTD_LEVEL" "-T$THREADS" ${rsyncable[@]+"${rsyncable[@]}"} ;;
    gzip) gzip -c ;;
  esac
}

# decompress FILE [NAME]: to stdout; NAME's extension (default FILE's) says
# which tool, as FILE may be a partial.
decompress() {
  case ${2:-$1} in
    *.zst) zstd -q -d -c -- "$1" ;;
    *.gz) gzip -d -c -- "$1" ;;
    *) die "$EXIT_BAD_BACKUP" "unknown compression: $1" ;;
  esac
}

# test_compression FILE [NAME]: NAME's extension says which tool (FILE may be a partial).
test_compression() {
  case ${2:-$1} in
    *.zst) zstd -q -t -- "$1" ;;
    *.gz) gzip -t -- "$1" ;;
    *) return 1 ;;
  esac
}

backup_extension() {
  local data=sql
  [[ $DB_ENGINE == postgresql && $POSTGRESQL_FORMAT == custom ]] && data=pgdump
  case $COMPRESSION in
    zstd) printf '%s.zst' "$data" ;;
    gzip) printf '%s.gz' "$data" ;;
  esac
}

# Published backups of this project, newest first, one per line (names only).
# Names are matched whole, so another project's files are never counted.
BACKUP_NAME_RE="^${PROJECT_NAME}_([0-9]{8}T[0-9]{6}Z_(daily|weekly|monthly|safety)|[0-6]-[A-Za-z]+)\.(pgdump|sql)\.(zst|gz)$"
list_backups() {
  local f names=()
  shopt -s nullglob
  for f in "$BACKUPS_DIR/${PROJECT_NAME}"_*.{pgdump,sql}.{zst,gz}; do
    [[ ${f##*/} =~ $BACKUP_NAME_RE ]] && names+=("${f##*/}")
  done
  shopt -u nullglob
  ((${#names[@]})) || return 0
  printf '%s\n' "${names[@]}" | sort -r
}

# NAME -> kind: daily, weekly, monthly, safety or weekday.
kind_of() {
  local base=${1%%.*}
  case $base in
    "${PROJECT_NAME}"_[0-9]*T*Z_*) printf '%s' "${base##*_}" ;;
    *) printf 'weekday' ;;
  esac
}

# NAME -> YYYYmmddTHHMMSSZ, or nothing for weekday files.
stamp_of() {
  local base=${1%%.*} rest
  rest=${base#"${PROJECT_NAME}"_}
  if [[ $rest == [0-9]*T*Z_* ]]; then
    printf '%s' "${rest%%_*}"
  fi
}

# resolve_backup NAME|PATH|latest -> full path of a published backup.
resolve_backup() {
  local want=${1:-latest} path
  if [[ $want == latest ]]; then
    [[ -L $BACKUPS_DIR/latest ]] || die "$EXIT_BAD_BACKUP" "there is no latest backup in $BACKUPS_DIR"
    want=$(readlink -- "$BACKUPS_DIR/latest")
  fi
  path="$BACKUPS_DIR/${want##*/}"
  [[ -f $path ]] || die "$EXIT_BAD_BACKUP" "no backup named ${want##*/} in $BACKUPS_DIR (list_db_backups.sh lists them)"
  printf '%s' "$path"
}

# check_backup PATH: whole and as written, before anything reads it (PATH's
# sidecars and media archive beside it: in BACKUPS_DIR, or a fetch's staging).
check_backup() {
  local path=$1 name=${1##*/} dir=${1%/*}
  [[ -f $path.sha256 ]] || die "$EXIT_BAD_BACKUP" "$name has no checksum file; refusing to use it"
  [[ -f $path.manifest.json ]] || die "$EXIT_BAD_BACKUP" "$name has no manifest; refusing to use it"
  # The two reads run at once: each takes one core.
  # (`|| exit`: a failure is this job's exit code, not the ERR trap's.)
  { test_compression "$path" || exit 1; } &
  local ztest=$!
  if ! sha256_check "$path.sha256"; then
    wait "$ztest" || true
    die "$EXIT_BAD_BACKUP" "$name does not match its sha256 checksum: the file is damaged; refusing to use it"
  fi
  wait "$ztest" || die "$EXIT_BAD_BACKUP" "$name fails its compression check: the file is damaged"
  local media
  media="$dir/$(media_name_of "$name")"
  if [[ -f $media ]]; then
    test_compression "$media" || die "$EXIT_BAD_BACKUP" "${media##*/} fails its compression check: the file is damaged"
  fi
  load_manifest "$path" || die "$EXIT_BAD_BACKUP" "the manifest of $name cannot be read"
  local owner=${MANIFEST[project]-} engine=${MANIFEST[engine]-}
  [[ $owner == "$PROJECT_NAME" && $engine == "$DB_ENGINE" ]] ||
    die "$EXIT_BAD_BACKUP" "$name belongs to project '$owner' ($engine), not $PROJECT_NAME ($DB_ENGINE); refusing to use it"
  CHECKED_SIGNATURE=$(file_signature "$path")
  info "checked $name: sha256 and compression are good"
}

# What identifies the files of a backup as they are: device, inode, size,
# modification and change times of the file and its sidecars. A backup that
# was replaced, rewritten or touched since check_backup has another one.
CHECKED_SIGNATURE=""
file_signature() { stat -c '%d %i %s %y %z' -- "$1" "$1.sha256" "$1.manifest.json" 2>/dev/null; }

# check_backup_again PATH: after waiting for the lock, read it again only if
# it is not the very file check_backup read.
check_backup_again() {
  [[ -n $CHECKED_SIGNATURE && $(file_signature "$1") == "$CHECKED_SIGNATURE" ]] || check_backup "$1"
}

# sha256_check SUMS: the files SUMS names, beside it, match it (what
# `sha256sum --check --strict` checks, with OpenSSL's faster sha256).
sha256_check() { python3 "$MANIFEST_TOOL" check-sha256 "$1" 2>/dev/null; }

# load_manifest BACKUP_PATH: every field of the backup's manifest into MANIFEST,
# in one call (in this shell, not a subshell, so that later reads are free).
declare -A MANIFEST=()
MANIFEST_OF=""
load_manifest() {
  local key value fields
  MANIFEST=()
  MANIFEST_OF=""
  fields="$RUN_DIR/manifest.fields"
  python3 "$MANIFEST_TOOL" fields "$1.manifest.json" >"$fields" || return
  while IFS= read -r -d '' key && IFS= read -r -d '' value; do
    MANIFEST[$key]=$value
  done <"$fields"
  MANIFEST_OF=$1
}

# manifest_get BACKUP_PATH KEY: from MANIFEST when it holds that backup's.
manifest_get() {
  if [[ $MANIFEST_OF != "$1" ]]; then
    load_manifest "$1" || return
  fi
  printf '%s' "${MANIFEST[$2]-}"
}

# NAME of a dump -> name of the media archive of the same set.
media_name_of() {
  local base=${1%.*}
  printf '%s.media.tar.%s' "${base%.*}" "${1##*.}"
}

remove_backup() {
  rm -f -- "$BACKUPS_DIR/$1" "$BACKUPS_DIR/$1.sha256" "$BACKUPS_DIR/$1.manifest.json" \
    "$BACKUPS_DIR/$(media_name_of "$1")"
}

# Leftovers of runs that were killed; only ever called under the lock.
remove_stale_partials() {
  local f
  shopt -s nullglob
  for f in "$BACKUPS_DIR"/.*.partial "$BACKUPS_DIR"/.*.partial.*; do
    warn "removing ${f##*/}, left by an interrupted run"
    rm -rf -- "$f"
  done
  shopt -u nullglob
}

# check_free_space [safety]: a safety backup has no media archive.
check_free_space() {
  local newest need_kb avail_kb newest_kb=0 media
  newest=$(list_backups | head -n 1)
  if [[ -n $newest ]]; then
    newest_kb=$(($(stat -c %s -- "$BACKUPS_DIR/$newest") / 1024))
    media="$BACKUPS_DIR/$(media_name_of "$newest")"
    if [[ ${1:-} != safety && -n $MEDIA_DIR && -f $media ]]; then
      newest_kb=$((newest_kb + $(stat -c %s -- "$media") / 1024))
    fi
  fi
  need_kb=$((MIN_FREE_MB * 1024))
  ((newest_kb * 3 / 2 > need_kb)) && need_kb=$((newest_kb * 3 / 2))
  avail_kb=$(df -Pk -- "$BACKUPS_DIR" | awk 'NR == 2 {print $4}')
  if ((avail_kb < need_kb)); then
    die "$EXIT_NO_SPACE" "only $((avail_kb / 1024)) MiB free in $BACKUPS_DIR; a backup needs $((need_kb / 1024)) MiB (db_backup_min_free_mb, or 1.5 times the newest backup set)"
  fi
}

# --- backup ---------------------------------------------------------------------------

# " (no space left on ...)" when the backups directory has under 1 MiB free.
no_space_hint() {
  df -Pk -- "$BACKUPS_DIR" | awk 'NR == 2 && $4 < 1024 {printf " (no space left on %s)", $6}'
}

# archive_media PARTIAL NAME: MEDIA_ROOT into a compressed tar; fails the run
# (nothing published) if anything cannot be read.
archive_media() {
  local partial=$1 name=$2 statuses
  [[ -d $MEDIA_DIR ]] || die "$EXIT_CONFIG" "the media directory $MEDIA_DIR (db_backup_media_dir) does not exist"
  info "archiving $MEDIA_DIR to $name"
  errors_returned
  tar -C "$MEDIA_DIR" -cf - . 2>"$RUN_DIR/tar.err" | compress >"$partial" 2>"$RUN_DIR/compress.err"
  statuses=("${PIPESTATUS[@]}")
  errors_fatal
  # The writer first: when it fails (disk full), tar dies of a broken pipe, and
  # that is not the cause to report.
  ((statuses[1] == 0)) || die "$EXIT_DUMP_FAILED" "writing $partial failed: $(tail -n 2 "$RUN_DIR/compress.err" | tr '\n' ' ')$(no_space_hint)"
  # GNU tar exits 1 when a file changed while it was read (an upload during the
  # backup): the archive is still whole, so that is a warning, not a failure.
  if ((statuses[0] == 1)); then
    warn "media files changed while being archived: $(tail -n 2 "$RUN_DIR/tar.err" | tr '\n' ' ')"
  elif ((statuses[0] != 0)); then
    die "$EXIT_DUMP_FAILED" "archiving $MEDIA_DIR failed (tar exit ${statuses[0]}): $(tail -n 2 "$RUN_DIR/tar.err" | tr '\n' ' ')$(no_space_hint)"
  fi
  test_compression "$partial" "$name" || die "$EXIT_DUMP_FAILED" "the media archive fails its integrity test; nothing was published"
}

# restore_media BACKUP_PATH: unpack beside MEDIA_ROOT, then swap, keeping the old tree.
restore_media() {
  local media parent new old
  media="$BACKUPS_DIR/$(media_name_of "${1##*/}")"
  [[ -f $media ]] || die "$EXIT_BAD_BACKUP" "${1##*/} has no media archive (${media##*/})"
  [[ -n $MEDIA_DIR ]] || die "$EXIT_CONFIG" "--with-media needs db_backup_media_dir"
  parent=$(dirname -- "$MEDIA_DIR")
  new="$MEDIA_DIR.restoring.$$"
  old="$MEDIA_DIR.before-restore-$(date -u +%Y%m%dT%H%M%SZ)"
  cleanup_on_exit "$new"
  mkdir -p -- "$new"
  info "unpacking ${media##*/} next to $MEDIA_DIR"
  decompress "$media" | tar -C "$new" -xf - || die "$EXIT_RESTORE_FAILED" "unpacking ${media##*/} failed; $MEDIA_DIR is unchanged"
  [[ ! -e $MEDIA_DIR ]] || mv -T -- "$MEDIA_DIR" "$old"
  mv -T -- "$new" "$MEDIA_DIR"
  sync -- "$parent"
  info "media restored into $MEDIA_DIR${old:+; the previous files are in $old}"
}

# backup_now KIND: dump, check, checksum and publish one backup; prints its name.
# KIND is auto (from the rotation) or safety. Nothing is published unless whole.
backup_now() {
  local kind=$1 stamp name partial started=$EPOCHREALTIME fifo statuses check_rc size sha rows
  stamp=$(date -u +%Y%m%dT%H%M%SZ)
  # Names are unique to the second; two runs in one second (under the lock) wait.
  while compgen -G "$BACKUPS_DIR/${PROJECT_NAME}_${stamp}_*" >/dev/null; do
    sleep 1
    stamp=$(date -u +%Y%m%dT%H%M%SZ)
  done
  # The name and kind (GFS, weekday or safety): backup_manifest.py decides.
  local made safety=()
  [[ $kind == safety ]] && safety=(safety)
  made=$(python3 "$MANIFEST_TOOL" name "$BACKUPS_DIR" "$PROJECT_NAME" "$(backup_extension)" "$ROTATION" "$stamp" \
    ${safety[@]+"${safety[@]}"}) || die "$EXIT_INTERNAL" "could not work out the name of the new backup; nothing was dumped"
  name=${made%%$'\t'*}
  kind=${made#*$'\t'}
  partial="$BACKUPS_DIR/.$name.partial"
  cleanup_on_exit "$partial" "$partial.sha256" "$partial.manifest.json"
  info "dumping database \"${DUMP_DB:-$DB_NAME}\" to $name ($kind)"

  local snapshot=0
  if engine_counts_in_snapshot; then
    # The rows are counted in the dump's own snapshot, while it runs.
    snapshot=1
    engine_snapshot_begin
    errors_returned
    engine_dump 2>"$RUN_DIR/dump.err" | compress >"$partial" 2>"$RUN_DIR/compress.err"
    statuses=("${PIPESTATUS[0]}" 0 "${PIPESTATUS[1]}")
    check_rc=0
    errors_fatal
    ((statuses[0] == 0 && statuses[2] == 0)) || engine_snapshot_abandon
  else
    # The dump goes through tee to the compressor and, via a FIFO, to the
    # counter that writes the manifest from the very bytes being stored.
    fifo="$RUN_DIR/dump.fifo"
    rm -f -- "$fifo"
    mkfifo -- "$fifo"
    engine_count_stream <"$fifo" >"$RUN_DIR/counts.json" 2>"$RUN_DIR/count.err" &
    local counter=$!
    errors_returned
    engine_dump 2>"$RUN_DIR/dump.err" | tee -- "$fifo" | compress >"$partial" 2>"$RUN_DIR/compress.err"
    statuses=("${PIPESTATUS[@]}")
    wait "$counter"
    check_rc=$?
    errors_fatal
  fi
  # The writer first: when it fails (disk full), the dump and tee then fail on a
  # broken pipe, and that is not the cause to report.
  if ((statuses[2] != 0)); then
    die "$EXIT_DUMP_FAILED" "writing $partial failed: $(tail -n 2 "$RUN_DIR/compress.err" | tr '\n' ' ')$(no_space_hint)"
  fi
  if ((statuses[0] != 0)); then
    local why="exit code ${statuses[0]}"
    ((statuses[0] > 128)) && why="killed by signal $((statuses[0] - 128))"
    die "$EXIT_DUMP_FAILED" "$ENGINE_DUMP_NAME failed ($why): $(tail -n 3 "$RUN_DIR/dump.err" | tr '\n' ' ')$(no_space_hint)"
  fi
  ((statuses[1] == 0 && check_rc == 0)) ||
    die "$EXIT_DUMP_FAILED" "reading the dump back failed: $(tail -n 2 "$RUN_DIR/count.err" | tr '\n' ' ')"
  if ((snapshot)); then
    engine_snapshot_counts "$partial" "$name" >"$RUN_DIR/counts.json" 2>"$RUN_DIR/count.err" ||
      die "$EXIT_DUMP_FAILED" "$(tail -n 1 "$RUN_DIR/count.err"); nothing was published"
  fi
  [[ $(python3 "$MANIFEST_TOOL" get "$RUN_DIR/counts.json" complete) == true ]] ||
    die "$EXIT_DUMP_FAILED" "the dump is incomplete (no end-of-dump marker); nothing was published"
  # The integrity test reads the file on one core while the checksum (below)
  # and the media archive take the other.
  { test_compression "$partial" "$name" || exit 1; } &
  local ztest=$!

  local media="" media_partial="" media_files=0 media_size=0 media_sha
  if [[ -n $MEDIA_DIR && $kind != safety ]]; then
    media=$(media_name_of "$name")
    media_partial="$BACKUPS_DIR/.$media.partial"
    cleanup_on_exit "$media_partial"
    archive_media "$media_partial" "$media"
    media_files=$(decompress "$media_partial" "$media" | tar -tf - | grep -cv '/$' || true)
    media_size=$(stat -c %s -- "$media_partial")
  fi

  size=$(stat -c %s -- "$partial")
  sha=$(python3 "$MANIFEST_TOOL" sha256 "$partial")
  wait "$ztest" || die "$EXIT_DUMP_FAILED" "the compressed file fails its integrity test; nothing was published"
  printf '%s  %s\n' "$sha" "$name" >"$partial.sha256"
  if [[ -n $media ]]; then
    media_sha=$(python3 "$MANIFEST_TOOL" sha256 "$media_partial")
    printf '%s  %s\n' "$media_sha" "$media" >>"$partial.sha256"
  fi
  MANIFEST_ENGINE=$DB_ENGINE MANIFEST_DATABASE=$DB_NAME MANIFEST_PROJECT=$PROJECT_NAME \
    MANIFEST_CREATED=$stamp MANIFEST_KIND=$kind MANIFEST_FILE=$name MANIFEST_SHA256=$sha \
    MANIFEST_SIZE_BYTES=$size MANIFEST_DUMP_SECONDS=$(elapsed "$started") \
    MANIFEST_EXCLUDED_TABLE_DATA=$(printf '%s\n' "${EXCLUDED_TABLE_DATA[@]}") \
    MANIFEST_MEDIA_FILE=$media MANIFEST_MEDIA_SIZE_BYTES=$media_size MANIFEST_MEDIA_FILES=$media_files \
    engine_manifest_fields python3 "$MANIFEST_TOOL" write "$RUN_DIR/counts.json" "$partial.manifest.json"

  # Durable before visible: flush the files, rename (sidecars first, the data
  # last: a data file never exists without its checksum), flush the directory.
  sync -- "$partial" "$partial.sha256" "$partial.manifest.json" ${media_partial:+"$media_partial"}
  mv -fT -- "$partial.sha256" "$BACKUPS_DIR/$name.sha256"
  mv -fT -- "$partial.manifest.json" "$BACKUPS_DIR/$name.manifest.json"
  [[ -z $media ]] || mv -fT -- "$media_partial" "$BACKUPS_DIR/$media"
  mv -fT -- "$partial" "$BACKUPS_DIR/$name"
  sync -- "$BACKUPS_DIR"
  rows=$(manifest_get "$BACKUPS_DIR/$name" rows)
  info "published $name: $(numfmt --to=iec "$size")B, $rows rows, sha256 $sha, in $(elapsed "$started") s"
  EXTRA_METRICS+=(backup_size_bytes "$size" backup_rows "$rows")
  PUBLISHED=$name
}

point_latest_at() {
  ln -sfn -- "$1" "$BACKUPS_DIR/.latest.partial"
  mv -fT -- "$BACKUPS_DIR/.latest.partial" "$BACKUPS_DIR/latest"
  sync -- "$BACKUPS_DIR"
  info "latest -> $1"
}

# Retention runs only after a backup was published: never the newest backup,
# never the one latest points at, never one in PROTECTED (what a restore
# restores from). backup_manifest.py decides what goes (tests/unit/roles).
prune() {
  local kinds plan name kind kept
  kinds=$(IFS=,; printf '%s' "$*")
  if ! plan=$(python3 "$MANIFEST_TOOL" prune "$BACKUPS_DIR" "$PROJECT_NAME" "$kinds" \
    "daily=${KEEP[daily]},weekly=${KEEP[weekly]},monthly=${KEEP[monthly]},safety=${KEEP[safety]}" \
    ${PROTECTED[@]+"${PROTECTED[@]}"}); then
    warn "retention: could not work out what to remove; nothing was removed"
    return 0
  fi
  while IFS=$'\t' read -r name kind kept; do
    [[ -n $name ]] || continue
    info "retention: removing $name ($kind, keeping $kept)"
    remove_backup "$name"
  done <<<"$plan"
}

main_backup() {
  local offsite=1
  while (($#)); do
    case $1 in
      --no-offsite) offsite=0; shift ;;
      --lock-wait) LOCK_WAIT=${2:?--lock-wait needs seconds}; shift 2 ;;
      --min-free-mb) MIN_FREE_MB=${2:?--min-free-mb needs a number}; shift 2 ;;
      -q | --quiet) QUIET=1; shift ;;
      -h | --help) usage_backup; exit 0 ;;
      *) usage_backup >&2; exit "$EXIT_USAGE" ;;
    esac
  done
  [[ $MIN_FREE_MB =~ ^[0-9]+$ ]] || die "$EXIT_USAGE" "--min-free-mb takes a whole number, got '$MIN_FREE_MB'"
  start_run
  acquire_lock "$LOCK_FILE" "$LOCK_WAIT"
  remove_stale_partials
  load_credentials
  engine_check_connection
  check_free_space
  backup_now auto
  point_latest_at "$PUBLISHED"
  [[ $ROTATION == gfs ]] && prune daily weekly monthly
  # Off-site last: the local set is published whatever happens there. The
  # push holds the off-site lock, not the backups one, so that a restore or a
  # verify never waits for a slow repository.
  if ((offsite)) && offsite_enabled; then
    release_lock
    acquire_lock "$OFFSITE_LOCK_FILE" "$LOCK_WAIT"
    offsite_push_all
  fi
  return 0
}

usage_backup() {
  cat <<USAGE
Usage: backup_db.sh [--no-offsite] [--lock-wait SECONDS] [--min-free-mb MB] [--quiet]
Back up database "${DB_NAME:-(from Django settings)}" into $BACKUPS_DIR.
The backup is published (and latest moved, old ones pruned) only when whole;
then every off-site repository receives each local set newer than its newest (not with
--no-offsite). A failed off-site copy exits $EXIT_OFFSITE_FAILED with the local backup published.
USAGE
}

# --- off-site -----------------------------------------------------------------------------

# push_db_backups.sh: every local set newer than each off-site repository's newest.
main_push() {
  while (($#)); do
    case $1 in
      --lock-wait) LOCK_WAIT=${2:?--lock-wait needs seconds}; shift 2 ;;
      -q | --quiet) QUIET=1; shift ;;
      -h | --help) usage_push; exit 0 ;;
      *) usage_push >&2; exit "$EXIT_USAGE" ;;
    esac
  done
  offsite_enabled || die "$EXIT_CONFIG" "no off-site repository is configured (db_backup_offsite_repositories)"
  start_run
  acquire_lock "$OFFSITE_LOCK_FILE" "$LOCK_WAIT"
  offsite_push_all
}

usage_push() {
  cat <<USAGE
Usage: push_db_backups.sh [--lock-wait SECONDS] [--quiet]
Copy every backup set in $BACKUPS_DIR newer than an off-site repository's newest into it
(${OFFSITE_REPOS[*]:-none configured}), oldest first. Exits $EXIT_OFFSITE_FAILED when one could not be copied.
USAGE
}

# fetch_db_backup.sh: a set from an off-site repository into BACKUPS_DIR.
main_fetch() {
  local want=latest repo=${OFFSITE_REPOS[0]:-}
  while (($#)); do
    case $1 in
      --from) repo=${2:?--from needs a repository name}; shift 2 ;;
      --lock-wait) LOCK_WAIT=${2:?--lock-wait needs seconds}; shift 2 ;;
      -q | --quiet) QUIET=1; shift ;;
      -h | --help) usage_fetch; exit 0 ;;
      -*) usage_fetch >&2; exit "$EXIT_USAGE" ;;
      *) want=$1; shift ;;
    esac
  done
  offsite_enabled || die "$EXIT_CONFIG" "no off-site repository is configured (db_backup_offsite_repositories)"
  offsite_known "$repo" || die "$EXIT_USAGE" "no off-site repository named '$repo'; configured: ${OFFSITE_REPOS[*]}"
  start_run
  offsite_require_restic
  acquire_lock "$LOCK_FILE" "$LOCK_WAIT"
  remove_stale_partials
  offsite_fetch "$repo" "$want"
  printf '%s\n' "$FETCHED"
}

usage_fetch() {
  cat <<USAGE
Usage: fetch_db_backup.sh [SET|latest] [--from REPOSITORY] [--lock-wait SECONDS] [--quiet]
Copy a backup set (default: the newest) from an off-site repository (default:
${OFFSITE_REPOS[0]:-none configured}) into $BACKUPS_DIR, checked against its sha256 and manifest
first; print its name. restore_db.sh NAME then restores it.
USAGE
}

# check_offsite.sh: restic's check of every repository, with some data read back.
main_check_offsite() {
  while (($#)); do
    case $1 in
      --read-data-subset) OFFSITE_CHECK_SUBSET=${2:?--read-data-subset needs a value}; shift 2 ;;
      -q | --quiet) QUIET=1; shift ;;
      -h | --help) usage_check_offsite; exit 0 ;;
      *) usage_check_offsite >&2; exit "$EXIT_USAGE" ;;
    esac
  done
  offsite_enabled || die "$EXIT_CONFIG" "no off-site repository is configured (db_backup_offsite_repositories)"
  start_run
  offsite_require_restic
  # restic check locks the repository exclusively: never beside a push.
  acquire_lock "$OFFSITE_LOCK_FILE" "$LOCK_WAIT"
  offsite_check_all
}

usage_check_offsite() {
  cat <<USAGE
Usage: check_offsite.sh [--read-data-subset N%|n/t] [--quiet]
Check every off-site repository (${OFFSITE_REPOS[*]:-none configured}) with restic check, reading
back $OFFSITE_CHECK_SUBSET of its data. Exits $EXIT_OFFSITE_FAILED when one fails.
USAGE
}

# --- restore ------------------------------------------------------------------------------

main_restore() {
  local want=latest yes=0 with_media=0 path name started
  while (($#)); do
    case $1 in
      --yes) yes=1; shift ;;
      --with-media) with_media=1; shift ;;
      -q | --quiet) QUIET=1; shift ;;
      --jobs) RESTORE_JOBS=${2:?--jobs needs a number}; shift 2 ;;
      --lock-wait) LOCK_WAIT=${2:?--lock-wait needs seconds}; shift 2 ;;
      --lock-timeout) DB_LOCK_TIMEOUT=${2:?--lock-timeout needs seconds}; shift 2 ;;
      -h | --help) usage_restore; exit 0 ;;
      -*) usage_restore >&2; exit "$EXIT_USAGE" ;;
      *) want=$1; shift ;;
    esac
  done
  check_lock_timeout
  start_run
  load_credentials
  path=$(resolve_backup "$want") || exit
  name=${path##*/}
  check_backup "$path"
  printf '\nThis replaces database "%s" (user "%s", host %s) with\n  %s\n  taken %s, %s rows, %sB.\nEverything written to the database since then is set aside (a safety backup is taken).\n\n' \
    "$DB_NAME" "$DB_USER" "${DB_HOST:-local socket}" "$name" "$(manifest_get "$path" created)" \
    "$(manifest_get "$path" rows)" "$(numfmt --to=iec "$(stat -c %s -- "$path")")" >&2
  if ((!yes)); then
    local answer=""
    printf 'Type the database name to go on: ' >&2
    IFS= read -r answer || true
    [[ $answer == "$DB_NAME" ]] || die "$EXIT_NOT_CONFIRMED" "confirmation did not match the database name; nothing was changed"
  fi
  acquire_lock "$LOCK_FILE" "$LOCK_WAIT"
  RESTORE_STATE=checking
  on_exit_run restore_on_exit
  remove_stale_partials
  # Another run may have pruned or replaced the backup while this one waited.
  [[ -f $path ]] || die "$EXIT_BAD_BACKUP" "$name is gone (pruned while waiting for the lock?); nothing was changed"
  check_backup_again "$path"
  PROTECTED=("$name")
  # shellcheck disable=SC2034 # read by engine_mysql.sh (charset_of)
  BACKUP_PATH=$path
  started=$EPOCHREALTIME
  # Everything that can be checked is checked before anything is created: the
  # server, the rights the swap needs, and sessions or locks that would block it.
  engine_check_server
  RESTORE_LIVE=0
  engine_database_exists "$DB_NAME" && RESTORE_LIVE=1
  engine_restore_precheck "$RESTORE_LIVE"
  warn_leftover_aside
  engine_stage "$path"

  # The backup is loaded into a database of its own, which no client of the
  # site knows; the live database serves on, untouched, until the swap.
  RESTORE_STATE=loading
  load_checked "$path" "$RESTORE_DB" "; database \"$DB_NAME\" is unchanged" ||
    die "$EXIT_RESTORE_FAILED" "$name did not load into what its manifest describes; database \"$DB_NAME\" is unchanged"
  engine_check_movable "$RESTORE_DB" ||
    die "$EXIT_RESTORE_FAILED" "$(last_error_line); database \"$DB_NAME\" is unchanged"

  # The swap: one short step, after which the live name points at the whole,
  # checked copy and the old database sits under another name.
  RESTORE_ASIDE=""
  if ((RESTORE_LIVE)); then
    RESTORE_ASIDE="$ASIDE_PREFIX$(date -u +%Y%m%dT%H%M%S)"
    RESTORE_STATE=swapping
    engine_swap "$DB_NAME" "$RESTORE_DB" "$RESTORE_ASIDE" ||
      die "$EXIT_REFUSED" "the swap was refused: $(last_error_line); database \"$DB_NAME\" is unchanged"
  else
    RESTORE_STATE=swapping
    engine_put_in_place "$RESTORE_DB" "$DB_NAME" ||
      die "$EXIT_RESTORE_FAILED" "could not name the restored database \"$DB_NAME\": $(last_error_line); it is loaded as $RESTORE_DB"
  fi
  RESTORE_STATE="done"
  info "restored $name into database \"$DB_NAME\" in $(human_duration "$(elapsed "$started")") ($(elapsed "$started") s)"
  if ((with_media)); then
    restore_media "$path"
  elif [[ -f $BACKUPS_DIR/$(media_name_of "$name") ]]; then
    info "the set also holds media files; restore_db.sh $name --with-media restores them"
  fi
  ((RESTORE_LIVE)) && save_aside "$RESTORE_ASIDE"
  # Safety backups are pruned only once the restore has succeeded.
  prune safety
}

# The old database becomes a safety backup (a file like any other backup,
# restorable by restore_db.sh), then goes. If it cannot be saved, it stays,
# and the exit hook says where.
save_aside() {
  local aside=$1
  info "saving what database \"$DB_NAME\" held before the swap (now $aside) as a safety backup"
  RESTORE_STATE=saving
  check_free_space safety
  engine_allow_connections "$aside" || die "$EXIT_DB_UNAVAILABLE" "could not open $aside for the safety backup: $(last_error_line)"
  DUMP_DB=$aside
  backup_now safety
  DUMP_DB=""
  RESTORE_STATE="done"
  engine_drop_database "$aside" || warn "could not drop $aside after saving it as $PUBLISHED: $(last_error_line); drop it by hand"
  info "what database \"$DB_NAME\" held before the restore is in $PUBLISHED (restore_db.sh $PUBLISHED brings it back)"
}

# What an interrupted or failed restore leaves, said plainly.
restore_on_exit() {
  engine_stop_own_statements
  case ${RESTORE_STATE:-} in
    checking)
      log ERROR "database \"$DB_NAME\" is unchanged: the restore stopped before it created anything"
      ;;
    loading)
      engine_drop_database "$RESTORE_DB" 2>/dev/null || warn "could not drop the work database $RESTORE_DB"
      log ERROR "database \"$DB_NAME\" is unchanged: the restore stopped before the swap"
      ;;
    saving)
      log ERROR "database \"$DB_NAME\" holds the restored backup; what it held before was not saved as a safety backup and stays in database $RESTORE_ASIDE (drop it once you no longer need it)"
      ;;
    swapping)
      if engine_swap_undo "$DB_NAME" "$RESTORE_DB" "${RESTORE_ASIDE:-}"; then
        log ERROR "database \"$DB_NAME\" is unchanged: the restore stopped before the swap"
      else
        log ERROR "the restore stopped just after the swap: database \"$DB_NAME\" holds the restored backup${RESTORE_ASIDE:+; what it held before is in database $RESTORE_ASIDE}"
      fi
      ;;
  esac
}

# Databases set aside by earlier restores whose safety backup could not be written.
warn_leftover_aside() {
  local db
  while IFS= read -r db; do
    [[ -n $db ]] && warn "database $db, set aside by an earlier restore, is still there: it holds what \"$DB_NAME\" held before that restore"
  done < <(engine_list_databases "$ASIDE_PREFIX")
  return 0
}

# load_checked BACKUP DATABASE SUFFIX: DATABASE (one of the scripts' own: the
# restore's work database, the verify's scratch one) made afresh from BACKUP,
# stopping at the first error, then its tables and row counts compared with the
# manifest. Returns 1 when they differ; any other failure dies, its message
# ending with SUFFIX (what that means for the live database).
load_checked() {
  local backup=$1 db=$2 suffix=$3
  engine_drop_database "$db" ||
    die "$EXIT_REFUSED" "could not drop $db, left by an earlier run: $(last_error_line)$suffix"
  engine_create_database "$db" "$backup" ||
    die "$EXIT_CONFIG" "could not create the work database $db: $(last_error_line); the database user needs the right to create (and drop) it$suffix"
  if ! engine_load "$backup" "$db"; then
    log_lines ERROR "$RUN_DIR/load.err"
    die "$EXIT_RESTORE_FAILED" "loading ${backup##*/} into $db stopped at the first error: $(last_error_line "$RUN_DIR/load.err")$suffix"
  fi
  log_lines WARN "$RUN_DIR/load.err"
  engine_count_rows "$db" >"$RUN_DIR/actual.tsv"
  if ! python3 "$MANIFEST_TOOL" compare "$backup.manifest.json" "$RUN_DIR/actual.tsv" >"$RUN_DIR/compare.txt"; then
    log_lines ERROR "$RUN_DIR/compare.txt"
    return 1
  fi
  info "checked $db against the manifest: $(<"$RUN_DIR/compare.txt")"
}

# The lock timeout, from the role or --lock-timeout: whole seconds, at least 1.
check_lock_timeout() {
  [[ $DB_LOCK_TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "$EXIT_USAGE" "--lock-timeout takes whole seconds (at least 1), got '$DB_LOCK_TIMEOUT'"
}

# log_lines LEVEL FILE: each line of FILE into the log (the last 20 at most).
log_lines() {
  local line
  [[ -s $2 ]] || return 0
  while IFS= read -r line; do
    [[ -n $line ]] && log "$1" "$line"
  done < <(tail -n 20 -- "$2")
}

# last_error_line [FILE]: the last non-empty line FILE (default: the engine's
# error file) holds, for a one-line message.
last_error_line() {
  local file=${1:-$RUN_DIR/engine.err} line
  line=$(grep -v '^[[:space:]]*$' -- "$file" 2>/dev/null | tail -n 1 || true)
  printf '%s' "${line:-no message}"
}

usage_restore() {
  cat <<USAGE
Usage: restore_db.sh [BACKUP|latest] [--yes] [--with-media] [--jobs N] [--lock-wait SECONDS]
                     [--lock-timeout SECONDS] [--quiet]
Replace database "${DB_NAME:-(from Django settings)}" with a backup from $BACKUPS_DIR
(default: latest). Asks for the database name to be typed unless --yes is given.
The backup is loaded into a work database and checked against its manifest while
the site runs on; then, in one short step, the live database is set aside and the
restored one takes its name. What the old one held becomes a safety backup.
--with-media also replaces MEDIA_ROOT with the set's media archive (the old tree
is kept aside). --lock-timeout: how long to wait on another session's lock
before refusing (nothing changed). Needs a writable $BACKUPS_DIR.
USAGE
}

# --- verify ---------------------------------------------------------------------------------

main_verify() {
  local want=latest path name started from=$OFFSITE_VERIFY_FROM
  while (($#)); do
    case $1 in
      --from) from=${2:?--from needs a repository name, or local}; shift 2 ;;
      --lock-wait) LOCK_WAIT=${2:?--lock-wait needs seconds}; shift 2 ;;
      --lock-timeout) DB_LOCK_TIMEOUT=${2:?--lock-timeout needs seconds}; shift 2 ;;
      -q | --quiet) QUIET=1; shift ;;
      -h | --help) usage_verify; exit 0 ;;
      -*) usage_verify >&2; exit "$EXIT_USAGE" ;;
      *) want=$1; shift ;;
    esac
  done
  [[ $from == local ]] && from=""
  if [[ -n $from ]]; then
    offsite_known "$from" || die "$EXIT_USAGE" "no off-site repository named '$from'; configured: ${OFFSITE_REPOS[*]:-none}"
  fi
  check_lock_timeout
  start_run
  acquire_lock "$LOCK_FILE" "$LOCK_WAIT"
  load_credentials
  if [[ -n $from ]]; then
    # The copy that matters is the off-site one: downloaded (even when the set
    # is here too), checked, test-restored, and never published here.
    offsite_require_restic
    offsite_fetch "$from" "$want" staged
    path=$FETCHED_PATH
  else
    path=$(resolve_backup "$want") || exit
    check_backup "$path"
  fi
  name=${path##*/}
  engine_check_connection
  started=$EPOCHREALTIME
  engine_stage "$path"
  on_exit_run drop_scratch
  load_checked "$path" "$SCRATCH_DB" "" ||
    die "$EXIT_VERIFY_MISMATCH" "$name does not restore to what its manifest describes"
  local media expected_files actual_files
  media="${path%/*}/$(media_name_of "$name")"
  if [[ -f $media ]]; then
    expected_files=$(manifest_get "$path" media_files)
    actual_files=$(decompress "$media" | tar -tf - | grep -cv '/$' || true)
    [[ $actual_files == "$expected_files" ]] ||
      die "$EXIT_VERIFY_MISMATCH" "${media##*/} holds $actual_files files, the manifest says $expected_files"
    info "media archive ${media##*/}: $actual_files files, as in the manifest"
  fi
  info "verified $name${from:+ from off-site repository $from} by a test restore in $(elapsed "$started") s: $(<"$RUN_DIR/compare.txt")"
}
drop_scratch() {
  engine_drop_database "$SCRATCH_DB" || warn "could not drop the scratch database $SCRATCH_DB: $(last_error_line)"
}

usage_verify() {
  cat <<USAGE
Usage: verify_db.sh [BACKUP|latest] [--from REPOSITORY|local] [--lock-wait SECONDS]
                    [--lock-timeout SECONDS] [--quiet]
Restore a backup into the scratch database $SCRATCH_DB, compare its tables and
row counts with the backup's manifest, drop the scratch database. With --from
(default: ${OFFSITE_VERIFY_FROM:-local}), the set is downloaded from that off-site
repository and checked first, and nothing is left here. Needs a writable
$BACKUPS_DIR (its lock file).
USAGE
}

# --- list -------------------------------------------------------------------------------------

main_list() {
  local name latest stamp when size kind status mark bad=0 verify=1 offsite=1 where
  local usage='Usage: list_db_backups.sh [--no-checksums] [--local]'
  while (($#)); do
    case $1 in
      --no-checksums) verify=0; shift ;;
      --local) offsite=0; shift ;;
      -h | --help) printf '%s\n' "$usage"; exit 0 ;;
      *) printf '%s\n' "$usage" >&2; exit "$EXIT_USAGE" ;;
    esac
  done
  # Where each set is off-site (NAME@SHA256 -> repositories), read first.
  local -A offsite_at=()
  offsite_enabled || offsite=0
  if ((offsite)); then
    offsite_require_restic
    make_run_dir
    trap 'rm -rf -- "$RUN_DIR"' EXIT
    local id repos
    offsite_where >"$RUN_DIR/where.tsv"
    while IFS=$'\t' read -r id repos; do
      offsite_at["$id"]=$repos
    done <"$RUN_DIR/where.tsv"
  fi
  latest=$(readlink -- "$BACKUPS_DIR/latest" 2>/dev/null || true)
  printf '%-1s %-52s %-20s %8s %-8s %-9s%s\n' "" BACKUP "TAKEN (UTC)" SIZE KIND CHECKSUM "$( ((offsite)) && printf ' OFF-SITE')"
  while read -r name; do
    [[ -n $name ]] || continue
    stamp=$(stamp_of "$name")
    if [[ -n $stamp ]]; then
      when="${stamp:0:4}-${stamp:4:2}-${stamp:6:2} ${stamp:9:2}:${stamp:11:2}:${stamp:13:2}"
    else
      when=$(date -u -r "$BACKUPS_DIR/$name" '+%Y-%m-%d %H:%M:%S')
    fi
    size=$(numfmt --to=iec --suffix=B "$(stat -c %s -- "$BACKUPS_DIR/$name")")
    kind=$(kind_of "$name")
    where=""
    if [[ ! -f $BACKUPS_DIR/$name.sha256 ]]; then
      status=missing
      bad=1
    else
      if ((!verify)); then
        status=unchecked
      elif sha256_check "$BACKUPS_DIR/$name.sha256"; then
        status=ok
      else
        status=MISMATCH
        bad=1
      fi
      if ((offsite)); then
        id=$(offsite_set_id "$name")
        where=${offsite_at[$id]:--}
        unset "offsite_at[$id]"
      fi
    fi
    mark=" "
    [[ $name == "$latest" ]] && mark="*"
    printf '%-1s %-52s %-20s %8s %-8s %-9s%s\n' "$mark" "$name" "$when" "$size" "$kind" "$status" "${where:+ $where}"
  done < <(list_backups)
  if ((offsite)); then
    # Sets held off-site only (pruned here, or taken on a server that is gone).
    for id in "${!offsite_at[@]}"; do
      printf '  %-52s %-20s %8s %-8s %-9s %s\n' "${id%@*}" "" "" "$(kind_of "${id%@*}")" off-site "${offsite_at[$id]}"
    done | sort -r
    if ((${#OFFSITE_UNREADABLE[@]})); then
      log WARN "off-site repository ${OFFSITE_UNREADABLE[*]} could not be read: the OFF-SITE column leaves it out"
      ((bad)) || exit "$EXIT_OFFSITE_FAILED"
    fi
  fi
  ((bad == 0)) || exit "$EXIT_BAD_BACKUP"
}

# db_command ARGS...: the command the script was installed as (SCRIPT_NAME).
db_command() {
  case $SCRIPT_NAME in
    backup_db) main_backup "$@" ;;
    restore_db) main_restore "$@" ;;
    verify_db) main_verify "$@" ;;
    list_db_backups) main_list "$@" ;;
    push_db_backups) main_push "$@" ;;
    fetch_db_backup) main_fetch "$@" ;;
    check_offsite) main_check_offsite "$@" ;;
    *) die "$EXIT_USAGE" "$SCRIPT_NAME is not one of the database commands (backup_db.sh, restore_db.sh, verify_db.sh, list_db_backups.sh, push_db_backups.sh, fetch_db_backup.sh, check_offsite.sh)" ;;
  esac
}
