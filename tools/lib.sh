# shellcheck shell=bash
# Shared by the commands in tools/: host packages, the Docker engine, the
# virtualenv and the test images. Sourced, never run.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE="$ROOT/.cache"
VENV="$ROOT/.venv"
IMAGE_PREFIX="${DJANGOOPS_IMAGE_PREFIX:-djangoops-test}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# Platform name -> Debian suite. The Molecule platforms and the demo use these names.
declare -A PLATFORM_SUITES=([debian12]=bookworm [debian13]=trixie)
# Bump when the way base images are made changes, to rebuild them.
BASE_RECIPE=1
INPUTS_LABEL=org.djangoops.inputs
# The programs the scenarios start on the test servers (molecule/shared/fixtures/listeners/), baked
# into the server image with the Django project.
FIXTURE_PROGRAMS=(hc_listener.py logging_smtp_sink.py logging_sentry_sink.py)

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# --- host packages -----------------------------------------------------------

# Every command tools/ and the test suite run on this machine, as "command
# package". Each is checked by the command itself, not by the package: a
# machine may have a tool from elsewhere (a Docker client from docker.com, say)
# and lack another. tests/testbed/test_fresh_host.py checks in bare Debian 12
# and 13 containers that, after ensure_host_packages, every one of them runs.
HOST_TOOLS=(
  "git git"
  "debootstrap debootstrap"
  "restic restic"     # the controller's side of playbooks/offsite_prune.yml (offsite scenario)
  "ssh openssh-client"
  "shellcheck shellcheck"
  "python3 python3"
  "systemd-analyze systemd" # tests/unit checks cron schedules against it
  "setsid util-linux"
  "timeout coreutils"
  "sha256sum coreutils"
  "mktemp coreutils"
  "tee coreutils"
  "tar tar"
  "find findutils"
  "sed sed"
)
# The engine's pieces: needed only when no engine answers. The client alone
# (`docker`) starts nothing, so the engine is judged by dockerd, containerd and
# runc, which Debian's docker.io brings together (with iptables, which dockerd
# needs to start).
ENGINE_TOOLS=(
  "docker docker.io"
  "dockerd docker.io"
  "containerd docker.io"
  "runc docker.io"
  "iptables iptables"
)

# The packages that would bring what is missing, one per line, each once.
missing_host_packages() {
  local entries=("${HOST_TOOLS[@]}") entry
  docker_answers || entries+=("${ENGINE_TOOLS[@]}")
  {
    for entry in "${entries[@]}"; do
      command -v "${entry%% *}" >/dev/null || printf '%s\n' "${entry#* }"
    done
    # pip in the virtualenvs, and the CA bundle that pip and the test images trust.
    python3 -c 'import ensurepip, venv' 2>/dev/null || echo python3-venv
    [[ -f /etc/ssl/certs/ca-certificates.crt ]] || echo ca-certificates
  } | sort -u
}

ensure_host_packages() {
  local missing engine_answered=0
  docker_answers && engine_answered=1
  missing=$(missing_host_packages)
  [[ -n $missing ]] || return 0
  # shellcheck disable=SC2086 # one package name per word
  set -- $missing
  command -v apt-get >/dev/null || die "missing host packages ($*), and no apt-get to install them: the tools expect Debian 12 or 13"
  [[ $EUID -eq 0 ]] || die "missing host packages; install them (sudo apt-get install $*) or run as root"
  log "Installing host packages: $*"
  mkdir -p "$CACHE"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"; } >"$CACHE/apt.log" 2>&1; then
    die "apt-get could not install $*: $(one_line "$(grep -E '^(E|Err):' "$CACHE/apt.log" | tail -n 3)") (see .cache/apt.log)"
  fi
  missing=$(missing_host_packages)
  [[ -z $missing ]] || die "still missing after apt-get install: $(one_line "$missing") (see .cache/apt.log)"
  # The package's own scripts may have started the engine (systemd does):
  # then the tools started it, and `tools/engine stop` may stop it.
  if ((!engine_answered)) && [[ -d /run/systemd/system ]] && docker_answers; then
    echo systemd >"$CACHE/engine.started"
  fi
}

one_line() { local text=${1//$'\n'/ | }; printf '%s' "${text:-(nothing)}"; }

# promtool, for the lint step's checks of the alert rules: Debian's prometheus
# package has it, but installing that package would also install (and, where
# systemd runs, start) a Prometheus server. The binary alone is taken out of the
# package into .cache/promtool (a 19 MB download, once per checkout); sets PROMTOOL.
ensure_promtool() {
  PROMTOOL=$CACHE/promtool/usr/bin/promtool
  [[ -x $PROMTOOL ]] && return 0
  local dir=$CACHE/promtool.download
  rm -rf "$dir" "$CACHE/promtool"
  mkdir -p "$dir" "$CACHE/promtool"
  # The package lists may be missing on a fresh machine: fetched then.
  if ! (cd "$dir" && { apt-get download -qq prometheus || { apt-get update -qq && apt-get download -qq prometheus; }; }) \
    >"$CACHE/promtool.log" 2>&1; then
    die "could not download Debian's prometheus package for promtool: $(one_line "$(tail -n 3 "$CACHE/promtool.log")")"
  fi
  dpkg-deb --fsys-tarfile "$dir"/prometheus_*.deb | tar -x -C "$CACHE/promtool" ./usr/bin/promtool ||
    die "could not take promtool out of $(echo "$dir"/prometheus_*.deb)"
  rm -rf "$dir"
  "$PROMTOOL" --version >/dev/null 2>&1 || die "$PROMTOOL does not run"
}

# --- Docker engine -----------------------------------------------------------

docker_answers() { command -v docker >/dev/null && docker info >/dev/null 2>&1; }

# Starts an engine when none answers, and remembers that it did so that
# `tools/engine stop` stops only what the tools started. An engine that already
# answers is used as it is and left running.
ensure_docker() {
  docker_answers && return 0
  mkdir -p "$CACHE"
  local how pid="" i
  if [[ -d /run/systemd/system ]] && systemctl start docker >/dev/null 2>&1; then
    how=systemd
    echo systemd >"$CACHE/engine.started"
  else
    how=dockerd
    log "No Docker engine answers; starting dockerd (log: .cache/dockerd.log)"
    setsid dockerd >"$CACHE/dockerd.log" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$CACHE/engine.started"
  fi
  for ((i = 0; i < 60; i++)); do
    docker_answers && return 0
    # A dockerd that has exited will not answer: say why now, not in a minute.
    if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$CACHE/engine.started"
      engine_failed "$how" "exited"
    fi
    sleep 1
  done
  engine_failed "$how" "did not answer within 60 s"
}

# Dies with one line: what happened, the reason from the engine's log, and the
# command that fixes it.
engine_failed() {
  local how=$1 what=$2 reason fix where
  if [[ $how == systemd ]]; then
    reason=$(journalctl -u docker --no-pager -o cat -n 20 2>/dev/null || true)
    where="journalctl -u docker"
  else
    reason=$(cat "$CACHE/dockerd.log" 2>/dev/null || true)
    where=".cache/dockerd.log"
  fi
  reason=$(engine_log_reason "$reason")
  fix=$(engine_fix "$reason")
  # Long reasons keep their start (what failed) and their end (why).
  ((${#reason} <= 400)) || reason="${reason:0:150} ... ${reason: -240}"
  die "the Docker engine ($how) $what: $reason. Fix: $fix (full log: $where)"
}

# The line of an engine's log that says why it stopped: dockerd's own "failed
# to start daemon", else its last error, else its last line; without the
# time= and level= fields.
engine_log_reason() {
  local log=$1 line
  line=$(grep -E 'failed to start daemon' <<<"$log" | tail -n 1)
  [[ -n $line ]] || line=$(grep -E 'level=(fatal|error)|[Ee]rror' <<<"$log" | tail -n 1)
  [[ -n $line ]] || line=$(grep -v '^[[:space:]]*$' <<<"$log" | tail -n 1)
  line=$(sed -E 's/time="[^"]*" //; s/level=[a-z]+ //; s/^msg="(.*)"$/\1/' <<<"$line")
  line=$(tr -s '[:space:]' ' ' <<<"$line")
  line=${line% }
  [[ -n $line ]] || line="its log is empty"
  printf '%s' "$line"
}

# The command that fixes the commonest reasons an engine cannot start.
engine_fix() {
  case $1 in
    *"must be root"* | *"ermission denied"* | *"peration not permitted"*)
      if [[ $EUID -ne 0 ]]; then
        echo "run as root (sudo $0)"
      else
        echo "run on the machine itself or a VM: an unprivileged container cannot run an engine; or point DOCKER_HOST at an engine that runs"
      fi
      ;;
    *"pid file found"* | *"address already in use"*)
      echo "another engine holds its socket or pid file: systemctl restart docker, or stop that dockerd, then re-run" ;;
    *iptables*"not found"* | *"executable file not found"*)
      echo "apt-get install --reinstall docker.io iptables, then re-run" ;;
    *)
      echo "start an engine by hand (systemctl start docker, or dockerd) and read its log; the tools use any engine that answers" ;;
  esac
}

stop_started_docker() {
  local started="$CACHE/engine.started" how i
  [[ -f $started ]] || return 0
  how=$(<"$started")
  if [[ $how == systemd ]]; then
    systemctl stop docker.socket docker.service
  elif kill "$how" 2>/dev/null; then
    for ((i = 0; i < 30; i++)); do
      kill -0 "$how" 2>/dev/null || break
      sleep 1
    done
  fi
  rm -f "$started"
  log "Stopped the Docker engine the tools had started"
}

# --- virtualenv --------------------------------------------------------------

ensure_venv() {
  local stamp="$VENV/.inputs" want
  want=$(cat "$ROOT/requirements.txt" "$ROOT/constraints.txt" | sha256sum | cut -d' ' -f1)
  if [[ ! -x $VENV/bin/python || ! -f $stamp || $(<"$stamp") != "$want" ]]; then
    log "Creating .venv from requirements.txt"
    python3 -m venv --clear "$VENV"
    mkdir -p "$CACHE"
    # pip byte-compiles everything it installs (~25 s of a fresh setup): keep it.
    # Our machines set PYTHONDONTWRITEBYTECODE=1, so nothing is compiled later:
    # without these files every Ansible process compiles its imports again
    # (measured: the suite ~10 % slower with --no-compile).
    "$VENV/bin/pip" install --disable-pip-version-check \
      -r "$ROOT/requirements.txt" -c "$ROOT/constraints.txt" >"$CACHE/pip.log" 2>&1 ||
      die "installing requirements.txt failed (see .cache/pip.log)"
    echo "$want" >"$stamp"
  fi
  export PATH="$VENV/bin:$PATH"
  export VIRTUAL_ENV="$VENV"
}

# --- images ------------------------------------------------------------------

image_inputs() { docker image inspect -f "{{ index .Config.Labels \"$INPUTS_LABEL\" }}" "$1" 2>/dev/null || true; }

# The bare OS: the public image where a registry answers, else debootstrap.
build_base_image() {
  local platform=$1 suite=${PLATFORM_SUITES[$1]} tag="$IMAGE_PREFIX/base:$1" want rootfs
  want=$(printf 'recipe=%s suite=%s\n' "$BASE_RECIPE" "$suite" | sha256sum | cut -d' ' -f1)
  if [[ $(image_inputs "$tag") == "$want" ]]; then
    log "Image $tag is up to date"
    return 0
  fi
  if timeout 120 docker pull --quiet "debian:$suite" >/dev/null 2>&1; then
    log "Image $tag from debian:$suite"
    printf 'FROM debian:%s\nLABEL %s=%s\n' "$suite" "$INPUTS_LABEL" "$want" | docker build --quiet -t "$tag" - >/dev/null
    return 0
  fi
  log "No registry answers: building $tag with debootstrap ($suite)"
  mkdir -p "$CACHE"
  rootfs=$(mktemp -d "$CACHE/rootfs-$suite.XXXXXX")
  if ! debootstrap --variant=minbase "$suite" "$rootfs" "$DEBIAN_MIRROR" >"$CACHE/debootstrap-$suite.log" 2>&1; then
    rm -rf "$rootfs"
    die "debootstrap $suite failed (see .cache/debootstrap-$suite.log)"
  fi
  tar -C "$rootfs" -c . | docker import --change "LABEL $INPUTS_LABEL=$want" --change 'CMD ["/bin/bash"]' - "$tag" >/dev/null
  rm -rf "$rootfs"
}

# The CA bundle this machine trusts, so that pip inside the containers works
# behind a TLS-inspecting proxy; on an ordinary machine it is Debian's own.
host_ca_bundle() {
  local cert=${PIP_CERT:-}
  [[ -n $cert ]] || cert=$(pip config get global.cert 2>/dev/null || true)
  [[ -f $cert ]] || cert=/etc/ssl/certs/ca-certificates.crt
  printf '%s\n' "$cert"
}

# The server image: what a real server has (python3, sudo, cron, systemd as PID 1).
build_server_image() {
  local platform=$1 base="$IMAGE_PREFIX/base:$1" tag="$IMAGE_PREFIX/server:$1"
  local dir="$ROOT/molecule/shared/testbed/image" ca ctx
  ca=$(host_ca_bundle)
  ctx=$(mktemp -d "$CACHE/context.XXXXXX")
  cp "$dir/Dockerfile" "$dir/zip_bytecode.py" "$ctx/"
  cp "$ca" "$ctx/host-ca.crt"
  # The fixtures every scenario deploys or starts, in /opt/djangoops-test.
  mkdir -p "$ctx/fixtures/bin"
  cp -R "$ROOT/molecule/shared/fixtures/django_project/shop" "$ctx/fixtures/shop"
  cp "${FIXTURE_PROGRAMS[@]/#/$ROOT/molecule/shared/fixtures/listeners/}" "$ctx/fixtures/bin/"
  find "$ctx" -name __pycache__ -prune -exec rm -rf {} +
  build_context "$tag" "$base" "$ctx" "build-$platform.log"
}

# Builds TAG from BASE and the build context directory CTX (then removed),
# unless TAG was built from this very base and these files (its label holds a
# hash of both). The build's output goes to .cache/LOG.
build_context() {
  local tag=$1 base=$2 ctx=$3 log_file=$4 want
  want=$({
    docker image inspect -f '{{.Id}}' "$base"
    cd "$ctx" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
  } | sha256sum | cut -d' ' -f1)
  if [[ $(image_inputs "$tag") == "$want" ]]; then
    rm -rf "$ctx"
    log "Image $tag is up to date"
    return 0
  fi
  log "Building $tag"
  docker build --quiet --build-arg "BASE=$base" --label "$INPUTS_LABEL=$want" -t "$tag" "$ctx" >"$CACHE/$log_file" 2>&1 ||
    { rm -rf "$ctx"; die "building $tag failed (see .cache/$log_file)"; }
  rm -rf "$ctx"
}

# The version matrix's newest ansible-core, which needs a newer Python than the
# host may have: a controller image (molecule/shared/testbed/controller) that
# tools/test runs its steps in. Rebuilt when its recipe or pins change.
CONTROLLER_CORE=2.21
CONTROLLER_IMAGE="$IMAGE_PREFIX/controller:ansible-core-$CONTROLLER_CORE"
build_controller_image() {
  local dir="$ROOT/molecule/shared/testbed/controller" ctx
  ctx=$(mktemp -d "$CACHE/context.XXXXXX")
  cp "$dir/Dockerfile" "$dir/requirements.txt" "$dir/constraints.txt" "$ctx/"
  cp "$(host_ca_bundle)" "$ctx/host-ca.crt"
  build_context "$CONTROLLER_IMAGE" "$IMAGE_PREFIX/base:debian13" "$ctx" build-controller.log
}

# Runs a command in the controller image as if on this machine: the checkout at
# its own path (so that the paths Molecule gives Docker mean the same on both
# sides), the host's Docker engine and network, and the variables that shape
# the output and the test bed.
in_controller() {
  # Tests that run on one version only ask for DJANGOOPS_MATRIX.
  local -a env=(--env DJANGOOPS_MATRIX=newest)
  local name
  for name in CI NO_COLOR PY_COLORS ANSIBLE_NOCOLOR ANSIBLE_FORCE_COLOR MOLECULE_GLOB DJANGOOPS_IMAGE_PREFIX \
    DJANGOOPS_RESULTS_DIR; do
    [[ -z ${!name+set} ]] || env+=(--env "$name=${!name}")
  done
  # ansible-test keeps its pip bootstrap and sanity virtualenvs in ~/.ansible/test:
  # kept between runs and between checkouts, as the host's own ~/.ansible/test is
  # (building them took 100 s of each fresh clone's run), one directory a core.
  local cache=~/.ansible/test-controller-$CONTROLLER_CORE
  mkdir -p "$cache"
  docker run --rm --init --network host \
    --volume /var/run/docker.sock:/var/run/docker.sock --volume "$ROOT:$ROOT" --workdir "$ROOT" \
    --volume "$cache:/root/.ansible/test" \
    "${env[@]}" "$CONTROLLER_IMAGE" "$@"
}

# Builds (or reuses) the images of every platform, the platforms in parallel.
ensure_images() {
  local platform pids=() failed=0 pid
  mkdir -p "$CACHE"
  for platform in "${!PLATFORM_SUITES[@]}"; do
    (build_base_image "$platform" && build_server_image "$platform") &
    pids+=("$!")
  done

  for pid in "${pids[@]}"; do
    wait "$pid" || failed=1
  done
  ((failed == 0)) || die "building the test images failed"
  # From the Debian 13 base image, hence after it; only for the suite's steps
  # on the newest ansible-core (tools/test sets WITH_CONTROLLER).
  [[ -z ${WITH_CONTROLLER:-} ]] || build_controller_image
}
