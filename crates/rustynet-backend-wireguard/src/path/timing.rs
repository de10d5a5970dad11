//! The path machine's clock settings, with the reasoning behind each.
//!
//! The budget that drives them: a direct path that dies under a 100 pkt/s
//! flow must be replaced by the relay within 1.5 s (p95), a healed one must
//! be back within 3 s, and one-way loss must not flap. Tailscale trusts a
//! path for 6.5 s after a pong and heartbeats every 3 s; we heartbeat every
//! 250 ms while the peer is active (≈ 100 bytes each way, 4 times a second:
//! noise next to the flow it protects) and trust for 1 s, so a dead path is
//! noticed after 3–4 missed heartbeats, and the relay gets a copy of every
//! packet from that moment on (`Both`) rather than after a timeout.

use std::time::Duration;

/// All the machine's timing knobs. [`Timing::default`] is what production
/// runs; tests vary single fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timing {
    /// Ping the trusted address this often while the peer is active.
    pub(crate) heartbeat: Duration,
    /// An active peer's direct address stays trusted this long after its
    /// last pong (4 heartbeats: one late pong or two lost ones do not
    /// demote it).
    pub(crate) trust: Duration,
    /// After trust lapses, keep sending on both paths this long before
    /// giving up on the direct one: a short outage heals without ever
    /// leaving `Both`, and nothing is lost while we wait.
    pub(crate) degraded_hold: Duration,
    /// While no direct path is trusted, re-ping the last trusted address
    /// this often (the likeliest to heal; sets the failback time).
    pub(crate) recovery_best: Duration,
    /// ... and other addresses that answered recently this often.
    pub(crate) recovery_proven: Duration,
    /// ... and addresses that never answered: this, doubled per unanswered
    /// ping up to `recovery_max`; reset by every fresh hint.
    pub(crate) recovery_base: Duration,
    /// Cap of the unanswered-address backoff.
    pub(crate) recovery_max: Duration,
    /// A peer is active while we sent it data this recently.
    pub(crate) active_window: Duration,
    /// Idle peers ping their best address this often: keeps NAT mappings
    /// open (Linux conntrack forgets unreplied UDP after 30 s).
    pub(crate) idle_keepalive: Duration,
    /// ... for this long after our last transmission; then the peer goes
    /// cold (no probes at all) until it is active again.
    pub(crate) keepalive_for: Duration,
    /// An idle peer's address stays trusted this long after a pong (two
    /// idle keepalives and slack).
    pub(crate) idle_trust: Duration,
    /// While a direct path is trusted and active, look for a better one
    /// this often.
    pub(crate) upgrade_interval: Duration,
    /// An unanswered ping is forgotten after this long.
    pub(crate) ping_timeout: Duration,
    /// Never ping one address more often than this (bursts from several
    /// triggers at once collapse into one ping).
    pub(crate) min_ping_gap: Duration,
    /// Never send call-me-maybe more often than this (nor act on received
    /// ones more often).
    pub(crate) call_me_min_gap: Duration,
    /// While active without a direct path, repeat call-me-maybe this often
    /// (the peer's NAT may have dropped the mapping we punched).
    pub(crate) call_me_retry: Duration,
    /// Unconfirmed candidates not heard of for this long are dropped.
    pub(crate) candidate_ttl: Duration,
    /// A candidate that answered within this long counts as proven.
    pub(crate) proven_memory: Duration,
    /// Consecutive pongs needed to move traffic to an address. Two: a
    /// single lucky round trip through a flaky path does not pull traffic
    /// off the relay.
    pub(crate) promote_streak: u8,
    /// Flap damping: every time trust expires, a penalty grows by one
    /// (up to `max_flap_penalty`) and it shrinks by one per `flap_decay`.
    /// Promotion needs `promote_streak` x 4^(penalty - 1) pongs in a row:
    /// 2 after one failure (a healed blackhole comes back at once), then 8,
    /// then 32. A path that keeps failing (heavy random loss) is left on
    /// the relay, which serves such a flow better anyway, instead of
    /// flapping. A sound path still earns 32 pongs in about 32 round trips,
    /// because each pong is confirmed by an immediate ping.
    pub(crate) flap_decay: Duration,
    /// Cap of the penalty (3: at most 32 pongs in a row).
    pub(crate) max_flap_penalty: u8,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_millis(250),
            trust: Duration::from_secs(1),
            degraded_hold: Duration::from_secs(3),
            recovery_best: Duration::from_millis(250),
            recovery_proven: Duration::from_millis(500),
            recovery_base: Duration::from_millis(500),
            recovery_max: Duration::from_secs(4),
            active_window: Duration::from_secs(10),
            idle_keepalive: Duration::from_secs(20),
            keepalive_for: Duration::from_secs(600),
            idle_trust: Duration::from_secs(45),
            upgrade_interval: Duration::from_secs(30),
            ping_timeout: Duration::from_secs(5),
            min_ping_gap: Duration::from_millis(20),
            call_me_min_gap: Duration::from_millis(250),
            call_me_retry: Duration::from_secs(5),
            candidate_ttl: Duration::from_secs(600),
            proven_memory: Duration::from_secs(600),
            promote_streak: 2,
            flap_decay: Duration::from_secs(60),
            max_flap_penalty: 3,
        }
    }
}
