#!/usr/bin/env bash
# ci_apt ARGS…: apt-get that waits for another apt (unattended-upgrades, apt-daily, a parallel job)
# instead of failing at once. Sourced by the *-deps.sh scripts; runs as root or through `sudo -n`.
#   - dpkg's frontend lock (install, remove): apt-get's own DPkg::Lock::Timeout waits for it.
#   - apt-get update's lists lock: apt (2.6) ignores DPkg::Lock::Timeout there, so update is retried
#     while "Could not get lock" is the failure, for the same 600 s.
CI_APT_LOCK_TIMEOUT="${CI_APT_LOCK_TIMEOUT:-600}"

ci_apt() {
  local sudo=() waited=0 rc out
  [ "$(id -u)" = 0 ] || sudo=(sudo -n)
  if [ "${1:-}" != update ] && [[ " $* " != *" update "* ]]; then
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout="$CI_APT_LOCK_TIMEOUT" "$@"
    return
  fi
  while :; do
    rc=0
    out="$("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout="$CI_APT_LOCK_TIMEOUT" "$@" 2>&1)" || rc=$?
    if [ "$rc" = 0 ] || [[ "$out" != *"Could not get lock"* ]] || [ "$waited" -ge "$CI_APT_LOCK_TIMEOUT" ]; then
      printf '%s\n' "$out"
      return "$rc"
    fi
    [ "$waited" = 0 ] && echo "ci_apt: another apt holds the package lists lock; waiting up to ${CI_APT_LOCK_TIMEOUT}s"
    sleep 2
    waited=$((waited + 2))
  done
}
