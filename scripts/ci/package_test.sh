#!/usr/bin/env bash
# Installs the `rustynet` .deb into a fresh Debian 12 root and runs it there
# the way the systemd units would (issue 11): dpkg -i in a chroot (the
# postinst creates the rustynet/rustynet-admin groups and the service
# users), `rustynet version`, `rustynetd --check-config`, the files the
# package promises, then — in a private network namespace — the control
# server as its own user, rustynetd as the `rustynet` user with only the
# unit's ambient capabilities and its default config, and
# `rustynet up` until the node reports dataplane_applied.
#
# The Debian root is made once with mmdebstrap from Debian's mirror and
# cached as target/debroot/bookworm-minbase.tar (about 190 MB).
# Usage (root): scripts/ci/package_test.sh [--profile dev|release]  (default dev)
set -euo pipefail
cd "$(dirname "$0")/../.."
profile=dev
if [ "${1:-}" = "--profile" ]; then profile="${2:?}"; fi
mirror="${RUSTYNET_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
target="${CARGO_TARGET_DIR:-target}"

deb="$(scripts/package.sh --profile "$profile" | tail -1)"
echo "==> package: $deb ($(du -h "$deb" | cut -f1))"

base="$target/debroot/bookworm-minbase.tar"
if [ ! -s "$base" ]; then
  command -v mmdebstrap >/dev/null || { echo "error: mmdebstrap missing (apt-get install mmdebstrap)" >&2; exit 1; }
  mkdir -p "$(dirname "$base")"
  echo "==> mmdebstrap bookworm minbase (cached in $base)"
  # A mirror hiccup (apt-get update failing once) must not fail the suite:
  # up to three tries, the log of the last one shown if all fail.
  log="$(dirname "$base")/mmdebstrap.log"
  ok=0
  for try in 1 2 3; do
    if mmdebstrap --format=tar --variant=minbase \
         --include=nftables,ca-certificates,iproute2,util-linux \
         bookworm "$base.partial" "$mirror" >"$log" 2>&1; then
      ok=1; break
    fi
    echo "mmdebstrap try $try failed: $(grep -E '^E:' "$log" | head -2 | tr '\n' ' ')"
    rm -f "$base.partial"; sleep 10
  done
  [ "$ok" = 1 ] || { tail -30 "$log"; echo "error: mmdebstrap failed" >&2; exit 1; }
  mv "$base.partial" "$base"
fi

root="$(mktemp -d /tmp/rustynet-pkgroot-XXXXXX)"
ns="rnpkg$$"
cleanup() {
  ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$root"
}
trap cleanup EXIT
tar -xf "$base" -C "$root"
cp "$deb" "$root/tmp/rustynet.deb"
cat >"$root/tmp/inside.sh" <<'INSIDE'
#!/bin/bash
# Runs inside the fresh root (chroot), in a private network namespace.
set -euo pipefail
fail() { echo "FAIL: $*" >&2; exit 1; }
ip link set lo up
dpkg -i /tmp/rustynet.deb >/tmp/dpkg.log 2>&1 || { cat /tmp/dpkg.log; fail "dpkg -i"; }
for g in rustynet rustynet-admin rustynet-control; do
  getent group "$g" >/dev/null || fail "group $g missing after install"
done
for f in /usr/sbin/rustynetd /usr/bin/rustynet /usr/sbin/rustynet-control /usr/sbin/rustynet-relay \
         /lib/systemd/system/rustynetd.service /lib/systemd/system/rustynet-protect.service \
         /lib/systemd/system/rustynet-control.service /lib/systemd/system/rustynet-relay.service \
         /usr/lib/sysusers.d/rustynet.conf /usr/lib/tmpfiles.d/rustynet.conf \
         /etc/rustynet/rustynetd.toml /etc/rustynet/control.toml \
         /usr/share/man/man1/rustynet.1.gz /usr/share/man/man8/rustynetd.8.gz \
         /usr/share/man/man8/rustynet-control.8.gz /usr/share/man/man8/rustynet-relay.8.gz \
         /usr/share/bash-completion/completions/rustynet /usr/share/zsh/vendor-completions/_rustynet \
         /usr/share/fish/vendor_completions.d/rustynet.fish /usr/share/doc/rustynet/configuration.md \
         /usr/share/doc/rustynet/prometheus/rules.yml /usr/share/doc/rustynet/grafana/rustynet.json; do
  [ -e "$f" ] || fail "$f not installed"
done
[ -e /etc/systemd/system/multi-user.target.wants/rustynetd.service ] || fail "rustynetd.service not enabled"
rustynet version >/tmp/version.txt
v="$(head -1 /tmp/version.txt)"; echo "rustynet version: $v"
[ "$v" = "rustynet $(dpkg-query -W -f='${Version}' rustynet | cut -d- -f1)" ] || fail "version: $v"
rustynetd --check-config | tee /tmp/check.txt
grep -q "configuration ok" /tmp/check.txt || fail "check-config"

# The control server, as its unit runs it (its own user, the shipped config
# with a loopback listener).
rustynet-control init --data-dir /var/lib/rustynet-control --san 127.0.0.1 >/dev/null
chown -R rustynet-control:rustynet-control /var/lib/rustynet-control
sed -i 's/^listen = .*/listen = "127.0.0.1:8443"/' /etc/rustynet/control.toml
setpriv --reuid=rustynet-control --regid=rustynet-control --clear-groups --no-new-privs \
  rustynet-control serve --config /etc/rustynet/control.toml >/tmp/control.log 2>&1 &
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/8443) 2>/dev/null && break; sleep 0.2; done
(exec 3<>/dev/tcp/127.0.0.1/8443) 2>/dev/null || { cat /tmp/control.log; fail "control did not start"; }
key="$(setpriv --reuid=rustynet-control --regid=rustynet-control --clear-groups \
  rustynet-control preauth create --user alice --expires 1h --data-dir /var/lib/rustynet-control)"

# rustynetd as rustynetd.service runs it: User=rustynet, ambient
# CAP_NET_ADMIN/NET_RAW/NET_BIND_SERVICE, the same bounding set,
# no_new_privs, RuntimeDirectory=/run/rustynet, the default config.
install -d -m 0755 -o rustynet -g rustynet /run/rustynet
caps=+net_admin,+net_raw,+net_bind_service
setpriv --reuid=rustynet --regid=rustynet --init-groups --inh-caps=$caps --ambient-caps=$caps \
  --bounding-set=-all,$caps --no-new-privs rustynetd >/tmp/rustynetd.log 2>&1 &
for _ in $(seq 100); do [ -S /run/rustynet/rustynetd.sock ] && break; sleep 0.2; done
[ -S /run/rustynet/rustynetd.sock ] || { cat /tmp/rustynetd.log; fail "rustynetd did not open its socket"; }
stat -c '%a %G' /run/rustynet/rustynetd.sock | grep -qx "660 rustynet" || fail "socket mode/group: $(stat -c '%a %G' /run/rustynet/rustynetd.sock)"
printf '%s' "$key" >/tmp/key
rustynet up --control https://127.0.0.1:8443 --ca-cert /var/lib/rustynet-control/ca.pem \
  --auth-key-file /tmp/key --hostname alice
state=""
for _ in $(seq 100); do
  state="$(rustynet --json status | tr -d ' \n' | sed -n 's/.*"state":"\([a-z_]*\)".*/\1/p')"
  [ "$state" = dataplane_applied ] && break
  sleep 0.3
done
rustynet status
[ "$state" = dataplane_applied ] || { tail -20 /tmp/rustynetd.log; fail "state $state"; }
grep -q '"uid":'"$(id -u rustynet)" /tmp/rustynetd.log || fail "daemon did not run as rustynet"
rustynet version >/tmp/version.txt
grep -qx "rustynetd $(dpkg-query -W -f='${Version}' rustynet | cut -d- -f1)" /tmp/version.txt || fail "daemon version: $(cat /tmp/version.txt)"
echo "OK: installed, configured and up as the rustynet user (state $state)"
INSIDE
chmod +x "$root/tmp/inside.sh"
ip netns add "$ns"
# ip netns exec gives a private mount namespace: /proc, /dev and a 0666
# /dev/net/tun (as Debian's udev makes it) exist for the root only there.
tun="$root/tmp/tun-node"
ip netns exec "$ns" sh -c '
  set -e
  root="$1"; tun="$2"
  mount -t proc proc "$root/proc"
  mount --rbind /dev "$root/dev"
  mknod -m 0666 "$tun" c 10 200
  mount --bind "$tun" "$root/dev/net/tun"
  exec chroot "$root" /tmp/inside.sh
' sh "$root" "$tun"
