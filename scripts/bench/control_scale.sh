#!/usr/bin/env bash
# Control plane at scale (issue 12): rustynet-control-load enrolls N simulated
# nodes (default 10,000; real keys, real enrollment, real TLS 1.3) against a
# spawned `rustynet-control serve`, holds N verified map streams, and measures
# server memory per held node, idle CPU, a policy change touching every node
# and a single-node rename (latency to the affected nodes; maps sent to
# unaffected ones). Writes artifacts/bench/control_scale.json: one entry per
# run (backend, replicas), the machine's conditions and the goals table.
#
# Runs: SQLite with one replica; PostgreSQL (a throwaway cluster from
# scripts/ci/with_postgres.sh, fresh for each run) with one replica and with
# two replicas on one database (half the nodes stream from each; a node on
# replica A reports an endpoint and its peers on B are timed).
#
# Usage (run it under `nice -n 10` on a shared machine; the generator, the
# server and PostgreSQL inherit it): scripts/bench/control_scale.sh [N]
# Env: CONTROL_SCALE_RUNS (default "sqlite postgres postgres-2"),
#      CONTROL_SCALE_PG_NODES (nodes of the PostgreSQL runs, default N),
#      CONTROL_SCALE_IDLE (idle CPU window, default 60s: one period of the
#      server's once-a-minute keepalives and presence writes, so the figure
#      is an average),
#      CONTROL_SCALE_OUT (default artifacts/bench/control_scale.json).
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$HOME/.cargo/bin:$PATH"
nodes="${1:-10000}"
idle="${CONTROL_SCALE_IDLE:-60s}"
which_runs="${CONTROL_SCALE_RUNS:-sqlite postgres postgres-2}"
pg_nodes="${CONTROL_SCALE_PG_NODES:-$nodes}"
out="${CONTROL_SCALE_OUT:-$(pwd)/artifacts/bench/control_scale.json}"

echo "==> cargo build --release -p rustynet-control -p rustynet-control-load"
nice -n 10 cargo build --release --locked -p rustynet-control -p rustynet-control-load --bins
bin=target/release

work=$(mktemp -d /tmp/rustynet-control-scale.XXXXXX)
# CONTROL_SCALE_KEEP=1 keeps the work directory (logs, each run's JSON).
cleanup() { if [ "${CONTROL_SCALE_KEEP:-0}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi; }
trap cleanup EXIT

runs=()
run() { # NAME N ARGS... [--wrap CMD]: one generator run, figures in $work/NAME.json
  local name=$1 n=$2; shift 2
  local wrap=()
  local args=()
  while [ $# -gt 0 ]; do
    if [ "$1" = --wrap ]; then wrap=("$2"); shift 2; else args+=("$1"); shift; fi
  done
  echo "==> $name: $n nodes"
  if "${wrap[@]}" "$bin/rustynet-control-load" --nodes "$n" --work-dir "$work/$name" \
      --idle-window "$idle" --out "$work/$name.json" --label "run=$name" "${args[@]}"; then
    runs+=("$work/$name.json")
  else
    echo "error: run $name failed (its server log: $work/$name/serve-*.log)" >&2
    tail -n 5 "$work/$name"/serve-*.log >&2 || true
    failed=1
  fi
}
failed=0

ctl="$bin/rustynet-control"
for r in $which_runs; do
  case "$r" in
    sqlite) run sqlite "$nodes" --control-bin "$ctl" ;;
    postgres|postgres-2)
      replicas=1; [ "$r" = postgres-2 ] && replicas=2
      # The cluster's connection string (no password: trust on loopback)
      # reaches the generator as RUSTYNET_TEST_POSTGRES.
      run "$r" "$pg_nodes" --control-bin "$ctl" --replicas "$replicas" \
        --database-env RUSTYNET_TEST_POSTGRES --wrap scripts/ci/with_postgres.sh ;;
    *) echo "error: unknown run $r (sqlite, postgres, postgres-2)" >&2; exit 2 ;;
  esac
done

[ ${#runs[@]} -gt 0 ] || { echo "error: no run succeeded" >&2; exit 1; }
python3 - "$out" "$(git rev-parse HEAD 2>/dev/null || true)" "${runs[@]}" <<'PY'
import json, os, sys, time
out, commit, files = sys.argv[1], sys.argv[2], sys.argv[3:]
runs = [json.load(open(f, encoding="utf-8")) for f in files]
def check(r):
    p, s, u = r["policy_change"], r["single_node_change"], r["single_node_update_via_api"]
    pl, sl = p["latency_from_commit_ms"], s["latency_from_commit_ms"]
    return {
        "nodes_held": r["streams"]["held"] >= 10000,
        "memory_per_held_node_le_20_kib": r["memory"]["per_held_node_kib"] <= 20,
        "idle_cpu_le_1_percent": r["idle"]["server_cpu_percent_of_a_core"] <= 1.0,
        "policy_change_p95_le_2000_ms": pl["p95"] is not None and pl["p95"] <= 2000
            and p["affected_with_new_map"] == p["affected_nodes"],
        "single_node_change_p95_le_100_ms": sl["p95"] is not None and sl["p95"] <= 100
            and s["affected_with_new_map"] == s["affected_nodes"],
        "single_node_change_via_api_p95_le_100_ms": u["latency_from_commit_ms"]["p95"] is not None
            and u["latency_from_commit_ms"]["p95"] <= 100
            and u["affected_with_new_map"] == u["affected_nodes"],
        "unchanged_map_never_resent": r["maps"]["unchanged_content_resent"] == 0
            and s["unaffected_nodes_sent_a_map"] == 0 and u["unaffected_nodes_sent_a_map"] == 0,
        **({"change_via_replica_a_on_b_p95_le_500_ms":
            (u.get("latency_on_other_replicas_ms") or {}).get("p95") is not None
            and u["latency_on_other_replicas_ms"]["p95"] <= 500}
           if r["conditions"]["replicas"] > 1 else {}),
    }
for r in runs:
    r["goals_met"] = check(r)
doc = {
    "bench": "control_scale",
    "commit": commit,
    "generated_at": int(time.time()),
    "goals": {
        "nodes_held_by_one_replica_on_2_cores": 10000,
        "memory_per_held_node_kib": 20,
        "idle_cpu_percent_of_a_core": 1.0,
        "policy_change_all_nodes_p95_ms": 2000,
        "single_node_change_affected_peers_p95_ms": 100,
        "change_via_replica_a_seen_on_b_p95_ms": 500,
    },
    "runs": runs,
}
os.makedirs(os.path.dirname(out), exist_ok=True)
json.dump(doc, open(out, "w", encoding="utf-8"), indent=2)
for r in runs:
    l, p, s = r["labels"], r["policy_change"], r["single_node_change"]
    pl, sl = p["latency_from_commit_ms"], s["latency_from_commit_ms"]
    print(f'{l}: {r["streams"]["held"]} held, {r["memory"]["per_held_node_kib"]:.1f} KiB/node, '
          f'idle {r["idle"]["server_cpu_percent_of_a_core"]:.2f}% of a core; policy change '
          f'{p["affected_with_new_map"]}/{p["affected_nodes"]} p50 {pl["p50"]} p95 {pl["p95"]} max {pl["max"]} ms; '
          f'rename {s["affected_with_new_map"]}/{s["affected_nodes"]} p95 {sl["p95"]} ms, '
          f'{s["unaffected_nodes_sent_a_map"]} unaffected nodes sent a map; endpoint update '
          f'p95 {r["single_node_update_via_api"]["latency_from_commit_ms"]["p95"]} ms')
    print("  goals:", r["goals_met"])
print(f"wrote {out}")
PY
exit "$failed"
