//! The kernel engine: the in-kernel implementation configured over netlink.
//!
//! Selected by [`probe`] when a link of kind `wireguard` can be created. Peer
//! changes are sent as a diff (remove / replace-allowed-IPs / add), never with
//! REPLACE_PEERS, so unchanged peers keep their sessions.
//!
//! This host has no kernel module, so the engine is exercised here only up to
//! message building (unit tests below); see the crate README in the report.

mod netlink;

use std::ffi::CString;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use rustynet_tunnel::{
    BackendInfo, InterfaceConfig, PeerConfig, PeerDiff, PeerSet, PeerStats, TunnelBackend,
    TunnelError, TunnelPublicKey, TunnelStats,
};
use zeroize::Zeroizing;

use crate::keys::{public_key, validate_public_key};
use netlink::*;

/// Largest SET_DEVICE message we build before starting another one.
const MAX_SET_MSG: usize = 16 * 1024;

static PROBE_COUNTER: AtomicU32 = AtomicU32::new(0);

fn ifindex(name: &str) -> u32 {
    let Ok(c) = CString::new(name) else {
        return 0;
    };
    // SAFETY: `c` is a valid NUL-terminated string for the whole call.
    unsafe { libc::if_nametoindex(c.as_ptr()) }
}

fn new_link_msg(name: &str) -> Vec<u8> {
    let mut m = MsgBuilder::new(
        RTM_NEWLINK,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
    )
    .raw(&ifinfomsg(0, 0, 0));
    m.attr_str(IFLA_IFNAME, name);
    let info = m.nest_start(IFLA_LINKINFO);
    m.attr_str(IFLA_INFO_KIND, WG_GENL_NAME);
    m.nest_end(info);
    m.finish()
}

fn del_link_msg(name: &str) -> Vec<u8> {
    let mut m = MsgBuilder::new(RTM_DELLINK, NLM_F_REQUEST | NLM_F_ACK).raw(&ifinfomsg(0, 0, 0));
    m.attr_str(IFLA_IFNAME, name);
    m.finish()
}

fn link_up_msg(index: u32, mtu: u16) -> Vec<u8> {
    let up = libc::IFF_UP as u32;
    let mut m = MsgBuilder::new(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK).raw(&ifinfomsg(
        index as i32,
        up,
        up,
    ));
    m.attr_u32(IFLA_MTU, u32::from(mtu));
    m.finish()
}

fn get_family_msg() -> Vec<u8> {
    let mut m = MsgBuilder::new(GENL_ID_CTRL, NLM_F_REQUEST | NLM_F_ACK)
        .raw(&genl_header(CTRL_CMD_GETFAMILY, 1));
    m.attr_str(CTRL_ATTR_FAMILY_NAME, WG_GENL_NAME);
    m.finish()
}

/// SET_DEVICE carrying the interface's own settings. Wiped after use.
fn set_device_msg(family: u16, cfg: &InterfaceConfig) -> Zeroizing<Vec<u8>> {
    let mut m = MsgBuilder::new(family, NLM_F_REQUEST | NLM_F_ACK)
        .raw(&genl_header(WG_CMD_SET_DEVICE, WG_GENL_VERSION));
    m.attr_str(WGDEVICE_A_IFNAME, &cfg.ifname);
    m.attr(WGDEVICE_A_PRIVATE_KEY, cfg.private_key.as_bytes());
    m.attr_u16(WGDEVICE_A_LISTEN_PORT, cfg.listen_port);
    m.attr_u32(WGDEVICE_A_FWMARK, cfg.fwmark.unwrap_or(0));
    m.attr_u32(WGDEVICE_A_FLAGS, 0);
    Zeroizing::new(m.finish())
}

fn peer_attrs(m: &mut MsgBuilder, key: &TunnelPublicKey, cfg: Option<&PeerConfig>) {
    let peer = m.nest_start(0);
    m.attr(WGPEER_A_PUBLIC_KEY, &key.0);
    match cfg {
        None => m.attr_u32(WGPEER_A_FLAGS, WGPEER_F_REMOVE_ME),
        Some(cfg) => {
            m.attr_u32(WGPEER_A_FLAGS, WGPEER_F_REPLACE_ALLOWEDIPS);
            if let Some(ep) = &cfg.endpoint {
                m.attr(WGPEER_A_ENDPOINT, &sockaddr_bytes(ep));
            }
            m.attr_u16(
                WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL,
                cfg.persistent_keepalive_secs.unwrap_or(0),
            );
            let list = m.nest_start(WGPEER_A_ALLOWEDIPS);
            for net in &cfg.allowed_ips {
                let ip = m.nest_start(0);
                let (family, addr): (u16, Vec<u8>) = match net {
                    IpNet::V4(n) => (libc::AF_INET as u16, n.network().octets().to_vec()),
                    IpNet::V6(n) => (libc::AF_INET6 as u16, n.network().octets().to_vec()),
                };
                m.attr_u16(WGALLOWEDIP_A_FAMILY, family);
                m.attr(WGALLOWEDIP_A_IPADDR, &addr);
                m.attr(WGALLOWEDIP_A_CIDR_MASK, &[net.prefix_len()]);
                m.nest_end(ip);
            }
            m.nest_end(list);
        }
    }
    m.nest_end(peer);
}

/// SET_DEVICE messages applying `diff`, split to stay small.
fn peer_diff_msgs(family: u16, ifname: &str, diff: &PeerDiff) -> Vec<Vec<u8>> {
    let start = || {
        let mut m = MsgBuilder::new(family, NLM_F_REQUEST | NLM_F_ACK)
            .raw(&genl_header(WG_CMD_SET_DEVICE, WG_GENL_VERSION));
        m.attr_str(WGDEVICE_A_IFNAME, ifname);
        let peers = m.nest_start(WGDEVICE_A_PEERS);
        (m, peers)
    };
    let items = diff.removed.iter().map(|k| (*k, None)).chain(
        diff.updated
            .iter()
            .chain(&diff.added)
            .map(|c| (c.public_key, Some(c))),
    );
    let mut out = Vec::new();
    let (mut m, mut peers) = start();
    let mut count = 0;
    for (key, cfg) in items {
        peer_attrs(&mut m, &key, cfg);
        count += 1;
        if m.len() > MAX_SET_MSG {
            m.nest_end(peers);
            out.push(m.finish());
            (m, peers) = start();
            count = 0;
        }
    }
    if count > 0 {
        m.nest_end(peers);
        out.push(m.finish());
    }
    out
}

fn get_device_msg(family: u16, ifname: &str) -> Vec<u8> {
    let mut m = MsgBuilder::new(family, NLM_F_REQUEST | NLM_F_ACK | NLM_F_DUMP)
        .raw(&genl_header(WG_CMD_GET_DEVICE, WG_GENL_VERSION));
    m.attr_str(WGDEVICE_A_IFNAME, ifname);
    m.finish()
}

/// Parses GET_DEVICE replies (each a genl header then attributes).
fn parse_device(replies: &[Reply]) -> TunnelStats {
    let mut stats = TunnelStats::default();
    let now = SystemTime::now();
    for reply in replies {
        let Some(body) = reply.payload.get(4..) else {
            continue;
        };
        for a in attrs(body) {
            match a.kind {
                WGDEVICE_A_LISTEN_PORT => stats.listen_port = u16_of(a.payload).unwrap_or(0),
                WGDEVICE_A_PEERS => {
                    for p in attrs(a.payload) {
                        if let Some(peer) = parse_peer(p.payload, now) {
                            stats.peers.push(peer);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    stats.peers.sort_by_key(|p| p.public_key);
    stats
}

fn parse_peer(buf: &[u8], now: SystemTime) -> Option<PeerStats> {
    let mut key = None;
    let mut peer = PeerStats {
        path: Default::default(),
        public_key: TunnelPublicKey([0; 32]),
        endpoint: None,
        last_handshake: None,
        rx_bytes: 0,
        tx_bytes: 0,
    };
    for a in attrs(buf) {
        match a.kind {
            WGPEER_A_PUBLIC_KEY => key = a.payload.try_into().ok().map(TunnelPublicKey),
            WGPEER_A_ENDPOINT => peer.endpoint = parse_sockaddr(a.payload),
            WGPEER_A_RX_BYTES => peer.rx_bytes = u64_of(a.payload).unwrap_or(0),
            WGPEER_A_TX_BYTES => peer.tx_bytes = u64_of(a.payload).unwrap_or(0),
            WGPEER_A_LAST_HANDSHAKE_TIME => {
                let secs = u64_of(a.payload).unwrap_or(0);
                if secs > 0 {
                    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
                    peer.last_handshake = Some(now.duration_since(at).unwrap_or_default());
                }
            }
            _ => {}
        }
    }
    peer.public_key = key?;
    Some(peer)
}

/// Tries to create (and always deletes) a uniquely named kernel link.
/// `Err` carries the OS reason for `info().detail`.
pub(crate) fn probe() -> Result<(), String> {
    let name = format!(
        "rnp{:x}{:x}",
        std::process::id() & 0xff_ffff,
        PROBE_COUNTER.fetch_add(1, Ordering::Relaxed) & 0xffff
    );
    let mut rt = NlSocket::route().map_err(|e| e.to_string())?;
    let created = rt.request(new_link_msg(&name));
    // Delete even on an odd error: the link must never outlive the probe.
    let _ = rt.request(del_link_msg(&name));
    created.map(|_| ()).map_err(|e| {
        let s = e.to_string();
        // "Operation not supported (os error 95)" -> "Operation not supported"
        s.split(" (os error").next().unwrap_or(&s).to_string()
    })
}

/// The kernel engine.
pub struct KernelBackend {
    detail: String,
    run: Option<KernelRun>,
}

struct KernelRun {
    config: InterfaceConfig,
    own_key: TunnelPublicKey,
    index: u32,
    family: u16,
    peers: PeerSet,
}

impl KernelBackend {
    /// A stopped engine; `detail` is reported by `info()`.
    pub fn new(detail: String) -> Self {
        Self { detail, run: None }
    }

    fn running(&self) -> Result<&KernelRun, TunnelError> {
        match &self.run {
            None => Err(TunnelError::NotRunning),
            Some(r) if ifindex(&r.config.ifname) != r.index => Err(TunnelError::InterfaceGone {
                ifname: r.config.ifname.clone(),
            }),
            Some(r) => Ok(r),
        }
    }

    fn reconcile(&mut self, desired: PeerSet) -> Result<(), TunnelError> {
        let run = self.running()?;
        for p in desired.iter() {
            validate_public_key(&p.public_key)?;
            if p.public_key == run.own_key {
                return Err(TunnelError::InvalidPeerKey {
                    key: p.public_key,
                    reason: "our own key",
                });
            }
        }
        let diff = run.peers.diff(&desired);
        let mut genl = NlSocket::generic().map_err(|e| TunnelError::io("open netlink", e))?;
        for msg in peer_diff_msgs(run.family, &run.config.ifname, &diff) {
            genl.request(msg)
                .map_err(|e| TunnelError::io("configure kernel peers", e))?;
        }
        if let Some(run) = self.run.as_mut() {
            run.peers = desired;
        }
        Ok(())
    }

    fn bring_up(cfg: &InterfaceConfig) -> Result<KernelRun, TunnelError> {
        let mut rt = NlSocket::route().map_err(|e| TunnelError::io("open netlink", e))?;
        rt.request(new_link_msg(&cfg.ifname))
            .map_err(|e| TunnelError::io("create kernel interface", e))?;
        let result = (|| {
            let mut genl = NlSocket::generic().map_err(|e| TunnelError::io("open netlink", e))?;
            let family = genl
                .request(get_family_msg())
                .ok()
                .and_then(|r| {
                    r.iter().find_map(|m| {
                        attrs(m.payload.get(4..)?)
                            .find(|a| a.kind == CTRL_ATTR_FAMILY_ID)
                            .and_then(|a| u16_of(a.payload))
                    })
                })
                .ok_or_else(|| TunnelError::Unavailable {
                    reason: "generic netlink family not found".into(),
                })?;
            genl.request(set_device_msg(family, cfg).to_vec())
                .map_err(|e| TunnelError::io("configure kernel interface", e))?;
            let index = ifindex(&cfg.ifname);
            rt.request(link_up_msg(index, cfg.mtu))
                .map_err(|e| TunnelError::io("bring kernel interface up", e))?;
            Ok(KernelRun {
                config: cfg.clone(),
                own_key: public_key(&cfg.private_key),
                index,
                family,
                peers: PeerSet::new(),
            })
        })();
        if result.is_err() {
            let _ = rt.request(del_link_msg(&cfg.ifname));
        }
        result
    }
}

impl TunnelBackend for KernelBackend {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            engine: "kernel".into(),
            detail: self.detail.clone(),
        }
    }

    fn start(&mut self, config: &InterfaceConfig) -> Result<(), TunnelError> {
        if self.run.is_some() {
            return Err(TunnelError::AlreadyRunning);
        }
        config.validate()?;
        self.run = Some(Self::bring_up(config)?);
        Ok(())
    }

    fn set_peers(&mut self, peers: &[PeerConfig]) -> Result<(), TunnelError> {
        self.running()?;
        self.reconcile(PeerSet::from_peers(peers)?)
    }

    fn add_peer(&mut self, peer: &PeerConfig) -> Result<(), TunnelError> {
        let desired = self.running()?.peers.with_added(peer)?;
        self.reconcile(desired)
    }

    fn update_peer(&mut self, peer: &PeerConfig) -> Result<(), TunnelError> {
        let desired = self.running()?.peers.with_updated(peer)?;
        self.reconcile(desired)
    }

    fn remove_peer(&mut self, key: &TunnelPublicKey) -> Result<(), TunnelError> {
        let desired = self.running()?.peers.with_removed(key)?;
        self.reconcile(desired)
    }

    fn stats(&self) -> Result<TunnelStats, TunnelError> {
        let run = self.running()?;
        let mut genl = NlSocket::generic().map_err(|e| TunnelError::io("open netlink", e))?;
        let replies = genl
            .request(get_device_msg(run.family, &run.config.ifname))
            .map_err(|e| TunnelError::io("read kernel interface", e))?;
        Ok(parse_device(&replies))
    }

    fn stop(&mut self) -> Result<(), TunnelError> {
        if let Some(run) = self.run.take()
            && ifindex(&run.config.ifname) == run.index
        {
            let mut rt = NlSocket::route().map_err(|e| TunnelError::io("open netlink", e))?;
            rt.request(del_link_msg(&run.config.ifname))
                .map_err(|e| TunnelError::io("delete kernel interface", e))?;
        }
        Ok(())
    }

    fn is_running(&self) -> bool {
        self.running().is_ok()
    }
}

impl Drop for KernelBackend {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

#[cfg(test)]
mod tests;
