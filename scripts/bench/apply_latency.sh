#!/usr/bin/env bash
# Route + firewall apply latency (Phase 10 §12.4: route/policy apply <= 2 s
# p95; goal <= 20 ms p95 at 100 peers): rustynetd's plan + transaction on
# real netlink routing and nftables in a private network namespace, for a
# synthetic map of 100 and 1,000 peers. Writes artifacts/bench/apply_latency.json
# (p50/p95/max per size, a routing/firewall breakdown, every sample).
#
# Usage (root, Debian 12): scripts/bench/apply_latency.sh
# Env: APPLY_BENCH_ITERS (default 60), APPLY_BENCH_PEERS (default 100,1000),
#      APPLY_BENCH_OUT (default artifacts/bench/apply_latency.json).
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$HOME/.cargo/bin:$PATH"

if [ "$(id -u)" -ne 0 ]; then
  echo "error: run as root (private network namespace, nftables)" >&2
  exit 1
fi
for tool in ip nft; do
  command -v "$tool" >/dev/null 2>&1 || { echo "error: $tool is required" >&2; exit 1; }
done

export APPLY_BENCH_OUT="${APPLY_BENCH_OUT:-$(pwd)/artifacts/bench/apply_latency.json}"
echo "==> cargo bench -p rustynetd --bench apply_latency (release)"
cargo bench --locked -p rustynetd --bench apply_latency
python3 - "$APPLY_BENCH_OUT" "$(git rev-parse HEAD 2>/dev/null || true)" <<'PY'
import json, sys
d = json.load(open(sys.argv[1], encoding="utf-8"))
d["commit"] = sys.argv[2]
json.dump(d, open(sys.argv[1], "w", encoding="utf-8"), indent=2)
for r in d["results"]:
    a = r["apply_ms"]
    print(f"  {r['peers']:>5} peers: apply p50 {a['p50']} ms, p95 {a['p95']} ms, max {a['max']} ms "
          f"({r['nft_rules']} nft rules, {r['lan_routes']} LAN routes; firewall p50 {r['breakdown_ms']['firewall_apply']['p50']} ms, "
          f"routing p50 {r['breakdown_ms']['routing_apply']['p50']} ms)")
print(f"  Phase 10 budget (p95 <= 2000 ms): {'met' if d['within_phase10_budget'] else 'NOT met'}; "
      f"goal p95 <= 20 ms at 100 peers: {d['within_goal_at_100_peers']}")
PY
