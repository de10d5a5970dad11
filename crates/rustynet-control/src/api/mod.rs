//! The HTTP API (served over TLS 1.3 by [`crate::server`]).
//!
//! One file per resource. Every failure is a JSON [`ApiError`] with a stable
//! code and a non-2xx status, produced before any state is changed.

mod map;
mod map_stream;
mod pacing;
mod register;
mod relay_ticket;
mod update;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt as _;
use rustynet_proto::control_api::{ApiError, MAX_REQUEST_BYTES, paths};
use rustynet_proto::handover::KeyHandover;
use rustynet_proto::{NodeId, NodeSigningKey};

use crate::conn_limits::ConnSlot;
use crate::network::Network;
use crate::nonce_cache::NonceCache;
use crate::ratelimit::RateLimiter;
use crate::relay_tickets::TicketIssuer;
use crate::store::{RateKind, StoreError};

/// Shared state of the HTTP handlers.
pub struct AppState {
    /// Live network.
    pub network: Arc<Network>,
    /// Map-signing key and its handovers (replaced when it is rotated).
    pub signer: RwLock<Arc<Signer>>,
    /// Validity of each signed map, seconds (re-signed at half).
    pub map_ttl_secs: i64,
    /// Keepalive interval on idle map streams.
    pub keepalive: Duration,
    /// Deadline of a request body.
    pub body_timeout: Duration,
    /// Least time between two maps sent to one node.
    pub min_map_interval: Duration,
    /// Lifetime of a node's keys from enrollment or renewal (`None`: no
    /// expiry).
    pub node_key_expiry: Option<Duration>,
    /// Updates (`/v1/update`) per node.
    pub update_limit: Mutex<RateLimiter<NodeId>>,
    /// Relay-ticket requests per node.
    pub ticket_limit: Mutex<RateLimiter<NodeId>>,
    /// Relay tickets, cached per node.
    pub tickets: TicketIssuer,
    /// The embedded relay's accepted control keys (updated on rotation).
    pub relay_keys: Option<rustynet_relay::ControlKeys>,
    /// Enrollment requests per source address.
    pub register_limit: Mutex<RateLimiter<IpAddr>>,
    /// Nonces of enrollment requests (never written to the store).
    pub enroll_nonces: Mutex<NonceCache>,
    /// Streams, maps, enrollments and refusals (`--metrics-listen`).
    pub metrics: crate::metrics::ControlMetrics,
}

/// The map-signing key and the handovers of every rotation up to it:
/// replaced as a whole, so a map is never sent with a key and a chain that
/// do not belong together.
pub struct Signer {
    /// The current key.
    pub key: NodeSigningKey,
    /// Handovers, oldest first; the last names `key`.
    pub handovers: Vec<KeyHandover>,
}

impl AppState {
    /// Whether `node` may make one more request of `kind`: first against
    /// this replica's own bucket (`local`, no database round trip for a
    /// flood), then against the bucket every replica shares when the store
    /// has one, so a node spreading requests over replicas gets no more.
    pub(crate) fn allow_node(
        &self,
        local: &Mutex<RateLimiter<NodeId>>,
        kind: RateKind,
        node: NodeId,
    ) -> Result<bool, StoreError> {
        let rate = {
            let mut local = lock(local);
            if !local.allow(&node, std::time::Instant::now()) {
                return Ok(false);
            }
            local.rate()
        };
        let shared = self
            .network
            .store()
            .take_shared_token(node, kind, rate.burst, rate.every)?;
        Ok(shared.unwrap_or(true))
    }

    /// The current signer.
    pub fn signer(&self) -> Arc<Signer> {
        self.signer
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the signer (after a rotation).
    pub fn set_signer(&self, signer: Signer) {
        *self.signer.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(signer);
    }
}

/// The address a request came from (set by the server on every request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// The connection a request came on (set by the server on every request):
/// the map stream marks it, so it is never evicted to make room.
#[derive(Debug, Clone)]
pub struct Connection(pub Arc<ConnSlot>);

/// Locks a mutex whose data stays consistent across a panic (every holder
/// makes one self-contained change).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A failed request: status + stable code + one line.
#[derive(Debug)]
pub struct ApiFailure {
    /// HTTP status.
    pub status: StatusCode,
    /// Body.
    pub error: ApiError,
}

impl ApiFailure {
    /// A failure with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            error: ApiError {
                code: code.to_owned(),
                message: message.into(),
            },
        }
    }

    /// 400 with a parse/validation message.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

impl From<StoreError> for ApiFailure {
    fn from(e: StoreError) -> Self {
        let (status, code) = match &e {
            StoreError::AuthKeyInvalid => (StatusCode::UNAUTHORIZED, "auth_key_invalid"),
            StoreError::AuthKeyExpired => (StatusCode::UNAUTHORIZED, "auth_key_expired"),
            StoreError::AuthKeyUsed => (StatusCode::UNAUTHORIZED, "auth_key_used"),
            StoreError::AuthKeyRevoked => (StatusCode::UNAUTHORIZED, "auth_key_revoked"),
            StoreError::UnknownPreauth(_) => (StatusCode::NOT_FOUND, "unknown_preauth"),
            StoreError::RenewUserMismatch { .. } => (StatusCode::FORBIDDEN, "renew_user_mismatch"),
            StoreError::DuplicateKey => (StatusCode::CONFLICT, "duplicate_key"),
            StoreError::UnknownNode(_) => (StatusCode::NOT_FOUND, "unknown_node"),
            StoreError::DuplicateRelay(_)
            | StoreError::NameTaken(_)
            | StoreError::UnknownRelay(_)
            | StoreError::TooManyRelays(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            StoreError::AddressesExhausted | StoreError::NamesExhausted(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "exhausted")
            }
            StoreError::Db(_)
            | StoreError::Postgres(_)
            | StoreError::BadDatabaseUrl(_)
            | StoreError::WorkerStopped
            | StoreError::AlreadyInitialized
            | StoreError::SchemaTooNew { .. }
            | StoreError::Corrupt(_) => {
                tracing::error!(error = %e, "store failure");
                return Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error",
                );
            }
        };
        Self::new(status, code, e.to_string())
    }
}

/// The refusal reason of a response, for the metrics layer.
#[derive(Debug, Clone, Copy)]
struct Rejected(&'static str);

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        let reason = crate::metrics::reject_reason(&self.error.code);
        let mut response = (self.status, axum::Json(self.error)).into_response();
        response.extensions_mut().insert(Rejected(reason));
        response
    }
}

/// Counts every refused request by its error code (axum's own refusals,
/// such as a wrong method, as `other`).
async fn count_rejections(State(app): State<Arc<AppState>>, response: Response) -> Response {
    if response.status().is_client_error() || response.status().is_server_error() {
        let reason = response
            .extensions()
            .get::<Rejected>()
            .map_or("other", |r| r.0);
        app.metrics.rejected(reason);
    }
    response
}

/// Reads a request body, refusing more than [`MAX_REQUEST_BYTES`] or one
/// that takes longer than `deadline` to arrive (a slow sender holds a
/// connection and a task for no more than that).
///
/// A body whose declared length is already too large is refused before a
/// byte of it is read; one without a declared length (chunked) is cut off as
/// soon as it crosses the limit.
async fn read_body(body: Body, deadline: Duration) -> Result<Bytes, ApiFailure> {
    let too_large = || {
        ApiFailure::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("request body exceeds {MAX_REQUEST_BYTES} bytes"),
        )
    };
    let declared = axum::body::HttpBody::size_hint(&body).lower();
    if usize::try_from(declared).map_or(true, |n| n > MAX_REQUEST_BYTES) {
        return Err(too_large());
    }
    let limited = http_body_util::Limited::new(body, MAX_REQUEST_BYTES);
    match tokio::time::timeout(deadline, limited.collect()).await {
        Err(_) => Err(ApiFailure::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!("request body did not arrive within {deadline:?}"),
        )),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(_)) => Err(ApiFailure::bad_request("could not read request body")),
    }
}

/// Parses a JSON body, naming the problem (never echoing secrets).
fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiFailure> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiFailure::bad_request(format!(
            "invalid JSON body at line {} column {}: {}",
            e.line(),
            e.column(),
            match e.classify() {
                serde_json::error::Category::Data => "wrong or unknown field",
                serde_json::error::Category::Eof => "truncated",
                _ => "syntax error",
            }
        ))
    })
}

/// Runs blocking store work off the async executor.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiFailure> + Send + 'static,
) -> Result<T, ApiFailure> {
    tokio::task::spawn_blocking(f).await.map_err(|_| {
        ApiFailure::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    })?
}

async fn health() -> &'static str {
    "ok"
}

async fn not_found() -> ApiFailure {
    ApiFailure::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

/// The API router.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(paths::HEALTH, get(health))
        .route(paths::REGISTER, post(register::register))
        .route(paths::MAP_STREAM, post(map::map_stream))
        .route(paths::UPDATE, post(update::update))
        .route(paths::RELAY_TICKET, post(relay_ticket::relay_ticket))
        .fallback(not_found)
        .layer(axum::middleware::map_response_with_state(
            state.clone(),
            count_rejections,
        ))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[tokio::test]
    async fn a_body_slower_than_the_deadline_is_refused() {
        let slow = futures::stream::once(async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            Ok::<_, std::io::Error>(Bytes::from_static(b"{}"))
        });
        let err = read_body(Body::from_stream(slow), Duration::from_millis(50))
            .await
            .unwrap_err();
        assert_eq!(err.status, StatusCode::REQUEST_TIMEOUT);
    }

    fn chunked(total: usize) -> Body {
        let chunks = (0..total.div_ceil(4096)).map(move |i| {
            Ok::<_, std::io::Error>(Bytes::from(vec![b' '; 4096.min(total - i * 4096)]))
        });
        Body::from_stream(futures::stream::iter(chunks))
    }

    #[tokio::test]
    async fn declared_oversize_is_refused_before_reading() {
        let body = Body::from(vec![b' '; MAX_REQUEST_BYTES + 1]);
        let err = read_body(body, SECOND).await.unwrap_err();
        assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn undeclared_length_is_cut_off_at_the_limit() {
        assert_eq!(
            axum::body::HttpBody::size_hint(&chunked(MAX_REQUEST_BYTES)).lower(),
            0
        );
        let err = read_body(chunked(MAX_REQUEST_BYTES + 1), SECOND)
            .await
            .unwrap_err();
        assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE);
        let ok = read_body(chunked(MAX_REQUEST_BYTES), SECOND).await.unwrap();
        assert_eq!(ok.len(), MAX_REQUEST_BYTES);
    }
}
