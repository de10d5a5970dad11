//! Magic DNS on the node: the resolver on 100.100.100.100, the exit-node DNS
//! service on the node's tunnel address (for clients holding an exit grant),
//! and the OS side (see [`crate::dns_os`]: systemd-resolved, resolv.conf
//! replaced or written in place, or left alone when it cannot be changed —
//! Magic DNS then still answers, and protected DNS still blocks every other
//! resolver, so a host we cannot configure never leaks).
//!
//! Records only ever come from the signed netmap (the plan hands them in).
//! When the upstream path is gone the resolver answers SERVFAIL; it never
//! falls back to another resolver.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use rustynet_dns::{
    Access, ConfigError, DnsMetrics, DnsServer, NetTransport, ResolverConfig, ServerConfig,
    ServerError, SocketOptions, Upstream,
};
use rustynet_netos::{DnsMode, ResolverError};
use rustynet_proto::ipc::DnsInspectDoc;
use rustynet_proto::netmap::MAGIC_DNS_IP;
use tokio::runtime::Handle;

use crate::dns_os::{self, OsDns};
use crate::plan::{DnsPlan, DnsUpstream, magic_dns_addr};

/// Why Magic DNS could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The DNS section of the map is unusable.
    #[error("DNS config: {0}")]
    Config(#[from] ConfigError),
    /// A resolver could not start.
    #[error("resolver: {0}")]
    Server(#[from] ServerError),
    /// The OS resolver configuration could not be changed.
    #[error("resolver configuration: {0}")]
    Os(#[from] ResolverError),
}

/// What the transaction needs from Magic DNS.
pub trait DnsOps: Send {
    /// Makes Magic DNS match `plan`.
    fn apply(&mut self, plan: &DnsPlan) -> Result<(), DnsError>;
    /// Stops the resolvers and restores the OS configuration.
    fn stop(&mut self) -> Result<(), DnsError>;
    /// `dns inspect` (None before the first apply).
    fn inspect(&self, name: Option<&str>) -> Option<DnsInspectDoc>;
    /// The resolvers the system had before Magic DNS took over.
    fn system_resolvers(&self) -> Vec<IpAddr>;
    /// Undoes a takeover a crash left behind (run first at start-up).
    fn repair_stale(&mut self) -> Result<String, DnsError>;
    /// How the OS is pointed at Magic DNS, and why (`status`).
    fn os_mode(&self) -> String {
        String::new()
    }
    /// Whether protected DNS is in force (a clean stop then keeps the OS
    /// pointed at the dead resolver rather than at open ones).
    fn is_protected(&self) -> bool {
        false
    }
    /// Periodic check while Magic DNS is applied: takes the host's
    /// configuration over again when another manager (NetworkManager, a
    /// DHCP client) replaced our file.
    fn maintain(&mut self) {}
    /// The Magic DNS and exit DNS servers' counters since the daemon
    /// started (monotonic: a stopped server's counts are kept).
    fn counters(&self) -> DnsCounters {
        DnsCounters::default()
    }
}

/// Counters of the two DNS servers the daemon runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DnsCounters {
    /// Magic DNS (100.100.100.100) for this host.
    pub magic: DnsMetrics,
    /// The exit's DNS service for its clients.
    pub exit: DnsMetrics,
}

fn add(a: &DnsMetrics, b: &DnsMetrics) -> DnsMetrics {
    DnsMetrics {
        queries: a.queries.saturating_add(b.queries),
        answered_local: a.answered_local.saturating_add(b.answered_local),
        forwarded: a.forwarded.saturating_add(b.forwarded),
        servfail: a.servfail.saturating_add(b.servfail),
        refused: a.refused.saturating_add(b.refused),
        malformed: a.malformed.saturating_add(b.malformed),
        upstream_failures: a.upstream_failures.saturating_add(b.upstream_failures),
        busy: a.busy.saturating_add(b.busy),
        tcp_rejected: a.tcp_rejected.saturating_add(b.tcp_rejected),
    }
}

fn upstream(u: &DnsUpstream) -> Upstream {
    let port = rustynet_dns::DNS_PORT;
    match u {
        DnsUpstream::Exit { ip, name } => Upstream::Exit {
            addr: SocketAddr::new(IpAddr::V4(*ip), port),
            name: name.clone(),
        },
        DnsUpstream::System(list) => {
            Upstream::System(list.iter().map(|ip| SocketAddr::new(*ip, port)).collect())
        }
        DnsUpstream::None => Upstream::None,
    }
}

/// What the exit's DNS service answers with: it forwards only (issue 10
/// item 6). It holds none of the exit's own records or split routes — names
/// a client may resolve come from that client's own signed map, answered
/// by its own Magic DNS — so a client cannot sweep A and PTR records of
/// nodes the policy hides from it. Names under the tailnet suffix and the
/// tunnel's reverse zone are NXDOMAIN here, never forwarded.
pub fn exit_service_config(
    dns: &rustynet_proto::DnsConfig,
    system: &[IpAddr],
) -> Result<ResolverConfig, ConfigError> {
    let forward_only = rustynet_proto::DnsConfig {
        suffix: dns.suffix.clone(),
        records: Vec::new(),
        split: Vec::new(),
    };
    let upstream = Upstream::System(
        system
            .iter()
            .map(|ip| SocketAddr::new(*ip, rustynet_dns::DNS_PORT))
            .collect(),
    );
    ResolverConfig::new(forward_only, upstream)
}

/// The real Magic DNS manager.
pub struct DnsManager {
    rt: Handle,
    dns_mark: u32,
    os: OsDns,
    magic: Option<DnsServer>,
    exit: Option<(SocketAddr, DnsServer)>,
    protected: bool,
    system: Vec<IpAddr>,
    /// Counts of servers already stopped, so the totals never go back.
    retired: DnsCounters,
}

impl DnsManager {
    /// A manager using `os` for the OS side.
    pub fn new(rt: Handle, dns_mark: u32, os: OsDns) -> Self {
        let system = os.configurator.original_nameservers().unwrap_or_default();
        tracing::info!(mode = %os.detection.mode, why = %os.detection.why, "host DNS mode");
        Self {
            rt,
            dns_mark,
            os,
            magic: None,
            exit: None,
            protected: false,
            system,
            retired: DnsCounters::default(),
        }
    }

    /// Stops the exit DNS service (if running), keeping its counts.
    fn stop_exit(&mut self) {
        if let Some((_, old)) = self.exit.take() {
            self.retired.exit = add(&self.retired.exit, &old.handle().metrics());
            self.rt.block_on(old.shutdown());
        }
    }

    fn transport(&self) -> Arc<NetTransport> {
        Arc::new(NetTransport::new(SocketOptions {
            fwmark: Some(self.dns_mark),
            bind_device: None,
        }))
    }

    fn start(
        &self,
        listen: SocketAddr,
        access: Access,
        config: ResolverConfig,
    ) -> Result<DnsServer, DnsError> {
        let mut server = ServerConfig::new(listen);
        server.access = access;
        server.freebind = true;
        let transport = self.transport();
        Ok(self
            .rt
            .block_on(DnsServer::start(server, config, transport))?)
    }

    fn apply_exit_service(&mut self, plan: &DnsPlan) -> Result<(), DnsError> {
        let want = plan.exit_service.as_ref().map(|(ip, clients)| {
            (
                SocketAddr::new(IpAddr::V4(*ip), rustynet_dns::DNS_PORT),
                clients,
            )
        });
        let config = || exit_service_config(&plan.config, &DnsOps::system_resolvers(self));
        match (want, &self.exit) {
            (Some((addr, clients)), Some((current, server))) if *current == addr => {
                // Same address: new clients and the new map's records and
                // split routes, without restarting the service.
                let handle = server.handle();
                handle.update(config()?);
                handle.set_access(Access::Prefixes(clients.clone()));
            }
            (Some((addr, clients)), _) => {
                let config = config()?;
                self.stop_exit();
                let server = self.start(addr, Access::Prefixes(clients.clone()), config)?;
                self.exit = Some((addr, server));
            }
            (None, _) => {
                self.stop_exit();
            }
        }
        Ok(())
    }
}

impl DnsOps for DnsManager {
    fn apply(&mut self, plan: &DnsPlan) -> Result<(), DnsError> {
        let config = ResolverConfig::new(plan.config.clone(), upstream(&plan.upstream))?;
        match &self.magic {
            Some(server) => server.handle().update(config),
            None => self.magic = Some(self.start(magic_dns_addr(), Access::Any, config)?),
        }
        self.apply_exit_service(plan)?;
        self.os.configurator.set_exclusive(plan.protected)?;
        if !self.os.configurator.is_taken_over()? {
            let taken = self.os.configurator.take_over(
                &[IpAddr::V4(MAGIC_DNS_IP)],
                std::slice::from_ref(&plan.config.suffix),
            );
            match taken {
                Ok(()) => {}
                // Read-only /etc or a sandbox that forbids the write: Magic
                // DNS keeps answering on its address, the firewall keeps
                // protected DNS, and the mode says why.
                Err(e) if e.is_unwritable() => {
                    tracing::warn!(error = %e, "cannot change the host's DNS configuration; leaving it alone");
                    let path = self.os.path.clone();
                    self.os = dns_os::unavailable(
                        &path,
                        format!("{e}; the host's DNS configuration is left alone"),
                    );
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.protected = plan.protected;
        Ok(())
    }

    fn stop(&mut self) -> Result<(), DnsError> {
        if let Some(server) = self.magic.take() {
            self.retired.magic = add(&self.retired.magic, &server.handle().metrics());
            self.rt.block_on(server.shutdown());
        }
        self.stop_exit();
        self.os.configurator.restore()?;
        self.protected = false;
        Ok(())
    }

    fn inspect(&self, name: Option<&str>) -> Option<DnsInspectDoc> {
        let resolver = self.magic.as_ref()?.handle().resolver();
        Some(resolver.inspect(name, self.protected, &self.os.describe()))
    }

    fn system_resolvers(&self) -> Vec<IpAddr> {
        self.system
            .iter()
            .copied()
            .filter(|ip| *ip != IpAddr::V4(MAGIC_DNS_IP))
            .collect()
    }

    fn repair_stale(&mut self) -> Result<String, DnsError> {
        let outcome = self.os.configurator.repair_stale()?;
        // The originals may only be readable once the stale takeover is gone.
        self.system = self
            .os
            .configurator
            .original_nameservers()
            .unwrap_or_default();
        Ok(format!("{outcome:?}"))
    }

    fn os_mode(&self) -> String {
        self.os.describe()
    }

    fn is_protected(&self) -> bool {
        self.protected
    }

    fn counters(&self) -> DnsCounters {
        let live = |s: Option<&DnsServer>| s.map(|s| s.handle().metrics()).unwrap_or_default();
        DnsCounters {
            magic: add(&self.retired.magic, &live(self.magic.as_ref())),
            exit: add(
                &self.retired.exit,
                &live(self.exit.as_ref().map(|(_, s)| s)),
            ),
        }
    }

    fn maintain(&mut self) {
        let file_mode = matches!(self.os.detection.mode, DnsMode::File | DnsMode::InPlace);
        if self.magic.is_none() || !file_mode {
            return;
        }
        match self.os.configurator.is_taken_over() {
            Ok(false) => {}
            Ok(true) | Err(_) => return,
        }
        // Someone (NetworkManager on a network change, a DHCP client)
        // replaced our file: their file is the new original to restore.
        let suffix = self
            .magic
            .as_ref()
            .map(|m| m.handle().resolver().dns().suffix.clone())
            .unwrap_or_default();
        match self
            .os
            .configurator
            .take_over(&[IpAddr::V4(MAGIC_DNS_IP)], std::slice::from_ref(&suffix))
        {
            Ok(()) => {
                tracing::info!(
                    "the host's DNS configuration was replaced by another manager; taken over again"
                );
                self.system = self
                    .os
                    .configurator
                    .original_nameservers()
                    .unwrap_or_default();
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot take the host's DNS configuration over again")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rustynet_proto::{DnsRecord, SplitDnsRoute};

    #[test]
    fn the_exit_service_forwards_only() {
        let bob: std::net::Ipv4Addr = "100.64.0.2".parse().unwrap();
        let map = rustynet_proto::DnsConfig {
            suffix: "rustynet.internal".into(),
            records: vec![DnsRecord {
                name: "bob.rustynet.internal".into(),
                ip: bob.into(),
                node_id: rustynet_proto::NodeId(2),
                requested_hostname: "bob".into(),
                assigned_at: 0,
            }],
            split: vec![SplitDnsRoute {
                domain: "corp.example".into(),
                resolvers: vec!["192.0.2.53".parse().unwrap()],
            }],
        };
        let exit = exit_service_config(&map, &["198.51.100.53".parse().unwrap()]).unwrap();
        assert!(exit.dns().records.is_empty() && exit.dns().split.is_empty());
        let name = exit.explain("bob.rustynet.internal");
        assert!(name.records.is_empty(), "{:?}", name.records);
        assert!(name.text.contains("NXDOMAIN"), "{}", name.text);
        let ptr = exit.explain("100.64.0.2");
        assert!(
            ptr.records.is_empty() && ptr.text.contains("NXDOMAIN"),
            "{}",
            ptr.text
        );
        let outside = exit.explain("example.com");
        assert!(outside.text.contains("198.51.100.53"), "{}", outside.text);
        let split = exit.explain("host.corp.example");
        assert!(!split.text.contains("192.0.2.53"), "{}", split.text);
    }
}
