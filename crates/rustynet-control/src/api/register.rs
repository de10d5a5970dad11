//! `POST /v1/register`: enrollment with a pre-auth key.
//!
//! Nobody is authenticated yet, so the order is cheapest refusal first and
//! nothing durable before the pre-auth key is known good: the per-source
//! rate limit (before the body is read), the body's shape, the request
//! signature, the pre-auth key (a read), the nonce (in memory), and only
//! then the one write that enrolls the node.
//!
//! With `renew`, the same request renews an existing node's keys instead
//! (`rustynet up --force-reauth`): the node also proves it holds its current
//! key ([`verify_renewal`]), and keeps its id, address and name.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use rustynet_policy::Policy;
use rustynet_proto::control_api::{API_VERSION, RegisterRequest, RegisterResponse, paths};
use sha2::{Digest as _, Sha256};

use super::{ApiFailure, AppState, PeerAddr, blocking, lock, parse_json, read_body};
use crate::auth::{SignedRequest, replayed, verify_enrollment, verify_renewal};
use crate::nonce_cache::NonceCheck;
use crate::ratelimit::source_key;
use crate::store::{PreauthRecord, Registration, Renewal, Store};
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
    super::update::validate_path_key(req.path_key.as_ref())?;
    let registration = Registration {
        key_hash: Sha256::digest(req.auth_key.expose().as_bytes()).into(),
        hostname,
        node_key: req.node_key,
        signing_key: req.signing_key,
        endpoints: req.endpoints.clone(),
        advertise_exit_node: req.advertise_exit_node,
        advertised_routes: req.advertise_routes.clone(),
        path_key: req.path_key,
        key_expires_at: app
            .node_key_expiry
            .map(|d| now_unix().saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))),
    };
    let renew = req.renew;
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
        let key = store.usable_preauth(&registration.key_hash, now_unix())?;
        if renew.is_none() {
            check_tags_still_owned(store, &key)?;
        }
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
        let node = match renew {
            None => store.register(&registration, now_unix())?,
            Some(id) => {
                verify_renewal(store, &signed, id, now_ms)?;
                let renewal = Renewal {
                    node: id,
                    registration,
                };
                store.renew(&renewal, now_unix())?
            }
        };
        network.reload().map_err(ApiFailure::from)?;
        Ok(node)
    })
    .await?;
    app.metrics.enrolled(renew.is_some());
    match renew {
        None => {
            tracing::info!(node = %node.id, hostname = %node.hostname, ip = %node.tunnel_ip, "node enrolled")
        }
        Some(_) => {
            tracing::info!(node = %node.id, hostname = %node.hostname, "node renewed its keys")
        }
    }
    let suffix = app.network.current().suffix.clone();
    Ok(Json(RegisterResponse {
        version: API_VERSION,
        node_id: node.id,
        dns_name: format!("{}.{suffix}", node.hostname),
        hostname: node.hostname,
        tunnel_ip: node.tunnel_ip,
        control_signing_key: app.signer().key.public(),
    }))
}

/// Tag ownership is checked when a key is used, not only when it was made:
/// a policy change since may have taken a tag from the key's user.
fn check_tags_still_owned(store: &dyn Store, key: &PreauthRecord) -> Result<(), ApiFailure> {
    if key.tags.is_empty() {
        return Ok(());
    }
    let policy = match store.policy()? {
        // A stored policy that does not parse owns no tags: refuse.
        Some(json) => Policy::parse(&json).unwrap_or_default(),
        None => Policy::default(),
    };
    match key.tags.iter().find(|t| !policy.tag_owned_by(t, &key.user)) {
        Some(tag) => Err(ApiFailure::new(
            StatusCode::FORBIDDEN,
            "tag_not_owned",
            format!(
                "the pre-auth key's tag {tag} is not owned by {:?} in the current policy",
                key.user
            ),
        )),
        None => Ok(()),
    }
}
