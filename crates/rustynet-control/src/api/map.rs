//! `POST /v1/map`: the long-lived stream of signed maps.
//!
//! The response is NDJSON: one [`StreamFrame`] per line. The first frame is a
//! freshly signed map; after that a new one is sent whenever the node's map
//! changes, and a re-signed one when half its validity has passed. Idle
//! streams carry keepalives so both sides notice a dead connection.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use rustynet_proto::NodeId;
use rustynet_proto::control_api::{API_VERSION, MapRequest, StreamFrame, map_frame_pieces, paths};
use tokio::sync::mpsc;

use super::{ApiFailure, AppState, blocking, parse_json, read_body};
use crate::auth::{SignedRequest, verify_node};
use crate::map_json::seal_netmap_json;
use crate::{now_unix, now_unix_ms};

/// Changes often come in bursts (a policy edit touches many nodes); waiting a
/// moment lets one map carry the whole burst.
const DEBOUNCE: Duration = Duration::from_millis(25);

pub(super) async fn map_stream(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiFailure> {
    let bytes = read_body(body).await?;
    let req: MapRequest = parse_json(&bytes)?;
    if req.version != API_VERSION {
        return Err(ApiFailure::bad_request("unsupported API version"));
    }
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
        store.touch(node.id, now_unix())?;
        Ok(node)
    })
    .await?;
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    tokio::spawn(stream_task(app, node.id, tx));
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

async fn stream_task(app: Arc<AppState>, id: NodeId, tx: mpsc::Sender<Bytes>) {
    let _online = app.network.stream_opened(id);
    let mut changes = app.network.subscribe();
    let resign_every = Duration::from_secs((app.map_ttl_secs / 2).max(1) as u64);
    let mut last_sent: Option<Bytes> = None;
    let mut last_signed = tokio::time::Instant::now();
    tracing::debug!(node = %id, "map stream opened");
    loop {
        let snapshot = changes.borrow_and_update().clone();
        let Some(netmap) = snapshot.netmap_json(id) else {
            tracing::info!(node = %id, "node removed or expired; closing its map stream");
            break;
        };
        let due = last_signed.elapsed() >= resign_every;
        if last_sent.as_deref() != Some(netmap.payload()) || due {
            let generation = match app.network.store().reserve_generations(1) {
                Ok(range) => range.start,
                Err(e) => {
                    tracing::error!(node = %id, error = %e, "cannot reserve a generation");
                    break;
                }
            };
            let sealed = seal_netmap_json(
                &app.signer,
                netmap,
                id,
                generation,
                now_unix(),
                app.map_ttl_secs,
            );
            // The pieces share the map's buffer; none is copied.
            if !send_all(&tx, map_frame_pieces(sealed.sealed)).await {
                break;
            }
            tracing::debug!(node = %id, generation, "map sent");
            last_sent = Some(sealed.payload);
            last_signed = tokio::time::Instant::now();
        }
        let resign_at = last_signed + resign_every;
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() { break; }
                tokio::time::sleep(DEBOUNCE).await;
            }
            _ = tokio::time::sleep_until(resign_at) => {}
            _ = tokio::time::sleep(app.keepalive) => {
                if tx.send(frame_line(&StreamFrame::Keepalive)).await.is_err() { break; }
            }
            _ = tx.closed() => break,
        }
    }
    tracing::debug!(node = %id, "map stream closed");
}
