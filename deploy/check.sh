#!/usr/bin/env bash
# Checks the operations bundle's Prometheus rules: `promtool check rules` (syntax, PromQL, templates)
# and `promtool test rules` (every alert fires when it should and stays quiet when it should not).
# promtool comes with Debian's `prometheus` package: when it is missing and this runs as root on a
# Debian-like machine (as CI does), it is installed, without starting the Prometheus server.
# It also parses the Grafana dashboard's queries. That every metric named in a rule or a query is one
# the replicator exports is checked by test/unit/ops-bundle.test.ts.
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

# The dashboard's queries are PromQL too: parse them the same way, Grafana's variables filled in.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
node -e '
  const dashboard = JSON.parse(require("node:fs").readFileSync(process.argv[1], "utf8"));
  const exprs = [];
  const walk = (v) => {
    if (Array.isArray(v)) v.forEach(walk);
    else if (v && typeof v === "object") for (const [k, x] of Object.entries(v)) k === "expr" && typeof x === "string" ? exprs.push(x) : walk(x);
  };
  walk(dashboard);
  const filled = (e) => e.replaceAll("$__rate_interval", "5m").replace(/\$\{?\w+\}?/g, ".*");
  console.log("groups:\n  - name: dashboard-queries\n    rules:");
  exprs.forEach((e, i) => console.log(`      - record: dashboard:query_${i}\n        expr: ${JSON.stringify(filled(e))}`));
' ../grafana/edgeplane-replicator.json >"$tmp/dashboard-queries.yml"
echo "Dashboard queries (deploy/grafana/edgeplane-replicator.json):"
promtool check rules "$tmp/dashboard-queries.yml" | sed 1d
