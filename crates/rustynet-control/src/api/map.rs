//! `POST /v1/map`: the long-lived stream of signed maps.
//!
//! The response is NDJSON: one [`StreamFrame`] per line. The first frame is a
//! freshly signed map; after that a new one is sent whenever the node's map
//! changes, and a re-signed one when half its validity has passed. Idle
//! streams carry keepalives so both sides notice a dead connection.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use rustynet_proto::control_api::{
    API_VERSION, MapRequest, STREAM_SILENCE_HEADER, StreamFrame, map_frame_pieces, paths,
};
use rustynet_proto::{NodeId, VerifyError};
use tokio::sync::mpsc;

use super::pacing::MapPacer;
use super::{ApiFailure, AppState, Connection, Signer, blocking, parse_json, read_body};
use crate::auth::{SignedRequest, verify_node};
use crate::map_check::check_frame_len;
use crate::map_json::{MapJson, seal_netmap_json};
use crate::{now_unix, now_unix_ms};

/// Changes often come in bursts (an admin command committing several
/// edits, nodes enrolling one after another); waiting a moment lets one map
/// carry the whole burst. Short, because it is added to every change's
/// latency; sustained churn is what the per-stream pacer is for.
const DEBOUNCE: Duration = Duration::from_millis(10);

/// The silence a client that does not say ([`STREAM_SILENCE_HEADER`]) takes
/// for a dead stream: what daemons before the header used.
const LEGACY_SILENCE: Duration = Duration::from_secs(45);

/// Keepalives never go out more often than this, whatever a client asks.
const MIN_KEEPALIVE: Duration = Duration::from_secs(10);

/// How often an idle stream gets a keepalive: a third of the silence the
/// client declared (three may be lost), at most `configured`, at least
/// [`MIN_KEEPALIVE`] unless `configured` is shorter still.
fn stream_keepalive(configured: Duration, declared: Option<&HeaderValue>) -> Duration {
    let silence = declared
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(LEGACY_SILENCE, Duration::from_secs);
    (silence / 3).max(MIN_KEEPALIVE).min(configured)
}

pub(super) async fn map_stream(
    State(app): State<Arc<AppState>>,
    Extension(Connection(connection)): Extension<Connection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiFailure> {
    let bytes = read_body(body, app.body_timeout).await?;
    let req: MapRequest = parse_json(&bytes)?;
    if req.version != API_VERSION {
        return Err(ApiFailure::bad_request("unsupported API version"));
    }
    let keepalive = stream_keepalive(app.keepalive, headers.get(STREAM_SILENCE_HEADER));
    let network = app.network.clone();
    let node = blocking(move || {
        let store = network.store().as_ref();
        let signed = SignedRequest {
            method: "POST",
            path: paths::MAP_STREAM,
            headers: &headers,
            body: &bytes,
        };
        let node = verify_node(store, &signed, now_unix_ms())?;
        store.touch(&[node.id], now_unix())?;
        Ok(node)
    })
    .await?;
    // An authenticated node's stream: this connection is never evicted.
    connection.mark_streaming();
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    tokio::spawn(stream_task(app, node.id, keepalive, tx));
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}

fn frame_line(frame: &StreamFrame) -> Bytes {
    let mut line = serde_json::to_vec(frame).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

/// Sends the pieces of one frame in order; false once the client is gone.
async fn send_all(tx: &mpsc::Sender<Bytes>, pieces: impl IntoIterator<Item = Bytes>) -> bool {
    for piece in pieces {
        if tx.send(piece).await.is_err() {
            return false;
        }
    }
    true
}

/// Logs, once per network state, that `id`'s map breaks a verifier limit.
/// Nothing is signed: the node keeps its last map until it expires, and
/// every other node's stream goes on.
fn refuse_once(logged: &mut Option<u64>, version: u64, id: NodeId, reason: &VerifyError) {
    if *logged != Some(version) {
        *logged = Some(version);
        tracing::error!(node = %id, %reason, "map not signed: the node would refuse it");
    }
}

/// The client went away: the stream ends.
struct Gone;

/// Seals `netmap` under `generation` (fresh) and sends it, unless the line
/// would exceed the node's size limit. `Ok(true)`: sent. `build_started`: when building this node's map began (for
/// the metrics).
async fn seal_and_send(
    app: &AppState,
    signer: &Signer,
    tx: &mpsc::Sender<Bytes>,
    id: NodeId,
    netmap: MapJson,
    generation: u64,
    build_started: std::time::Instant,
) -> Result<bool, Gone> {
    let sealed = seal_netmap_json(
        &signer.key,
        netmap,
        id,
        generation,
        now_unix(),
        app.map_ttl_secs,
    );
    let build = build_started.elapsed();
    // The pieces share the map's buffer; none is copied.
    let pieces = map_frame_pieces(sealed.sealed, &signer.handovers);
    if let Err(reason) = check_frame_len(pieces.iter().map(Bytes::len).sum()) {
        tracing::error!(node = %id, %reason, "map not sent: the node would refuse it");
        return Ok(false);
    }
    if !send_all(tx, pieces).await {
        return Err(Gone);
    }
    app.metrics.map_sent(build);
    tracing::debug!(node = %id, generation, "map sent");
    Ok(true)
}

async fn stream_task(app: Arc<AppState>, id: NodeId, keepalive: Duration, tx: mpsc::Sender<Bytes>) {
    // Before any map: this stream's generations come from blocks reserved
    // after this point (crate::generations).
    let opened = app.network.generations().opened();
    let online = app.network.stream_opened(id);
    let _held = app.metrics.stream_opened();
    let resign_every = Duration::from_secs((app.map_ttl_secs / 2).max(1) as u64);
    // A digest of the last map sent, not the map: an idle stream of a big
    // network then holds 32 bytes instead of its whole last map.
    let mut last_sent: Option<[u8; 32]> = None;
    let mut last_signed = tokio::time::Instant::now();
    // How soon the next map may go out (a burst, then one per
    // `min_map_interval`).
    let mut pacer = MapPacer::new(app.min_map_interval, tokio::time::Instant::now());
    let mut refused_version = None;
    // The key the last map was signed with: after a rotation the next map
    // goes out at once, with the handover, even if nothing else changed.
    let mut signed_by = None;
    tracing::debug!(node = %id, "map stream opened");
    // The snapshot version the last map (or refusal) was decided at: a
    // later snapshot that touched neither this node nor its peers needs no
    // build to know the map is the same.
    let mut decided_at: Option<u64> = None;
    loop {
        let build_started = std::time::Instant::now();
        let snapshot = app.network.current();
        let signer = app.signer();
        let key = signer.key.public();
        let due = last_signed.elapsed() >= resign_every || signed_by != Some(key);
        let untouched = decided_at.is_some_and(|v| !app.network.map_may_differ(&snapshot, id, v));
        decided_at = Some(snapshot.version);
        // Skipped when the snapshot cannot have changed the map (unless a
        // re-signing is due); a node no longer live ends the stream.
        let built = if untouched && !due {
            None
        } else if let Some(netmap) = snapshot.netmap_json(id) {
            // BLAKE3: a few microseconds for a 30 KiB map where SHA-256 took
            // 20 (it is only compared with this stream's last map).
            let digest: [u8; 32] = blake3::hash(netmap.payload()).into();
            Some((netmap, digest))
        } else {
            tracing::info!(node = %id, "node removed or expired; closing its map stream");
            break;
        };
        if let Some((netmap, digest)) = built
            && (last_sent != Some(digest) || due)
        {
            match snapshot.check_map(id) {
                Err(reason) => refuse_once(&mut refused_version, snapshot.version, id, &reason),
                Ok(()) => {
                    let generation = match app.network.generations().next(opened) {
                        Ok(generation) => generation,
                        Err(e) => {
                            tracing::error!(node = %id, error = %e, "cannot reserve a generation");
                            break;
                        }
                    };
                    let sent =
                        seal_and_send(&app, &signer, &tx, id, netmap, generation, build_started);
                    match sent.await {
                        Err(Gone) => break,
                        Ok(true) => last_sent = Some(digest),
                        Ok(false) => {}
                    }
                    pacer.sent(tokio::time::Instant::now());
                    signed_by = Some(key);
                }
            }
            // Also after a refusal: the next try waits for a change or the
            // next re-signing time instead of spinning.
            last_signed = tokio::time::Instant::now();
        }
        // Not held while waiting: a stream woken rarely would otherwise
        // keep an old snapshot (every node and its serialized entries)
        // alive for as long as it sleeps.
        drop(snapshot);
        let resign_at = last_signed + resign_every;
        tokio::select! {
            () = online.changed() => {
                // Coalesce: a burst of changes (a policy edit, a node that
                // keeps updating) becomes one map, and one node gets maps
                // no faster than its pacer allows.
                let now = tokio::time::Instant::now();
                let wait = pacer.next_allowed(now).max(now + DEBOUNCE);
                tokio::select! {
                    _ = tokio::time::sleep_until(wait) => {}
                    _ = tx.closed() => break,
                    () = online.replaced() => break,
                }
            }
            _ = tokio::time::sleep_until(resign_at) => {}
            _ = tokio::time::sleep(keepalive) => {
                if tx.send(frame_line(&StreamFrame::Keepalive)).await.is_err() { break; }
            }
            _ = tx.closed() => break,
            () = online.replaced() => {
                tracing::info!(node = %id, "a newer map stream of this node took over; closing this one");
                break;
            }
        }
    }
    tracing::debug!(node = %id, "map stream closed");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keepalive(configured: u64, declared: Option<&str>) -> Duration {
        let value = declared.map(|d| HeaderValue::from_str(d).unwrap());
        stream_keepalive(Duration::from_secs(configured), value.as_ref())
    }

    #[test]
    fn keepalives_follow_the_silence_the_client_declared() {
        assert_eq!(keepalive(60, Some("180")), Duration::from_secs(60));
        assert_eq!(keepalive(60, Some("90")), Duration::from_secs(30));
        assert_eq!(
            keepalive(60, Some("3600")),
            Duration::from_secs(60),
            "never above the setting"
        );
        assert_eq!(keepalive(60, Some("3")), MIN_KEEPALIVE, "never a flood");
        assert_eq!(
            keepalive(1, Some("180")),
            Duration::from_secs(1),
            "a shorter setting wins"
        );
    }

    #[test]
    fn a_client_that_does_not_say_gets_what_earlier_daemons_expect() {
        assert_eq!(keepalive(60, None), Duration::from_secs(15));
        for junk in ["", "-5", "ninety", "1e3", "18446744073709551616"] {
            assert_eq!(
                keepalive(60, Some(junk)),
                Duration::from_secs(15),
                "{junk:?}"
            );
        }
    }
}
