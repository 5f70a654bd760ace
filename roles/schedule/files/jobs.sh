# shellcheck shell=bash
# djangoops.maintenance (role schedule): the library of the scheduled job
# scripts, installed root-owned in /usr/local/lib/djangoops/PROJECT/lib. Each
# job's entry point (job.sh, installed as bin/<job>.sh) runs the job's command, logs each line it
# prints to logs/<job>.log with a timestamp, pings and writes metrics through
# common.sh, and exits 12 when the command fails. A static file, the same for
# every project: the values (the project's paths, each job's command, container
# and health check) are in CONF_DIR/jobs.conf, rendered by the role.

# shellcheck source=roles/project/files/common.sh
source "$LIB_DIR/common.sh"
# shellcheck source=/dev/null
source "$CONF_DIR/jobs.conf"
export DJANGO_SETTINGS_MODULE
HEALTHCHECK_URL=${JOB_HEALTHCHECK_URL[$SCRIPT_NAME]-}

# venv_first_on_path: the virtualenv first on PATH, and there once: the
# scheduler's PATH (schedule_path) may hold it already.
venv_first_on_path() {
  local path=":$PATH:"
  while [[ $path == *":$VENV_DIR/bin:"* ]]; do
    path=${path//":$VENV_DIR/bin:"/:}
  done
  path=${path#:}
  path=${path%:}
  export PATH="$VENV_DIR/bin${path:+:$path}"
}
venv_first_on_path

# log_lines: each line of stdin into the log, as the job's output.
log_lines() {
  local line
  while IFS= read -r line || [[ -n $line ]]; do
    log OUT "$line"
  done
}

# run_job CONTAINER COMMAND: run COMMAND with bash in the project's source
# directory, or with sh in the Docker container CONTAINER when it is not empty.
# A second run while one is still going gives up at once (exit 5).
run_job() {
  local container=$1 command=$2 rc
  start_run
  acquire_lock "$LOGS_DIR/.$SCRIPT_NAME.lock" 0
  if [[ -n $container ]]; then
    info "running in the container $container: $command"
    set -- docker exec "$container" sh -c "$command"
  else
    [[ -d $SRC_DIR ]] || die "$EXIT_CONFIG" "the project's source directory $SRC_DIR is missing"
    cd "$SRC_DIR"
    info "running in $SRC_DIR: $command"
    set -- bash -c "$command"
  fi
  errors_returned
  "$@" </dev/null 2>&1 | log_lines
  rc=${PIPESTATUS[0]}
  errors_fatal
  ((rc == 0)) || die "$EXIT_COMMAND_FAILED" "the command failed with exit code $rc (its output is above, in $LOG_FILE)"
}

# run_named_job: the job the script was installed as (SCRIPT_NAME), as
# CONF_DIR/jobs.conf describes it.
run_named_job() {
  [[ -v "JOB_COMMAND[$SCRIPT_NAME]" ]] ||
    die "$EXIT_CONFIG" "$SCRIPT_NAME is not a job of $CONF_DIR/jobs.conf (schedule_jobs)"
  run_job "${JOB_CONTAINER[$SCRIPT_NAME]-}" "${JOB_COMMAND[$SCRIPT_NAME]}"
}
