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
exec ./target/debug/rustynet-lab soak --seconds "$seconds" --out "artifacts/soak/soak_${seconds}s.json"
