#!/usr/bin/env bash
# The whole test suite: formatting, lints, every test (unit, property,
# integration over real TLS, the tunnel and OS-effect tests in network
# namespaces, and the end-to-end lab suites), supply-chain gates, the phase
# gates that write the evidence under artifacts/, and a fuzz smoke run.
# Usage (as root on Debian 12): ./scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/bootstrap.sh
need_root
install_apt
install_cargo_tools
advisory_db

# Incremental caches only help repeated local edits; in a one-shot run they
# double the disk the build needs.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

started=$(date +%s)
step() { printf '\n==> %s  [%ss]\n' "$*" "$(( $(date +%s) - started ))"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

step "cargo test: unit, property, integration, tunnel and OS-effect namespace tests"
# The lab's end-to-end suites run once, in the phase 10 gate below, which
# records every case for the evidence reports.
# The control store's conformance suite also runs against PostgreSQL: a
# throwaway cluster on loopback lives for this one command.
scripts/ci/with_postgres.sh \
  cargo test --workspace --all-targets --all-features --locked --exclude rustynet-lab
cargo test -p rustynet-lab --lib --bins --all-features --locked

step "Prometheus alert rules (promtool check rules, promtool test rules)"
scripts/ci/prometheus_rules.sh

step "systemd units, sysusers.d, tmpfiles.d (systemd-analyze verify)"
# The same build as the package's (scripts/package.sh), so it is done once.
cargo build --locked -p rustynetd -p rustynet-cli -p rustynet-control -p rustynet-relay --bins
scripts/ci/units_verify.sh

step "Debian package: install into a fresh Debian root, run as the units do, rustynet up"
scripts/ci/package_test.sh --profile dev

# cargo-deny reads `cargo metadata` for every platform (windows-sys, ...),
# which needs those crates' manifests even though nothing here builds them:
# fetch them first, or a fresh machine fails where a warm cache passed.
step "cargo fetch --locked (every platform's crates, for cargo metadata)"
cargo fetch --locked

if [ "$ADVISORY_OFFLINE" = 1 ]; then
  step "cargo deny (licenses, bans, sources, advisories; offline snapshot)"
  cargo deny --offline check bans licenses sources advisories
  step "cargo audit (offline snapshot)"
  cargo audit --no-fetch --deny warnings --db "$ADVISORY_DB_DIR"
else
  step "cargo deny (licenses, bans, sources, advisories; fetches the database)"
  cargo deny check bans licenses sources advisories
  step "cargo audit (fetches the database)"
  cargo audit --deny warnings
fi

step "phase 9 gates (trust and control plane)"
scripts/ci/with_postgres.sh scripts/ci/phase9_gates.sh

step "phase 10 gates (dataplane: namespace end-to-end suites, leaks, boundary, budgets)"
scripts/ci/phase10_gates.sh

step "fuzz smoke (DNS queries, relay wire, control requests, IPC frames, signed maps, policy parser)"
scripts/ci/fuzz_smoke.sh 30

step "all checks passed"
