//! The plain-HTTP `GET /metrics` endpoint every Rustynet service offers on
//! its own listener (operators bind it to loopback or a private address).
//!
//! Bounded so a scraper cannot be turned into a resource drain: at most
//! `limit` connections at once (more wait in the kernel's backlog), a
//! request head must arrive within [`HEADER_TIMEOUT`], and a connection
//! lives at most [`CONNECTION_TIMEOUT`]. An accept error (out of file
//! descriptors, a connection reset before it was accepted) is logged and
//! retried after a pause: it never ends the endpoint.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::{TokioIo, TokioTimer};

/// Most scrapes served at once; more connections wait for a slot (a
/// Prometheus server needs one, so this only bounds abuse).
pub const MAX_CONNECTIONS: usize = 16;
/// A connection that has not sent its request head by then is closed.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// A whole connection is closed after this long, whatever it does.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// A source of connections (the TCP listener; tests script failures).
pub trait Accept: Send {
    /// The connection type.
    type Conn: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static;
    /// The next connection.
    fn accept(&mut self) -> impl Future<Output = std::io::Result<Self::Conn>> + Send;
}

impl Accept for tokio::net::TcpListener {
    type Conn = tokio::net::TcpStream;
    async fn accept(&mut self) -> std::io::Result<Self::Conn> {
        tokio::net::TcpListener::accept(self).await.map(|(s, _)| s)
    }
}

/// Serves `GET /metrics` on `listener` with at most `limit` connections at
/// once until the task is dropped; `render` makes the exposition text for
/// each scrape.
pub async fn serve_on<L, R>(mut listener: L, render: R, limit: usize)
where
    L: Accept,
    R: Fn() -> String + Send + Sync + 'static,
{
    let render = Arc::new(render);
    let slots = Arc::new(tokio::sync::Semaphore::new(limit.max(1)));
    loop {
        // Wait for a free slot before accepting: excess connections queue in
        // the kernel's backlog instead of costing a task and a descriptor.
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let conn = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "metrics accept failed; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let render = render.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, connection(conn, render)).await;
        });
    }
}

async fn connection<C, R>(conn: C, render: Arc<R>)
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    R: Fn() -> String + Send + Sync + 'static,
{
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let render = render.clone();
        async move {
            let (status, body) =
                if req.method() == hyper::Method::GET && req.uri().path() == "/metrics" {
                    (200, render())
                } else {
                    (404, "not found\n".to_owned())
                };
            hyper::Response::builder()
                .status(status)
                .header("content-type", "text/plain; version=0.0.4")
                .body(Full::new(Bytes::from(body)))
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(conn), service)
        .await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::net::SocketAddr;

    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// Fails its first `fail` accepts, then hands out real connections.
    struct Flaky {
        fail: usize,
        inner: tokio::net::TcpListener,
    }

    impl Accept for Flaky {
        type Conn = tokio::net::TcpStream;
        async fn accept(&mut self) -> std::io::Result<Self::Conn> {
            if self.fail > 0 {
                self.fail -= 1;
                // EMFILE: out of file descriptors.
                return Err(std::io::Error::from_raw_os_error(24));
            }
            self.inner.accept().await.map(|(s, _)| s)
        }
    }

    async fn request(addr: SocketAddr, head: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    async fn scrape(addr: SocketAddr) -> String {
        request(
            addr,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await
    }

    fn render() -> String {
        "rustynet_up 1\n".to_owned()
    }

    #[tokio::test]
    async fn serves_metrics_and_nothing_else() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve_on(listener, render, 4));
        let body = scrape(addr).await;
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
        assert!(body.ends_with("rustynet_up 1\n"), "{body}");
        for head in [
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        ] {
            let other = request(addr, head).await;
            assert!(other.starts_with("HTTP/1.1 404"), "{other}");
        }
        server.abort();
    }

    #[tokio::test]
    async fn accept_errors_do_not_end_the_endpoint() {
        let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = inner.local_addr().unwrap();
        let server = tokio::spawn(serve_on(Flaky { fail: 3, inner }, render, 4));
        let body = tokio::time::timeout(Duration::from_secs(10), scrape(addr))
            .await
            .unwrap();
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
        assert!(!server.is_finished());
        server.abort();
    }

    #[tokio::test]
    async fn connections_beyond_the_limit_wait_and_idle_ones_are_closed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve_on(listener, render, 2));
        // Two idle connections take both slots.
        let idle1 = tokio::net::TcpStream::connect(addr).await.unwrap();
        let idle2 = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        // A third is not served while they hold the slots...
        let blocked = tokio::time::timeout(Duration::from_millis(1500), scrape(addr)).await;
        assert!(blocked.is_err(), "served beyond the connection limit");
        // ...and is once the header timeout closes the idle ones.
        let mut idle1 = idle1;
        let mut buf = [0u8; 1];
        let closed = tokio::time::timeout(
            HEADER_TIMEOUT + Duration::from_secs(3),
            idle1.read(&mut buf),
        )
        .await
        .unwrap();
        assert!(
            matches!(closed, Ok(0) | Err(_)),
            "idle connection not closed: {closed:?}"
        );
        drop(idle2);
        let body = tokio::time::timeout(Duration::from_secs(10), scrape(addr))
            .await
            .unwrap();
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
        server.abort();
    }
}
