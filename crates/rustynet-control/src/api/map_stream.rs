//! One node's map stream as the response body itself.
//!
//! The stream is a [`futures::Stream`] of NDJSON pieces that hyper polls on
//! the connection's own task, not a task of its own feeding a channel: a
//! held stream then costs one task and no channel (about 1.5 KiB less per
//! node at 10,000), and a keepalive is one wake instead of two (the timer
//! wakes the connection, which writes). Backpressure is hyper's: the next
//! piece is asked for only once the last one is taken. When the client goes
//! away hyper drops the body, and with it the node's online registration.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use rustynet_proto::control_api::map_frame_pieces;
use rustynet_proto::{NodeId, SigningPublicKey, VerifyError};
use tokio::time::Instant;

use super::AppState;
use super::pacing::MapPacer;
use crate::generations::Opened;
use crate::map_check::check_frame_len;
use crate::map_json::seal_netmap_json;
use crate::metrics::StreamGuard;
use crate::network::OnlineGuard;
use crate::now_unix;

/// Changes often come in bursts (an admin command committing several
/// edits, nodes enrolling one after another); waiting a moment lets one map
/// carry the whole burst. Short, because it is added to every change's
/// latency; sustained churn is what the per-stream pacer is for.
const DEBOUNCE: Duration = Duration::from_millis(10);

/// `StreamFrame::Keepalive` as a line, encoded once (a test checks it is
/// what serializing the frame gives).
const KEEPALIVE: &[u8] = b"{\"type\":\"keepalive\"}\n";

/// The pieces of one frame.
type Pieces = std::array::IntoIter<Bytes, 3>;

/// One node's open map stream.
pub(super) struct MapStream {
    app: Arc<AppState>,
    id: NodeId,
    keepalive: Duration,
    /// Generations come from blocks reserved after this point
    /// ([`crate::generations`]).
    opened: Opened,
    online: OnlineGuard,
    _held: StreamGuard,
    resign_every: Duration,
    /// A digest of the last map sent, not the map: an idle stream of a big
    /// network then holds 32 bytes instead of its whole last map.
    last_sent: Option<[u8; 32]>,
    last_signed: Instant,
    /// How soon the next map may go out (a burst, then one per
    /// `min_map_interval`).
    pacer: MapPacer,
    refused_version: Option<u64>,
    /// The key the last map was signed with: after a rotation the next map
    /// goes out at once, with the handover, even if nothing else changed.
    signed_by: Option<SigningPublicKey>,
    /// The snapshot version the last map (or refusal) was decided at: a
    /// later snapshot that touched neither this node nor its peers needs no
    /// build to know the map is the same.
    decided_at: Option<u64>,
    /// The rest of the frame being sent.
    pending: Option<Pieces>,
    /// When a keepalive is due: `keepalive` after the last frame, however
    /// many wakes since sent nothing (a stream woken more often than that
    /// by changes that do not touch its map must still carry keepalives).
    keepalive_at: Instant,
    /// Whether the map is to be looked at before waiting again: not after a
    /// keepalive, which changed nothing.
    look: bool,
}

/// What ended a wait.
enum Woke {
    Changed,
    Timer,
    Replaced,
}

/// What looking at the map decided.
enum Decision {
    Send(Pieces),
    Nothing,
    End,
}

impl MapStream {
    /// Registers `id` online; the first poll sends its map.
    pub(super) fn open(app: Arc<AppState>, id: NodeId, keepalive: Duration) -> Self {
        // Before any map (see `opened`).
        let opened = app.network.generations().opened();
        let online = app.network.stream_opened(id);
        let held = app.metrics.stream_opened();
        let resign_every = Duration::from_secs((app.map_ttl_secs / 2).max(1) as u64);
        let now = Instant::now();
        tracing::debug!(node = %id, "map stream opened");
        Self {
            pacer: MapPacer::new(app.min_map_interval, now),
            app,
            id,
            keepalive,
            opened,
            online,
            _held: held,
            resign_every,
            last_sent: None,
            last_signed: now,
            refused_version: None,
            signed_by: None,
            decided_at: None,
            pending: None,
            keepalive_at: now + keepalive,
            look: true,
        }
    }

    /// The body: one piece after another until the stream ends.
    pub(super) fn into_body(self) -> axum::body::Body {
        let pieces = futures::stream::unfold(self, |mut stream| async move {
            let piece = stream.next_piece().await?;
            Some((Ok::<_, std::convert::Infallible>(piece), stream))
        });
        axum::body::Body::from_stream(pieces)
    }

    /// The next piece to write; `None` ends the stream.
    async fn next_piece(&mut self) -> Option<Bytes> {
        loop {
            if let Some(piece) = self.pending.as_mut().and_then(Iterator::next) {
                return Some(piece);
            }
            if std::mem::take(&mut self.look) {
                match self.decide() {
                    Decision::Send(pieces) => {
                        self.pending = Some(pieces);
                        self.keepalive_at = Instant::now() + self.keepalive;
                        continue;
                    }
                    Decision::Nothing => {}
                    Decision::End => return None,
                }
            }
            let keepalive_at = self.keepalive_at;
            let resign_at = self.last_signed + self.resign_every;
            let woke = tokio::select! {
                () = self.online.changed() => Woke::Changed,
                // One timer for both: whichever comes first.
                () = tokio::time::sleep_until(keepalive_at.min(resign_at)) => Woke::Timer,
                () = self.online.replaced() => Woke::Replaced,
            };
            match woke {
                Woke::Changed => {
                    // Coalesce: a burst of changes (a policy edit, a node
                    // that keeps updating) becomes one map, and one node
                    // gets maps no faster than its pacer allows.
                    let now = Instant::now();
                    let wait = self.pacer.next_allowed(now).max(now + DEBOUNCE);
                    tokio::select! {
                        () = tokio::time::sleep_until(wait) => {}
                        () = self.online.replaced() => return self.replaced(),
                    }
                    self.look = true;
                }
                Woke::Timer if resign_at <= keepalive_at => self.look = true,
                Woke::Timer => {
                    self.keepalive_at = Instant::now() + self.keepalive;
                    return Some(Bytes::from_static(KEEPALIVE));
                }
                Woke::Replaced => return self.replaced(),
            }
        }
    }

    fn replaced(&self) -> Option<Bytes> {
        tracing::info!(node = %self.id, "a newer map stream of this node took over; closing this one");
        None
    }

    /// Whether a map goes out now: built only when the snapshot may have
    /// changed it (or a re-signing is due), sent only when it differs from
    /// the last one sent (or a re-signing is due). A node no longer live
    /// ends the stream.
    fn decide(&mut self) -> Decision {
        let id = self.id;
        let build_started = std::time::Instant::now();
        let snapshot = self.app.network.current();
        let signer = self.app.signer();
        let key = signer.key.public();
        let due = self.last_signed.elapsed() >= self.resign_every || self.signed_by != Some(key);
        let untouched = self
            .decided_at
            .is_some_and(|v| !self.app.network.map_may_differ(&snapshot, id, v));
        self.decided_at = Some(snapshot.version);
        if untouched && !due {
            return Decision::Nothing;
        }
        let Some(netmap) = snapshot.netmap_json(id) else {
            tracing::info!(node = %id, "node removed or expired; closing its map stream");
            return Decision::End;
        };
        // BLAKE3: a few microseconds for a 30 KiB map where SHA-256 took
        // 20 (it is only compared with this stream's last map).
        let digest: [u8; 32] = blake3::hash(netmap.payload()).into();
        if self.last_sent == Some(digest) && !due {
            return Decision::Nothing;
        }
        // Also after a refusal: the next try waits for a change or the
        // next re-signing time instead of spinning.
        self.last_signed = Instant::now();
        if let Err(reason) = snapshot.check_map(id) {
            self.refuse_once(snapshot.version, &reason);
            return Decision::Nothing;
        }
        let generation = match self.app.network.generations().next(self.opened) {
            Ok(generation) => generation,
            Err(e) => {
                tracing::error!(node = %id, error = %e, "cannot reserve a generation");
                return Decision::End;
            }
        };
        // Not held while waiting: a stream woken rarely would otherwise
        // keep an old snapshot (every node and its serialized entries)
        // alive for as long as it sleeps.
        drop(snapshot);
        let sealed = seal_netmap_json(
            &signer.key,
            netmap,
            id,
            generation,
            now_unix(),
            self.app.map_ttl_secs,
        );
        self.pacer.sent(Instant::now());
        self.signed_by = Some(key);
        // The pieces share the map's buffer; none is copied.
        let pieces = map_frame_pieces(sealed.sealed, &signer.handovers);
        if let Err(reason) = check_frame_len(pieces.iter().map(Bytes::len).sum()) {
            tracing::error!(node = %id, %reason, "map not sent: the node would refuse it");
            return Decision::Nothing;
        }
        self.last_sent = Some(digest);
        self.app.metrics.map_sent(build_started.elapsed());
        tracing::debug!(node = %id, generation, "map sent");
        Decision::Send(pieces.into_iter())
    }

    /// Logs, once per network state, that the map breaks a verifier limit.
    /// Nothing is signed: the node keeps its last map until it expires, and
    /// every other node's stream goes on.
    fn refuse_once(&mut self, version: u64, reason: &VerifyError) {
        if self.refused_version != Some(version) {
            self.refused_version = Some(version);
            tracing::error!(node = %self.id, %reason, "map not signed: the node would refuse it");
        }
    }
}

impl Drop for MapStream {
    fn drop(&mut self) {
        tracing::debug!(node = %self.id, "map stream closed");
    }
}

#[cfg(test)]
mod tests {
    use rustynet_proto::control_api::StreamFrame;

    use super::*;

    #[test]
    fn the_keepalive_line_is_the_serialized_frame() {
        let mut line = serde_json::to_vec(&StreamFrame::Keepalive).unwrap();
        line.push(b'\n');
        assert_eq!(line, KEEPALIVE);
    }
}
