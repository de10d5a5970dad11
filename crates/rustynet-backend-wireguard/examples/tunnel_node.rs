//! Benchmark helper: brings up Rustynet's userspace engine with one static
//! peer and keeps it running until killed. Used by
//! `scripts/bench/tunnel_throughput.sh`; not a product (the daemon is).
//!
//! ```text
//! tunnel_node IFNAME KEY_FILE LISTEN_PORT MTU PEER_PUBLIC_KEY PEER_ENDPOINT ALLOWED_IPS
//! ```
//! KEY_FILE holds a base64 private key (e.g. from `wg genkey`); ALLOWED_IPS is
//! a comma-separated list of prefixes. Prints `ready port=<port>` when up.
#![allow(clippy::print_stdout)]

use std::time::Duration;

use anyhow::{Context, bail};
use rustynet_backend_wireguard::UserspaceBackend;
use rustynet_tunnel::{InterfaceConfig, PeerConfig, TunnelBackend, TunnelPrivateKey};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [ifname, key_file, port, mtu, peer_key, endpoint, allowed] = args.as_slice() else {
        bail!(
            "usage: tunnel_node IFNAME KEY_FILE LISTEN_PORT MTU PEER_PUBLIC_KEY PEER_ENDPOINT ALLOWED_IPS"
        );
    };
    let key_text = zeroize::Zeroizing::new(
        std::fs::read_to_string(key_file).with_context(|| format!("read {key_file}"))?,
    );
    let config = InterfaceConfig {
        ifname: ifname.clone(),
        private_key: TunnelPrivateKey::from_base64(&key_text)?,
        listen_port: port.parse().context("LISTEN_PORT")?,
        mtu: mtu.parse().context("MTU")?,
        fwmark: None,
    };
    let peer = PeerConfig {
        candidates: Vec::new(),
        home_relay: None,
        path_key: None,
        public_key: peer_key.parse().context("PEER_PUBLIC_KEY")?,
        endpoint: Some(endpoint.parse().context("PEER_ENDPOINT")?),
        allowed_ips: allowed
            .split(',')
            .map(|s| s.parse().context("ALLOWED_IPS"))
            .collect::<anyhow::Result<_>>()?,
        persistent_keepalive_secs: None,
    };
    let mut backend = UserspaceBackend::new("userspace: benchmark helper".into());
    backend.start(&config)?;
    backend.set_peers(&[peer])?;
    println!("ready port={}", backend.stats()?.listen_port);
    while backend.is_running() {
        std::thread::sleep(Duration::from_millis(500));
    }
    bail!("interface {ifname} disappeared")
}
