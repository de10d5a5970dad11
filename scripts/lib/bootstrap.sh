#!/usr/bin/env bash
# Installs what the lab and the test suite need on a fresh Debian 12 machine (as root):
# Debian packages for namespaces, nftables, capture and baselines, PostgreSQL for the
# control store tests (scripts/ci/with_postgres.sh), and the cargo tools
# the supply-chain gates use. Idempotent: each step is skipped when already satisfied.
set -euo pipefail

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "error: run as root (network namespaces, TUN and nftables need it)" >&2
    exit 1
  fi
}

apt_packages=(nftables iproute2 iperf3 tcpdump wireguard-go wireguard-tools iputils-ping
              netcat-openbsd dnsutils procps psmisc python3 ca-certificates git iputils-arping
              systemd mmdebstrap dbus-daemon postgresql)

install_apt() {
  local missing=()
  for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "==> apt-get install ${missing[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# name version binary (boringtun-cli, a throughput baseline, is installed by
# scripts/bench/tunnel_throughput.sh itself: the test suite does not need it)
cargo_tools=("cargo-deny 0.20.2 cargo-deny" "cargo-audit 0.22.2 cargo-audit" "cargo-deb 3.8.0 cargo-deb")

install_cargo_tools() {
  for entry in "${cargo_tools[@]}"; do
    read -r name version bin <<<"$entry"
    if ! command -v "$bin" >/dev/null 2>&1; then
      echo "==> cargo install $name@$version"
      cargo install --locked --quiet "$name@$version"
    fi
  done
}

# The RustSec database. CI has a snapshot beside the repository
# (../shared/advisory-db, plain files); cargo-deny and cargo-audit want a git
# checkout, so one is built from it (no network) under target/ and the gates
# run offline (ADVISORY_OFFLINE=1). A plain clone has no snapshot: then the
# tools fetch the database themselves, as they normally do (ADVISORY_OFFLINE=0).
ADVISORY_OFFLINE=0
ADVISORY_DB_DIR=""
advisory_db() {
  local repo src dest stamp
  repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
  src="${RUSTYNET_ADVISORY_SRC:-$repo/../shared/advisory-db}"
  dest="$repo/target/advisory-dbs/advisory-db-3157b0e258782691"
  if [ ! -d "$src" ]; then
    if [ -n "${RUSTYNET_ADVISORY_SRC:-}" ]; then
      echo "error: RUSTYNET_ADVISORY_SRC=$src is not a directory" >&2
      exit 1
    fi
    echo "==> no advisory database snapshot at $src: cargo-deny and cargo-audit fetch theirs"
    ADVISORY_OFFLINE=0
    ADVISORY_DB_DIR=""
    return 0
  fi
  ADVISORY_OFFLINE=1
  ADVISORY_DB_DIR="$dest"
  stamp="$src/SNAPSHOT"
  if [ -d "$dest/.git" ] && cmp -s "$stamp" "$dest/SNAPSHOT"; then return 0; fi
  rm -rf "$dest"; mkdir -p "$(dirname "$dest")"; cp -r "$src" "$dest"
  chmod -R u+w "$dest"
  git -C "$dest" init -q
  git -C "$dest" add -A
  GIT_AUTHOR_DATE=2026-08-21T00:00:00Z GIT_COMMITTER_DATE=2026-08-21T00:00:00Z \
    git -C "$dest" -c user.email=advisory-db@localhost -c user.name=advisory-db \
    commit -q -m "RustSec advisory-db snapshot"
}
