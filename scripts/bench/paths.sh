#!/usr/bin/env bash
# Path goals of issue 9, measured in the lab on release builds: fallback gap
# and failback over N trials, one-way loss over 120 s, roaming, hard NAT's
# first packet through the relay, one TCP stream direct vs through the TLS
# relay, netcheck time and classification. Writes artifacts/bench/paths.json.
#
# Usage (root, Debian 12): scripts/bench/paths.sh [TRIALS]   (default 20)
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/lib/bootstrap.sh
need_root
install_apt
trials="${1:-20}"
case "$trials" in ''|*[!0-9]*) echo "error: TRIALS must be a whole number" >&2; exit 2;; esac
cargo build --locked --release --bins -p rustynet-lab -p rustynetd -p rustynet-cli -p rustynet-control \
  --features rustynetd/fault-injection
out="artifacts/bench/paths.json"
# The relay's per-node rate limit (default 250 MB/s = 2 Gbit/s) would cap
# the lab's ~2.5 Gbit/s paths: the bench measures the paths, so it is off
# unless set (the JSON records the value used).
export RUSTYNET_LAB_RELAY_RATE="${RUSTYNET_LAB_RELAY_RATE:-0}"
"${CARGO_TARGET_DIR:-target}/release/rustynet-lab" paths-bench --trials "$trials" --out "$out"
python3 - "$out" "$(git rev-parse HEAD 2>/dev/null || true)" <<'PY'
import json, sys
d = json.load(open(sys.argv[1], encoding="utf-8"))
d["commit"] = sys.argv[2]
json.dump(d, open(sys.argv[1], "w", encoding="utf-8"), indent=2)
print(json.dumps({k: d.get(k) for k in ("fallback_both_ways", "one_way_blackhole_120s", "roaming",
                                          "hard_nat", "throughput_mbps", "netcheck")}, indent=1))
PY
