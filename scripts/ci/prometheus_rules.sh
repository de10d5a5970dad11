#!/usr/bin/env bash
# Checks the shipped Prometheus alert rules: `promtool check rules` (syntax,
# PromQL) and `promtool test rules` (one unit test per alert, in
# deploy/prometheus/rules_test.yml). That every metric the rules and the
# Grafana dashboard name really exists is checked by cargo tests
# (rustynetd tests/deploy_metrics.rs, rustynet-control tests/metrics.rs).
#
# promtool comes from Debian's `prometheus` package. Installing that package
# would also start a Prometheus server, so unless promtool is already on
# PATH the package is only downloaded and promtool extracted from it into
# target/tools/ (reused by later runs).
# Usage: scripts/ci/prometheus_rules.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

promtool="$(command -v promtool || true)"
if [ -z "$promtool" ]; then
  tools="${CARGO_TARGET_DIR:-target}/tools"
  mkdir -p "$tools"
  tools="$(cd "$tools" && pwd)"
  promtool="$tools/promtool"
  if [ ! -x "$promtool" ]; then
    scratch="$(mktemp -d)"
    trap 'rm -rf "$scratch"' EXIT
    echo "==> extracting promtool from Debian's prometheus package"
    # _apt may not write into a private temp dir: download as root there.
    if ! (cd "$scratch" && apt-get download -q prometheus >/dev/null 2>&1); then
      apt-get update -q >/dev/null
      (cd "$scratch" && apt-get download -q prometheus >/dev/null 2>&1)
    fi
    dpkg-deb -x "$scratch"/prometheus_*.deb "$scratch/x"
    install -m 0755 "$scratch/x/usr/bin/promtool" "$promtool"
    rm -rf "$scratch"
    trap - EXIT
  fi
fi
"$promtool" --version | head -1
"$promtool" check rules deploy/prometheus/rules.yml
(cd deploy/prometheus && "$promtool" test rules rules_test.yml)

# The dashboard's queries must parse too: each becomes a recording rule of a
# scratch rules file that promtool checks (Grafana's $variables stay inside
# label matchers, where any string is valid PromQL).
dash_rules="$(mktemp)"
trap 'rm -f "$dash_rules"' EXIT
python3 - deploy/grafana/rustynet.json >"$dash_rules" <<'PY'
import json, sys
dash = json.load(open(sys.argv[1]))
exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
assert exprs, "the dashboard has no queries"
print("groups:\n  - name: dashboard\n    rules:")
for i, e in enumerate(exprs):
    print(f"      - record: dashboard:query{i}\n        expr: {json.dumps(e)}")
PY
echo "dashboard queries:"
"$promtool" check rules "$dash_rules"
