#!/usr/bin/env bash
# Tunnel throughput: iperf3 between two network namespaces joined by a veth
# pair, through (a) Rustynet's userspace engine, (b) wireguard-go and
# (c) boringtun-cli, all in one run, one stream and -P 4, several repetitions
# interleaved across engines (the host is shared and noisy: only ratios from
# the same run mean anything). Writes artifacts/bench/tunnel_throughput.json.
#
# Usage (root, Debian 12): scripts/bench/tunnel_throughput.sh
# Env: BENCH_SECONDS (default 10), BENCH_REPS (default 3), BENCH_ENGINES (subset, for debugging),
#      TUNNEL_NODE_BIN (skip the cargo build and use this helper binary).
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO="$(pwd)"
SECONDS_PER_RUN="${BENCH_SECONDS:-10}"
REPS="${BENCH_REPS:-3}"
OUT="$REPO/artifacts/bench/tunnel_throughput.json"
export PATH="$HOME/.cargo/bin:$PATH"

if [ "$(id -u)" -ne 0 ]; then
  echo "error: run as root (network namespaces, TUN)" >&2
  exit 1
fi

# --- tools ------------------------------------------------------------------
missing=()
for pair in iperf3:iperf3 wireguard-go:wireguard-go wg:wireguard-tools ip:iproute2 python3:python3; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> apt-get install ${missing[*]}"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! command -v boringtun-cli >/dev/null 2>&1; then
  echo "==> cargo install --locked boringtun-cli"
  cargo install --locked --quiet boringtun-cli
fi
if [ -n "${TUNNEL_NODE_BIN:-}" ]; then
  NODE_BIN="$TUNNEL_NODE_BIN"
else
  echo "==> building the Rustynet helper (release)"
  cargo build --release --quiet -p rustynet-backend-wireguard --example tunnel_node
  NODE_BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/examples/tunnel_node"
fi
[ -x "$NODE_BIN" ] || { echo "error: helper binary $NODE_BIN missing" >&2; exit 1; }

# --- topology ---------------------------------------------------------------
TAG="$$"
NS_A="rnbench-a-$TAG"
NS_B="rnbench-b-$TAG"
VETH_A="rnbva$TAG"
VETH_B="rnbvb$TAG"
# Distinct names per side: the UAPI sockets share /var/run/wireguard.
IF_A="rnbta$TAG"
IF_B="rnbtb$TAG"
WORK="$(mktemp -d /tmp/rnbench.XXXXXX)"
PIDS=()

cleanup() {
  for pid in "${PIDS[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done
  sleep 0.5
  for pid in "${PIDS[@]:-}"; do [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true; done
  ip netns del "$NS_A" 2>/dev/null || true
  ip netns del "$NS_B" 2>/dev/null || true
  rm -f "/var/run/wireguard/$IF_A.sock" "/var/run/wireguard/$IF_B.sock"
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

ip netns add "$NS_A"
ip netns add "$NS_B"
ip -n "$NS_A" link set lo up
ip -n "$NS_B" link set lo up
ip link add "$VETH_A" netns "$NS_A" type veth peer name "$VETH_B" netns "$NS_B"
ip -n "$NS_A" addr add 10.201.0.1/24 dev "$VETH_A"
ip -n "$NS_B" addr add 10.201.0.2/24 dev "$VETH_B"
ip -n "$NS_A" link set "$VETH_A" up
ip -n "$NS_B" link set "$VETH_B" up

umask 077
wg genkey >"$WORK/a.key"
wg genkey >"$WORK/b.key"
PUB_A="$(wg pubkey <"$WORK/a.key")"
PUB_B="$(wg pubkey <"$WORK/b.key")"
PORT=51820
MTU=1420

ENGINE_PIDS=()
wait_for_link() { # ns ifname
  for _ in $(seq 1 100); do
    ip -n "$1" link show "$2" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "error: $2 did not appear in $1" >&2
  return 1
}

uapi_engine_up() { # binary args...
  for side in A B; do
    if [ "$side" = A ]; then ns="$NS_A"; ifn="$IF_A"; else ns="$NS_B"; ifn="$IF_B"; fi
    ip netns exec "$ns" env WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1 "$@" "$ifn" \
      >"$WORK/engine-$side.log" 2>&1 &
    ENGINE_PIDS+=($!); PIDS+=($!)
    for _ in $(seq 1 100); do [ -S "/var/run/wireguard/$ifn.sock" ] && break; sleep 0.1; done
    wait_for_link "$ns" "$ifn"
    if [ "$side" = A ]; then
      ip netns exec "$ns" wg set "$ifn" private-key "$WORK/a.key" listen-port $PORT \
        peer "$PUB_B" endpoint 10.201.0.2:$PORT allowed-ips 100.64.0.2/32
      addr=100.64.0.1
    else
      ip netns exec "$ns" wg set "$ifn" private-key "$WORK/b.key" listen-port $PORT \
        peer "$PUB_A" endpoint 10.201.0.1:$PORT allowed-ips 100.64.0.1/32
      addr=100.64.0.2
    fi
    ip -n "$ns" link set "$ifn" mtu $MTU up
    ip -n "$ns" addr add "$addr/10" dev "$ifn"
  done
}

engine_up() { # engine
  ENGINE_PIDS=()
  case "$1" in
    rustynet)
      ip netns exec "$NS_A" "$NODE_BIN" "$IF_A" "$WORK/a.key" $PORT $MTU "$PUB_B" 10.201.0.2:$PORT 100.64.0.2/32 \
        >"$WORK/engine-A.log" 2>&1 &
      ENGINE_PIDS+=($!); PIDS+=($!)
      ip netns exec "$NS_B" "$NODE_BIN" "$IF_B" "$WORK/b.key" $PORT $MTU "$PUB_A" 10.201.0.1:$PORT 100.64.0.1/32 \
        >"$WORK/engine-B.log" 2>&1 &
      ENGINE_PIDS+=($!); PIDS+=($!)
      wait_for_link "$NS_A" "$IF_A"; wait_for_link "$NS_B" "$IF_B"
      ip -n "$NS_A" addr add 100.64.0.1/10 dev "$IF_A"
      ip -n "$NS_B" addr add 100.64.0.2/10 dev "$IF_B"
      ;;
    wireguard-go) uapi_engine_up wireguard-go -f ;;
    boringtun-cli) uapi_engine_up boringtun-cli -f --disable-drop-privileges ;;
  esac
  ip netns exec "$NS_B" iperf3 -s >/dev/null 2>&1 &
  ENGINE_PIDS+=($!); PIDS+=($!)
  for _ in $(seq 1 60); do
    ip netns exec "$NS_A" ping -c 1 -W 1 100.64.0.2 >/dev/null 2>&1 && return 0
  done
  echo "error: no connectivity through $1" >&2
  cat "$WORK"/engine-*.log >&2 || true
  return 1
}

engine_down() {
  for pid in "${ENGINE_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${ENGINE_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  ip -n "$NS_A" link del "$IF_A" 2>/dev/null || true
  ip -n "$NS_B" link del "$IF_B" 2>/dev/null || true
  rm -f "/var/run/wireguard/$IF_A.sock" "/var/run/wireguard/$IF_B.sock"
  sleep 0.5
}

run_iperf() { # engine mode -> appends a line "engine mode mbps"
  local extra=()
  [ "$2" = parallel4 ] && extra=(-P 4)
  local json
  json="$(ip netns exec "$NS_A" iperf3 -c 100.64.0.2 -t "$SECONDS_PER_RUN" -O 1 -J "${extra[@]}")"
  local mbps
  mbps="$(printf '%s' "$json" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(round(d["end"]["sum_received"]["bits_per_second"]/1e6,1))')"
  echo "$1 $2 $mbps" >>"$WORK/samples.txt"
  printf '   %-14s %-10s %8s Mbit/s\n' "$1" "$2" "$mbps"
}

read -r -a ENGINES <<<"${BENCH_ENGINES:-rustynet wireguard-go boringtun-cli}"
: >"$WORK/samples.txt"
for rep in $(seq 1 "$REPS"); do
  echo "==> repetition $rep/$REPS"
  for engine in "${ENGINES[@]}"; do
    engine_up "$engine"
    run_iperf "$engine" single
    run_iperf "$engine" parallel4
    engine_down
  done
done

mkdir -p "$(dirname "$OUT")"
WG_GO_VERSION="$(wireguard-go --version 2>/dev/null | head -1)"
BT_VERSION="$(boringtun-cli --version 2>/dev/null | head -1)"
python3 - "$WORK/samples.txt" "$OUT" "$SECONDS_PER_RUN" "$REPS" "$WG_GO_VERSION" "$BT_VERSION" <<'PY'
import json, os, platform, statistics, sys, datetime
samples_file, out, secs, reps, wg_go, bt = sys.argv[1:7]
engines = {}
for line in open(samples_file):
    engine, mode, mbps = line.split()
    engines.setdefault(engine, {}).setdefault(mode, []).append(float(mbps))
result = {
    "benchmark": "tunnel_throughput",
    "generated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "host": {"kernel": platform.release(), "cpus": os.cpu_count()},
    "method": "iperf3 TCP between two netns over veth, MTU 1420, same engine both sides; "
              "median of repetitions interleaved across engines",
    "seconds_per_run": int(secs),
    "repetitions": int(reps),
    "versions": {"wireguard-go": wg_go, "boringtun-cli": bt},
    "engines": {},
    "ratios": {},
    "floor": 0.85,
}
for engine, modes in engines.items():
    result["engines"][engine] = {
        mode: {"samples_mbps": vals, "median_mbps": round(statistics.median(vals), 1)}
        for mode, vals in modes.items()
    }
def med(e, m):
    return result["engines"].get(e, {}).get(m, {}).get("median_mbps")
for other, key in (("wireguard-go", "rustynet_vs_wireguard_go"), ("boringtun-cli", "rustynet_vs_boringtun_cli")):
    result["ratios"][key] = {
        m: round(med("rustynet", m) / med(other, m), 2) if med("rustynet", m) and med(other, m) else None
        for m in ("single", "parallel4")
    }
result["floor_met"] = all(
    r is not None and r >= result["floor"] for r in result["ratios"]["rustynet_vs_wireguard_go"].values()
)
with open(out, "w") as f:
    json.dump(result, f, indent=2)
    f.write("\n")
print(json.dumps({"medians": {e: {m: v["median_mbps"] for m, v in ms.items()} for e, ms in result["engines"].items()},
                  "ratios": result["ratios"], "floor_met": result["floor_met"]}, indent=2))
PY
echo "==> wrote $OUT"
