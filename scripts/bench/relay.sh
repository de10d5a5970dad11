#!/usr/bin/env bash
# Relay benchmark, all figures from this run (release build, loopback):
#  - memory per idle authenticated client: the relay's RSS growth while N
#    clients (default 10,000, from 16 loopback source addresses) are logged
#    in over TLS 1.3 and idle, divided by N (goal <= 16 KiB);
#  - login rate: N full logins (TCP, TLS 1.3, HTTP upgrade, challenge,
#    ticket + signature check) with 128 in flight, and their latency;
#  - relay CPU seconds per relayed GB (goal <= 4): the relay process's
#    user+system time while two real clients push M MB (default 1000)
#    through it, divided by the bytes delivered; plus that throughput.
#    Measured twice: over TLS, and in the UDP relay mode (GSO runs in,
#    GRO on receipt, as the engine sends and receives).
# The load generator shares the host's cores with the relay, so the login
# rate and throughput are floors for a dedicated relay host.
# Writes artifacts/bench/relay.json.
#
# Usage (root, to raise the open-file limit): scripts/bench/relay.sh
# Env: RELAY_BENCH_CLIENTS (10000; 0 skips the idle-client and login part),
#      RELAY_BENCH_MB (1000),
#      RELAY_BENCH_BIN_DIR (use prebuilt rustynet-relay and relay_load from here),
#      RELAY_BENCH_OUT (another output file).
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO="$(pwd)"
CLIENTS="${RELAY_BENCH_CLIENTS:-10000}"
MB="${RELAY_BENCH_MB:-1000}"
OUT="${RELAY_BENCH_OUT:-$REPO/artifacts/bench/relay.json}"
export PATH="$HOME/.cargo/bin:$PATH"

# Each side (relay, load generator) holds one descriptor per client.
need_fds=$((CLIENTS + 1000))
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need_fds" ]; then
  echo "error: open-file limit $(ulimit -n) < $need_fds (run as root or lower RELAY_BENCH_CLIENTS)" >&2
  exit 1
fi

if [ -n "${RELAY_BENCH_BIN_DIR:-}" ]; then
  BIN_DIR="$RELAY_BENCH_BIN_DIR"
else
  echo "==> building the relay and the load generator (release)"
  cargo build --release --locked --quiet -p rustynet-relay --bin rustynet-relay --example relay_load
  BIN_DIR="${CARGO_TARGET_DIR:-$REPO/target}/release"
fi
RELAY="$BIN_DIR/rustynet-relay"
LOAD="$BIN_DIR/relay_load"
[ -x "$LOAD" ] || LOAD="$BIN_DIR/examples/relay_load"
for b in "$RELAY" "$LOAD"; do
  [ -x "$b" ] || { echo "error: $b missing" >&2; exit 1; }
done

WORK="$(mktemp -d /tmp/rnrelay-bench.XXXXXX)"
RELAY_PID=""
LOAD_PID=""
cleanup() {
  exec 3>&- 2>/dev/null || true
  for pid in "$LOAD_PID" "$RELAY_PID"; do
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  done
  sleep 0.3
  for pid in "$LOAD_PID" "$RELAY_PID"; do
    [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
rss_kib() { awk '/^VmRSS:/{print $2}' "/proc/$RELAY_PID/status"; }
cpu_secs() {
  python3 - "$RELAY_PID" <<'PY'
import os, sys
fields = open(f"/proc/{sys.argv[1]}/stat").read().rsplit(")", 1)[1].split()
print((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
PY
}
metric() { # name{labels} -> value
  python3 - "$METRICS" "$1" <<'PY'
import sys, urllib.request
text = urllib.request.urlopen(f"http://{sys.argv[1]}/metrics", timeout=5).read().decode()
for line in text.splitlines():
    if line.startswith(sys.argv[2] + " "):
        print(line.split()[1]); break
else:
    print(0)
PY
}

# --- relay ------------------------------------------------------------------
PIN="$("$RELAY" init --data-dir "$WORK/relay" | awk '/^spki-sha256:/{print $2}')"
SEED="$(head -c 32 /dev/urandom | base64)"
CONTROL_PUB="$("$LOAD" pubkey "$SEED")"
PORT="$(free_port)"
UDP_ADDR="127.0.0.1:$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
METRICS="127.0.0.1:$(free_port)"
"$RELAY" serve --listen "127.0.0.1:$PORT" --cert "$WORK/relay/relay.pem" --key "$WORK/relay/relay.key" \
  --control-key "$CONTROL_PUB" --stun "$UDP_ADDR" --max-conns $((CLIENTS + 1000)) --rate 0 --metrics "$METRICS" \
  2>"$WORK/relay.log" &
RELAY_PID=$!
for _ in $(seq 1 100); do
  metric rustynet_relay_logins_total >/dev/null 2>&1 && break
  sleep 0.1
done
LOAD_START="$(cut -d' ' -f1 /proc/loadavg)"
TARGET=(--relay "127.0.0.1:$PORT" --pin "$PIN" --control-seed "$SEED")

# Holds `idle` clients until fd 3 closes; prints the load generator's JSON.
hold_idle() { # clients -> writes $WORK/idle.json
  rm -f "$WORK/hold" "$WORK/idle.json"
  mkfifo "$WORK/hold"
  "$LOAD" idle "${TARGET[@]}" --clients "$1" <"$WORK/hold" >"$WORK/idle.json" &
  LOAD_PID=$!
  exec 3>"$WORK/hold"
  for _ in $(seq 1 1200); do
    [ -s "$WORK/idle.json" ] && return 0
    kill -0 "$LOAD_PID" 2>/dev/null || { echo "error: load generator died" >&2; return 1; }
    sleep 0.1
  done
  echo "error: logins did not finish" >&2
  return 1
}
release_idle() {
  exec 3>&-
  wait "$LOAD_PID" || true
  LOAD_PID=""
}

RSS_BASE=0 RSS_IDLE=0 AUTHED=0
echo null >"$WORK/logins.json"
if [ "$CLIENTS" -gt 0 ]; then
  echo "==> warm-up (100 clients)"
  hold_idle 100
  release_idle
  sleep 1
  RSS_BASE="$(rss_kib)"

  echo "==> $CLIENTS idle authenticated clients"
  hold_idle "$CLIENTS"
  sleep 3
  RSS_IDLE="$(rss_kib)"
  AUTHED="$(metric 'rustynet_relay_connections{phase="authenticated"}')"
  cp "$WORK/idle.json" "$WORK/logins.json"
  release_idle
  sleep 1
fi

echo "==> pushing $MB MB through the relay"
CPU_BEFORE="$(cpu_secs)"
"$LOAD" push "${TARGET[@]}" --mb "$MB" >"$WORK/push.json"
CPU_AFTER="$(cpu_secs)"
DROPPED="$(metric 'rustynet_relay_dropped_packets_total{reason="queue_full"}')"

echo "==> pushing $MB MB through the relay's UDP mode"
CPU_BEFORE_UDP="$(cpu_secs)"
"$LOAD" push "${TARGET[@]}" --mb "$MB" --udp "$UDP_ADDR" >"$WORK/push_udp.json"
CPU_AFTER_UDP="$(cpu_secs)"

python3 - "$OUT" "$CLIENTS" "$RSS_BASE" "$RSS_IDLE" "$AUTHED" "$WORK/logins.json" \
  "$WORK/push.json" "$CPU_BEFORE" "$CPU_AFTER" "$DROPPED" "$LOAD_START" \
  "$WORK/push_udp.json" "$CPU_BEFORE_UDP" "$CPU_AFTER_UDP" <<'PY'
import datetime, json, os, platform, sys
out, clients, rss_base, rss_idle, authed, logins, push, cpu0, cpu1, dropped, load0 = sys.argv[1:12]
push_udp, ucpu0, ucpu1 = sys.argv[12:15]
clients, rss_base, rss_idle = int(clients), int(rss_base), int(rss_idle)
logins = json.load(open(logins))
push = json.load(open(push))
push_udp = json.load(open(push_udp))
cpu = float(cpu1) - float(cpu0)
gb = push["delivered_bytes"] / 1e9
ucpu = float(ucpu1) - float(ucpu0)
ugb = push_udp["delivered_bytes"] / 1e9
per_client = (rss_idle - rss_base) * 1024 / clients if clients else 0
idle = None
if clients:
    idle = {
        "clients": clients,
        "authenticated_per_relay_metrics": int(float(authed)),
        "rss_base_kib": rss_base,
        "rss_with_clients_kib": rss_idle,
        "bytes_per_client": round(per_client),
        "kib_per_client": round(per_client / 1024, 2),
        "goal_kib": 16,
        "goal_met": per_client <= 16 * 1024 and int(float(authed)) == clients,
    }
result = {
    "benchmark": "relay",
    "generated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "host": {
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        # Other work on a shared host lowers the login rate and throughput.
        "loadavg_1m_at_start": float(load0),
        "loadavg_1m_at_end": os.getloadavg()[0],
    },
    "method": "release build on loopback; load generator on the same host (its CPU use competes with the relay's)",
    "idle_clients": idle,
    "logins": logins,
    "throughput": {
        **push,
        "relay_cpu_seconds": round(cpu, 3),
        "relay_cpu_seconds_per_gb": round(cpu / gb, 3) if gb > 0 else None,
        "relay_queue_full_drops": int(float(dropped)),
        "goal_cpu_seconds_per_gb": 4,
        "goal_met": gb > 0 and cpu / gb <= 4,
    },
    "udp_throughput": {
        **push_udp,
        "relay_cpu_seconds": round(ucpu, 3),
        "relay_cpu_seconds_per_gb": round(ucpu / ugb, 3) if ugb > 0 else None,
        "goal_cpu_seconds_per_gb": 4,
        "goal_met": ugb > 0 and ucpu / ugb <= 4,
    },
}
with open(out, "w") as f:
    json.dump(result, f, indent=2)
    f.write("\n")
print(json.dumps({
    "kib_per_idle_client": idle and idle["kib_per_client"],
    "logins_per_sec": logins and logins["logins_per_sec"],
    "relay_cpu_seconds_per_gb": result["throughput"]["relay_cpu_seconds_per_gb"],
    "mbit_per_sec": push["mbit_per_sec"],
    "udp_relay_cpu_seconds_per_gb": result["udp_throughput"]["relay_cpu_seconds_per_gb"],
    "udp_mbit_per_sec": push_udp["mbit_per_sec"],
}, indent=2))
PY
echo "==> wrote $OUT"
