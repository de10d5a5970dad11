//! `POST /v1/map`: the long-lived stream of signed maps.
//!
//! The response is NDJSON: one `StreamFrame` per line ([`MapStream`]). The first frame is a
//! freshly signed map; after that a new one is sent whenever the node's map
//! changes, and a re-signed one when half its validity has passed. Idle
//! streams carry keepalives so both sides notice a dead connection.

use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use rustynet_proto::control_api::{API_VERSION, MapRequest, STREAM_SILENCE_HEADER, paths};

use super::map_stream::MapStream;
use super::{ApiFailure, AppState, Connection, blocking, parse_json, read_body};
use crate::auth::{SignedRequest, verify_node};
use crate::{now_unix, now_unix_ms};

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
    let body = MapStream::open(app, node.id, keepalive).into_body();
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
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
