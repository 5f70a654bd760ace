#!/usr/bin/env bash
# djangoops.maintenance (role schedule): one script, installed in a project's
# commands/ as <job>.sh for each scheduled job the role writes (clear_sessions
# and the custom ones); the job follows from that name. Its command, container
# and health check are in lib/jobs.conf, the code in lib/jobs.sh; output and
# messages go to logs/<job>.log. Exit codes: see lib/common.sh.
set -Eeuo pipefail
self=$(readlink -f -- "${BASH_SOURCE[0]}")
LIB_DIR=${self%/*}/lib
SCRIPT_NAME=${self##*/}
SCRIPT_NAME=${SCRIPT_NAME%.sh}
# shellcheck source=roles/schedule/files/jobs.sh
source "$LIB_DIR/jobs.sh"
run_as_project_user "$@"
(($# == 0)) || die "$EXIT_USAGE" "$SCRIPT_NAME takes no arguments"
run_named_job
