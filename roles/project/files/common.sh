# shellcheck shell=bash
# shellcheck disable=SC2034 # the exit codes are for the scripts that source this file
# djangoops.maintenance (role project): the library every maintenance script
# sources, installed root-owned as /usr/local/lib/djangoops/PROJECT/lib/common.sh:
# logging with timestamps, timing, exit codes, a lock, clean-up on exit,
# health-check pings and Prometheus textfile metrics. A static file, the same
# for every project: the project's values are in CONF_DIR/project.conf
# (/etc/djangoops/PROJECT), rendered by the role. The entry point that sources
# it sets LIB_DIR (the directory of this file), CONF_DIR and SCRIPT_NAME, runs
# as the project user already, and may set HEALTHCHECK_URL.

: "${LIB_DIR:?LIB_DIR must be set before sourcing common.sh}" "${CONF_DIR:?CONF_DIR must be set before sourcing common.sh}"
# PROJECT_NAME PROJECT_USER PROJECT_HOME COMMANDS_DIR BACKUPS_DIR LOGS_DIR METRICS_DIR
# shellcheck source=/dev/null
source "$CONF_DIR/project.conf"

# Exit codes, the same for every script (README: "Exit codes").
readonly EXIT_OK=0
readonly EXIT_INTERNAL=1          # unexpected failure; the log names the command and line
readonly EXIT_USAGE=2             # bad arguments
readonly EXIT_CONFIG=3            # configuration or credentials missing or unreadable
readonly EXIT_DB_UNAVAILABLE=4    # cannot connect or authenticate to the database
readonly EXIT_LOCKED=5            # another run held the lock for longer than the wait
readonly EXIT_NO_SPACE=6          # not enough free space for the backup
readonly EXIT_DUMP_FAILED=7       # the dump (or writing it) failed; nothing was published
readonly EXIT_BAD_BACKUP=8        # backup missing, incomplete or failing its checksum
readonly EXIT_RESTORE_FAILED=9    # loading or checking the backup failed; the live database is unchanged
readonly EXIT_VERIFY_MISMATCH=10  # the test restore does not match the backup's manifest
readonly EXIT_NOT_CONFIRMED=11    # restore not confirmed; nothing was changed
readonly EXIT_COMMAND_FAILED=12   # the job's own command failed (clear_sessions, custom jobs)
readonly EXIT_REFUSED=13          # refused: another session or lock blocks it; nothing was changed
readonly EXIT_OFFSITE_FAILED=14   # an off-site repository could not be written, read or checked; local backups are untouched
readonly EXIT_INTERRUPTED=130     # stopped by a signal (Ctrl-C, TERM); the log says what was left

umask 077
export LC_ALL=C.UTF-8
RUN_STARTED=$EPOCHREALTIME
RUN_DIR=""
declare -a CLEANUP_PATHS=()
declare -a EXIT_HOOKS=()
: "${SCRIPT_NAME:?SCRIPT_NAME must be set before sourcing common.sh}"
: "${HEALTHCHECK_URL:=}"
LOG_FILE="$LOGS_DIR/$SCRIPT_NAME.log"
# What goes to stderr besides the log file, which always gets everything:
# DJANGOOPS_STDERR=all (the default), problems (warnings and errors only: what
# cron should mail) or none. QUIET=1 is the same as none.
: "${DJANGOOPS_STDERR:=all}"
: "${QUIET:=}"

# --- logging ----------------------------------------------------------------

log() {
  local level=$1 line
  shift
  printf -v line '%(%Y-%m-%dT%H:%M:%S%z)T %s[%d] %-5s %s' -1 "$SCRIPT_NAME" "$$" "$level" "$*"
  printf '%s\n' "$line" >>"$LOG_FILE" 2>/dev/null || true
  local stderr=$DJANGOOPS_STDERR
  [[ -z $QUIET ]] || stderr=none
  case $stderr in
    none) ;;
    problems)
      if [[ $level == WARN || $level == ERROR ]]; then printf '%s\n' "$line" >&2; fi
      ;;
    *) printf '%s\n' "$line" >&2 ;;
  esac
}
info() { log INFO "$*"; }
warn() { log WARN "$*"; }

# die CODE MESSAGE: log the reason and leave with CODE (the EXIT trap reports).
die() {
  local code=$1
  shift
  log ERROR "$*"
  exit "$code"
}

# elapsed START: seconds since START (an $EPOCHREALTIME), with one decimal.
elapsed() {
  local start=$1 now=$EPOCHREALTIME
  local us=$((${now/./} - ${start/./}))
  printf '%d.%d' $((us / 1000000)) $((us % 1000000 / 100000))
}

human_duration() {
  local s=${1%.*}
  printf '%d min %d s' $((s / 60)) $((s % 60))
}

# --- identity, lock, clean-up --------------------------------------------------

# The scripts write files the project user must own, and run as that user
# (the entry point switches to it when started as root, before it sources
# this file).
run_as_project_user() {
  [[ $(id -un) == "$PROJECT_USER" ]] && return 0
  die "$EXIT_USAGE" "run this as $PROJECT_USER (or root), not $(id -un)"
}

# A private directory for this run (RAM-backed where possible), removed on exit.
make_run_dir() {
  local base=/dev/shm
  [[ -d $base && -w $base ]] || base=${TMPDIR:-/tmp}
  RUN_DIR=$(mktemp -d "$base/djangoops-$SCRIPT_NAME.XXXXXX")
}

cleanup_on_exit() { CLEANUP_PATHS+=("$@"); }
# on_exit_run FUNCTION: call FUNCTION when the script ends, however it ends.
on_exit_run() { EXIT_HOOKS+=("$1"); }

# acquire_lock FILE WAIT_SECONDS
acquire_lock() {
  local file=$1 wait=$2
  [[ $wait =~ ^[0-9]+$ ]] || die "$EXIT_USAGE" "the lock wait takes whole seconds, got '$wait'"
  # A read-only or missing backups directory: say so, not "unexpected failure".
  if ! { exec {LOCK_FD}>>"$file"; } 2>"$RUN_DIR/lock.err"; then
    local why
    why=$(<"$RUN_DIR/lock.err")
    die "$EXIT_CONFIG" "cannot open the lock file $file (${why#*line *: }): $SCRIPT_NAME needs a writable ${file%/*}"
  fi
  if ! flock -w "$wait" "$LOCK_FD"; then
    die "$EXIT_LOCKED" "another run holds the lock $file; gave up after waiting $wait s"
  fi
}

# --- health checks and metrics ----------------------------------------------------

# ping_healthcheck start|EXIT_CODE: Healthchecks-style; the URL carries the
# check's key, so it goes to curl on stdin rather than on the command line.
ping_healthcheck() {
  [[ -n $HEALTHCHECK_URL ]] || return 0
  local url=${HEALTHCHECK_URL%/}/$1
  command -v curl >/dev/null || { warn "curl is missing: health-check ping skipped"; return 0; }
  if ! printf 'url = "%s"\n' "$url" | curl --config - --fail --silent --show-error --max-time 10 \
    --retry 3 --output /dev/null 2>>"$LOG_FILE"; then
    warn "health-check ping ($1) failed"
  fi
}

# write_metrics EXIT_CODE [NAME VALUE]...: one Prometheus textfile per script,
# replaced atomically; the last success time survives failed runs.
write_metrics() {
  [[ -n $METRICS_DIR ]] || return 0
  local code=$1 file="$METRICS_DIR/djangoops_${PROJECT_NAME}_${SCRIPT_NAME}.prom" last_success=0 now labels
  shift
  now=${EPOCHREALTIME%.*}
  labels="{project=\"$PROJECT_NAME\",job=\"$SCRIPT_NAME\"}"
  if [[ -f $file ]]; then
    last_success=$(awk '/^djangoops_job_last_success_timestamp_seconds/ {print $2}' "$file" 2>/dev/null || echo 0)
  fi
  ((code == 0)) && last_success=$now
  # A run that reports no figures of its own (a failed backup) keeps those of
  # the last run that did, like the last success time.
  local carried=""
  if (($# == 0)) && [[ -f $file ]]; then
    carried=$(grep -E '^djangoops_' "$file" | grep -v '^djangoops_job_' || true)
  fi
  {
    printf '# HELP djangoops_job_last_run_timestamp_seconds When the job last finished.\n'
    printf '# TYPE djangoops_job_last_run_timestamp_seconds gauge\n'
    printf 'djangoops_job_last_run_timestamp_seconds%s %s\n' "$labels" "$now"
    printf '# HELP djangoops_job_last_success_timestamp_seconds When the job last succeeded.\n'
    printf '# TYPE djangoops_job_last_success_timestamp_seconds gauge\n'
    printf 'djangoops_job_last_success_timestamp_seconds%s %s\n' "$labels" "${last_success:-0}"
    printf '# HELP djangoops_job_exit_code Exit code of the last run.\n'
    printf '# TYPE djangoops_job_exit_code gauge\n'
    printf 'djangoops_job_exit_code%s %d\n' "$labels" "$code"
    printf '# HELP djangoops_job_duration_seconds Duration of the last run.\n'
    printf '# TYPE djangoops_job_duration_seconds gauge\n'
    printf 'djangoops_job_duration_seconds%s %s\n' "$labels" "$(elapsed "$RUN_STARTED")"
    while (($# >= 2)); do
      printf 'djangoops_%s%s %s\n' "$1" "$labels" "$2"
      shift 2
    done
    [[ -z $carried ]] || printf '%s\n' "$carried"
  } >"$file.tmp.$$"
  if ! chmod 0644 "$file.tmp.$$" || ! mv -f "$file.tmp.$$" "$file"; then
    warn "could not write metrics to $file"
  fi
}
declare -a EXTRA_METRICS=()

# errors_returned / errors_fatal: around a section that reads exit codes itself
# (PIPESTATUS), switch off both errexit and the ERR trap; bash runs the ERR
# trap even under `set +e`.
# shellcheck disable=SC2016 # expanded when the trap fires, not here
ERR_TRAP='on_error $? $LINENO "$BASH_COMMAND"; exit $EXIT_INTERNAL'
errors_returned() {
  set +e
  trap - ERR
}
errors_fatal() {
  set -e
  # shellcheck disable=SC2064 # the trap text is fixed, expanded when it fires
  trap "$ERR_TRAP" ERR
}

# --- start and finish ------------------------------------------------------------

on_error() {
  local code=$1 line=$2 command=$3
  log ERROR "unexpected failure (exit $code) at line $line: $command"
}

on_exit() {
  local code=$?
  set +e
  trap - ERR
  local hook
  for hook in "${EXIT_HOOKS[@]}"; do
    "$hook"
  done
  ((${#CLEANUP_PATHS[@]})) && rm -rf -- "${CLEANUP_PATHS[@]}"
  [[ -n $RUN_DIR ]] && rm -rf -- "$RUN_DIR"
  local took
  took=$(elapsed "$RUN_STARTED")
  if ((code == 0)); then
    info "finished in $(human_duration "$took") (${took} s)"
  else
    log ERROR "failed with exit code $code after $(human_duration "$took") (${took} s)"
  fi
  write_metrics "$code" "${EXTRA_METRICS[@]}"
  ping_healthcheck "$code"
  exit "$code"
}

# start_run: the common beginning of every script that changes something
# (after run_as_project_user "$@" and its own argument parsing).
start_run() {
  errors_fatal
  trap on_exit EXIT
  trap 'die "$EXIT_INTERRUPTED" "interrupted by a signal"' INT TERM
  make_run_dir
  ping_healthcheck start
}
