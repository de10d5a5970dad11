#!/usr/bin/env bash
# Control plane benchmark: compile + sign network maps for 1,000 and 10,000
# nodes under a 100-rule policy, the whole network ("full") and one node's map
# after a change ("delta"). Writes artifacts/bench/control_netmap.json from
# this run. Goals: 10k full <= 150 ms, one-node delta <= 1 ms.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo bench --locked -p rustynet-control --bench netmap
python3 - <<'PY'
import json
r = json.load(open("artifacts/bench/control_netmap.json"))
for run in r["runs"]:
    print(f'{run["nodes"]:>6} nodes: full p50 {run["full_ms"]["p50"]:.1f} ms, '
          f'delta p50 {run["delta_one_map_ms"]["p50"]:.3f} ms, '
          f'{run["avg_peers_per_map"]:.1f} peers/map, {run["avg_frame_bytes"]:.0f} B/frame')
print("goals met:", r["goal_met"])
PY
