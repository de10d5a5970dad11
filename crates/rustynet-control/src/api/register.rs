//! `POST /v1/register`: enrollment with a pre-auth key.
//!
//! Nobody is authenticated yet, so the order is cheapest refusal first and
//! nothing durable before the pre-auth key is known good: the per-source
//! rate limit (before the body is read), the body's shape, the request
//! signature, the pre-auth key (a read), the nonce (in memory), and only
//! then the one write that enrolls the node.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use rustynet_proto::control_api::{API_VERSION, RegisterRequest, RegisterResponse, paths};
use sha2::{Digest as _, Sha256};

use super::{ApiFailure, AppState, PeerAddr, blocking, lock, parse_json, read_body};
use crate::auth::{SignedRequest, replayed, verify_enrollment};
use crate::nonce_cache::NonceCheck;
use crate::ratelimit::source_key;
use crate::store::Registration;
use crate::{now_unix, now_unix_ms};

pub(super) async fn register(
    State(app): State<Arc<AppState>>,
    Extension(PeerAddr(peer)): Extension<PeerAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<RegisterResponse>, ApiFailure> {
    let allowed = lock(&app.register_limit).allow(&source_key(peer.ip()), Instant::now());
    if !allowed {
        return Err(ApiFailure::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many enrollment requests from this address; retry later",
        ));
    }
    let bytes = read_body(body, app.body_timeout).await?;
    let req: RegisterRequest = parse_json(&bytes)?;
    if req.version != API_VERSION {
        return Err(ApiFailure::bad_request(format!(
            "unsupported API version {} (this server speaks {API_VERSION})",
            req.version
        )));
    }
    let hostname = rustynet_proto::names::normalize_hostname(&req.hostname)
        .map_err(|e| ApiFailure::bad_request(format!("hostname: {e}")))?;
    if req.node_key.as_bytes() == &[0u8; 32] {
        return Err(ApiFailure::bad_request("node_key: all-zero key"));
    }
    if !req.signing_key.is_valid() {
        return Err(ApiFailure::bad_request(
            "signing_key: not a valid Ed25519 key",
        ));
    }
    super::update::validate_endpoints(&req.endpoints)?;
    super::update::validate_routes(&req.advertise_routes)?;
    let registration = Registration {
        key_hash: Sha256::digest(req.auth_key.expose().as_bytes()).into(),
        hostname,
        node_key: req.node_key,
        signing_key: req.signing_key,
        endpoints: req.endpoints.clone(),
        advertise_exit_node: req.advertise_exit_node,
        advertised_routes: req.advertise_routes.clone(),
    };
    let state = app.clone();
    let signing_key = req.signing_key;
    let node = blocking(move || {
        let network = &state.network;
        let store = network.store().as_ref();
        let signed = SignedRequest {
            method: "POST",
            path: paths::REGISTER,
            headers: &headers,
            body: &bytes,
        };
        let now_ms = now_unix_ms();
        let auth = verify_enrollment(&signed, &signing_key, now_ms)?;
        store.usable_preauth(&registration.key_hash, now_unix())?;
        match lock(&state.enroll_nonces).insert(auth.nonce, now_ms) {
            NonceCheck::Fresh => {}
            NonceCheck::Replayed => return Err(replayed()),
            NonceCheck::Full => {
                return Err(ApiFailure::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy",
                    "too many enrollments in progress; retry later",
                ));
            }
        }
        let node = store.register(&registration, now_unix())?;
        network.reload().map_err(ApiFailure::from)?;
        Ok(node)
    })
    .await?;
    tracing::info!(node = %node.id, hostname = %node.hostname, ip = %node.tunnel_ip, "node enrolled");
    let suffix = app.network.current().suffix.clone();
    Ok(Json(RegisterResponse {
        version: API_VERSION,
        node_id: node.id,
        dns_name: format!("{}.{suffix}", node.hostname),
        hostname: node.hostname,
        tunnel_ip: node.tunnel_ip,
        control_signing_key: app.signer.public(),
    }))
}
