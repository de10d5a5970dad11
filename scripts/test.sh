#!/usr/bin/env bash
# The whole test suite: formatting, lints, every test (including the root-only
# network-namespace end-to-end tests), supply-chain gates and the phase gates.
# Usage (as root on Debian 12): ./scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/bootstrap.sh
need_root
install_apt
install_cargo_tools
advisory_db

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

step "cargo test (unit, integration, netns end-to-end)"
cargo test --workspace --all-targets --all-features --locked

step "cargo deny (licenses, bans, sources, advisories; offline)"
cargo deny --offline check bans licenses sources advisories

step "cargo audit (offline)"
cargo audit --no-fetch --deny warnings --db target/advisory-dbs/advisory-db-3157b0e258782691

for gate in scripts/ci/phase9_gates.sh scripts/ci/phase10_gates.sh; do
  if [ -x "$gate" ]; then step "$gate"; "$gate"; fi
done

step "all checks passed"
