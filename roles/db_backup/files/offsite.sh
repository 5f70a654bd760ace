# shellcheck shell=bash
# shellcheck disable=SC2034 # FETCHED is read by db.sh, which sources this file
# Off-site copies of the backup sets, with restic: push, list, fetch and check.
#
# Sourced by db.sh after CONF_DIR/offsite.conf (the values: which repositories, how
# to reach them) and common.sh (logging, exit codes, RUN_DIR). Every secret
# stays in a 0600 file of $OFFSITE_DIR and reaches restic through the
# environment or a file name, never a command line:
#   password          the repository password (RESTIC_PASSWORD_FILE)
#   NAME.key          the SSH key of an ssh repository
#   NAME.known_hosts  its host key
#   NAME.s3           AWS_ACCESS_KEY_ID=... / AWS_SECRET_ACCESS_KEY=... of an s3 one
#
# A set in a repository is one snapshot of its files (dump, checksums, manifest,
# media archive), tagged djangoops, set=NAME and sha256=SHA (of the dump), with
# host = the project name and the time the set was taken, so that restic's own
# retention (`forget --group-by host`) applies to sets.


# What the last push added (bytes after deduplication), how long it took, and
# how many local sets are still missing; offsite_fetch's set (read by db.sh).
OFFSITE_BYTES=0
OFFSITE_SECONDS=0
OFFSITE_MISSING=0
OFFSITE_CHILD=""
# Until offsite_deadline: one time limit per repository and run.
OFFSITE_DEADLINE=$((SECONDS + ${OFFSITE_TIMEOUT:-3600}))
offsite_deadline() { OFFSITE_DEADLINE=$((SECONDS + OFFSITE_TIMEOUT)); }
FETCHED=""
FETCHED_PATH=""

offsite_enabled() { ((${#OFFSITE_REPOS[@]} > 0)); }

offsite_require_restic() {
  command -v restic >/dev/null ||
    die "$EXIT_CONFIG" "restic is not installed, but off-site repositories are configured (db_backup_offsite_repositories)"
}

# offsite_known REPO: is REPO one of the configured repositories?
offsite_known() {
  local r
  for r in "${OFFSITE_REPOS[@]}"; do [[ $r == "$1" ]] && return 0; done
  return 1
}

# restic_in REPO ARGS...: restic against REPO, in OFFSITE_CWD (default /),
# within what is left of the repository's time (OFFSITE_DEADLINE, in $SECONDS).
# A subshell keeps the repository's environment from the next one; it runs in
# the background so that a signal reaches the script at once, whose exit hook
# then stops restic (timeout leads restic's process group) rather than leaving
# it running with the lock.
restic_in() {
  local repo=$1 left pid rc=0
  shift
  left=$((OFFSITE_DEADLINE - SECONDS))
  ((left >= 1)) || left=1
  (
    cd "${OFFSITE_CWD:-/}" || exit 1
    export RESTIC_PASSWORD_FILE="$OFFSITE_DIR/password"
    export RESTIC_CACHE_DIR="$PROJECT_HOME/.cache/restic"
    export RESTIC_PROGRESS_FPS=0.0166
    local -a options=()
    case ${OFFSITE_TYPE[$repo]} in
      ssh)
        # The backup host's forced command decides what runs there (an
        # append-only `rclone serve restic --stdio`): what restic asks ssh to
        # run is ignored, so the repository is named by the key alone.
        export RESTIC_REPOSITORY="rclone:$repo:"
        options=(-o "rclone.program=$(offsite_ssh_command "$repo")")
        ;;
      s3)
        export RESTIC_REPOSITORY="${OFFSITE_URL[$repo]}"
        local key value
        while IFS='=' read -r key value; do
          case $key in
            AWS_ACCESS_KEY_ID | AWS_SECRET_ACCESS_KEY) export "$key=$value" ;;
          esac
        done <"$OFFSITE_DIR/$repo.s3"
        ;;
    esac
    exec timeout --kill-after=30 "$left" restic "${options[@]}" "$@"
  ) &
  pid=$!
  OFFSITE_CHILD=$pid
  wait "$pid" || rc=$?
  OFFSITE_CHILD=""
  return "$rc"
}

# offsite_ssh_command REPO: how restic reaches an ssh repository (restic splits
# it at spaces: the paths hold none).
offsite_ssh_command() {
  printf 'ssh -i %s -o IdentitiesOnly=yes -o IdentityAgent=none -o UserKnownHostsFile=%s' \
    "$OFFSITE_DIR/$1.key" "$OFFSITE_DIR/$1.known_hosts"
  printf ' -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o BatchMode=yes -o ConnectTimeout=15'
  printf ' -o ServerAliveInterval=15 -o ServerAliveCountMax=4 -p %s %s@%s' \
    "${OFFSITE_PORT[$1]}" "${OFFSITE_USER[$1]}" "${OFFSITE_HOST[$1]}"
}

# offsite_ssh_problem REPO: when ssh itself cannot get in (refused, key, host
# key), ssh's own words. restic may end before ssh says them, so ask again.
offsite_ssh_problem() {
  local -a command=()
  local rc=0 err
  read -r -a command <<<"$(offsite_ssh_command "$1")"
  err=$(timeout 30 "${command[@]}" </dev/null 2>&1 >/dev/null) || rc=$?
  ((rc == 255)) || return 1
  printf '%s' "$(printf '%s\n' "$err" | grep -v '^[[:space:]]*$' | tail -n 1 || true)"
}

# The exit hook: a restic still running when the script ends goes with it.
offsite_stop_child() {
  [[ -n ${OFFSITE_CHILD:-} ]] || return 0
  kill -TERM -- "-$OFFSITE_CHILD" 2>/dev/null || kill -TERM "$OFFSITE_CHILD" 2>/dev/null || true
}

# offsite_error FILE: the line of restic's stderr that says what went wrong:
# ssh's own words first (refused, key, host key), then restic's Fatal line.
offsite_error() {
  local line
  line=$(grep -E '(^|rclone: )ssh: |Permission denied|Host key verification failed|REMOTE HOST IDENTIFICATION|[Nn]o space left|[Dd]isk quota' -- "$1" | tail -n 1 || true)
  [[ -n $line ]] || line=$(grep -E '^Fatal: |^error: |wrong password|no key found' -- "$1" | tail -n 1 || true)
  [[ -n $line ]] || line=$(grep -v '^[[:space:]]*$' -- "$1" | tail -n 1 || true)
  printf '%s' "${line:-no message}"
}

# offsite_init REPO: create the repository unless this server knows it exists
# (a marker in OFFSITE_DIR). `restic init` on an existing one only fails, fast
# and harmlessly; looking first would not be fast: restic retries a missing
# bucket until its time runs out.
offsite_init() {
  local repo=$1 marker="$OFFSITE_DIR/$1.initialized" err="$RUN_DIR/restic.err" rc=0
  [[ -f $marker ]] && return 0
  restic_in "$repo" init >/dev/null 2>"$err" || rc=$?
  if ((rc == 0)); then
    info "off-site repository $repo: created"
  elif ! grep -q 'already exists\|already initialized' "$err"; then
    offsite_failed "$repo" "$rc" "creating it" "$err"
    return 1
  fi
  : >"$marker"
}

# offsite_failed REPO RC WHAT ERRFILE: say why a restic run failed.
offsite_failed() {
  if (($2 == 124 || $2 == 137)); then
    local last=""
    [[ -s $4 ]] && last="; restic kept retrying after: $(offsite_error "$4")"
    warn "off-site repository $1: $3 did not finish within ${OFFSITE_TIMEOUT} s (db_backup_offsite_timeout_seconds)$last"
  else
    local why
    if [[ ${OFFSITE_TYPE[$1]:-} == ssh ]] && why=$(offsite_ssh_problem "$1"); then
      why="ssh: $why"
    else
      why=$(offsite_error "$4")
    fi
    warn "off-site repository $1: $3 failed (restic exit $2): $why"
  fi
}

# offsite_sets REPO OUT: the sets REPO holds (backup_manifest.py snapshots)
# into OUT. Returns 1, with the reason logged, when the repository cannot be
# reached or read.
offsite_sets() {
  local repo=$1 out=$2 err="$RUN_DIR/restic.err" rc=0
  restic_in "$repo" snapshots --json --no-lock --host "$PROJECT_NAME" --tag djangoops \
    >"$RUN_DIR/snapshots.json" 2>"$err" || rc=$?
  if ((rc != 0)); then
    offsite_failed "$repo" "$rc" "reading its snapshots" "$err"
    return 1
  fi
  python3 "$MANIFEST_TOOL" snapshots "$PROJECT_NAME" <"$RUN_DIR/snapshots.json" >"$out"
}

# offsite_set_id NAME: NAME@SHA256 of a local set, as its checksum file says.
offsite_set_id() {
  local sha
  read -r sha _ <"$BACKUPS_DIR/$1.sha256"
  printf '%s@%s' "$1" "$sha"
}

# offsite_set_epoch NAME: when a local set was taken (its name's stamp, or the
# file's time for weekday names), in seconds since the epoch.
offsite_set_epoch() {
  local stamp
  stamp=$(stamp_of "$1")
  if [[ -n $stamp ]]; then
    date -d "${stamp:0:4}-${stamp:4:2}-${stamp:6:2}T${stamp:9:2}:${stamp:11:2}:${stamp:13:2}Z" +%s
  else
    stat -c %Y -- "$BACKUPS_DIR/$1"
  fi
}

# offsite_push_set REPO NAME: one local set into REPO, as one snapshot.
offsite_push_set() {
  local repo=$1 name=$2 sha when media started=$EPOCHREALTIME rc=0 added
  local -a files=("$name.sha256" "$name.manifest.json")
  media=$(media_name_of "$name")
  [[ -f $BACKUPS_DIR/$media ]] && files+=("$media")
  files+=("$name")
  read -r sha _ <"$BACKUPS_DIR/$name.sha256"
  when=$(date -d "@$(offsite_set_epoch "$name")" '+%Y-%m-%d %H:%M:%S')
  local attempt
  for attempt in 1 2; do
    rc=0
    OFFSITE_CWD=$BACKUPS_DIR restic_in "$repo" backup --json --host "$PROJECT_NAME" \
      --tag djangoops --tag "set=$name" --tag "sha256=$sha" --tag "kind=$(kind_of "$name")" \
      --time "$when" -- "${files[@]}" >"$RUN_DIR/push.json" 2>"$RUN_DIR/push.err" || rc=$?
    # A run that was killed (a time limit) leaves its lock behind, and an
    # exclusive one blocks every push: restic's unlock removes stale locks only
    # (of processes gone from this host, or older than 30 minutes), which even
    # an append-only repository allows.
    if ((rc != 0 && attempt == 1)) && grep -q 'unlock. command can be used' "$RUN_DIR/push.err"; then
      warn "off-site repository $repo is locked; removing stale locks and trying once more"
      restic_in "$repo" unlock >/dev/null 2>&1 || true
      continue
    fi
    break
  done
  if ((rc != 0)); then
    offsite_failed "$repo" "$rc" "pushing $name" "$RUN_DIR/push.err"
    return 1
  fi
  added=$(sed -n 's/.*"message_type":"summary".*"data_added":\([0-9]*\).*/\1/p' "$RUN_DIR/push.json" | tail -n 1)
  added=${added:-0}
  OFFSITE_BYTES=$((OFFSITE_BYTES + added))
  info "off-site repository $repo: pushed $name ($(numfmt --to=iec "$added")B new after deduplication, in $(elapsed "$started") s)"
}

# offsite_metrics REPO OK: the repository's textfile (last success survives failures).
offsite_metrics() {
  [[ -n $METRICS_DIR ]] || return 0
  local repo=$1 ok=$2 file="$METRICS_DIR/djangoops_${PROJECT_NAME}_offsite_$1.prom" now last=0 labels
  now=${EPOCHREALTIME%.*}
  labels="{project=\"$PROJECT_NAME\",repository=\"$repo\"}"
  [[ -f $file ]] && last=$(awk '/^djangoops_offsite_last_success_timestamp_seconds/ {print $2}' "$file" 2>/dev/null)
  ((ok)) && last=$now
  {
    printf '# HELP djangoops_offsite_last_success_timestamp_seconds When every local set was last known to be in the repository.\n'
    printf '# TYPE djangoops_offsite_last_success_timestamp_seconds gauge\n'
    printf 'djangoops_offsite_last_success_timestamp_seconds%s %s\n' "$labels" "${last:-0}"
    printf '# HELP djangoops_offsite_last_attempt_timestamp_seconds When a push to the repository was last tried.\n'
    printf '# TYPE djangoops_offsite_last_attempt_timestamp_seconds gauge\n'
    printf 'djangoops_offsite_last_attempt_timestamp_seconds%s %s\n' "$labels" "$now"
    printf '# HELP djangoops_offsite_success Whether the last push succeeded.\n'
    printf '# TYPE djangoops_offsite_success gauge\n'
    printf 'djangoops_offsite_success%s %d\n' "$labels" "$ok"
    printf '# HELP djangoops_offsite_pushed_bytes Bytes the last push added to the repository, after deduplication.\n'
    printf '# TYPE djangoops_offsite_pushed_bytes gauge\n'
    printf 'djangoops_offsite_pushed_bytes%s %d\n' "$labels" "$OFFSITE_BYTES"
    printf '# HELP djangoops_offsite_push_duration_seconds Duration of the last push.\n'
    printf '# TYPE djangoops_offsite_push_duration_seconds gauge\n'
    printf 'djangoops_offsite_push_duration_seconds%s %s\n' "$labels" "$OFFSITE_SECONDS"
    printf '# HELP djangoops_offsite_sets_missing Local sets the repository still lacks.\n'
    printf '# TYPE djangoops_offsite_sets_missing gauge\n'
    printf 'djangoops_offsite_sets_missing%s %d\n' "$labels" "$OFFSITE_MISSING"
  } >"$file.tmp.$$"
  if ! chmod 0644 "$file.tmp.$$" || ! mv -f "$file.tmp.$$" "$file"; then
    warn "could not write metrics to $file"
  fi
}

# offsite_push_repo REPO: every local set newer than REPO's newest, oldest first. Returns 1
# when REPO could not be read or a set could not be pushed.
#
# Only sets newer than the repository's newest are missing: the others were
# pushed, or forgotten by the off-site retention (playbooks/offsite_prune.yml,
# which keeps the newest set of a week or month where the local retention
# keeps the first), and must not come back. Pushes go oldest first and stop at
# the first failure, so a failed run leaves no gap for this to skip.
offsite_push_repo() {
  local repo=$1 started=$EPOCHREALTIME name ok=1 newest=0
  local -A have=()
  local -a missing=()
  OFFSITE_BYTES=0
  OFFSITE_MISSING=0
  offsite_deadline
  if offsite_init "$repo" && offsite_sets "$repo" "$RUN_DIR/sets.tsv"; then
    local set sha _id time _rest epoch future=$((EPOCHSECONDS + 86400))
    while IFS=$'\t' read -r set sha _id time _rest; do
      have["$set@$sha"]=1
      epoch=$(date -d "$time" +%s)
      # A set dated tomorrow or later (a clock that was wrong) would stop every
      # push until then: it does not count.
      if ((epoch > future)); then
        warn "off-site repository $repo holds $set, dated $time, in the future; it is not taken as the newest"
      elif ((epoch > newest)); then
        newest=$epoch
      fi
    done <"$RUN_DIR/sets.tsv"
    while read -r epoch name; do
      if ((epoch > newest)) && [[ -z ${have["$(offsite_set_id "$name")"]:-} ]]; then
        missing+=("$name")
      fi
    done < <(
      while read -r name; do
        [[ -n $name && $(kind_of "$name") != safety && -f $BACKUPS_DIR/$name.sha256 ]] || continue
        printf '%s %s\n' "$(offsite_set_epoch "$name")" "$name"
      done < <(list_backups) | sort -n
    )
    OFFSITE_MISSING=${#missing[@]}
    if ((OFFSITE_MISSING == 0)); then
      info "off-site repository $repo: holds every local set already"
    fi
    for name in "${missing[@]}"; do
      if offsite_push_set "$repo" "$name"; then
        OFFSITE_MISSING=$((OFFSITE_MISSING - 1))
      else
        ok=0
        break
      fi
    done
  else
    ok=0
    OFFSITE_MISSING=-1
  fi
  OFFSITE_SECONDS=$(elapsed "$started")
  offsite_metrics "$repo" "$ok"
  ((ok))
}

# offsite_push_all: push to every repository (one failing does not stop the
# others); dies with EXIT_OFFSITE_FAILED when any failed. The local sets are
# already published: nothing here touches them.
offsite_push_all() {
  offsite_enabled || return 0
  offsite_require_restic
  on_exit_run offsite_stop_child
  local repo failed=()
  for repo in "${OFFSITE_REPOS[@]}"; do
    offsite_push_repo "$repo" || failed+=("$repo")
  done
  ((${#failed[@]} == 0)) ||
    die "$EXIT_OFFSITE_FAILED" "the off-site copy to ${failed[*]} failed; the local backup is published, and the next run (or push_db_backups.sh) pushes every set still missing"
}

# offsite_where: "NAME@SHA<TAB>repo,repo" lines for every set each repository
# holds; an unreadable repository is reported, added to OFFSITE_UNREADABLE and
# left out (call it with its output to a file, not in a subshell).
offsite_where() {
  local repo set sha _rest
  local -A where=()
  for repo in "${OFFSITE_REPOS[@]}"; do
    offsite_deadline
    if offsite_sets "$repo" "$RUN_DIR/sets.tsv"; then
      while IFS=$'\t' read -r set sha _rest; do
        where["$set@$sha"]+="${where["$set@$sha"]:+,}$repo"
      done <"$RUN_DIR/sets.tsv"
    else
      OFFSITE_UNREADABLE+=("$repo")
    fi
  done
  for set in "${!where[@]}"; do
    printf '%s\t%s\n' "$set" "${where[$set]}"
  done
}
declare -a OFFSITE_UNREADABLE=()

# offsite_fetch REPO WANT [staged]: the set WANT (a set name, or latest: the
# newest in the repository) from REPO into BACKUPS_DIR, checked against its
# sha256 and manifest before it is published there. Sets FETCHED to its name
# and FETCHED_PATH to its dump. With `staged` (verify_db.sh --from), always
# downloaded, checked the same way, and left in a staging directory that goes
# at exit: nothing is published.
offsite_fetch() {
  local repo=$1 want=$2 staged=${3:-} line set sha id time rest chosen="" staging
  offsite_deadline
  offsite_sets "$repo" "$RUN_DIR/sets.tsv" ||
    die "$EXIT_OFFSITE_FAILED" "off-site repository $repo cannot be read; nothing was fetched"
  while IFS= read -r line; do
    IFS=$'\t' read -r set sha id time rest <<<"$line"
    [[ $(kind_of "$set") == safety ]] && continue
    if [[ $want == latest || $want == "$set" ]]; then
      chosen=$line
    fi
  done <"$RUN_DIR/sets.tsv"
  if [[ -z $chosen ]]; then
    if [[ $want == latest ]]; then
      die "$EXIT_BAD_BACKUP" "off-site repository $repo holds no backup set of $PROJECT_NAME"
    fi
    die "$EXIT_BAD_BACKUP" "off-site repository $repo holds no set named $want (list_db_backups.sh lists them)"
  fi
  IFS=$'\t' read -r set sha id time rest <<<"$chosen"
  [[ $set =~ $BACKUP_NAME_RE ]] || die "$EXIT_BAD_BACKUP" "off-site set '$set' is not named as a backup of $PROJECT_NAME; refusing it"
  if [[ -z $staged && -f $BACKUPS_DIR/$set && -f $BACKUPS_DIR/$set.sha256 && $(offsite_set_id "$set") == "$set@$sha" ]] &&
    sha256_check "$BACKUPS_DIR/$set.sha256"; then
    info "$set (from $repo, taken $time) is already here"
    check_backup "$BACKUPS_DIR/$set"
    FETCHED=$set
    FETCHED_PATH=$BACKUPS_DIR/$set
    return 0
  fi
  # Not a *.partial name: remove_stale_partials of another script must not
  # take it (it removes what a killed fetch left, as this one does first).
  staging="$BACKUPS_DIR/.fetch-staging"
  on_exit_run offsite_stop_child
  rm -rf -- "$staging"
  cleanup_on_exit "$staging"
  mkdir -m 0700 -- "$staging" "$staging/tree"
  info "fetching $set (taken $time) from off-site repository $repo"
  local started=$EPOCHREALTIME rc=0 path file
  # Restored as the snapshot holds it (restic versions lay out the paths
  # differently), then each expected file taken out by its name.
  restic_in "$repo" restore --no-lock "$id" --target "$staging/tree" >/dev/null 2>"$RUN_DIR/fetch.err" || rc=$?
  if ((rc != 0)); then
    offsite_failed "$repo" "$rc" "fetching $set" "$RUN_DIR/fetch.err"
    die "$EXIT_OFFSITE_FAILED" "$set could not be fetched from $repo; nothing was published"
  fi
  while IFS= read -r -d '' path; do
    file=${path##*/}
    [[ $file == "$set" || $file == "$set".sha256 || $file == "$set".manifest.json || $file == "$(media_name_of "$set")" ]] ||
      die "$EXIT_BAD_BACKUP" "off-site set $set holds an unexpected file $file; refusing it"
    mv -fT -- "$path" "$staging/$file"
  done < <(find "$staging/tree" -type f -print0)
  [[ -f $staging/$set ]] || die "$EXIT_BAD_BACKUP" "off-site set $set lacks its dump; refusing it"
  # The checks a restore makes (sha256, compression, the manifest's project
  # and engine), before anything is published; and the snapshot's own tag.
  check_backup "$staging/$set"
  read -r line _ <"$staging/$set.sha256"
  [[ $line == "$sha" ]] || die "$EXIT_BAD_BACKUP" "$set, as fetched from $repo, is not the dump its snapshot names (sha256 $sha); nothing was published"
  FETCHED=$set
  if [[ -n $staged ]]; then
    info "downloaded $set from $repo: sha256 and manifest good, $(numfmt --to=iec "$(stat -c %s -- "$staging/$set")")B in $(elapsed "$started") s"
    FETCHED_PATH=$staging/$set
    return 0
  fi
  # Published as a backup taken here would be: data last, then the directory flushed.
  sync -- "$staging"/*
  for file in "$set.sha256" "$set.manifest.json" "$(media_name_of "$set")" "$set"; do
    if [[ -f $staging/$file ]]; then
      mv -fT -- "$staging/$file" "$BACKUPS_DIR/$file"
    fi
  done
  sync -- "$BACKUPS_DIR"
  info "fetched $set from $repo: sha256 and manifest good, $(numfmt --to=iec "$(stat -c %s -- "$BACKUPS_DIR/$set")")B in $(elapsed "$started") s"
  FETCHED_PATH=$BACKUPS_DIR/$set
}

# offsite_check_all: restic's own check of every repository, reading back
# OFFSITE_CHECK_SUBSET of the data.
offsite_check_all() {
  local repo failed=() rc started
  on_exit_run offsite_stop_child
  for repo in "${OFFSITE_REPOS[@]}"; do
    started=$EPOCHREALTIME
    rc=0
    offsite_deadline
    restic_in "$repo" check --read-data-subset="$OFFSITE_CHECK_SUBSET" >"$RUN_DIR/check.out" 2>&1 || rc=$?
    if ((rc == 0)); then
      info "off-site repository $repo: structure and $OFFSITE_CHECK_SUBSET of the data read back and good, in $(elapsed "$started") s"
    else
      offsite_failed "$repo" "$rc" "its check" "$RUN_DIR/check.out"
      failed+=("$repo")
    fi
  done
  ((${#failed[@]} == 0)) || die "$EXIT_OFFSITE_FAILED" "the off-site check of ${failed[*]} failed"
}
