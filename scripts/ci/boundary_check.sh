#!/usr/bin/env bash
# Nothing outside crates/rustynet-backend-wireguard may name WireGuard, its
# libraries or wg-quick (REQUIREMENTS bar 10). Comments are allowed; the
# adapter crate's own name may appear where the daemon picks its backend.
set -euo pipefail
cd "$(dirname "$0")/../.."
hits=$(grep -rIn -i -E 'boringtun|wireguard|\bwg[_-]?quick' crates --include='*.rs' --include=Cargo.toml \
  | grep -v '^crates/rustynet-backend-wireguard/' \
  | grep -v -E '^[^:]+:[0-9]+:[[:space:]]*(//|#)' \
  | sed -E 's/rustynet[-_]backend[-_]wireguard//g' \
  | grep -i -E 'boringtun|wireguard|wg[_-]?quick' || true)
if [ -n "$hits" ]; then
  echo "WireGuard named outside the adapter crate:" >&2
  echo "$hits" >&2
  exit 1
fi
echo "boundary check: ok"
