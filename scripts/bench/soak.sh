#!/usr/bin/env bash
# Soak: the demo network (control, alice, bob, an exit node with a LAN) kept
# busy — TCP through the exit, mesh pings, Magic DNS lookups, every ~0.5 s —
# while the daemons' RSS and CPU are sampled and control re-signs maps every
# minute. Writes artifacts/soak/soak_<SECONDS>s.json with the verdict
# (>= 99% of each probe kind answered, no fail-closed transition, RSS growth
# < 20 MiB per daemon). CI runs 120 s; Phase 10's budget is 24 h:
#   scripts/bench/soak.sh 86400
# Usage (root, Debian 12): scripts/bench/soak.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/lib/bootstrap.sh
need_root
install_apt
seconds="${1:-86400}"
case "$seconds" in ''|*[!0-9]*) echo "error: SECONDS must be a whole number" >&2; exit 2;; esac
cargo build --locked --bins -p rustynet-lab -p rustynetd -p rustynet-cli -p rustynet-control \
  --features rustynetd/fault-injection
out="artifacts/soak/soak_${seconds}s.json"
status=0
"${CARGO_TARGET_DIR:-target}/debug/rustynet-lab" soak --seconds "$seconds" --out "$out" || status=$?
# The commit the verdict belongs to: the phase 10 report counts only soaks
# of the commit under test.
if [ -f "$out" ]; then
  python3 - "$out" "$(git rev-parse HEAD 2>/dev/null || true)" <<'PY'
import json, sys
d = json.load(open(sys.argv[1], encoding="utf-8"))
d["commit"] = sys.argv[2]
json.dump(d, open(sys.argv[1], "w", encoding="utf-8"), indent=2)
PY
fi
exit "$status"
