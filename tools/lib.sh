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

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# --- host packages -----------------------------------------------------------

ensure_host_packages() {
  local missing=()
  command -v docker >/dev/null || missing+=(docker.io)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v shellcheck >/dev/null || missing+=(shellcheck)
  command -v git >/dev/null || missing+=(git)
  python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
  ((${#missing[@]})) || return 0
  [[ $EUID -eq 0 ]] || die "missing host packages (${missing[*]}) and not root: install them, or run as root"
  log "Installing host packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# --- Docker engine -----------------------------------------------------------

docker_answers() { docker info >/dev/null 2>&1; }

# Starts an engine when none answers, and remembers that it did so that
# `tools/engine stop` stops only what the tools started.
ensure_docker() {
  docker_answers && return 0
  mkdir -p "$CACHE"
  if [[ -d /run/systemd/system ]] && systemctl start docker >/dev/null 2>&1; then
    echo systemd >"$CACHE/engine.started"
  else
    log "No Docker engine answers; starting dockerd (log: .cache/dockerd.log)"
    setsid dockerd >"$CACHE/dockerd.log" 2>&1 </dev/null &
    echo "$!" >"$CACHE/engine.started"
  fi
  local i
  for ((i = 0; i < 60; i++)); do
    docker_answers && return 0
    sleep 1
  done
  die "the Docker engine did not answer within 60 s (see .cache/dockerd.log)"
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
  local dir="$ROOT/molecule/shared/image" ca want ctx
  ca=$(host_ca_bundle)
  want=$({ docker image inspect -f '{{.Id}}' "$base"; cat "$dir/Dockerfile" "$ca"; } | sha256sum | cut -d' ' -f1)
  if [[ $(image_inputs "$tag") == "$want" ]]; then
    log "Image $tag is up to date"
    return 0
  fi
  log "Building $tag"
  ctx=$(mktemp -d "$CACHE/context.XXXXXX")
  cp "$dir/Dockerfile" "$ctx/"
  cp "$ca" "$ctx/host-ca.crt"
  docker build --quiet --build-arg "BASE=$base" --label "$INPUTS_LABEL=$want" -t "$tag" "$ctx" >"$CACHE/build-$platform.log" 2>&1 ||
    { rm -rf "$ctx"; die "building $tag failed (see .cache/build-$platform.log)"; }
  rm -rf "$ctx"
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
}
