//! `POST /v1/relay-ticket`: a fresh relay ticket for the calling node.
//!
//! Authenticated and rate-limited like `/v1/update` (its own bucket, so
//! fetching tickets never starves a node's updates); the ticket states the
//! node's peers in the current network state ([`crate::relay_tickets`]).

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use rustynet_proto::control_api::{API_VERSION, RelayTicketRequest, RelayTicketResponse, paths};

use super::{ApiFailure, AppState, blocking, parse_json, read_body};
use crate::auth::{SignedRequest, verify_node};
use crate::relay_tickets::TicketRefusal;
use crate::store::RateKind;
use crate::{now_unix, now_unix_ms};

pub(super) async fn relay_ticket(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<RelayTicketResponse>, ApiFailure> {
    let bytes = read_body(body, app.body_timeout).await?;
    let req: RelayTicketRequest = parse_json(&bytes)?;
    if req.version != API_VERSION {
        return Err(ApiFailure::bad_request("unsupported API version"));
    }
    let state = app.clone();
    let ticket = blocking(move || {
        let network = &state.network;
        let store = network.store().as_ref();
        let signed = SignedRequest {
            method: "POST",
            path: paths::RELAY_TICKET,
            headers: &headers,
            body: &bytes,
        };
        let node = verify_node(store, &signed, now_unix_ms())?;
        if !state.allow_node(&state.ticket_limit, RateKind::RelayTicket, node.id)? {
            return Err(ApiFailure::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many relay-ticket requests from this node; retry later",
            ));
        }
        let snapshot = network.current();
        let generation = || store.reserve_generations(1).map(|range| range.start);
        state
            .tickets
            .issue(
                &snapshot,
                node.id,
                &state.signer().key,
                now_unix(),
                generation,
            )
            .map_err(|e| match e {
                TicketRefusal::NotLive => ApiFailure::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not_ready",
                    "this node is not in the current network state; retry later",
                ),
                TicketRefusal::Store(e) => ApiFailure::from(e),
                TicketRefusal::Seal(e) => {
                    tracing::error!(error = %e, "cannot seal a relay ticket");
                    ApiFailure::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal",
                        "internal error",
                    )
                }
            })
    })
    .await?;
    Ok(Json(RelayTicketResponse {
        version: API_VERSION,
        ticket,
    }))
}
