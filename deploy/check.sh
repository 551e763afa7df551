#!/usr/bin/env bash
# Checks the operations bundle's Prometheus rules: `promtool check rules` (syntax, PromQL, templates)
# and `promtool test rules` (every alert fires when it should and stays quiet when it should not).
# promtool comes with Debian's `prometheus` package: when it is missing and this runs as root on a
# Debian-like machine (as CI does), it is installed, without starting the Prometheus server.
# The dashboard and the rules' metric names are checked by test/unit/ops-bundle.test.ts.
set -euo pipefail
cd "$(dirname "$0")/prometheus"

install_promtool() {
  echo "deploy/check.sh: promtool not found; installing Debian's prometheus package (it brings promtool)" >&2
  # Install the tool only: no service start (policy-rc.d 101), no node exporter (a recommendation).
  local policy=/usr/sbin/policy-rc.d created=''
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && created=1
  fi
  local status=0
  {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >/dev/null ||
      { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >/dev/null; }
  } || status=$?
  if [ -n "$created" ]; then rm -f "$policy"; fi
  return "$status"
}

if ! command -v promtool >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    install_promtool
  else
    echo "deploy/check.sh: promtool is not installed. Install it and run this again:" >&2
    echo "  Debian/Ubuntu: sudo apt-get install --no-install-recommends prometheus" >&2
    echo "  elsewhere: promtool is in every release archive of https://github.com/prometheus/prometheus/releases" >&2
    exit 1
  fi
fi

echo "deploy/check.sh: $(promtool --version 2>&1 | head -n 1)"
promtool check rules edgeplane-alerts.yml
promtool test rules edgeplane-alerts.test.yml
