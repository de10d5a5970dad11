#!/usr/bin/env bash
# Builds the `rustynet` Debian package with cargo-deb: rustynetd, rustynet,
# rustynet-control, rustynet-relay, the systemd units, sysusers.d/tmpfiles.d, the commented
# default configs, man pages and shell completions generated from each
# binary's own clap definition, and the docs.
# Usage: scripts/package.sh [--profile release|dev]   (default release)
# Prints the path of the .deb on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=release
if [ "${1:-}" = "--profile" ]; then profile="${2:?--profile needs a value}"; fi
case "$profile" in
  release) dir=release ;;
  dev) dir=debug ;;
  *) echo "error: profile must be release or dev" >&2; exit 1 ;;
esac
if ! command -v cargo-deb >/dev/null 2>&1; then
  echo "==> cargo install cargo-deb@3.8.0"
  cargo install --locked --quiet cargo-deb@3.8.0
fi
target="${CARGO_TARGET_DIR:-target}"
cargo build --locked --profile "$profile" -p rustynetd -p rustynet-cli -p rustynet-control -p rustynet-relay --bins
docs="$target/$dir/package-docs"
rm -rf "$docs"
for bin in rustynet rustynetd rustynet-control rustynet-relay; do
  RUSTYNET_GENERATE_DOCS="$docs" "$target/$dir/$bin"
done
gzip -9n "$docs"/man/*
out="$target/debian"
mkdir -p "$out"
cargo deb --locked --no-build --profile "$profile" -p rustynetd --output "$out" >/dev/null
deb="$(ls -t "$out"/rustynet_*.deb | head -1)"
echo "$deb"
