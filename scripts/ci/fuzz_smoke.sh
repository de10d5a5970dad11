#!/usr/bin/env bash
# Fuzz smoke test: builds every fuzz target (cargo-fuzz, nightly,
# AddressSanitizer) and runs each for a short bounded time from its committed
# seeds. Fails if a fuzzer finds a crash, a hang or a leak.
#
# Targets (crate fuzz directory : target):
#   rustynet-dns    dns_query        the resolver's pure core
#   rustynet-proto  control_request  control API request body + auth header decoder
#   rustynet-proto  ipc_frame        daemon IPC frame decoder (requests, responses)
#   rustynet-proto  signed_map       map-stream frame, envelope and map verifier
#   rustynet-policy policy_parse     policy parser, canonical form and compiler
#   rustynet-relay  relay_wire       relay frames, login, upgrade and binding decoders
#
# Usage: scripts/ci/fuzz_smoke.sh [SECONDS]   (per target; default 30, or $FUZZ_SECONDS)
# Env:   FUZZ_TARGET_DIR  build directory, shared by every fuzz package so their
#                         common dependencies build once (default target/fuzz)
#        FUZZ_ONLY        run only the targets named here (space-separated)
#        FUZZ_PROFILE     "dev" (default: unoptimised, builds in about half the
#                         time; a smoke run needs coverage, not speed) or
#                         "release" (for long fuzzing sessions)
set -euo pipefail
cd "$(dirname "$0")/../.."
root="$PWD"

seconds="${1:-${FUZZ_SECONDS:-30}}"
case "${FUZZ_PROFILE:-dev}" in
  dev) profile=(--dev) ;;
  release) profile=() ;;
  *) echo "fuzz_smoke: FUZZ_PROFILE must be dev or release" >&2; exit 2 ;;
esac
case "$seconds" in
  ''|*[!0-9]*) echo "fuzz_smoke: SECONDS must be a positive integer, got '$seconds'" >&2; exit 2 ;;
esac

targets=(
  "crates/rustynet-dns/fuzz dns_query"
  "crates/rustynet-proto/fuzz control_request"
  "crates/rustynet-proto/fuzz ipc_frame"
  "crates/rustynet-proto/fuzz signed_map"
  "crates/rustynet-policy/fuzz policy_parse"
  "crates/rustynet-relay/fuzz relay_wire"
)

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

corpus_root="$(mktemp -d)"
trap 'rm -rf "$corpus_root"' EXIT

wanted() {
  [ -z "${FUZZ_ONLY:-}" ] && return 0
  case " $FUZZ_ONLY " in *" $1 "*) return 0 ;; esac
  return 1
}

built=""
for entry in "${targets[@]}"; do
  read -r fuzz_dir target <<<"$entry"
  wanted "$target" || continue
  target_dir="${FUZZ_TARGET_DIR:-$root/target/fuzz}"
  cd "$root/$fuzz_dir"
  # Each fuzz package is its own workspace with its own lockfile. When a
  # crate it builds gains a dependency, cargo adds it here; say so, so the
  # updated lockfile gets committed instead of silently drifting.
  case " $built " in
    *" $fuzz_dir "*) ;;
    *)
      lock_before="$(sha256sum Cargo.lock 2>/dev/null || true)"
      cargo +nightly fuzz build "${profile[@]}" --target-dir "$target_dir"
      if [ "$(sha256sum Cargo.lock)" != "$lock_before" ]; then
        echo "fuzz_smoke: note: $fuzz_dir/Cargo.lock was out of date and has been updated; commit it" >&2
      fi
      built="$built $fuzz_dir"
      ;;
  esac
  # New inputs go to a temporary corpus; the committed seeds are read only.
  corpus="$corpus_root/$target"
  mkdir -p "$corpus"
  cargo +nightly fuzz run "${profile[@]}" "$target" --target-dir "$target_dir" "$corpus" "seeds/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
  echo "fuzz_smoke: $target ran ${seconds}s without findings"
done
