#!/usr/bin/env bash
# Phase 10 gates (exit-node dataplane, Phase10.md §13): runs the real tunnel
# backend's namespace tests, the netos/daemon effect and transaction tests,
# every network-namespace end-to-end suite of the lab (mesh, trust, exit,
# LAN, leak, transactions, DNS, ...), the WireGuard boundary check, and
# checks the performance evidence. Writes under artifacts/phase10/:
#   netns_e2e_report.json, leak_test_report.json  (merged from the case
#       records the suites wrote during THIS run, artifacts/phase10/cases/)
#   perf_budget_report.json       (measured figures only; gaps say so)
#   direct_relay_failover_report.json (the path suite's cases and figures;
#       red when a required case is missing or failed)
#   protocol_filter_matrix.json   (netns_routers: every cell of the shared
#       router / shared exit matrix; red when a gateway is missing or a cell
#       failed)
#   state_transition_audit.log    (the daemons' rustynet::transition lines)
# and artifacts/soak/soak_<N>s.json from a short soak (PHASE10_SOAK_SECONDS,
# default 120).
# Exit status is non-zero if any gate fails or a measured figure is over
# its budget. Budgets without evidence (soak, a missing benchmark) and the
# missing relay are reported as gaps; PHASE10_STRICT=1 makes gaps fatal.
#
# Usage (root, Debian 12): scripts/ci/phase10_gates.sh
# Env: PHASE10_RUN_BENCHES=1 also runs scripts/bench/apply_latency.sh and
#      scripts/bench/tunnel_throughput.sh first (minutes); otherwise the
#      existing artifacts/bench/*.json are validated as they are.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=artifacts/phase10
mkdir -p "$out"

if [ "$(id -u)" -ne 0 ]; then
  echo "error: phase 10 gates run network-namespace tests: run as root" >&2
  exit 1
fi

GATE_RESULTS=$(mktemp)
LAB_LOGS=$(mktemp -d)
LAB_TMP=$(mktemp -d)
CASES_ROOT=$(mktemp -d)
export GATE_RESULTS
# Every lab copies its logs here when it is torn down (state transitions).
export RUSTYNET_LAB_LOGS="$LAB_LOGS"
# Lab scratch directories live in a directory only this run uses (other
# users must traverse it, as they do /tmp: the IPC tests run the CLI as nobody).
chmod 0755 "$LAB_TMP"
export TMPDIR="$LAB_TMP"
# Case records of this run only (not of earlier runs, nor of suites run by
# hand at the same time): the suites write under $RUSTYNET_ARTIFACTS/phase10/cases.
export RUSTYNET_ARTIFACTS="$CASES_ROOT"
cleanup() { rm -rf "$GATE_RESULTS" "$LAB_LOGS" "$LAB_TMP" "$CASES_ROOT"; }
trap cleanup EXIT
run_started=$(date -u +%Y-%m-%dT%H:%M:%SZ)

run() { python3 scripts/ci/run_tests_report.py "$@"; }
status=0

if [ "${PHASE10_RUN_BENCHES:-0}" = "1" ]; then
  scripts/bench/apply_latency.sh || status=1
  scripts/bench/tunnel_throughput.sh || status=1
fi

# Real Linux backend: the userspace engine over TUN/UDP in namespaces.
backend_tests=()
for f in crates/rustynet-backend-wireguard/tests/netns_*.rs; do
  backend_tests+=(--test "$(basename "$f" .rs)")
done
run tunnel_backend_netns -- python3 scripts/ci/ws_test.py -p rustynet-backend-wireguard "${backend_tests[@]}" || status=1
# Routing, nftables, sysctl and resolver effects for real in namespaces.
run netos_effects -- python3 scripts/ci/ws_test.py -p rustynet-netos --tests || status=1
# The daemon: planner, transaction and rollback, state machine, state store
# (the workspace build has every feature, fault injection included).
run daemon_units -- python3 scripts/ci/ws_test.py -p rustynetd --lib || status=1
# Apply benchmark in smoke mode: the real effects land in a namespace.
bench_smoke=pass
python3 scripts/ci/ws_test.py -p rustynetd --bench apply_latency || { bench_smoke=fail; status=1; }
# The end-to-end suites, one test target at a time (tests run two at once,
# except the path suite: it measures gaps and failover times in tens of
# milliseconds, which two debug-build labs on two cores would blur).
for f in crates/rustynet-lab/tests/netns_*.rs; do
  t=$(basename "$f" .rs)
  threads=2
  [ "$t" = netns_relay ] && threads=1
  # The control replicas suite runs two `serve` processes on one
  # PostgreSQL database: a throwaway cluster lives for that suite only
  # (the suite fails, never skips, without one).
  pg=()
  [ "$t" = netns_replicas ] && pg=(scripts/ci/with_postgres.sh)
  run "lab_$t" -- "${pg[@]}" cargo test --locked -p rustynet-lab --test "$t" -- --test-threads=$threads || status=1
done

# A short soak (the 24 h one runs on demand: scripts/bench/soak.sh 86400).
# Earlier short soaks are replaced; longer ones stay as evidence.
rm -f artifacts/soak/soak_"${PHASE10_SOAK_SECONDS:-120}"s.json
scripts/bench/soak.sh "${PHASE10_SOAK_SECONDS:-120}" || status=1

boundary=pass
scripts/ci/boundary_check.sh || { boundary=fail; status=1; }

# The case records become this run's evidence (stale ones go first).
rm -rf "$out/cases"
mkdir -p "$out/cases"
cp "$CASES_ROOT"/phase10/cases/*.json "$out/cases/" 2>/dev/null || true

python3 scripts/ci/phase10_evidence.py \
  --out "$out" --gates "$GATE_RESULTS" --lab-logs "$LAB_LOGS" \
  --boundary "$boundary" --bench-smoke "$bench_smoke" \
  --run-started "$run_started" || status=1

exit $status
