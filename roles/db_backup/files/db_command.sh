#!/usr/bin/env bash
# djangoops.maintenance (role db_backup): one entry point, installed root-owned
# under each command's name (backup_db.sh, restore_db.sh, verify_db.sh,
# list_db_backups.sh, push_db_backups.sh, fetch_db_backup.sh, check_offsite.sh)
# in /usr/local/lib/djangoops/PROJECT/bin, and linked from the project's
# commands/; what it does follows from that name. `NAME --help` says how to use
# each; the exit codes are in lib/common.sh. The code is lib/db.sh, the values
# /etc/djangoops/PROJECT/db.conf.
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
# shellcheck source=roles/db_backup/files/db.sh
source "$LIB_DIR/db.sh"
run_as_project_user "$@"
db_command "$@"
