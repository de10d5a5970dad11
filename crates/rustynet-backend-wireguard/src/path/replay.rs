//! Per-sender replay window for probe counters (a bitmap behind the highest
//! counter seen, as in WireGuard and RFC 6479).
//!
//! Counters are the sender's wall-clock milliseconds (bumped by one when two
//! probes fall in the same millisecond), so `WINDOW` counters are roughly
//! `WINDOW` milliseconds of reordering: probes sent on the direct path and
//! through the relay a moment apart may arrive in either order.

use super::Refusal;

/// Counters tolerated behind the highest one seen (~2 s of reordering).
const WINDOW: u64 = 2048;
const WORDS: usize = (WINDOW / 64) as usize;

/// Highest counter seen and which of the `WINDOW` counters below it were.
#[derive(Debug, Clone)]
pub(crate) struct ReplayWindow {
    /// `None` until the first authentic probe.
    top: Option<u64>,
    bits: [u64; WORDS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self {
            top: None,
            bits: [0; WORDS],
        }
    }
}

impl ReplayWindow {
    /// Accepts `counter` once; refuses it if seen or too far behind.
    ///
    /// Call only after the probe authenticated: a forged probe must not move
    /// the window. No upper bound is placed on `counter` relative to our own
    /// clock: only the key holder can produce it, and a bound would break
    /// peers whose clocks run ahead (see the module docs of `probe`).
    pub(crate) fn accept(&mut self, counter: u64) -> Result<(), Refusal> {
        let Some(top) = self.top else {
            self.top = Some(counter);
            self.set(counter);
            return Ok(());
        };
        if counter > top {
            if counter - top >= WINDOW {
                self.bits = [0; WORDS];
            } else {
                for c in top + 1..counter {
                    self.clear(c);
                }
            }
            self.top = Some(counter);
            self.set(counter);
            return Ok(());
        }
        if top - counter >= WINDOW {
            return Err(Refusal::TooOld);
        }
        if self.is_set(counter) {
            return Err(Refusal::Replayed);
        }
        self.set(counter);
        Ok(())
    }

    fn slot(counter: u64) -> (usize, u64) {
        let bit = counter % WINDOW;
        ((bit / 64) as usize, 1u64 << (bit % 64))
    }

    fn set(&mut self, c: u64) {
        let (w, m) = Self::slot(c);
        self.bits[w] |= m;
    }

    fn clear(&mut self, c: u64) {
        let (w, m) = Self::slot(c);
        self.bits[w] &= !m;
    }

    fn is_set(&self, c: u64) -> bool {
        let (w, m) = Self::slot(c);
        self.bits[w] & m != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_increasing_and_refuses_repeats() {
        let mut w = ReplayWindow::default();
        assert_eq!(w.accept(1_000), Ok(()));
        assert_eq!(w.accept(1_001), Ok(()));
        assert_eq!(w.accept(1_001), Err(Refusal::Replayed));
        assert_eq!(w.accept(1_000), Err(Refusal::Replayed));
    }

    #[test]
    fn tolerates_reordering_within_the_window() {
        let mut w = ReplayWindow::default();
        assert_eq!(w.accept(5_000), Ok(()));
        assert_eq!(w.accept(5_500), Ok(()));
        assert_eq!(w.accept(5_200), Ok(()), "late but unseen");
        assert_eq!(w.accept(5_200), Err(Refusal::Replayed));
        assert_eq!(w.accept(5_500 - WINDOW + 1), Ok(()), "oldest still inside");
        assert_eq!(w.accept(5_500 - WINDOW), Err(Refusal::TooOld));
    }

    #[test]
    fn a_jump_clears_bits_that_now_mean_other_counters() {
        let mut w = ReplayWindow::default();
        assert_eq!(w.accept(10), Ok(()));
        // 10 + WINDOW shares slot 10's bit: it must not read as seen.
        assert_eq!(w.accept(10 + WINDOW), Ok(()));
        assert_eq!(w.accept(10 + WINDOW + 5), Ok(()));
        assert_eq!(w.accept(10 + 2 * WINDOW + 100), Ok(()));
        assert_eq!(
            w.accept(10 + 2 * WINDOW + 50),
            Ok(()),
            "unseen after a full jump"
        );
    }

    #[test]
    fn small_steps_clear_the_slots_they_pass() {
        let mut w = ReplayWindow::default();
        for c in 0..WINDOW {
            assert_eq!(w.accept(c), Ok(()));
        }
        // Counter WINDOW reuses slot 0; 1..WINDOW stay marked.
        assert_eq!(w.accept(WINDOW), Ok(()));
        assert_eq!(w.accept(WINDOW - 1), Err(Refusal::Replayed));
        assert_eq!(w.accept(0), Err(Refusal::TooOld));
    }
}
