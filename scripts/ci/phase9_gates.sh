#!/usr/bin/env bash
# Trust and control-plane gates. Runs the tests that prove signed maps,
# policy compilation and the control API, and writes
# artifacts/phase9/trust_report.json with every count taken from this run.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=artifacts/phase9
mkdir -p "$out"
export GATE_RESULTS
GATE_RESULTS=$(mktemp)
trap 'rm -f "$GATE_RESULTS"' EXIT
run() { python3 scripts/ci/run_tests_report.py "$@"; }
# Tests run from the binaries test.sh's workspace-wide `cargo test` built
# (`cargo test -p` would resolve other features and compile nearly
# everything again): scripts/ci/ws_test.py.
ws=scripts/ci/ws_test.py
status=0
# The control store's PostgreSQL tests need a server: test.sh runs this
# script inside scripts/ci/with_postgres.sh; say so plainly otherwise.
if [ -z "${RUSTYNET_TEST_POSTGRES:-}" ]; then
  echo "error: RUSTYNET_TEST_POSTGRES is not set: run scripts/ci/with_postgres.sh $0" >&2
  exit 1
fi

run signed_envelope_and_verifier -- python3 $ws -p rustynet-proto || status=1
run policy_validation_and_never_widened -- python3 $ws -p rustynet-policy || status=1
run control_store_and_names -- python3 $ws -p rustynet-control --lib || status=1
run control_api_over_tls13 -- python3 $ws -p rustynet-control --test control_api || status=1
run control_bad_input -- python3 $ws -p rustynet-control --test bad_input || status=1
run control_hostile_load -- python3 $ws -p rustynet-control --test hostile_load --test fd_limit || status=1
run control_per_node_limits -- python3 $ws -p rustynet-control --test node_limits || status=1
run control_key_lifecycle -- python3 $ws -p rustynet-control --test key_rotation --test node_key_expiry --test admin_cli || status=1
run control_replicas_postgres -- python3 $ws -p rustynet-control --test replicas_postgres || status=1
run control_client -- python3 $ws -p rustynet-control-client || status=1

boundary=pass
scripts/ci/boundary_check.sh || { boundary=fail; status=1; }

python3 - "$GATE_RESULTS" "$out/trust_report.json" "$boundary" <<'PY'
import json, subprocess, sys, time
results = [json.loads(l) for l in open(sys.argv[1], encoding="utf-8") if l.strip()]
commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
report = {
    "report": "phase9_trust_and_control_plane",
    "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "commit": commit,
    "gates": [{k: r[k] for k in ("name", "command", "exit_code", "passed", "failed", "ignored", "tests")} for r in results],
    "wireguard_boundary_check": sys.argv[3],
    "totals": {
        "gates": len(results),
        "passed": sum(r["passed"] for r in results),
        "failed": sum(r["failed"] for r in results),
        "gates_failed": sum(r["exit_code"] != 0 for r in results),
    },
}
report["verdict"] = "pass" if report["totals"]["gates_failed"] == 0 and sys.argv[3] == "pass" else "fail"
json.dump(report, open(sys.argv[2], "w", encoding="utf-8"), indent=2)
print(f"phase9: {report['verdict']} ({report['totals']['passed']} tests passed, {report['totals']['failed']} failed) -> {sys.argv[2]}")
PY
exit $status
