//! A connection's outbound frames: control frames, then probes, then data.
//!
//! Probes and control frames ("call me", path probes, pongs) are drained
//! first so they never wait behind a data flood. The data queue is bounded
//! by [`Codel`] (packets that waited too long are dropped one at a time as
//! they leave) and bounded in bytes: when full it drops its oldest packet
//! (drop-head): under overload the freshest packets are the useful ones.
//! Empty queues give their memory back, so an idle connection holds no
//! buffer.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;
use rustynet_proto::TunnelPublicKey;

use super::codel::Codel;
use crate::frame::{Frame, packet_header};

/// Control frames a connection may have pending; more are dropped (only a
/// client that never reads could get there, e.g. by flooding pings).
const MAX_CONTROL: usize = 64;

#[derive(Debug, Default)]
pub(crate) struct Outbound {
    control: VecDeque<Frame>,
    probe: VecDeque<(TunnelPublicKey, Bytes)>,
    data: VecDeque<(TunnelPublicKey, Bytes, Instant)>,
    data_bytes: usize,
    codel: Codel,
    /// An `Event::Writable` is outstanding (cleared when drained empty).
    pub(crate) wake_pending: bool,
}

/// What a drain did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Drained {
    /// Frames remain.
    pub(crate) more: bool,
    /// Data packets CoDel dropped.
    pub(crate) dropped: usize,
}

/// What a push displaced.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Pushed {
    /// Packets or frames dropped to make room (or the new one, for control).
    pub(crate) dropped: usize,
}

impl Outbound {
    pub(crate) fn is_empty(&self) -> bool {
        self.control.is_empty() && self.probe.is_empty() && self.data.is_empty()
    }

    pub(crate) fn push_control(&mut self, frame: Frame) -> Pushed {
        if self.control.len() >= MAX_CONTROL {
            return Pushed { dropped: 1 };
        }
        self.control.push_back(frame);
        Pushed::default()
    }

    pub(crate) fn push_probe(
        &mut self,
        src: TunnelPublicKey,
        payload: Bytes,
        cap: usize,
    ) -> Pushed {
        let mut dropped = 0;
        while self.probe.len() >= cap.max(1) {
            self.probe.pop_front();
            dropped += 1;
        }
        self.probe.push_back((src, payload));
        Pushed { dropped }
    }

    pub(crate) fn push_data(
        &mut self,
        src: TunnelPublicKey,
        payload: Bytes,
        cap_bytes: usize,
        now: Instant,
    ) -> Pushed {
        let mut dropped = 0;
        while !self.data.is_empty() && self.data_bytes + payload.len() > cap_bytes {
            if let Some((_, old, _)) = self.data.pop_front() {
                self.data_bytes -= old.len();
                dropped += 1;
            }
        }
        self.data_bytes += payload.len();
        self.data.push_back((src, payload, now));
        Pushed { dropped }
    }

    /// Appends frames to `out` until it holds about `max` bytes (at least one
    /// frame is taken), dropping the data packets CoDel picks.
    pub(crate) fn drain(&mut self, out: &mut Vec<u8>, max: usize, now: Instant) -> Drained {
        let mut dropped = 0;
        while out.len() < max {
            if let Some(frame) = self.control.pop_front() {
                frame.encode(out);
            } else if let Some((src, payload)) = self.probe.pop_front() {
                out.extend_from_slice(&packet_header(false, true, &src, payload.len()));
                out.extend_from_slice(&payload);
            } else if let Some((src, payload, queued)) = self.data.pop_front() {
                self.data_bytes -= payload.len();
                if self.codel.should_drop(queued, self.data_bytes, now) {
                    dropped += 1;
                    continue;
                }
                out.extend_from_slice(&packet_header(false, false, &src, payload.len()));
                out.extend_from_slice(&payload);
            } else {
                break;
            }
        }
        if self.is_empty() {
            self.wake_pending = false;
            // Give the memory back: an idle connection holds no queue buffers.
            *self = Outbound::default();
            Drained {
                more: false,
                dropped,
            }
        } else {
            Drained {
                more: true,
                dropped,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use std::time::Duration;

    use crate::frame::Decoder;

    fn t0() -> Instant {
        Instant::now()
    }

    fn decode_all(bytes: &[u8]) -> Vec<Frame> {
        let mut buf = BytesMut::from(bytes);
        let mut frames = Vec::new();
        while let Some(f) = Decoder::new(64).decode(&mut buf).unwrap() {
            frames.push(f);
        }
        assert!(buf.is_empty());
        frames
    }

    #[test]
    fn control_then_probes_then_data() {
        let mut q = Outbound::default();
        let k = TunnelPublicKey([1; 32]);
        q.push_data(k, Bytes::from_static(b"d1"), 1000, t0());
        q.push_probe(k, Bytes::from_static(b"p1"), 4);
        q.push_control(Frame::Pong([1; 8]));
        let mut out = Vec::new();
        assert!(!q.drain(&mut out, 1 << 20, t0()).more);
        let frames = decode_all(&out);
        assert_eq!(frames[0], Frame::Pong([1; 8]));
        assert!(matches!(&frames[1], Frame::Recv { probe: true, payload, .. } if payload == "p1"));
        assert!(matches!(&frames[2], Frame::Recv { probe: false, payload, .. } if payload == "d1"));
        assert!(q.is_empty());
    }

    #[test]
    fn data_drops_the_oldest_when_full() {
        let mut q = Outbound::default();
        let k = TunnelPublicKey([1; 32]);
        for i in 0..10u8 {
            let pushed = q.push_data(k, Bytes::from(vec![i; 100]), 450, t0());
            assert_eq!(pushed.dropped, usize::from(i >= 4));
        }
        let mut out = Vec::new();
        q.drain(&mut out, 1 << 20, t0());
        let firsts: Vec<u8> = decode_all(&out)
            .iter()
            .map(|f| match f {
                Frame::Recv { payload, .. } => payload[0],
                _ => 255,
            })
            .collect();
        assert_eq!(firsts, vec![6, 7, 8, 9]);
    }

    #[test]
    fn drain_stops_near_the_limit_and_reports_more() {
        let mut q = Outbound::default();
        let k = TunnelPublicKey([1; 32]);
        for _ in 0..5 {
            q.push_data(k, Bytes::from(vec![0; 1000]), 1 << 20, t0());
        }
        let mut out = Vec::new();
        assert!(q.drain(&mut out, 2000, t0()).more);
        assert_eq!(decode_all(&out).len(), 2);
        out.clear();
        assert!(!q.drain(&mut out, 1 << 20, t0()).more);
        assert_eq!(decode_all(&out).len(), 3);
    }

    #[test]
    fn packets_that_waited_too_long_are_dropped_one_at_a_time() {
        let mut q = Outbound::default();
        let k = TunnelPublicKey([1; 32]);
        let start = t0();
        for _ in 0..2000 {
            q.push_data(k, Bytes::from(vec![0; 1000]), 4 << 20, start);
        }
        // Everything waited 150 ms: the first leaves (the delay has not yet
        // been above target for an interval), later ones see the drop state.
        let mut out = Vec::new();
        let first = q.drain(&mut out, 1, start + Duration::from_millis(150));
        assert_eq!(first.dropped, 0);
        let later = q.drain(&mut out, 5000, start + Duration::from_millis(251));
        assert_eq!(later.dropped, 1, "one drop, not a burst");
    }

    #[test]
    fn control_frames_are_bounded() {
        let mut q = Outbound::default();
        for _ in 0..MAX_CONTROL {
            assert_eq!(q.push_control(Frame::Pong([0; 8])).dropped, 0);
        }
        assert_eq!(q.push_control(Frame::Pong([0; 8])).dropped, 1);
    }
}
