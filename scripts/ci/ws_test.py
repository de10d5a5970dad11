#!/usr/bin/env python3
"""Run some of the workspace's test binaries without building them again.

Usage: ws_test.py -p PACKAGE [--lib] [--bins] [--tests] [--test NAME]... [--bench NAME]... [-- ARGS]

`cargo test -p PACKAGE` resolves features for that package alone, so shared
dependencies (libc, tokio, ...) get other features than in the workspace-wide
`cargo test --workspace --all-features` that test.sh has already built, and
cargo compiles nearly everything again. This runs the binaries of that one
build instead: it asks cargo (a no-op when everything is fresh) for the test
executables of `--workspace --exclude rustynet-lab --all-targets
--all-features`, picks PACKAGE's (all of its lib, bin and integration test
targets when no selector is given, as `cargo test -p` does apart from doc
tests), and runs each from the package's directory as cargo would, passing
ARGS. Output is libtest's, so run_tests_report.py records it as usual. Exit
status is non-zero when any binary fails or nothing matched.
"""
import json
import os
import subprocess
import sys

BUILD = ["cargo", "test", "--locked", "--workspace", "--exclude", "rustynet-lab",
         "--all-targets", "--all-features", "--no-run", "--message-format=json"]


def parse(argv):
    pkg, want, rest = None, [], []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            rest = argv[i + 1:]
            break
        if a == "-p":
            i += 1
            pkg = argv[i]
        elif a == "--lib":
            want.append(("lib", None))
        elif a == "--bins":
            want.append(("bin", None))
        elif a == "--tests":
            want.append(("test", None))
        elif a in ("--test", "--bench"):
            i += 1
            want.append((a[2:], argv[i]))
        else:
            sys.exit(f"ws_test: unknown argument {a!r}")
        i += 1
    if not pkg:
        sys.exit("ws_test: -p PACKAGE is required")
    return pkg, want, rest


def executables():
    proc = subprocess.run(BUILD, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        sys.exit(f"ws_test: {' '.join(BUILD)} failed ({proc.returncode})")
    out = []
    for line in proc.stdout.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("reason") != "compiler-artifact" or not msg.get("executable"):
            continue
        if not msg.get("profile", {}).get("test"):
            continue
        target = msg["target"]
        kind = target["kind"][0]
        kind = "lib" if kind in ("lib", "rlib", "proc-macro", "cdylib", "staticlib") else kind
        out.append({
            "package": package_name(msg),
            "kind": kind,
            "name": target["name"],
            "exe": msg["executable"],
            "dir": os.path.dirname(msg["manifest_path"]),
        })
    return out


def package_name(msg):
    # manifest_path is the package's Cargo.toml; its [package] name is what
    # -p takes. Read it rather than parse the package id's format.
    path = msg["manifest_path"]
    with open(path, encoding="utf-8") as f:
        in_pkg = False
        for line in f:
            s = line.strip()
            if s.startswith("["):
                in_pkg = s == "[package]"
            elif in_pkg and s.startswith("name") and "=" in s:
                return s.split("=", 1)[1].strip().strip('"')
    return ""


def main():
    pkg, want, rest = parse(sys.argv[1:])
    chosen = []
    for e in executables():
        if e["package"] != pkg:
            continue
        if not want and e["kind"] in ("lib", "bin", "test"):
            chosen.append(e)
        elif any(k == e["kind"] and (n is None or n == e["name"]) for k, n in want):
            chosen.append(e)
    if not chosen:
        sys.exit(f"ws_test: no test binary of {pkg} matches {want}")
    status = 0
    for e in sorted(chosen, key=lambda e: (e["kind"], e["name"])):
        print(f"     Running {e['kind']} {e['name']} ({os.path.relpath(e['exe'])})", flush=True)
        env = dict(os.environ, CARGO_MANIFEST_DIR=e["dir"], CARGO_PKG_NAME=pkg)
        code = subprocess.run([e["exe"], *rest], cwd=e["dir"], env=env).returncode
        if code != 0:
            status = code
    return status


if __name__ == "__main__":
    sys.exit(main())
