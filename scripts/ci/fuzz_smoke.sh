#!/usr/bin/env bash
# Fuzz smoke test: builds the rustynet-dns `dns_query` fuzz target (cargo-fuzz,
# nightly, AddressSanitizer) and runs it for a short bounded time from the
# committed seeds. Fails if the fuzzer finds a crash, a hang or a leak.
#
# Usage: scripts/ci/fuzz_smoke.sh [SECONDS]     (default 30, or $FUZZ_SECONDS)
# Env:   FUZZ_TARGET_DIR  build directory (default crates/rustynet-dns/fuzz/target)
set -euo pipefail
cd "$(dirname "$0")/../.."

seconds="${1:-${FUZZ_SECONDS:-30}}"
case "$seconds" in
  ''|*[!0-9]*) echo "fuzz_smoke: SECONDS must be a positive integer, got '$seconds'" >&2; exit 2 ;;
esac

if ! command -v rustup >/dev/null 2>&1; then
  echo "fuzz_smoke: rustup is required (the fuzzer builds with a nightly toolchain)" >&2
  exit 1
fi
if ! rustup toolchain list | grep -q '^nightly'; then
  echo "fuzz_smoke: installing the nightly toolchain (AddressSanitizer needs it)"
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz_smoke: installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi

fuzz_dir="crates/rustynet-dns/fuzz"
target_dir="${FUZZ_TARGET_DIR:-$PWD/$fuzz_dir/target}"
corpus="$(mktemp -d)"
trap 'rm -rf "$corpus"' EXIT

cd "$fuzz_dir"
# The fuzz package is its own workspace with its own lockfile. When a crate
# it builds gains a dependency, cargo adds it here; say so, so the updated
# lockfile gets committed instead of silently drifting.
lock_before="$(sha256sum Cargo.lock)"
cargo +nightly fuzz build dns_query --target-dir "$target_dir"
if [ "$(sha256sum Cargo.lock)" != "$lock_before" ]; then
  echo "fuzz_smoke: note: $fuzz_dir/Cargo.lock was out of date and has been updated; commit it" >&2
fi
# New inputs go to the temporary corpus; the committed seeds are read only.
cargo +nightly fuzz run dns_query --target-dir "$target_dir" "$corpus" seeds/dns_query -- \
  -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
echo "fuzz_smoke: dns_query ran ${seconds}s without findings"
