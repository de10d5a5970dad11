#!/usr/bin/env bash
# The main job: a lab that brings up the control server and three nodes in
# network namespaces and shows, as each lands, the mesh, an exit node, the LAN
# toggle, the kill switch and Magic DNS working; then a second lab with nodes
# behind NAT routers and control's relay: hole punching, the relay, and a
# direct path cut and healed under traffic (fallback and failback measured) —
# with real processes, real TUN devices, real nftables and packet captures.
# Usage (as root on Debian 12): ./scripts/lab.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/bootstrap.sh
need_root
install_apt
echo "==> building (first run takes a few minutes)"
cargo build --locked --bins -p rustynet-lab -p rustynetd -p rustynet-cli -p rustynet-control \
  --features rustynetd/fault-injection
exec "${CARGO_TARGET_DIR:-target}/debug/rustynet-lab" demo
