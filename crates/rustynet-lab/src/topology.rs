//! The lab network.
//!
//! ```text
//!   internet (203.0.113.0/24, 2001:db8:113::/64): echo 203.0.113.10, dns 203.0.113.53
//!        |
//!   router ── control 192.0.2.1 (on its loopback)
//!    |   |   \
//!  node0 node1 ... each on its own 198.51.100.4i/30 (+ 2001:db8:100:i::/64)
//!                 \
//!                  an exit node may have a LAN: 192.168.77.0/24, host .10
//! ```
//! Only TEST-NET ranges stand for the internet; RFC 1918 appears only inside
//! the lab. Nothing is bridged to the host's interfaces.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use crate::netns::{Netns, unique_id};

/// The control server's address inside the lab.
pub const CONTROL_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The internet echo host (TCP and UDP echo that reports the peer address).
pub const ECHO_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
/// The internet echo host's IPv6 address.
pub const ECHO_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x113, 0, 0, 0, 0, 0x10);
/// A DNS server "out on the internet" (the ISP resolver of the nodes).
pub const DNS_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 53);
/// The LAN host behind an exit node.
pub const LAN_HOST_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 10);
/// The exit node's LAN prefix.
pub const LAN_NET: &str = "192.168.77.0/24";

/// The second binding (STUN-style) address of the relay embedded in
/// control; with [`CONTROL_IP`] a node can tell whether its NAT mapping
/// depends on the destination.
pub const RELAY_IP2: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);

/// How a NAT router in front of a node maps its UDP flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatKind {
    /// nftables `masquerade`: one public port per inside port
    /// (endpoint-independent mapping, as most home routers).
    EndpointIndependent,
    /// nftables `masquerade random`: a new public port per destination
    /// (destination-dependent, "symmetric" NAT).
    DestinationDependent,
}

/// One node to create.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// Node name (also its hostname in the mesh).
    pub name: String,
    /// Give it a LAN behind it.
    pub lan: bool,
    /// Put it behind a NAT router of this kind.
    pub nat: Option<NatKind>,
    /// Join the LAN of this earlier node (a second router for the same
    /// prefix): the LAN becomes a bridge and this node gets
    /// 192.168.77.(2 + its index) on it.
    pub lan_of: Option<String>,
}

impl NodeSpec {
    /// A plain node.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            lan: false,
            nat: None,
            lan_of: None,
        }
    }
    /// A node with the lab LAN behind it.
    pub fn with_lan(name: &str) -> Self {
        Self {
            lan: true,
            ..Self::new(name)
        }
    }
    /// A node behind its own NAT router.
    pub fn behind_nat(name: &str, kind: NatKind) -> Self {
        Self {
            nat: Some(kind),
            ..Self::new(name)
        }
    }
    /// A node on the LAN of `owner` (listed before it), as a second router
    /// for that LAN.
    pub fn on_lan_of(name: &str, owner: &str) -> Self {
        Self {
            lan_of: Some(owner.into()),
            ..Self::new(name)
        }
    }
}

/// The NAT router in front of a node.
#[derive(Debug)]
pub struct NatBox {
    /// Its namespace.
    pub ns: Netns,
    /// Its public address (towards the lab router).
    pub public: Ipv4Addr,
    /// Its interface towards the lab router.
    pub outside_if: String,
    /// Its interface towards the node.
    pub inside_if: String,
    /// How it maps flows.
    pub kind: NatKind,
}

/// A node's namespace and physical link.
#[derive(Debug)]
pub struct LabNode {
    /// The namespace.
    pub ns: Netns,
    /// The node's physical interface (towards the router).
    pub ifname: String,
    /// Its IPv4 address (a private one behind a NAT router).
    pub addr: Ipv4Addr,
    /// Its IPv6 address (unspecified behind a NAT router: IPv4 only there).
    pub addr6: Ipv6Addr,
    /// The LAN namespace behind it, if any.
    pub lan: Option<Netns>,
    /// Its own address on a LAN (192.168.77.1 for the LAN's owner).
    pub lan_addr: Option<Ipv4Addr>,
    /// The NAT router in front of it, if any (dropped after the node).
    pub nat: Option<NatBox>,
}

/// A lab: namespaces, links and a scratch directory, all removed on drop.
#[derive(Debug)]
pub struct Lab {
    /// Unique id (in every name).
    pub id: String,
    /// Scratch directory (logs, state, captures).
    pub dir: PathBuf,
    /// Nodes by name (dropped before the router).
    pub nodes: BTreeMap<String, LabNode>,
    /// The internet.
    pub internet: Netns,
    /// The router (also hosts the control server).
    pub router: Netns,
    keep_dir: bool,
}

impl Lab {
    /// Builds the topology with `nodes`.
    pub fn new(nodes: &[NodeSpec]) -> anyhow::Result<Self> {
        crate::require_lab();
        let id = unique_id();
        let dir = std::env::temp_dir().join(format!("rustynet-lab-{id}"));
        std::fs::create_dir_all(&dir)?;
        let router = Netns::create(&format!("rn{id}-rtr"))?;
        let internet = Netns::create(&format!("rn{id}-inet"))?;
        let mut lab = Self {
            id: id.clone(),
            dir,
            nodes: BTreeMap::new(),
            internet,
            router,
            keep_dir: std::env::var_os("RUSTYNET_LAB_KEEP").is_some(),
        };
        lab.wire_core()?;
        for (i, spec) in nodes.iter().enumerate() {
            let node = lab.wire_node(i, spec)?;
            lab.nodes.insert(spec.name.clone(), node);
        }
        Ok(lab)
    }

    fn wire_core(&self) -> anyhow::Result<()> {
        let (r, i) = (&self.router, &self.internet);
        for key in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"] {
            r.exec(&["sysctl", "-qw", key])?;
        }
        let (ri, ii) = (format!("r{}i", self.id), format!("i{}r", self.id));
        r.ip(&[
            "link",
            "add",
            &ri,
            "type",
            "veth",
            "peer",
            "name",
            &ii,
            "netns",
            i.name(),
        ])?;
        r.ip(&["addr", "add", "203.0.113.254/24", "dev", &ri])?;
        r.ip(&[
            "-6",
            "addr",
            "add",
            "2001:db8:113::fe/64",
            "dev",
            &ri,
            "nodad",
        ])?;
        r.ip(&["link", "set", &ri, "up"])?;
        for a in ["203.0.113.1/24", "203.0.113.10/24", "203.0.113.53/24"] {
            i.ip(&["addr", "add", a, "dev", &ii])?;
        }
        i.ip(&[
            "-6",
            "addr",
            "add",
            "2001:db8:113::10/64",
            "dev",
            &ii,
            "nodad",
        ])?;
        i.ip(&["link", "set", &ii, "up"])?;
        i.ip(&["route", "add", "default", "via", "203.0.113.254"])?;
        i.ip(&["-6", "route", "add", "default", "via", "2001:db8:113::fe"])?;
        // The control address lives on the router's loopback (no dummy
        // module on every kernel); nodes reach it through the router.
        r.ip(&["addr", "add", &format!("{CONTROL_IP}/32"), "dev", "lo"])?;
        r.ip(&["addr", "add", &format!("{RELAY_IP2}/32"), "dev", "lo"])?;
        Ok(())
    }

    fn wire_node(&self, index: usize, spec: &NodeSpec) -> anyhow::Result<LabNode> {
        if let Some(kind) = spec.nat {
            return self.wire_natted_node(index, spec, kind);
        }
        let ns = Netns::create(&format!("rn{}-{}", self.id, spec.name))?;
        let base = u8::try_from(index * 4).map_err(|_| anyhow::anyhow!("too many nodes"))?;
        let (rif, nif) = (
            format!("r{}n{index}", self.id),
            format!("n{}r{index}", self.id),
        );
        self.router.ip(&[
            "link",
            "add",
            &rif,
            "type",
            "veth",
            "peer",
            "name",
            &nif,
            "netns",
            ns.name(),
        ])?;
        self.router.ip(&[
            "addr",
            "add",
            &format!("198.51.100.{}/30", base + 1),
            "dev",
            &rif,
        ])?;
        self.router.ip(&[
            "-6",
            "addr",
            "add",
            &format!("2001:db8:100:{index}::1/64"),
            "dev",
            &rif,
            "nodad",
        ])?;
        self.router.ip(&["link", "set", &rif, "up"])?;
        let addr = Ipv4Addr::new(198, 51, 100, base + 2);
        let addr6: Ipv6Addr = format!("2001:db8:100:{index}::2").parse()?;
        ns.ip(&["addr", "add", &format!("{addr}/30"), "dev", &nif])?;
        ns.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{addr6}/64"),
            "dev",
            &nif,
            "nodad",
        ])?;
        ns.ip(&["link", "set", &nif, "up"])?;
        ns.ip(&[
            "route",
            "add",
            "default",
            "via",
            &format!("198.51.100.{}", base + 1),
        ])?;
        ns.ip(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            &format!("2001:db8:100:{index}::1"),
        ])?;
        let lan = if spec.lan {
            let lan = Netns::create(&format!("rn{}-{}-lan", self.id, spec.name))?;
            let (a, b) = self.lan_link(index, &ns, &lan)?;
            ns.ip(&["addr", "add", "192.168.77.1/24", "dev", &a])?;
            ns.ip(&["link", "set", &a, "up"])?;
            lan.ip(&["addr", "add", &format!("{LAN_HOST_IP}/24"), "dev", &b])?;
            lan.ip(&["link", "set", &b, "up"])?;
            lan.ip(&["route", "add", "default", "via", "192.168.77.1"])?;
            Some(lan)
        } else {
            None
        };
        let lan_addr = match &spec.lan_of {
            Some(owner) => Some(self.join_lan(index, &ns, owner)?),
            None => spec.lan.then_some(Ipv4Addr::new(192, 168, 77, 1)),
        };
        Ok(LabNode {
            ns,
            ifname: nif,
            addr,
            addr6,
            lan,
            lan_addr,
            nat: None,
        })
    }

    /// A node on 10.(64+i).0.2/24 behind a NAT router whose public side is
    /// the node's usual 198.51.100.4i+2/30 link to the lab router.
    fn wire_natted_node(
        &self,
        index: usize,
        spec: &NodeSpec,
        kind: NatKind,
    ) -> anyhow::Result<LabNode> {
        let base = u8::try_from(index * 4).map_err(|_| anyhow::anyhow!("too many nodes"))?;
        let inner = u8::try_from(64 + index).map_err(|_| anyhow::anyhow!("too many nodes"))?;
        let nat = Netns::create(&format!("rn{}-{}-nat", self.id, spec.name))?;
        let ns = Netns::create(&format!("rn{}-{}", self.id, spec.name))?;
        let (rif, out_if) = (
            format!("r{}n{index}", self.id),
            format!("x{}o{index}", self.id),
        );
        self.router.ip(&[
            "link",
            "add",
            &rif,
            "type",
            "veth",
            "peer",
            "name",
            &out_if,
            "netns",
            nat.name(),
        ])?;
        self.router.ip(&[
            "addr",
            "add",
            &format!("198.51.100.{}/30", base + 1),
            "dev",
            &rif,
        ])?;
        self.router.ip(&["link", "set", &rif, "up"])?;
        let public = Ipv4Addr::new(198, 51, 100, base + 2);
        nat.ip(&["addr", "add", &format!("{public}/30"), "dev", &out_if])?;
        nat.ip(&["link", "set", &out_if, "up"])?;
        nat.ip(&[
            "route",
            "add",
            "default",
            "via",
            &format!("198.51.100.{}", base + 1),
        ])?;
        let (in_if, nif) = (
            format!("x{}i{index}", self.id),
            format!("n{}r{index}", self.id),
        );
        nat.ip(&[
            "link",
            "add",
            &in_if,
            "type",
            "veth",
            "peer",
            "name",
            &nif,
            "netns",
            ns.name(),
        ])?;
        nat.ip(&["addr", "add", &format!("10.{inner}.0.1/24"), "dev", &in_if])?;
        nat.ip(&["link", "set", &in_if, "up"])?;
        let addr = Ipv4Addr::new(10, inner, 0, 2);
        ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", &nif])?;
        ns.ip(&["link", "set", &nif, "up"])?;
        ns.ip(&["route", "add", "default", "via", &format!("10.{inner}.0.1")])?;
        nat.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        // Like a home router, the NAT box itself takes no new connections
        // from outside: an unsolicited packet is dropped before conntrack
        // confirms an entry for it. (Accepted, such an entry would claim
        // the public port a punching node is about to use, and masquerade
        // would then pick another one.)
        let masquerade = match kind {
            NatKind::EndpointIndependent => "masquerade",
            NatKind::DestinationDependent => "masquerade random",
        };
        nat.exec(&[
            "nft",
            &format!(
                "add table ip labnat; \
                 add chain ip labnat post {{ type nat hook postrouting priority 100 ; }}; \
                 add rule ip labnat post oifname {out_if} {masquerade}; \
                 add table inet labfw; \
                 add chain inet labfw forwarded {{ type filter hook forward priority 0 ; }}; \
                 add chain inet labfw local {{ type filter hook input priority 0 ; }}; \
                 add rule inet labfw local iifname {out_if} ct state new drop"
            ),
        ])?;
        Ok(LabNode {
            ns,
            ifname: nif,
            addr,
            addr6: Ipv6Addr::UNSPECIFIED,
            lan: None,
            lan_addr: None,
            nat: Some(NatBox {
                ns: nat,
                public,
                outside_if: out_if,
                inside_if: in_if,
                kind,
            }),
        })
    }

    /// A veth pair from node `ns` (number `index`) into the LAN namespace
    /// `lan`: returns (the node's end, the LAN's end).
    fn lan_link(&self, index: usize, ns: &Netns, lan: &Netns) -> anyhow::Result<(String, String)> {
        let (a, b) = (
            format!("l{}n{index}", self.id),
            format!("l{}h{index}", self.id),
        );
        ns.ip(&[
            "link",
            "add",
            &a,
            "type",
            "veth",
            "peer",
            "name",
            &b,
            "netns",
            lan.name(),
        ])?;
        Ok((a, b))
    }

    /// Links node `ns` (number `index`) into the LAN of `owner`. The first
    /// joiner turns the LAN into a bridge `br0` holding the host's address
    /// (capture there to see everything that reaches the host); the host's
    /// default route stays via the owner (192.168.77.1).
    fn join_lan(&self, index: usize, ns: &Netns, owner: &str) -> anyhow::Result<Ipv4Addr> {
        let lan = self
            .nodes
            .get(owner)
            .and_then(|n| n.lan.as_ref())
            .ok_or_else(|| anyhow::anyhow!("{owner} has no LAN to join"))?;
        let own = u8::try_from(2 + index).map_err(|_| anyhow::anyhow!("too many nodes"))?;
        if !lan.succeeds(&["ip", "link", "show", "br0"]) {
            let host_if = lan
                .stdout(&["ip", "-o", "link", "show"])?
                .lines()
                .filter_map(|l| l.split(':').nth(1))
                .map(|n| n.trim().split('@').next().unwrap_or("").to_owned())
                .find(|n| n != "lo" && !n.is_empty())
                .ok_or_else(|| anyhow::anyhow!("{owner}'s LAN has no link"))?;
            let host = format!("{LAN_HOST_IP}/24");
            lan.ip(&["link", "add", "br0", "type", "bridge"])?;
            lan.ip(&["addr", "del", &host, "dev", &host_if])?;
            lan.ip(&["link", "set", &host_if, "master", "br0"])?;
            lan.ip(&["addr", "add", &host, "dev", "br0"])?;
            lan.ip(&["link", "set", "br0", "up"])?;
            lan.ip(&["route", "replace", "default", "via", "192.168.77.1"])?;
        }
        let (a, b) = self.lan_link(index, ns, lan)?;
        let addr = Ipv4Addr::new(192, 168, 77, own);
        ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", &a])?;
        ns.ip(&["link", "set", &a, "up"])?;
        lan.ip(&["link", "set", &b, "master", "br0"])?;
        lan.ip(&["link", "set", &b, "up"])?;
        Ok(addr)
    }

    /// A node by name. Panics on a name the lab was not built with (a bug
    /// in the calling test, not a runtime condition).
    #[allow(clippy::panic)]
    pub fn node(&self, name: &str) -> &LabNode {
        match self.nodes.get(name) {
            Some(n) => n,
            None => panic!("no lab node {name}"),
        }
    }

    /// A path in the scratch directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// With `RUSTYNET_LAB_LOGS=DIR`, copies every log of a lab (control, helper
/// services, each daemon run) to `DIR/<lab id>/` before the scratch
/// directory goes, so gates can collect evidence such as the daemons'
/// state-transition lines after the tests end.
fn export_logs(dir: &std::path::Path, id: &str) {
    let Some(dest) = std::env::var_os("RUSTYNET_LAB_LOGS").map(PathBuf::from) else {
        return;
    };
    let dest = dest.join(id);
    if std::fs::create_dir_all(&dest).is_err() {
        return;
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for path in entries.flatten().map(|e| e.path()) {
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "log") {
                let rel = path.strip_prefix(dir).unwrap_or(&path);
                let flat = rel.to_string_lossy().replace('/', "_");
                let _ = std::fs::copy(&path, dest.join(flat));
            }
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Namespaces go with their fields (nodes first); the directory last.
        self.nodes.clear();
        export_logs(&self.dir, &self.id);
        if !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
