//! Authentication of node requests.
//!
//! A request is accepted once: its signature must verify with the node's
//! registered signing key, its timestamp must be within the skew bound, and
//! its (node, nonce) pair must be new. Nonces are recorded in the store, so a
//! header lifted from a log cannot be replayed even across a restart.
//!
//! A request naming a node that does not exist is answered exactly like one
//! whose signature does not verify (same status, code and message, after the
//! same signature check against a stand-in key), so the API does not tell a
//! stranger which node ids exist.

use std::sync::OnceLock;

use axum::http::{HeaderMap, StatusCode};
use rustynet_proto::control_api::{AUTH_HEADER, MAX_REQUEST_SKEW_MS, RENEW_HEADER, RequestAuth};
use rustynet_proto::{NodeId, NodeSigningKey, SigningPublicKey};

use crate::api::ApiFailure;
use crate::store::{NodeRecord, Store};

/// A request as far as authentication is concerned.
pub struct SignedRequest<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// Path.
    pub path: &'a str,
    /// Headers.
    pub headers: &'a HeaderMap,
    /// Raw body bytes (what the signature covers).
    pub body: &'a [u8],
}

fn parse_header(headers: &HeaderMap) -> Result<RequestAuth, ApiFailure> {
    parse_named_header(headers, AUTH_HEADER)
}

fn parse_named_header(headers: &HeaderMap, name: &str) -> Result<RequestAuth, ApiFailure> {
    let value = headers
        .get(name)
        .ok_or_else(|| {
            ApiFailure::new(
                StatusCode::UNAUTHORIZED,
                "missing_auth",
                "request is not signed",
            )
        })?
        .to_str()
        .map_err(|_| {
            ApiFailure::new(
                StatusCode::UNAUTHORIZED,
                "malformed_auth",
                "auth header is not ASCII",
            )
        })?;
    RequestAuth::parse_header(value)
        .map_err(|e| ApiFailure::new(StatusCode::UNAUTHORIZED, "malformed_auth", e.to_string()))
}

/// Whether a request stamped `timestamp_ms` is within the skew bound of
/// `now_ms`. `abs_diff` cannot overflow, so no timestamp (not even
/// `i64::MIN`) wraps into the window.
pub fn within_skew(timestamp_ms: i64, now_ms: i64) -> bool {
    timestamp_ms.abs_diff(now_ms) <= MAX_REQUEST_SKEW_MS.unsigned_abs()
}

/// A key nobody holds (its secret is drawn at random and dropped), checked
/// against for requests naming an unknown node.
fn stand_in_key() -> &'static SigningPublicKey {
    static KEY: OnceLock<SigningPublicKey> = OnceLock::new();
    KEY.get_or_init(|| NodeSigningKey::generate(&mut rand_core::OsRng).public())
}

fn bad_signature() -> ApiFailure {
    ApiFailure::new(
        StatusCode::UNAUTHORIZED,
        "bad_signature",
        "request signature does not verify",
    )
}

/// Checks skew and signature (no state is touched).
fn check_signature(
    req: &SignedRequest<'_>,
    auth: &RequestAuth,
    key: &SigningPublicKey,
    now_ms: i64,
) -> Result<(), ApiFailure> {
    if !within_skew(auth.timestamp_ms, now_ms) {
        return Err(ApiFailure::new(
            StatusCode::UNAUTHORIZED,
            "stale_request",
            "request timestamp is outside the allowed clock skew",
        ));
    }
    if !auth.verify(key, req.method, req.path, req.body) {
        return Err(bad_signature());
    }
    Ok(())
}

fn check(
    store: &dyn Store,
    req: &SignedRequest<'_>,
    auth: &RequestAuth,
    key: &SigningPublicKey,
    now_ms: i64,
) -> Result<(), ApiFailure> {
    check_signature(req, auth, key, now_ms)?;
    let fresh = store
        .record_nonce(
            auth.node_id,
            &auth.nonce,
            auth.timestamp_ms,
            now_ms.saturating_sub(2 * MAX_REQUEST_SKEW_MS),
        )
        .map_err(ApiFailure::from)?;
    if !fresh {
        return Err(replayed());
    }
    Ok(())
}

/// Verifies an enrollment request's signature: made (as node 0) by the key
/// it registers, within the skew bound. Touches no state: the caller checks
/// the pre-auth key and records the nonce
/// ([`crate::nonce_cache::NonceCache`]) before anything is written.
pub fn verify_enrollment(
    req: &SignedRequest<'_>,
    signing_key: &SigningPublicKey,
    now_ms: i64,
) -> Result<RequestAuth, ApiFailure> {
    let auth = parse_header(req.headers)?;
    if auth.node_id != NodeId(0) {
        return Err(ApiFailure::new(
            StatusCode::UNAUTHORIZED,
            "malformed_auth",
            "enrollment must be signed as node 0",
        ));
    }
    check_signature(req, &auth, signing_key, now_ms)?;
    Ok(auth)
}

/// The refusal of a request whose nonce was seen before.
pub fn replayed() -> ApiFailure {
    ApiFailure::new(
        StatusCode::UNAUTHORIZED,
        "replayed_request",
        "request nonce was already used",
    )
}

/// Verifies a request from an enrolled node and returns that node.
pub fn verify_node(
    store: &dyn Store,
    req: &SignedRequest<'_>,
    now_ms: i64,
) -> Result<NodeRecord, ApiFailure> {
    let auth = parse_header(req.headers)?;
    let Some(node) = store.node(auth.node_id).map_err(ApiFailure::from)? else {
        // The same work and the same answer as a bad signature.
        check_signature(req, &auth, stand_in_key(), now_ms)?;
        return Err(bad_signature());
    };
    check(store, req, &auth, &node.signing_key, now_ms)?;
    let now = now_ms / 1000;
    if node.expired_by_admin(now) {
        return Err(ApiFailure::new(
            StatusCode::FORBIDDEN,
            "node_expired",
            "this node was expired by an administrator; enroll again",
        ));
    }
    if node.key_expired(now) {
        return Err(ApiFailure::new(
            StatusCode::FORBIDDEN,
            "node_expired",
            "this node's keys expired; renew them with `rustynet up --force-reauth --auth-key KEY`",
        ));
    }
    Ok(node)
}

/// Verifies the renewal proof of an enrollment that renews node `id`: the
/// [`RENEW_HEADER`] must be signed by that node's current key (within the
/// skew bound, nonce unused). A node whose keys expired may renew; one an
/// administrator expired may not. An unknown node gets the bad-signature
/// answer, as everywhere.
pub fn verify_renewal(
    store: &dyn Store,
    req: &SignedRequest<'_>,
    id: NodeId,
    now_ms: i64,
) -> Result<NodeRecord, ApiFailure> {
    let auth = parse_named_header(req.headers, RENEW_HEADER)?;
    let node = if auth.node_id == id {
        store.node(id).map_err(ApiFailure::from)?
    } else {
        None
    };
    let Some(node) = node else {
        check_signature(req, &auth, stand_in_key(), now_ms)?;
        return Err(bad_signature());
    };
    check(store, req, &auth, &node.signing_key, now_ms)?;
    if node.expired_by_admin(now_ms / 1000) {
        return Err(ApiFailure::new(
            StatusCode::FORBIDDEN,
            "node_expired",
            "this node was expired by an administrator and cannot renew; remove it and enroll anew",
        ));
    }
    Ok(node)
}
