#!/usr/bin/env bash
# coderig readiness wait: after `docker compose up -d`, waits until every service is ready, streaming
# progress (weights download %, model loading lines) and giving up after a time budget sized from the
# weights. On failure it names the failing service and prints its last log lines.
#
# Parameters (environment variables; each also as a flag, e.g. --budget-seconds=3600):
#   CODERIG_BUNDLE_DIR       directory holding compose.yaml (default /opt/coderig)
#   CODERIG_PROJECT          compose project name (default coderig)
#   CODERIG_BUDGET_SECONDS   give up after this many seconds (default 3600)
#   CODERIG_SERVICES         services that must be healthy/running (default "model litellm gateway")
#   CODERIG_WEIGHTS_SERVICE  one-shot download service, must exit 0 (default weights; "" for none)
#   CODERIG_POLL_SECONDS     seconds between checks (default 10)
#   CODERIG_LOG_LINES        log lines printed on failure (default 60)
#   CODERIG_GATEWAY_URL      when set, ready also needs one GET of each of these URLs (space-separated: the
#                            gateway's /healthz, which answers 200 only when LiteLLM and the model server
#                            behind it are ready, and each replica's /health through its TLS link) to
#                            succeed, run with busybox wget inside the gateway container (default: none)
#   CODERIG_GATEWAY_SERVICE  the service that runs that GET (default gateway)
#   CODERIG_UP_LOG           log of the background `docker compose up -d` (default $CODERIG_BUNDLE_DIR/up.log);
#                            its last line is the progress while images are pulled, and a line
#                            "compose-up-exit=N" with N != 0 is a failure
#   DOCKER                   docker binary (default docker)
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
        echo "wait-ready: see the header of scripts/SCRIPT.sh in the node bundle"
      fi
      exit 0
      ;;
    *)
      echo "wait-ready: usage error: unknown argument '$arg' (use --name=value)" >&2
      exit 2
      ;;
  esac
done

BUNDLE_DIR="${CODERIG_BUNDLE_DIR:-/opt/coderig}"
PROJECT="${CODERIG_PROJECT:-coderig}"
BUDGET="${CODERIG_BUDGET_SECONDS:-3600}"
SERVICES="${CODERIG_SERVICES:-model litellm gateway}"
WEIGHTS="${CODERIG_WEIGHTS_SERVICE-weights}"
POLL="${CODERIG_POLL_SECONDS:-10}"
LOG_LINES="${CODERIG_LOG_LINES:-60}"
GATEWAY_URL="${CODERIG_GATEWAY_URL:-}"
GATEWAY_SERVICE="${CODERIG_GATEWAY_SERVICE:-gateway}"
DOCKER="${DOCKER:-docker}"
UP_LOG="${CODERIG_UP_LOG:-$BUNDLE_DIR/up.log}"

compose() { "$DOCKER" compose --project-directory "$BUNDLE_DIR" -p "$PROJECT" "$@"; }
say() { printf 'wait-ready: %s\n' "$*"; }
fail() { # $1 service, $2 reason
  say "FAIL $1: $2"
  say "last $LOG_LINES log lines of $1:"
  compose logs --no-color --tail "$LOG_LINES" "$1" 2>&1 | sed 's/^/  | /' || true
  exit 1
}
# "service|state|health|exitcode" for one service, empty when it has no container yet.
status_of() {
  compose ps -a --format '{{.Service}}|{{.State}}|{{.Health}}|{{.ExitCode}}' 2>/dev/null |
    awk -F'|' -v s="$1" '$1 == s { print; exit }'
}
# While containers do not exist yet, `compose up` is pulling images: show its log, fail on its error.
check_up_log() {
  [[ -f "$UP_LOG" ]] || return 0
  local code line
  code="$(sed -n 's/^compose-up-exit=//p' "$UP_LOG" | tail -n1)"
  if [[ -n "$code" && "$code" != 0 ]]; then
    say "FAIL compose: docker compose up exited with code $code"
    say "last $LOG_LINES lines of $UP_LOG:"
    tail -n "$LOG_LINES" "$UP_LOG" | sed 's/^/  | /'
    exit 1
  fi
  line="$(tr '\r' '\n' <"$UP_LOG" | grep -v '^[[:space:]]*$' | tail -n1 || true)"
  if [[ -n "$line" && "$line" != "$last_progress" ]]; then
    say "[$((elapsed / 60))m$((elapsed % 60))s] compose: ${line:0:200}"
    last_progress="$line"
  fi
}
# One request per URL from inside the gateway container (host networking: the node's loopback); prints
# the last answer, or which URL failed and how.
probe_gateway() {
  local url out=""
  for url in $GATEWAY_URL; do
    if ! out="$(compose exec -T "$GATEWAY_SERVICE" wget -q -O - --no-check-certificate "$url" 2>&1)"; then
      printf '%s through the gateway failed: %s' "$url" "$out"
      return 1
    fi
  done
  printf '%s' "$out"
}
last_line() { # $1 service, $2 optional grep pattern
  compose logs --no-color --no-log-prefix --tail 50 "$1" 2>/dev/null | tr '\r' '\n' |
    grep -E -- "${2:-.}" | grep -v '^[[:space:]]*$' | tail -n1 || true
}

start=$SECONDS
deadline=$((start + BUDGET))
say "waiting up to $((BUDGET / 60)) min for: ${WEIGHTS:+$WEIGHTS (download) then }$SERVICES"
last_progress=""
why=""
weights_done=0
[[ -z "$WEIGHTS" ]] && weights_done=1

while :; do
  elapsed=$((SECONDS - start))
  if ((weights_done == 0)); then
    IFS='|' read -r _ state _ code <<<"$(status_of "$WEIGHTS")"
    case "${state:-}" in
      exited | dead)
        if [[ "${code:-1}" == 0 ]]; then
          weights_done=1
          say "$WEIGHTS: complete after ${elapsed}s"
          continue
        fi
        fail "$WEIGHTS" "download exited with code ${code:-?}"
        ;;
      "") check_up_log ;;
      *)
        line="$(last_line "$WEIGHTS" '^weights:')"
        if [[ -n "$line" && "$line" != "$last_progress" ]]; then
          say "[$((elapsed / 60))m$((elapsed % 60))s] $line"
          last_progress="$line"
        fi
        ;;
    esac
  else
    not_ready=""
    for svc in $SERVICES; do
      IFS='|' read -r _ state health code <<<"$(status_of "$svc")"
      case "${state:-}" in
        exited | dead) fail "$svc" "container exited with code ${code:-?}" ;;
        restarting) fail "$svc" "container is restarting (crash loop)" ;;
      esac
      if [[ "${health:-}" == unhealthy ]]; then
        fail "$svc" "health check reports unhealthy"
      fi
      [[ -z "${state:-}" ]] && check_up_log
      if [[ "${state:-}" != running ]] || [[ -n "${health:-}" && "$health" != healthy ]]; then
        not_ready="$svc"
        break
      fi
    done
    if [[ -z "$not_ready" ]]; then
      if [[ -z "$GATEWAY_URL" ]]; then
        say "ready after ${elapsed}s: $SERVICES"
        exit 0
      fi
      if probe="$(probe_gateway)"; then
        say "ready after ${elapsed}s: $SERVICES; GET $GATEWAY_URL through the gateway: ${probe:0:200}"
        exit 0
      fi
      not_ready="$GATEWAY_SERVICE"
      why="GET $(printf '%s' "$probe" | tr '\n' ' ' | cut -c1-300)"
      if [[ "$why" != "$last_progress" ]]; then
        say "[$((elapsed / 60))m$((elapsed % 60))s] $why"
        last_progress="$why"
      fi
    else
      why=""
    fi
    line=""
    [[ -z "$why" ]] && line="$(last_line "$not_ready")"
    if [[ -n "$line" && "$line" != "$last_progress" ]]; then
      say "[$((elapsed / 60))m$((elapsed % 60))s] $not_ready: ${line:0:200}"
      last_progress="$line"
    fi
  fi
  if ((SECONDS >= deadline)); then
    pending="$WEIGHTS"
    ((weights_done)) && pending="${not_ready:-${SERVICES%% *}}"
    fail "$pending" "not ready within the budget of ${BUDGET}s${why:+ ($why)}"
  fi
  sleep "$POLL"
done
