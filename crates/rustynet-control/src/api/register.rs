//! `POST /v1/register`: enrollment with a pre-auth key.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use rustynet_proto::control_api::{API_VERSION, RegisterRequest, RegisterResponse, paths};
use sha2::{Digest as _, Sha256};

use super::{ApiFailure, AppState, blocking, parse_json, read_body};
use crate::auth::{SignedRequest, verify_enrollment};
use crate::store::Registration;
use crate::{now_unix, now_unix_ms};

pub(super) async fn register(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<RegisterResponse>, ApiFailure> {
    let bytes = read_body(body).await?;
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
    let network = app.network.clone();
    let signing_key = req.signing_key;
    let node = blocking(move || {
        let store = network.store().as_ref();
        let signed = SignedRequest {
            method: "POST",
            path: paths::REGISTER,
            headers: &headers,
            body: &bytes,
        };
        verify_enrollment(store, &signed, &signing_key, now_unix_ms())?;
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
