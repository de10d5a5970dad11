//! `POST /v1/update`: a node reports endpoints and advertisements.
//!
//! Advertisements are only stored here; whether a route or an exit offer is
//! granted is decided by the policy when maps are compiled.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use ipnet::IpNet;
use rustynet_proto::PathPublicKey;
use rustynet_proto::control_api::{API_VERSION, UpdateRequest, paths};
use rustynet_proto::endpoint::{MAX_ENDPOINTS, check_endpoint};

use super::{ApiFailure, AppState, blocking, parse_json, read_body};
use crate::auth::{SignedRequest, verify_node};
use crate::now_unix_ms;
use crate::store::NodeUpdate;
use crate::store::RateKind;

/// Most LAN prefixes a node may advertise.
pub const MAX_ROUTES: usize = 64;

pub(super) fn validate_endpoints(endpoints: &[SocketAddr]) -> Result<(), ApiFailure> {
    if endpoints.len() > MAX_ENDPOINTS {
        return Err(ApiFailure::bad_request(format!(
            "endpoints: more than {MAX_ENDPOINTS}"
        )));
    }
    for (i, ep) in endpoints.iter().enumerate() {
        check_endpoint(ep).map_err(|why| {
            ApiFailure::bad_request(format!(
                "endpoints[{i}]: {ep} is not a usable endpoint ({why})"
            ))
        })?;
    }
    Ok(())
}

pub(super) fn validate_routes(routes: &[IpNet]) -> Result<(), ApiFailure> {
    if routes.len() > MAX_ROUTES {
        return Err(ApiFailure::bad_request(format!(
            "advertise_routes: more than {MAX_ROUTES}"
        )));
    }
    for (i, route) in routes.iter().enumerate() {
        if route.trunc() != *route {
            return Err(ApiFailure::bad_request(format!(
                "advertise_routes[{i}]: {route} has host bits set (did you mean {}?)",
                route.trunc()
            )));
        }
    }
    Ok(())
}

pub(super) fn validate_path_key(key: Option<&PathPublicKey>) -> Result<(), ApiFailure> {
    if key.is_some_and(|k| k.as_bytes() == &[0u8; 32]) {
        return Err(ApiFailure::bad_request("path_key: all-zero key"));
    }
    Ok(())
}

/// The stored form of a reported home relay: `""` clears it; any other
/// name must be a relay control announces now.
fn home_relay(app: &AppState, home: Option<String>) -> Result<Option<Option<String>>, ApiFailure> {
    let Some(name) = home else {
        return Ok(None);
    };
    if name.is_empty() {
        return Ok(Some(None));
    }
    if !app.network.current().relays.iter().any(|r| r.name == name) {
        let shown: String = name.chars().take(40).collect();
        return Err(ApiFailure::bad_request(format!(
            "home_relay: no relay named {shown:?} is announced"
        )));
    }
    Ok(Some(Some(name)))
}

pub(super) async fn update(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiFailure> {
    let bytes = read_body(body, app.body_timeout).await?;
    let req: UpdateRequest = parse_json(&bytes)?;
    if req.version != API_VERSION {
        return Err(ApiFailure::bad_request("unsupported API version"));
    }
    if let Some(endpoints) = &req.endpoints {
        validate_endpoints(endpoints)?;
    }
    if let Some(routes) = &req.advertise_routes {
        validate_routes(routes)?;
    }
    validate_path_key(req.path_key.as_ref())?;
    let state = app.clone();
    blocking(move || {
        let started = std::time::Instant::now();
        let network = &state.network;
        let store = network.store().as_ref();
        let signed = SignedRequest {
            method: "POST",
            path: paths::UPDATE,
            headers: &headers,
            body: &bytes,
        };
        let node = verify_node(store, &signed, now_unix_ms())?;
        if !state.allow_node(&state.update_limit, RateKind::Update, node.id)? {
            return Err(ApiFailure::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many updates from this node; retry later",
            ));
        }
        // Checked once authenticated: relay names are told to nodes only.
        let home_relay = home_relay(&state, req.home_relay)?;
        let update = NodeUpdate {
            endpoints: req.endpoints,
            advertise_exit_node: req.advertise_exit_node,
            advertised_routes: req.advertise_routes,
            lan_access: req.lan_access,
            path_key: req.path_key,
            home_relay,
        };
        let verified = started.elapsed();
        if store.update_node(node.id, &update)? {
            network.reload().map_err(ApiFailure::from)?;
        }
        tracing::debug!(
            node = %node.id,
            verify_ms = verified.as_secs_f64() * 1000.0,
            total_ms = started.elapsed().as_secs_f64() * 1000.0,
            "node update handled"
        );
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}
