#!/usr/bin/env bash
# What the usage-metrics tests need (sourced by .ci/run; owned by the usage work):
#   prometheus (Debian) - promtool checks and unit-tests the shipped recording rules and alerts
#                         (deploy/prometheus/), and a real Prometheus scrapes a running front door
# Installs only what is missing, so a warm machine pays nothing.
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
  echo "metrics-deps: installing prometheus"
  # shellcheck source=.ci/apt.sh
  source "$(dirname "${BASH_SOURCE[0]}")/apt.sh"
  ci_apt update -q
  ci_apt install -y -q --no-install-recommends prometheus
  # The package enables the system service; the tests run their own Prometheus, so stop it if started.
  if [ "$(id -u)" = 0 ]; then service prometheus stop >/dev/null 2>&1 || true
  else sudo -n service prometheus stop >/dev/null 2>&1 || true; fi
fi
