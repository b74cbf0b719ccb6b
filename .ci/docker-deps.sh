#!/usr/bin/env bash
# A Docker engine for the dev-stack end-to-end test (tests/program/test_engine_dev.py), sourced by
# .ci/run (root, repo root, `set -euo pipefail`):
#   docker.io, debootstrap  Debian's packages (the engine; tests/images/build.sh's base image)
#   dockerd                 started when not running: --bridge=none --iptables=false (every
#                           container of the stack uses host networking); stopped when .ci/run exits
#   docker compose v2       Debian ships only compose v1: built from github.com/docker/compose/v2
#                           v2.40.3 (tools/compose; the Go module proxy) once into the tools cache, linked into
#                           /usr/local/lib/docker/cli-plugins (cold ~12 min, mostly downloads; warm 0 s)
# The images themselves are built by the test (tests/images/build.sh; cached by Docker).
_docker_deps() {
  local compose_version=2.40.3 missing=() cache t0
  command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
  command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "docker-deps: installing ${missing[*]}"
    # shellcheck source=.ci/apt.sh
    source "$(dirname "${BASH_SOURCE[0]}")/apt.sh"
    ci_apt update -q
    ci_apt install -y -q --no-install-recommends "${missing[@]}"
  fi
  if ! docker info >/dev/null 2>&1; then
    mkdir -p /var/log/coderig
    dockerd --bridge=none --iptables=false --ip6tables=false >/var/log/coderig/dockerd.log 2>&1 &
    _docker_deps_pid=$!
    trap 'kill "$_docker_deps_pid" 2>/dev/null || true' EXIT
    for _ in $(seq 60); do
      docker info >/dev/null 2>&1 && break
      sleep 0.5
    done
    docker info >/dev/null 2>&1 || { echo "docker-deps: dockerd did not start:" >&2; tail -20 /var/log/coderig/dockerd.log >&2; return 1; }
    echo "docker-deps: started dockerd (pid $_docker_deps_pid)"
  fi
  if ! docker compose version >/dev/null 2>&1; then
    cache="${CODERIG_TOOLS_CACHE:-$HOME/.cache/coderig/tools}/compose-$compose_version-$(go env GOVERSION)"
    if ! [ -e "$cache/.complete" ]; then
      rm -rf "$cache" && mkdir -p "$cache"
      t0=$SECONDS
      # tools/compose: a wrapper module (`go install …@version` refuses compose's exclude directives)
      if ! (cd tools/compose && GOFLAGS=-mod=mod go build -trimpath -o "$cache/docker-compose" \
        -ldflags "-s -w -X github.com/docker/compose/v2/internal.Version=v$compose_version" \
        github.com/docker/compose/v2/cmd) >"$cache.log" 2>&1; then
        echo "docker-deps: building docker compose failed; $cache.log ends:" >&2
        tail -20 "$cache.log" >&2
        return 1
      fi
      touch "$cache/.complete"
      echo "docker-deps: built docker compose v$compose_version in $((SECONDS - t0))s"
    fi
    mkdir -p /usr/local/lib/docker/cli-plugins
    ln -sf "$cache/docker-compose" /usr/local/lib/docker/cli-plugins/docker-compose
  fi
  echo "docker-deps: $(docker compose version)"
}

_docker_deps || return 1
unset -f _docker_deps
