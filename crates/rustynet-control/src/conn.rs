//! One client connection: TLS 1.3, then HTTP/1.1 only, under deadlines.
//!
//! HTTP/2 is not spoken at all (ALPN offers only `http/1.1`, and a client
//! that starts with the HTTP/2 preface anyway gets an HTTP/1 error, not an
//! HTTP/2 session). Each phase has a deadline: the TLS handshake, the
//! request head (which is also the idle limit between requests on a
//! keep-alive connection: waiting for the next head is reading it) and the
//! request body ([`crate::api`]). The map stream's response is long-lived by
//! design and carries keepalives.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use crate::api::{Connection, PeerAddr};
use crate::conn_limits::ConnSlot;

/// What every connection is served with.
pub(crate) struct ConnConfig {
    pub acceptor: TlsAcceptor,
    pub app: Router,
    pub handshake_timeout: Duration,
    pub header_timeout: Duration,
    pub metrics: crate::metrics::ControlMetrics,
}

/// Serves `tcp` until it ends, fails a deadline or is evicted.
pub(crate) async fn serve(tcp: TcpStream, peer: SocketAddr, slot: ConnSlot, cfg: Arc<ConnConfig>) {
    let slot = Arc::new(slot);
    // A map goes out as several writes (head, body, tail) and the node acts
    // on it only at the line's end: with Nagle's algorithm the last small
    // write waited for the node's delayed acknowledgement (up to 40 ms on
    // Linux) before leaving. Failing only costs that latency.
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
    }
    let handshake = tokio::time::timeout(cfg.handshake_timeout, cfg.acceptor.accept(tcp));
    let tls = tokio::select! {
        done = handshake => match done {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::info!(%peer, error = %e, "TLS handshake refused");
                cfg.metrics.rejected("tls_handshake");
                return;
            }
            Err(_) => {
                tracing::info!(%peer, "TLS handshake timed out");
                cfg.metrics.rejected("tls_handshake");
                return;
            }
        },
        () = slot.evicted() => return,
    };
    let conn_slot = slot.clone();
    let service = TowerToHyperService::new(cfg.app.clone().map_request(
        move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(PeerAddr(peer));
            req.extensions_mut().insert(Connection(conn_slot.clone()));
            req
        },
    ));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(cfg.header_timeout);
    let served = http.serve_connection(TokioIo::new(tls), service);
    tokio::select! {
        result = served => {
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with error");
            }
        }
        () = slot.evicted() => {
            tracing::debug!(%peer, "connection evicted to make room");
        }
    }
}
