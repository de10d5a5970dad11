//! Magic DNS: the resolver every node runs on 100.100.100.100.
//!
//! Two layers, so the part that parses hostile input can be tested and
//! fuzzed without sockets:
//! - a pure core: [`ResolverConfig`] (the signed netmap's DNS section plus an
//!   [`Upstream`] choice) and [`ResolverConfig::decide`], which turns one
//!   query into a [`Decision`]: a complete local answer for tailnet names and
//!   tunnel addresses, a [`Forward`] to the split-DNS route, exit node or
//!   system resolvers, or a drop. [`ResolverConfig::explain`] and
//!   [`ResolverConfig::inspect`] say why, for `rustynet dns inspect`;
//! - an IO shell: [`DnsServer`] serves UDP and TCP with bounded memory,
//!   takes new snapshots through its [`DnsHandle`] without restarting, and
//!   forwards through an [`UpstreamTransport`] ([`NetTransport`] in
//!   production, with fwmark/device steering).
//!
//! Fail closed: with no usable resolver a name gets SERVFAIL, and an upstream
//! that fails or times out yields SERVFAIL, never a fallback to another
//! resolver. The wire format is hickory-proto's; nothing here parses DNS by hand.
#![warn(missing_docs)]

mod answer;
mod config;
mod decide;
mod inspect;
mod metrics;
mod server;
#[cfg(test)]
mod testutil;
mod upstream;
mod zone;

pub use answer::{EDNS_PAYLOAD, MAGIC_TTL, MAX_MESSAGE, MIN_UDP_PAYLOAD, fit, refused, servfail};
pub use config::{ConfigError, DNS_PORT, ResolverConfig, Upstream};
pub use decide::{Answer, AnswerKind, Decision, Forward, UpstreamQuery, Via};
pub use inspect::Explanation;
pub use metrics::DnsMetrics;
pub use server::{Access, DnsHandle, DnsServer, Limits, ServerConfig, ServerError};
pub use upstream::{BoxFuture, NetTransport, SocketOptions, UpstreamError, UpstreamTransport};
