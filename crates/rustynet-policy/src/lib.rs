//! The Rustynet ACL language: parse and validate a JSON policy, then compile
//! it against the node table into one [`NodeView`] per node, which control
//! copies into that node's signed netmap.
//!
//! Pure: no I/O, no OS, no tunnel engine. The rules it enforces:
//! - **Default deny.** The empty policy admits nothing; only `accept` rules exist.
//! - **Never widened.** A compiled filter admits exactly what the rule said,
//!   to exactly the nodes it named. Source sets are merged into CIDRs only
//!   when the CIDRs cover precisely the same addresses. `*` in a destination
//!   means every node's tunnel address, never a LAN and never the internet.
//!   A tag counts only when the node's user owns it.
//! - **LAN access needs three keys**: the router's route is approved (it is
//!   an exit some user may use, a `route_approvers` entry covers it, or an
//!   admin approved it with `rustynet-control routes approve`, and no admin
//!   rejected it ([`AdminRoutes`]); routes
//!   touching the tunnel range, loopback, link-local, multicast or a default
//!   route are never approved), an ACL rule names the client as source and a
//!   CIDR or host alias overlapping the route as destination, *and* the
//!   client's own LAN-access toggle ([`NodeFacts::lan_access`]) is on. The
//!   toggle is enforced on both ends: off, the client gets no grants and no
//!   router's forward filter names it. Visibility ignores the toggle.
//! - **Deterministic.** Output is sorted and deduplicated and does not depend
//!   on input order or hash iteration.
//!
//! [`PolicyIndex::explain`] answers `acl explain` from the compiled views
//! and names the rule that admits a packet or what each near miss lacks;
//! [`PolicyIndex::route_status`] says why a route is (not) approved.
//!
//! [`policy_allows`] and the rest of [`oracle`] answer the same questions
//! straight from the semantics, slowly; the property tests hold the compiler
//! to them.
#![warn(missing_docs)]

mod bits;
mod cidr;
mod doc;
mod error;
mod explain;
mod hujson;
mod index;
mod model;
pub mod oracle;
mod resolve;
mod routes;
mod validate;
mod view;

pub use error::PolicyError;
pub use explain::{Explanation, Packet, RouterVerdict, RuleRef, Target, ports_text, proto_name};
pub use index::{AdminRoutes, NodeFacts, PolicyIndex};
pub use model::{MAX_POLICY_BYTES, MAX_RULES, Policy};
pub use oracle::policy_allows;
pub use routes::RouteStatus;
pub use view::{NodeView, compile};
