//! Relays and path discovery from the daemon's side: hand the engine the
//! relays of the current map, this node's path secret and a relay ticket,
//! keep the ticket fresh, and tell control which relay is this node's home.
//!
//! The engine decides paths per packet by itself; nothing here runs on a
//! timer faster than the health tick, and nothing goes through the plan and
//! apply transaction (paths change no OS state: relays and probes are
//! authenticated, and a relay that goes away fails closed for the peers
//! that needed it).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash as _, Hasher as _};

use rustynet_proto::relay::RelayTicket;
use rustynet_proto::{PathPublicKey, SignedBody, SignedEnvelope};
use rustynet_tunnel::{PathConfig, PathSecret, RelayLogin};

use super::{Engine, now_unix, tasks};
use crate::state_store::NodeKeys;

/// A failed ticket request is retried after this long (seconds).
const TICKET_RETRY_SECS: i64 = 10;

/// The relay ticket this node holds and what it was issued for.
#[derive(Default)]
pub(super) struct TicketState {
    ticket: Option<SignedEnvelope>,
    /// Hash of the peer keys the ticket lists (to notice a change).
    peers: u64,
    issued_at: i64,
    expires_at: i64,
    /// A request is in flight.
    pending: bool,
    /// No new request before this time (after a failure).
    retry_at: i64,
    /// The home relay control was last told about.
    reported_home: Option<String>,
}

/// This node's path secret (derived from its signing key).
pub(super) fn path_secret(keys: &NodeKeys) -> PathSecret {
    PathSecret::derive(&keys.signing.seed())
}

/// This node's path key, as it reports it to control.
pub(super) fn path_key(keys: &NodeKeys) -> PathPublicKey {
    path_secret(keys).public_key()
}

fn peers_hash(keys: &mut Vec<rustynet_proto::TunnelPublicKey>) -> u64 {
    keys.sort();
    let mut h = DefaultHasher::new();
    keys.hash(&mut h);
    h.finish()
}

/// What a ticket says about itself, without trusting it: the daemon only
/// carries it to the relay, which verifies it.
fn ticket_facts(
    ticket: &SignedEnvelope,
) -> Option<(i64, i64, Vec<rustynet_proto::TunnelPublicKey>)> {
    let body: SignedBody<RelayTicket> = serde_json::from_str(ticket.body.get()).ok()?;
    Some((body.issued_at, body.expires_at, body.payload.peers))
}

impl Engine {
    /// Brings the engine's relays and path config in line with the current
    /// map and ticket, and asks for a new ticket when the map's peers are
    /// no longer those the ticket lists or it is half way to expiry.
    pub(super) fn sync_paths(&mut self) {
        let relays = self
            .current
            .as_ref()
            .map(|m| m.netmap().relays.clone())
            .unwrap_or_default();
        if !relays.is_empty() {
            self.maybe_request_ticket();
        }
        let Some(keys) = &self.keys else {
            return;
        };
        let login = self
            .ticket
            .ticket
            .as_ref()
            .filter(|_| !relays.is_empty())
            .map(|t| RelayLogin {
                ticket: t.clone(),
                login_seed: keys.signing.seed(),
            });
        let config = PathConfig {
            secret: path_secret(keys),
            relays,
            login,
        };
        if let Err(e) = self.fx.backend.set_paths(config) {
            tracing::warn!(error = %e, "cannot configure relays and path discovery");
        }
    }

    fn maybe_request_ticket(&mut self) {
        let now = now_unix();
        let Some(map) = &self.current else {
            return;
        };
        let mut peers: Vec<_> = map.netmap().peers.iter().map(|p| p.node_key).collect();
        let wanted = peers_hash(&mut peers);
        let t = &self.ticket;
        let half_life = t.issued_at + (t.expires_at - t.issued_at) / 2;
        let stale = t.ticket.is_none() || t.peers != wanted || now >= half_life;
        if !stale || t.pending || now < t.retry_at {
            return;
        }
        let (Some(enrollment), Some(keys)) = (&self.state.enrollment, &self.keys) else {
            return;
        };
        let Some(client) = self.control_client() else {
            return;
        };
        self.ticket.pending = true;
        tasks::relay_ticket(
            &self.rt,
            &self.handle,
            client,
            &keys.signing,
            enrollment.node_id,
        );
    }

    /// A ticket request finished.
    pub(super) fn on_ticket(&mut self, result: Result<SignedEnvelope, String>) {
        self.ticket.pending = false;
        let facts = result.and_then(|t| {
            ticket_facts(&t)
                .map(|f| (t, f))
                .ok_or_else(|| "control sent an unreadable relay ticket".to_owned())
        });
        match facts {
            Ok((ticket, (issued_at, expires_at, mut peers))) => {
                self.ticket.peers = peers_hash(&mut peers);
                self.ticket.issued_at = issued_at;
                self.ticket.expires_at = expires_at;
                self.ticket.ticket = Some(ticket);
                tracing::debug!(peers = peers.len(), expires_at, "relay ticket renewed");
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot get a relay ticket; retrying");
                self.ticket.retry_at = now_unix() + TICKET_RETRY_SECS;
            }
        }
        self.sync_paths();
    }

    /// Tells control when the engine's home relay changed, so peers' maps
    /// say where to reach this node.
    pub(super) fn report_home_relay(&mut self) {
        let Ok(stats) = self.fx.backend.stats() else {
            return;
        };
        let home = stats.relays.iter().find(|r| r.home).map(|r| r.name.clone());
        if home.is_none() || home == self.ticket.reported_home {
            return;
        }
        if let Some(control) = &self.control {
            let mut update = self.update_request();
            update.home_relay = home.clone();
            control.send_update(update);
            self.ticket.reported_home = home;
        }
    }

    /// Forgets the ticket (a new enrollment, `down`).
    pub(super) fn forget_ticket(&mut self) {
        self.ticket = TicketState::default();
    }
}
