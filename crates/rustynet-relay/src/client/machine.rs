//! The client's timing decisions, without I/O: when to (re)connect, when to
//! ping, when a connection counts as dead, and the round-trip time.
//!
//! Reconnects back off exponentially with jitter: the first retry comes
//! after 100–250 ms (a relay restart costs a node a fraction of a second),
//! later ones double up to the cap. A connection that stayed up for a while
//! resets the backoff; one that drops right after login does not, so two
//! clients fighting over one node key (each login replaces the other) slow
//! down instead of spinning.

use std::time::{Duration, Instant};

use super::ClientTimeouts;

/// A connection up at least this long resets the backoff when it drops.
const STABLE: Duration = Duration::from_secs(10);

/// What the I/O shell must do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Start a connection attempt.
    Connect,
    /// Send a ping carrying these bytes.
    Ping([u8; 8]),
    /// The attempt or the connection is dead: drop it and call `failed`.
    Dead,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Waiting {
        retry_at: Instant,
    },
    Connecting {
        deadline: Instant,
    },
    Up {
        since: Instant,
        next_ping: Instant,
        outstanding: Option<(u64, Instant)>,
        last_rx: Instant,
    },
}

#[derive(Debug)]
pub(crate) struct Machine {
    t: ClientTimeouts,
    phase: Phase,
    failures: u32,
    seq: u64,
    rng: u64,
}

impl Machine {
    /// A machine that connects at once; `seed` drives the jitter.
    pub(crate) fn new(t: ClientTimeouts, now: Instant, seed: u64) -> Self {
        Self {
            t,
            phase: Phase::Waiting { retry_at: now },
            failures: 0,
            seq: 0,
            rng: splitmix(seed) | 1,
        }
    }

    /// What is due at `now`, if anything.
    pub(crate) fn poll(&mut self, now: Instant) -> Option<Action> {
        match &mut self.phase {
            Phase::Waiting { retry_at } if now >= *retry_at => {
                self.phase = Phase::Connecting {
                    deadline: now + self.t.handshake,
                };
                Some(Action::Connect)
            }
            Phase::Connecting { deadline } if now >= *deadline => Some(Action::Dead),
            Phase::Up {
                next_ping,
                outstanding,
                last_rx,
                ..
            } => {
                if let Some((_, sent)) = outstanding
                    && now >= *sent + self.t.pong
                    && now >= *last_rx + self.t.pong
                {
                    return Some(Action::Dead);
                }
                if outstanding.is_none() && now >= *next_ping {
                    self.seq += 1;
                    *outstanding = Some((self.seq, now));
                    *next_ping = now + self.t.keepalive;
                    return Some(Action::Ping(self.seq.to_be_bytes()));
                }
                None
            }
            _ => None,
        }
    }

    /// When `poll` next has something to do.
    pub(crate) fn next_deadline(&self) -> Instant {
        match self.phase {
            Phase::Waiting { retry_at } => retry_at,
            Phase::Connecting { deadline } => deadline,
            Phase::Up {
                next_ping,
                outstanding,
                last_rx,
                ..
            } => match outstanding {
                Some((_, sent)) => (sent + self.t.pong).max(last_rx + self.t.pong),
                None => next_ping,
            },
        }
    }

    /// Logged in: ping at once for a first round-trip time.
    pub(crate) fn connected(&mut self, now: Instant) {
        self.phase = Phase::Up {
            since: now,
            next_ping: now,
            outstanding: None,
            last_rx: now,
        };
    }

    /// Bytes arrived.
    pub(crate) fn on_rx(&mut self, now: Instant) {
        if let Phase::Up { last_rx, .. } = &mut self.phase {
            *last_rx = now;
        }
    }

    /// A pong arrived; returns the new round-trip time if it answers the
    /// outstanding ping.
    pub(crate) fn on_pong(&mut self, data: [u8; 8], now: Instant) -> Option<Duration> {
        let Phase::Up { outstanding, .. } = &mut self.phase else {
            return None;
        };
        let (seq, sent) = (*outstanding)?;
        if seq.to_be_bytes() != data {
            return None;
        }
        *outstanding = None;
        Some(now.saturating_duration_since(sent))
    }

    /// The attempt or connection failed at `now`; returns the retry delay.
    pub(crate) fn failed(&mut self, now: Instant) -> Duration {
        if let Phase::Up { since, .. } = self.phase
            && now.saturating_duration_since(since) >= STABLE
        {
            self.failures = 0;
        }
        let delay = self.backoff(self.failures);
        self.failures = self.failures.saturating_add(1);
        self.phase = Phase::Waiting {
            retry_at: now + delay,
        };
        delay
    }

    /// Skip the rest of the backoff (e.g. a fresh ticket arrived).
    pub(crate) fn retry_now(&mut self, now: Instant) {
        if let Phase::Waiting { retry_at } = &mut self.phase {
            *retry_at = now;
        }
    }

    fn backoff(&mut self, failures: u32) -> Duration {
        let min = self.t.backoff_min;
        let max = self.t.backoff_max.max(min);
        if failures == 0 {
            // Uniform in [min, 2.5 min].
            let span = min.mul_f64(1.5);
            return (min + span.mul_f64(self.unit())).min(max);
        }
        let nominal = min
            .mul_f64(2.5)
            .saturating_mul(1u32 << failures.min(16))
            .min(max);
        // ±25 % jitter, still capped.
        nominal.mul_f64(0.75 + 0.5 * self.unit()).min(max)
    }

    /// A number in [0, 1) from a xorshift generator (jitter only).
    fn unit(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Spreads a seed's bits so small seeds do not start xorshift near zero.
fn splitmix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeouts() -> ClientTimeouts {
        ClientTimeouts::default()
    }

    #[test]
    fn connects_at_once_then_backs_off_with_jitter_to_the_cap() {
        let t0 = Instant::now();
        let mut m = Machine::new(timeouts(), t0, 42);
        assert_eq!(m.poll(t0), Some(Action::Connect));
        let first = m.failed(t0);
        assert!(
            first >= Duration::from_millis(100) && first <= Duration::from_millis(250),
            "{first:?}"
        );
        let mut delays = vec![first];
        let mut now = t0;
        for _ in 0..12 {
            now += *delays.last().unwrap_or(&Duration::ZERO);
            assert_eq!(m.poll(now), Some(Action::Connect));
            delays.push(m.failed(now));
        }
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(5)));
        assert!(delays[1] > first, "{delays:?}");
        assert!(delays[12] >= Duration::from_millis(3750), "{delays:?}");
        // Jitter: two machines with other seeds do not retry in lockstep.
        let mut other = Machine::new(timeouts(), t0, 7);
        other.poll(t0);
        assert_ne!(other.failed(t0), first);
    }

    #[test]
    fn nothing_happens_before_the_retry_time() {
        let t0 = Instant::now();
        let mut m = Machine::new(timeouts(), t0, 1);
        m.poll(t0);
        let delay = m.failed(t0);
        assert_eq!(m.next_deadline(), t0 + delay);
        assert_eq!(m.poll(t0 + delay - Duration::from_millis(1)), None);
        assert_eq!(m.poll(t0 + delay), Some(Action::Connect));
    }

    #[test]
    fn a_stuck_attempt_dies_at_the_handshake_deadline() {
        let t0 = Instant::now();
        let mut m = Machine::new(timeouts(), t0, 1);
        m.poll(t0);
        assert_eq!(
            m.poll(t0 + timeouts().handshake - Duration::from_millis(1)),
            None
        );
        assert_eq!(m.poll(t0 + timeouts().handshake), Some(Action::Dead));
    }

    #[test]
    fn pings_measure_rtt_and_silence_kills_the_connection() {
        let t = timeouts();
        let t0 = Instant::now();
        let mut m = Machine::new(t, t0, 1);
        m.poll(t0);
        m.connected(t0);
        let Some(Action::Ping(data)) = m.poll(t0) else {
            panic!("no first ping");
        };
        assert_eq!(m.on_pong([9; 8], t0), None, "not our ping");
        let rtt = m.on_pong(data, t0 + Duration::from_millis(23));
        assert_eq!(rtt, Some(Duration::from_millis(23)));
        // Next ping after the keepalive interval; no answer and no data.
        let t1 = t0 + t.keepalive;
        assert_eq!(m.next_deadline(), t1);
        assert!(matches!(m.poll(t1), Some(Action::Ping(_))));
        assert_eq!(m.poll(t1 + t.pong - Duration::from_millis(1)), None);
        // Data still arriving keeps it alive even if the pong is slow.
        m.on_rx(t1 + t.pong - Duration::from_millis(1));
        assert_eq!(m.poll(t1 + t.pong), None);
        assert_eq!(m.poll(t1 + t.pong * 2), Some(Action::Dead));
    }

    #[test]
    fn a_stable_connection_resets_the_backoff_and_a_flapping_one_does_not() {
        let t0 = Instant::now();
        let mut m = Machine::new(timeouts(), t0, 3);
        let mut now = t0;
        for _ in 0..5 {
            m.poll(now);
            now += m.failed(now);
        }
        // Up for a second only: backoff keeps growing.
        m.poll(now);
        m.connected(now);
        now += Duration::from_secs(1);
        assert!(m.failed(now) > Duration::from_secs(1));
        // Up for a minute: the next retry is fast again.
        now += Duration::from_secs(10);
        m.poll(now);
        m.connected(now);
        now += Duration::from_secs(60);
        assert!(m.failed(now) <= Duration::from_millis(250));
    }

    #[test]
    fn retry_now_skips_the_wait() {
        let t0 = Instant::now();
        let mut m = Machine::new(timeouts(), t0, 1);
        m.poll(t0);
        m.failed(t0);
        m.retry_now(t0);
        assert_eq!(m.poll(t0), Some(Action::Connect));
    }
}
