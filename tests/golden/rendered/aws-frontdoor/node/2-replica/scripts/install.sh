#!/usr/bin/env bash
# coderig node install: Docker Engine + compose plugin, and (GPU mode) the NVIDIA container
# toolkit wired into Docker. Idempotent: installs only what is missing, changes nothing when all
# is present. Uses the vendors' apt repositories (Docker, NVIDIA); Ubuntu and Debian only.
#
# Parameters (environment variables; each also as a flag, e.g. --mode=cpu):
#   CODERIG_MODE   gpu (default) | cpu   (cpu: no NVIDIA toolkit)
set -euo pipefail

for arg in "$@"; do
  case "$arg" in
    --*=*)
      key="${arg%%=*}"
      key="${key#--}"
      key="CODERIG_$(printf '%s' "$key" | tr 'a-z-' 'A-Z_')"
      printf -v "$key" '%s' "${arg#*=}"
      export "${key?}"
      ;;
    -h | --help)
      # the script's header comment: what it does and every parameter
      if [ -f "${BASH_SOURCE[0]:-}" ]; then
        sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"
      else
        echo "install: see the header of scripts/SCRIPT.sh in the node bundle"
      fi
      exit 0
      ;;
    *)
      echo "install: usage error: unknown argument '$arg' (use --name=value)" >&2
      exit 2
      ;;
  esac
done
MODE="${CODERIG_MODE:-gpu}"

log() { printf 'install: %s\n' "$*"; }
die() {
  printf 'install: FAIL %s\n' "$*"
  exit 1
}

if [[ "$(id -u)" != 0 ]]; then
  SUDO=(sudo -n)
else
  SUDO=()
fi
as_root() { "${SUDO[@]}" "$@"; }
export DEBIAN_FRONTEND=noninteractive

# shellcheck disable=SC1091
. /etc/os-release
case "${ID:-}" in
  ubuntu | debian) ;;
  *) die "unsupported OS '${ID:-unknown}': install Docker and the NVIDIA container toolkit by hand" ;;
esac

# A fresh machine often runs apt-daily / unattended-upgrades at first boot: wait for their locks
# (dpkg's through DPkg::Lock::Timeout; the lists lock of `apt-get update`, which apt ignores that
# option for, by retrying while the failure is the lock) instead of failing the install.
APT_LOCK_TIMEOUT=600
apt_update() {
  local waited=0 out
  until out="$(as_root apt-get -o DPkg::Lock::Timeout="$APT_LOCK_TIMEOUT" update -q 2>&1)"; do
    if [[ "$out" != *"Could not get lock"* ]] || ((waited >= APT_LOCK_TIMEOUT)); then
      printf '%s\n' "$out"
      die "updating the package lists failed"
    fi
    ((waited == 0)) && log "another apt holds the package lists lock; waiting up to ${APT_LOCK_TIMEOUT}s"
    sleep 5
    waited=$((waited + 5))
  done
}
apt_updated=0
apt_install() {
  if ((apt_updated == 0)); then
    apt_update
    apt_updated=1
  fi
  as_root apt-get -o DPkg::Lock::Timeout="$APT_LOCK_TIMEOUT" install -y -q --no-install-recommends "$@"
}

# --- Docker Engine + compose plugin -------------------------------------------------
if command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
  log "docker present: $(docker --version)"
else
  log "installing Docker Engine and the compose plugin from Docker's apt repository"
  apt_install ca-certificates curl
  as_root install -m 0755 -d /etc/apt/keyrings
  if [[ ! -s /etc/apt/keyrings/docker.asc ]]; then
    as_root curl -fsSL "https://download.docker.com/linux/${ID}/gpg" -o /etc/apt/keyrings/docker.asc
    as_root chmod a+r /etc/apt/keyrings/docker.asc
  fi
  list="deb [arch=$(dpkg --print-architecture) signed-by=/etc/apt/keyrings/docker.asc] https://download.docker.com/linux/${ID} ${VERSION_CODENAME} stable"
  if [[ "$(cat /etc/apt/sources.list.d/docker.list 2>/dev/null || true)" != "$list" ]]; then
    printf '%s\n' "$list" | as_root tee /etc/apt/sources.list.d/docker.list >/dev/null
    apt_updated=0
  fi
  apt_install docker-ce docker-ce-cli containerd.io docker-buildx-plugin docker-compose-plugin
  as_root systemctl enable --now docker
  docker compose version >/dev/null 2>&1 || die "docker compose still missing after install"
fi

# --- NVIDIA container toolkit --------------------------------------------------------
if [[ "$MODE" == gpu ]]; then
  if command -v nvidia-ctk >/dev/null 2>&1; then
    log "NVIDIA container toolkit present: $(nvidia-ctk --version | head -n1)"
  else
    log "installing the NVIDIA container toolkit from NVIDIA's apt repository"
    apt_install ca-certificates curl gnupg
    keyring=/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg
    if [[ ! -s "$keyring" ]]; then
      curl -fsSL https://nvidia.github.io/libnvidia-container/gpgkey | as_root gpg --dearmor --yes -o "$keyring"
    fi
    if [[ ! -s /etc/apt/sources.list.d/nvidia-container-toolkit.list ]]; then
      curl -fsSL https://nvidia.github.io/libnvidia-container/stable/deb/nvidia-container-toolkit.list |
        sed "s#deb https://#deb [signed-by=$keyring] https://#g" |
        as_root tee /etc/apt/sources.list.d/nvidia-container-toolkit.list >/dev/null
      apt_updated=0
    fi
    apt_install nvidia-container-toolkit
  fi
  if docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q '"nvidia"'; then
    log "docker already has the nvidia runtime"
  else
    log "configuring the nvidia runtime in Docker"
    as_root nvidia-ctk runtime configure --runtime=docker
    as_root systemctl restart docker
  fi
fi
log "done"
