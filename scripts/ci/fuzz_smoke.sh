#!/usr/bin/env bash
# Fuzz smoke test: builds each fuzz target (cargo-fuzz, nightly,
# AddressSanitizer) and runs it for a short bounded time from its committed
# seeds: rustynet-dns `dns_query` and rustynet-relay `relay_wire`. Fails if a
# fuzzer finds a crash, a hang or a leak.
#
# Usage: scripts/ci/fuzz_smoke.sh [SECONDS]     (per target; default 30, or $FUZZ_SECONDS)
# Env:   FUZZ_TARGET_DIR  build directory (default <fuzz dir>/target)
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

corpus="$(mktemp -d)"
trap 'rm -rf "$corpus"' EXIT
root="$PWD"

for spec in crates/rustynet-dns/fuzz:dns_query crates/rustynet-relay/fuzz:relay_wire; do
  fuzz_dir="${spec%%:*}"
  target="${spec##*:}"
  target_dir="${FUZZ_TARGET_DIR:-$root/$fuzz_dir/target}"
  mkdir -p "$corpus/$target"
  cd "$root/$fuzz_dir"
  # Each fuzz package is its own workspace with its own lockfile. When a
  # crate it builds gains a dependency, cargo adds it here; say so, so the
  # updated lockfile gets committed instead of silently drifting.
  lock_before="$(sha256sum Cargo.lock 2>/dev/null || true)"
  cargo +nightly fuzz build "$target" --target-dir "$target_dir"
  if [ "$(sha256sum Cargo.lock)" != "$lock_before" ]; then
    echo "fuzz_smoke: note: $fuzz_dir/Cargo.lock was out of date and has been updated; commit it" >&2
  fi
  # New inputs go to the temporary corpus; the committed seeds are read only.
  cargo +nightly fuzz run "$target" --target-dir "$target_dir" "$corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
  echo "fuzz_smoke: $target ran ${seconds}s without findings"
done
