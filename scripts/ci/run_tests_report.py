#!/usr/bin/env python3
"""Run one `cargo test` invocation and record every test's verdict.

Usage: run_tests_report.py NAME -- cargo test ARGS...
Prints cargo's output through and appends {"name", "command", "passed",
"failed", "ignored", "tests": [{"name", "result"}]} as one JSON line to the
file named by $GATE_RESULTS. Exit status is cargo's (124 when the run took
longer than $RUN_TESTS_TIMEOUT seconds, default 1500, and was killed: a hung
suite fails its gate instead of stalling CI). The counts come from the
libtest lines of this very run ("test foo ... ok"), never from constants.
"""
import json
import os
import re
import signal
import subprocess
import sys
import threading

def main() -> int:
    name = sys.argv[1]
    sep = sys.argv.index("--")
    cmd = sys.argv[sep + 1:]
    # A hung suite must fail the gate, not stall CI until its deadline.
    limit = int(os.environ.get("RUN_TESTS_TIMEOUT", "1500"))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    timed_out = threading.Event()

    def kill() -> None:
        timed_out.set()
        sys.stdout.write(f"\nerror: {name} still running after {limit} s: killed\n")
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    watchdog = threading.Timer(limit, kill)
    watchdog.start()
    tests = []
    line_re = re.compile(r"^test (\S+) \.\.\. (ok|FAILED|ignored)")
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write(line)
        m = line_re.match(line)
        if m:
            tests.append({"name": m.group(1), "result": m.group(2).lower()})
    code = proc.wait()
    watchdog.cancel()
    if timed_out.is_set():
        code = 124
    record = {
        "name": name,
        "command": " ".join(cmd),
        "exit_code": code,
        "passed": sum(t["result"] == "ok" for t in tests),
        "failed": sum(t["result"] == "failed" for t in tests),
        "ignored": sum(t["result"] == "ignored" for t in tests),
        "tests": tests,
    }
    if code == 0 and record["passed"] == 0:
        record["exit_code"] = code = 3  # a gate that ran nothing proves nothing
        print(f"gate {name}: no tests ran", file=sys.stderr)
    with open(os.environ["GATE_RESULTS"], "a", encoding="utf-8") as out:
        out.write(json.dumps(record) + "\n")
    return code

if __name__ == "__main__":
    sys.exit(main())
