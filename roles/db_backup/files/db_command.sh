#!/usr/bin/env bash
# djangoops.maintenance (role db_backup): one script, installed in a project's
# commands/ under each command's name (backup_db.sh, restore_db.sh, verify_db.sh,
# list_db_backups.sh, push_db_backups.sh, fetch_db_backup.sh, check_offsite.sh);
# what it does follows from that name. `NAME --help` says how to use each; the
# exit codes are in lib/common.sh. The code is lib/db.sh, the values lib/db.conf.
set -Eeuo pipefail
self=$(readlink -f -- "${BASH_SOURCE[0]}")
LIB_DIR=${self%/*}/lib
SCRIPT_NAME=${self##*/}
SCRIPT_NAME=${SCRIPT_NAME%.sh}
# shellcheck source=roles/db_backup/files/db.sh
source "$LIB_DIR/db.sh"
run_as_project_user "$@"
db_command "$@"
