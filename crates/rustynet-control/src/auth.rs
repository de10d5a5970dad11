//! Authentication of node requests.
//!
//! A request is accepted once: its signature must verify with the node's
//! registered signing key, its timestamp must be within the skew bound, and
//! its (node, nonce) pair must be new. Nonces are recorded in the store, so a
//! header lifted from a log cannot be replayed even across a restart.

use axum::http::{HeaderMap, StatusCode};
use rustynet_proto::control_api::{AUTH_HEADER, MAX_REQUEST_SKEW_MS, RequestAuth};
use rustynet_proto::{NodeId, SigningPublicKey};

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
    let value = headers
        .get(AUTH_HEADER)
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

fn check(
    store: &dyn Store,
    req: &SignedRequest<'_>,
    auth: &RequestAuth,
    key: &SigningPublicKey,
    now_ms: i64,
) -> Result<(), ApiFailure> {
    if (auth.timestamp_ms - now_ms).abs() > MAX_REQUEST_SKEW_MS {
        return Err(ApiFailure::new(
            StatusCode::UNAUTHORIZED,
            "stale_request",
            "request timestamp is outside the allowed clock skew",
        ));
    }
    if !auth.verify(key, req.method, req.path, req.body) {
        return Err(ApiFailure::new(
            StatusCode::UNAUTHORIZED,
            "bad_signature",
            "request signature does not verify",
        ));
    }
    let fresh = store
        .record_nonce(
            auth.node_id,
            &auth.nonce,
            auth.timestamp_ms,
            now_ms - 2 * MAX_REQUEST_SKEW_MS,
        )
        .map_err(ApiFailure::from)?;
    if !fresh {
        return Err(ApiFailure::new(
            StatusCode::UNAUTHORIZED,
            "replayed_request",
            "request nonce was already used",
        ));
    }
    Ok(())
}

/// Verifies an enrollment request: signed (node 0) by the key it registers.
pub fn verify_enrollment(
    store: &dyn Store,
    req: &SignedRequest<'_>,
    signing_key: &SigningPublicKey,
    now_ms: i64,
) -> Result<(), ApiFailure> {
    let auth = parse_header(req.headers)?;
    if auth.node_id != NodeId(0) {
        return Err(ApiFailure::new(
            StatusCode::UNAUTHORIZED,
            "malformed_auth",
            "enrollment must be signed as node 0",
        ));
    }
    check(store, req, &auth, signing_key, now_ms)
}

/// Verifies a request from an enrolled node and returns that node.
pub fn verify_node(
    store: &dyn Store,
    req: &SignedRequest<'_>,
    now_ms: i64,
) -> Result<NodeRecord, ApiFailure> {
    let auth = parse_header(req.headers)?;
    let node = store
        .node(auth.node_id)
        .map_err(ApiFailure::from)?
        .ok_or_else(|| ApiFailure::new(StatusCode::UNAUTHORIZED, "unknown_node", "no such node"))?;
    check(store, req, &auth, &node.signing_key, now_ms)?;
    if node.is_expired(now_ms / 1000) {
        return Err(ApiFailure::new(
            StatusCode::FORBIDDEN,
            "node_expired",
            "this node was expired by an administrator; enroll again",
        ));
    }
    Ok(node)
}
