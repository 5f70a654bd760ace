#!/usr/bin/env bash
# djangoops.maintenance (role schedule): one entry point, installed root-owned
# as /usr/local/lib/djangoops/PROJECT/bin/<job>.sh for each scheduled job the
# role writes (clear_sessions and the custom ones) and linked from the
# project's commands/; the job follows from that name. Its command, container
# and health check are in /etc/djangoops/PROJECT/jobs.conf, the code in
# lib/jobs.sh; output and messages go to logs/<job>.log. Exit codes: see
# lib/common.sh.
set -Eeuo pipefail
self=$(readlink -f -- "${BASH_SOURCE[0]}")
ENGINE_DIR=${self%/bin/*}
LIB_DIR=$ENGINE_DIR/lib
CONF_DIR=/etc/djangoops/${ENGINE_DIR##*/}
SCRIPT_NAME=${self##*/}
SCRIPT_NAME=${SCRIPT_NAME%.sh}
# Started as root: become the project user before reading anything that user
# can write (root reads only its own files: this one and the project's values).
if ((EUID == 0)); then
  # shellcheck source=/dev/null
  source "$CONF_DIR/project.conf"
  exec runuser -u "$PROJECT_USER" -- "$self" "$@"
fi
# shellcheck source=roles/schedule/files/jobs.sh
source "$LIB_DIR/jobs.sh"
run_as_project_user "$@"
(($# == 0)) || die "$EXIT_USAGE" "$SCRIPT_NAME takes no arguments"
run_named_job
