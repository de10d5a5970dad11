//! CoDel (RFC 8289) for a destination's data queue.
//!
//! A relayed TCP flow (the tunnel carries the user's TCP inside our TLS
//! stream) has its bottleneck queue here, at the relay. A plain byte cap
//! lets that queue fill and then drops a burst at once: the inner TCP sees
//! dozens of losses per window, halves its window, and the relay idles while
//! it recovers (one TCP stream through the relay saw ~50,000 retransmits in
//! 8 s with a 1 MiB drop-head queue). CoDel instead watches how long packets
//! wait: once the queue has stayed above `TARGET` for a whole `INTERVAL`, it
//! drops one packet, then drops more often (interval / sqrt(count)) until
//! the standing queue is gone. The flow gets a single, early loss signal and
//! the queue stays short without starving the link. The byte cap remains
//! as a hard bound on memory.
//!
//! Sans-IO: the caller passes `now`, the state is five fields.

use std::time::{Duration, Instant};

/// Acceptable standing queue delay.
pub(crate) const TARGET: Duration = Duration::from_millis(5);
/// Time the delay must stay above target before dropping starts (a
/// worst-case internet RTT, as the RFC recommends).
pub(crate) const INTERVAL: Duration = Duration::from_millis(100);

/// The controller's state (RFC 8289 §5).
#[derive(Debug, Default)]
pub(crate) struct Codel {
    /// When the delay first went above target (plus one interval), if it is
    /// above now.
    first_above: Option<Instant>,
    dropping: bool,
    drop_next: Option<Instant>,
    count: u32,
    last_count: u32,
}

impl Codel {
    /// Whether the packet leaving now, queued at `queued`, should be dropped.
    /// `backlog_bytes` is what stays queued behind it: a queue holding less
    /// than one full packet is never a standing queue.
    pub(crate) fn should_drop(
        &mut self,
        queued: Instant,
        backlog_bytes: usize,
        now: Instant,
    ) -> bool {
        let ok_to_drop = self.ok_to_drop(queued, backlog_bytes, now);
        if self.dropping {
            if !ok_to_drop {
                self.dropping = false;
                return false;
            }
            match self.drop_next {
                Some(at) if now >= at => {
                    self.count = self.count.saturating_add(1);
                    self.drop_next = Some(control_law(at, self.count));
                    true
                }
                _ => false,
            }
        } else if ok_to_drop {
            self.dropping = true;
            // Re-entering soon after the last dropping state: start from
            // about where that one left off (the RFC's count memory).
            let delta = self.count.saturating_sub(self.last_count);
            let recent = self
                .drop_next
                .is_some_and(|at| now.saturating_duration_since(at) < INTERVAL * 16);
            self.count = if delta > 1 && recent { delta } else { 1 };
            self.last_count = self.count;
            self.drop_next = Some(control_law(now, self.count));
            true
        } else {
            false
        }
    }

    fn ok_to_drop(&mut self, queued: Instant, backlog_bytes: usize, now: Instant) -> bool {
        let sojourn = now.saturating_duration_since(queued);
        if sojourn < TARGET || backlog_bytes <= MAX_PACKET {
            self.first_above = None;
            return false;
        }
        match self.first_above {
            None => {
                self.first_above = Some(now + INTERVAL);
                false
            }
            Some(at) => now >= at,
        }
    }
}

/// A full-size tunnel packet; a backlog under this is no standing queue.
const MAX_PACKET: usize = 1500;

/// `t + interval / sqrt(count)`.
fn control_law(t: Instant, count: u32) -> Instant {
    t + INTERVAL.div_f64(f64::from(count.max(1)).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds a queue whose packets all waited `delay`, one packet per `gap`,
    /// for `span`; returns the drop times (offsets from the start).
    fn run(delay: Duration, gap: Duration, span: Duration) -> Vec<Duration> {
        let t0 = Instant::now();
        let mut c = Codel::default();
        let mut drops = Vec::new();
        let mut t = t0 + delay;
        while t < t0 + span {
            if c.should_drop(t - delay, 1 << 20, t) {
                drops.push(t - t0);
            }
            t += gap;
        }
        drops
    }

    #[test]
    fn a_short_queue_is_never_dropped() {
        assert!(
            run(
                Duration::from_millis(4),
                Duration::from_micros(100),
                Duration::from_secs(5)
            )
            .is_empty()
        );
    }

    #[test]
    fn a_standing_queue_is_dropped_after_one_interval_then_faster() {
        let drops = run(
            Duration::from_millis(20),
            Duration::from_micros(100),
            Duration::from_secs(1),
        );
        assert!(!drops.is_empty());
        // Nothing before the delay has stayed above target for an interval.
        assert!(
            drops[0] >= Duration::from_millis(120),
            "first drop at {:?}",
            drops[0]
        );
        assert!(drops[0] < Duration::from_millis(121));
        // Single drops, not bursts, and more often as the queue persists.
        let gaps: Vec<Duration> = drops.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(
            gaps.iter().all(|g| *g >= Duration::from_millis(20)),
            "{gaps:?}"
        );
        assert!(gaps.first() > gaps.last(), "{gaps:?}");
    }

    #[test]
    fn the_queue_draining_ends_the_dropping_state() {
        let t0 = Instant::now();
        let mut c = Codel::default();
        let mut t = t0;
        let mut dropped = 0;
        // 300 ms of standing delay, then a short queue.
        while t < t0 + Duration::from_millis(300) {
            dropped += usize::from(c.should_drop(t - Duration::from_millis(20), 1 << 20, t));
            t += Duration::from_micros(100);
        }
        assert!(dropped > 0);
        while t < t0 + Duration::from_millis(600) {
            assert!(!c.should_drop(t - Duration::from_millis(1), 1 << 20, t));
            t += Duration::from_micros(100);
        }
        // A backlog below one packet is never a standing queue either.
        assert!(!c.should_drop(t - Duration::from_secs(1), 100, t));
    }
}
