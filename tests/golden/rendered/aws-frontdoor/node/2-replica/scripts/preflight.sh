#!/usr/bin/env bash
# coderig node preflight: checks a host before anything is installed or started.
#
# Prints one line per check: "preflight: ok <check>: ..." or "preflight: FAIL <check>: ...",
# then a summary line. Exits 1 when any check failed, 2 on a usage error, 0 otherwise.
# Read-only: it changes nothing on the host, so it is safe to run again and again.
#
# Parameters (environment variables; each also as a flag, e.g. --gpu-model=H100):
#   CODERIG_MODE            gpu (default) | cpu   (cpu: llama.cpp dev preset, no GPU checks)
#   CODERIG_GPU_MODEL       expected GPU model, matched inside the nvidia-smi name (e.g. H100)
#   CODERIG_GPU_COUNT       expected number of GPUs (default 1)
#   CODERIG_DRIVER_MIN      minimum NVIDIA driver version (default 580.65.06)
#   CODERIG_CACHE_PATH      where the weights cache lives (default /var/lib/coderig/cache)
#   CODERIG_HF_HOME         HF_HOME on the host, where markers and hub/ live (default: the cache path)
#   CODERIG_CACHE_DEVICE    block device that will hold the cache (checked by size instead)
#   CODERIG_WEIGHTS_BYTES   bytes of weights to download (default 0)
#   CODERIG_HEADROOM_BYTES  extra free bytes wanted beyond the weights (default 10% of weights, >= 5 GiB)
#   CODERIG_REPO            HF repo of the weights; when its completion marker exists no space is needed
#   CODERIG_PORTS           space/comma separated TCP ports the stack will listen on
#   CODERIG_PROJECT         compose project name (default coderig): ports held by it are not a problem
#   CODERIG_OS_RELEASE      os-release file to read (default /etc/os-release)
#   CODERIG_SLEEP_RAM_BYTES weights the host RAM must hold while vLLM sleeps (idle.action sleep; default 0: no check)
#   CODERIG_MEMINFO         meminfo file to read (default /proc/meminfo)
#   CODERIG_KV_TIER_BYTES   the host KV tier vLLM keeps in /dev/shm (coderig:model.kvOffload; default 0: no check)
#   CODERIG_KV_HOST_BYTES   the host RAM the plan sized the tier from: MemTotal must be at least this
#   CODERIG_SHM_PATH        where the tier lives (default /dev/shm; the model container runs with ipc: host)
#   CODERIG_TARGET          node (default): a server we may install on | local: this workstation
#                           (any OS with Docker; nothing is installed, so Docker must be present)
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
        echo "preflight: see the header of scripts/SCRIPT.sh in the node bundle"
      fi
      exit 0
      ;;
    *)
      echo "preflight: usage error: unknown argument '$arg' (use --name=value)" >&2
      exit 2
      ;;
  esac
done

MODE="${CODERIG_MODE:-gpu}"
GPU_MODEL="${CODERIG_GPU_MODEL:-}"
GPU_COUNT="${CODERIG_GPU_COUNT:-1}"
DRIVER_MIN="${CODERIG_DRIVER_MIN:-580.65.06}"
CACHE_PATH="${CODERIG_CACHE_PATH:-/var/lib/coderig/cache}"
HF_HOME_DIR="${CODERIG_HF_HOME:-$CACHE_PATH}"
CACHE_DEVICE="${CODERIG_CACHE_DEVICE:-}"
WEIGHTS_BYTES="${CODERIG_WEIGHTS_BYTES:-0}"
REPO="${CODERIG_REPO:-}"
PORTS="${CODERIG_PORTS:-}"
PROJECT="${CODERIG_PROJECT:-coderig}"
OS_RELEASE="${CODERIG_OS_RELEASE:-/etc/os-release}"
TARGET="${CODERIG_TARGET:-node}"

case "$MODE" in gpu | cpu) ;; *)
  echo "preflight: usage error: CODERIG_MODE must be gpu or cpu, got '$MODE'" >&2
  exit 2
  ;;
esac
for n in "$GPU_COUNT" "$WEIGHTS_BYTES"; do
  if ! [[ "$n" =~ ^[0-9]+$ ]]; then
    echo "preflight: usage error: '$n' is not a whole number (CODERIG_GPU_COUNT / CODERIG_WEIGHTS_BYTES)" >&2
    exit 2
  fi
done
if [[ -n "${CODERIG_HEADROOM_BYTES:-}" ]]; then
  HEADROOM="$CODERIG_HEADROOM_BYTES"
else
  HEADROOM=$((WEIGHTS_BYTES / 10))
  min_headroom=$((5 * 1024 * 1024 * 1024))
  ((HEADROOM < min_headroom)) && HEADROOM=$min_headroom
fi

problems=0
ok() { printf 'preflight: ok %s: %s\n' "$1" "$2"; }
fail() {
  printf 'preflight: FAIL %s: %s\n' "$1" "$2"
  problems=$((problems + 1))
}
human() { # bytes -> "12.3 GB"
  awk -v b="$1" 'BEGIN { printf "%.1f GB", b / 1e9 }'
}
version_ge() { # $1 >= $2 ?
  [[ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" == "$2" ]]
}

# --- OS ---------------------------------------------------------------------
os_id=""
os_version=""
if [[ -r "$OS_RELEASE" ]]; then
  os_id="$(sed -n 's/^ID=//p' "$OS_RELEASE" | tr -d '"')"
  os_version="$(sed -n 's/^VERSION_ID=//p' "$OS_RELEASE" | tr -d '"')"
fi
if [[ "$TARGET" == local ]]; then
  ok os "${os_id:-$(uname -s)} ${os_version} (local target: nothing is installed here)"
else
  case "$os_id:$os_version" in
    ubuntu:22.04 | ubuntu:24.04 | debian:12 | debian:13)
      ok os "$os_id $os_version"
      ;;
    :*)
      fail os "cannot read $OS_RELEASE; supported: Ubuntu 22.04/24.04, Debian 12/13"
      ;;
    *)
      fail os "$os_id $os_version is not supported; supported: Ubuntu 22.04/24.04, Debian 12/13"
      ;;
  esac
fi
os_supported=0
[[ "$problems" == 0 ]] && os_supported=1
have_apt=0
command -v apt-get >/dev/null 2>&1 && have_apt=1
installable=$((os_supported && have_apt))
[[ "$TARGET" == local ]] && installable=0

# --- GPU --------------------------------------------------------------------
if [[ "$MODE" == gpu ]]; then
  if ! command -v nvidia-smi >/dev/null 2>&1; then
    fail gpu "no NVIDIA GPU: nvidia-smi not found (install the NVIDIA driver >= $DRIVER_MIN, or use a CPU preset)"
  elif ! gpu_csv="$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>&1)"; then
    fail gpu "no NVIDIA GPU: nvidia-smi failed: $(printf '%s' "$gpu_csv" | head -n1)"
  else
    count="$(printf '%s\n' "$gpu_csv" | grep -c . || true)"
    names="$(printf '%s\n' "$gpu_csv" | cut -d, -f1 | sed 's/^ *//; s/ *$//' | sort | uniq -c |
      awk '{ c = $1; $1 = ""; sub(/^ /, ""); printf "%s%dx %s", sep, c, $0; sep = ", " }')"
    if ((count < GPU_COUNT)); then
      fail gpu-count "found $count GPU(s) ($names), the plan needs $GPU_COUNT"
    else
      ok gpu-count "$count GPU(s): $names"
    fi
    if [[ -n "$GPU_MODEL" ]]; then
      wrong="$(printf '%s\n' "$gpu_csv" | cut -d, -f1 | grep -vic -- "$GPU_MODEL" || true)"
      if ((wrong > 0)); then
        fail gpu-model "expected $GPU_MODEL, found $names"
      else
        ok gpu-model "$GPU_MODEL"
      fi
    fi
    driver="$(printf '%s\n' "$gpu_csv" | head -n1 | cut -d, -f2 | tr -d ' ')"
    if version_ge "$driver" "$DRIVER_MIN"; then
      ok driver "$driver >= $DRIVER_MIN"
    else
      fail driver "NVIDIA driver $driver is older than the required $DRIVER_MIN"
    fi
  fi
fi

# --- disk -------------------------------------------------------------------
marker_dir="$HF_HOME_DIR/coderig-markers"
marker=""
if [[ -n "$REPO" ]]; then
  marker="$marker_dir/$(printf '%s' "$REPO" | sed 's#/#--#g').json"
fi
if [[ -n "$marker" && -f "$marker" ]]; then
  ok disk "weights for $REPO already complete in $HF_HOME_DIR (marker found): no download needed"
elif [[ -n "$CACHE_DEVICE" ]]; then
  if [[ ! -b "$CACHE_DEVICE" ]]; then
    fail disk "cache device $CACHE_DEVICE is not a block device"
  else
    size="$(blockdev --getsize64 "$CACHE_DEVICE")"
    need=$((WEIGHTS_BYTES + HEADROOM))
    if ((size < need)); then
      fail disk "not enough disk: $CACHE_DEVICE holds $(human "$size"), the weights need $(human "$need") (incl. $(human "$HEADROOM") headroom)"
    else
      ok disk "$CACHE_DEVICE holds $(human "$size") >= $(human "$need")"
    fi
  fi
else
  probe="$CACHE_PATH"
  while [[ ! -e "$probe" && "$probe" != / ]]; do probe="$(dirname "$probe")"; done
  avail=$(($(df -Pk "$probe" | awk 'NR == 2 { print $4 }') * 1024))
  present=0
  if [[ -n "$REPO" ]]; then
    repo_dir="$HF_HOME_DIR/hub/models--$(printf '%s' "$REPO" | sed 's#/#--#g')"
    if [[ -d "$repo_dir" ]]; then
      present=$(($(du -sk "$repo_dir" | cut -f1) * 1024))
    fi
  fi
  need=$((WEIGHTS_BYTES + HEADROOM - present))
  ((need < 0)) && need=0
  if ((avail < need)); then
    fail disk "not enough disk: $(human "$avail") free at $probe, the weights need $(human "$need") more (incl. $(human "$HEADROOM") headroom)"
  else
    ok disk "$(human "$avail") free at $probe >= $(human "$need") needed"
  fi
fi

# --- host RAM for vLLM sleep mode (coderig:idle.action sleep) -------------------
# Sleep level 1 moves the weights from GPU memory to host RAM; the host must hold them with 10% to spare.
SLEEP_RAM_BYTES="${CODERIG_SLEEP_RAM_BYTES:-0}"
MEMINFO="${CODERIG_MEMINFO:-/proc/meminfo}"
if (( SLEEP_RAM_BYTES > 0 )); then
  mem_kb="$(awk '/^MemTotal:/ {print $2}' "$MEMINFO" 2>/dev/null || true)"
  need=$((SLEEP_RAM_BYTES + SLEEP_RAM_BYTES / 10))
  if [[ -z "$mem_kb" ]]; then
    fail host-ram "cannot read MemTotal from $MEMINFO"
  elif (( mem_kb * 1024 >= need )); then
    ok host-ram "$(human $((mem_kb * 1024))) holds the sleeping model's weights ($(human "$SLEEP_RAM_BYTES") + 10%)"
  else
    fail host-ram "$(human $((mem_kb * 1024))) of RAM cannot hold the weights ($(human "$SLEEP_RAM_BYTES") + 10%) while the model sleeps (vLLM sleep level 1 keeps them in host RAM): set coderig:idle.action: stop, or use hosts with more RAM"
  fi
fi

# --- host KV tier (coderig:model.kvOffload) -----------------------------------
# vLLM's native CPU offloading maps its tier from files in /dev/shm (v1/kv_offload/cpu/shared_offload_region.py);
# the plan sized it from CODERIG_KV_HOST_BYTES of RAM, so the host must have that RAM and that much shm.
KV_TIER_BYTES="${CODERIG_KV_TIER_BYTES:-0}"
KV_HOST_BYTES="${CODERIG_KV_HOST_BYTES:-0}"
SHM_PATH="${CODERIG_SHM_PATH:-/dev/shm}"
if (( KV_TIER_BYTES > 0 )); then
  mem_kb="$(awk '/^MemTotal:/ {print $2}' "$MEMINFO" 2>/dev/null || true)"
  # MemTotal is RAM less what the kernel keeps (a few %): allow 5% below the declared size
  if [[ -z "$mem_kb" ]]; then
    fail kv-tier "cannot read MemTotal from $MEMINFO"
  elif (( mem_kb * 1024 < KV_HOST_BYTES * 95 / 100 )); then
    fail kv-tier "$(human $((mem_kb * 1024))) of RAM, but the plan sized the host KV tier for $(human "$KV_HOST_BYTES"): set coderig:model.kvOffload.hostMemoryGiB to this host's RAM (or a smaller sizeGiB)"
  else
    ok kv-tier "$(human $((mem_kb * 1024))) of RAM, as the plan assumed ($(human "$KV_HOST_BYTES"))"
  fi
  shm_bytes="$(df -B1 --output=size "$SHM_PATH" 2>/dev/null | tail -n 1 | tr -d ' ' || true)"
  if ! [[ "$shm_bytes" =~ ^[0-9]+$ ]]; then
    fail kv-shm "cannot read the size of $SHM_PATH"
  elif (( shm_bytes < KV_TIER_BYTES )); then
    fail kv-shm "$SHM_PATH holds $(human "$shm_bytes"), the host KV tier needs $(human "$KV_TIER_BYTES") there: lower coderig:model.kvOffload.sizeGiB, or grow $SHM_PATH (mount -o remount,size=...)"
  else
    ok kv-shm "$SHM_PATH holds $(human "$shm_bytes") >= the host KV tier's $(human "$KV_TIER_BYTES")"
  fi
fi

# --- ports ------------------------------------------------------------------
stack_running=0
if command -v docker >/dev/null 2>&1 &&
  [[ -n "$(docker ps -q --filter "label=com.docker.compose.project=$PROJECT" 2>/dev/null || true)" ]]; then
  stack_running=1
fi
port_in_use() {
  if command -v ss >/dev/null 2>&1; then
    [[ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]]
  else # no iproute2 (e.g. macOS): something accepts connections on loopback
    (: </dev/tcp/127.0.0.1/"$1") 2>/dev/null
  fi
}
for port in ${PORTS//,/ }; do
  if ! [[ "$port" =~ ^[0-9]+$ ]]; then
    fail ports "'$port' is not a port number"
    continue
  fi
  if port_in_use "$port"; then
    if ((stack_running)); then
      ok ports "$port in use by the running $PROJECT stack"
    else
      fail ports "port $port is already in use by another process"
    fi
  else
    ok ports "$port free"
  fi
done

# --- docker and the NVIDIA container toolkit -----------------------------------
if command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
  ok docker "$(docker compose version --short 2>/dev/null | sed 's/^/compose /')"
elif ((installable)); then
  ok docker "Docker Engine / compose plugin missing: install.sh will install them with apt"
elif [[ "$TARGET" == local ]]; then
  fail docker "Docker with the compose plugin is missing: install Docker Desktop or Docker Engine + compose plugin"
else
  fail docker "Docker with the compose plugin is missing and cannot be installed here (needs apt on a supported OS)"
fi
if [[ "$MODE" == gpu ]]; then
  if command -v nvidia-ctk >/dev/null 2>&1 || command -v nvidia-container-runtime >/dev/null 2>&1; then
    ok nvidia-toolkit "NVIDIA container toolkit present"
  elif ((installable)); then
    ok nvidia-toolkit "NVIDIA container toolkit missing: install.sh will install it with apt"
  else
    fail nvidia-toolkit "NVIDIA container toolkit is missing and cannot be installed here (needs apt on a supported OS)"
  fi
fi

if ((problems > 0)); then
  echo "preflight: $problems problem(s) found; nothing was changed on this host"
  exit 1
fi
echo "preflight: all checks passed"
