//! `rustynet-lab fake-control`: a scripted stand-in for the control server.
//!
//! The trust tests need control to send maps the real one never would
//! (replayed, expired, future-dated, badly signed) and then watch the node
//! refuse them. This server speaks TLS 1.3 with the real control's
//! certificate and key, so the node's pinned CA accepts it; `POST /v1/map`
//! streams [`StreamFrame`]s from a script, `POST /v1/update` answers 204 and
//! anything else 404. Request signatures are not checked: the point is what
//! the node does with what it receives.
//!
//! The script is an NDJSON file of frames, re-read every 200 ms. Whenever its
//! content changes, every open map stream of the scripted node is sent the
//! new frames (a new stream gets the current ones first), so one process
//! serves a whole sequence of cases. Other nodes only get keepalives.

use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustynet_control::datadir::DataDir;
use rustynet_proto::NodeId;
use rustynet_proto::control_api::{AUTH_HEADER, RequestAuth, StreamFrame, paths};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

use crate::cluster::{CONTROL_PORT, Cluster, wait_for};
use crate::topology::CONTROL_IP;

/// How `fake-control` is run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The real control's data directory (its TLS certificate and key).
    pub data_dir: PathBuf,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// NDJSON file of [`StreamFrame`]s.
    pub script: PathBuf,
    /// The only node that gets the script (others get keepalives); every
    /// node when `None`.
    pub node: Option<u64>,
}

/// How often the script file is re-read.
const SCRIPT_POLL: Duration = Duration::from_millis(200);
/// Keepalive interval on map streams (the node gives up after 45 s).
const KEEPALIVE: Duration = Duration::from_secs(10);

type Body = BoxBody<Bytes, Infallible>;

/// One line on stdout (the lab captures it into the helper's log), with
/// unix milliseconds to line it up with the daemons' logs.
fn log(line: &str) {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{ms} {line}");
    let _ = out.flush();
}

/// Runs the server until killed.
pub fn serve(opts: Options) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(Arc::new(opts)))
}

async fn run(opts: Arc<Options>) -> anyhow::Result<()> {
    let dd = DataDir::new(&opts.data_dir);
    let tls = rustynet_control::tls::server_config(&dd.server_cert(), &dd.server_key())?;
    let acceptor = TlsAcceptor::from(tls);
    let listener = TcpListener::bind(opts.listen).await?;
    log(&format!(
        "fake control listening on {} (TLS 1.3)",
        opts.listen
    ));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                log(&format!("accept failed: {e}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let opts = opts.clone();
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        log(&format!("TLS handshake with {peer} failed: {e}"));
                        return;
                    }
                    Err(_) => return,
                };
            let service = service_fn(move |req| handle(req, opts.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

fn empty(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(Empty::new().boxed());
    *r.status_mut() = status;
    r
}

async fn handle(req: Request<Incoming>, opts: Arc<Options>) -> Result<Response<Body>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let node = req
        .headers()
        .get(AUTH_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| RequestAuth::parse_header(v).ok())
        .map(|a| a.node_id.0);
    // The bodies are small; read them so the connection stays in step.
    let _ = req.into_body().collect().await;
    if method != Method::POST {
        return Ok(empty(StatusCode::NOT_FOUND));
    }
    match path.as_str() {
        paths::UPDATE => {
            log(&format!("update from node {node:?}"));
            Ok(empty(StatusCode::NO_CONTENT))
        }
        paths::MAP_STREAM => {
            let scripted = opts.node.is_none() || node == opts.node;
            log(&format!(
                "map stream opened by node {node:?} (scripted: {scripted})"
            ));
            let (tx, rx) = mpsc::channel::<Bytes>(16);
            let script = scripted.then(|| opts.script.clone());
            tokio::spawn(stream_task(script, node, tx));
            let frames = futures::stream::unfold(rx, |mut rx| async move {
                rx.recv()
                    .await
                    .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
            });
            let mut r = Response::new(StreamBody::new(frames).boxed());
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/x-ndjson"),
            );
            Ok(r)
        }
        _ => {
            let mut r = Response::new(
                Full::new(Bytes::from_static(
                    br#"{"code":"not_found","message":"no such endpoint"}"#,
                ))
                .boxed(),
            );
            *r.status_mut() = StatusCode::NOT_FOUND;
            Ok(r)
        }
    }
}

fn line(frame: &StreamFrame) -> Bytes {
    let mut v = serde_json::to_vec(frame).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

/// The generation a map frame claims (for the log; read without checks).
fn claimed_generation(frame: &StreamFrame) -> Option<u64> {
    let StreamFrame::Map { envelope, .. } = frame else {
        return None;
    };
    serde_json::from_slice::<serde_json::Value>(envelope.body_bytes())
        .ok()?
        .get("generation")?
        .as_u64()
}

async fn stream_task(script: Option<PathBuf>, node: Option<u64>, tx: mpsc::Sender<Bytes>) {
    let mut last: Option<Vec<u8>> = None;
    let mut keepalive = Instant::now();
    loop {
        if let Some(path) = &script {
            let current = tokio::fs::read(path).await.unwrap_or_default();
            if last.as_ref() != Some(&current) {
                log(&format!(
                    "script changed ({} bytes), sending it to node {node:?}",
                    current.len()
                ));
                for text in String::from_utf8_lossy(&current).lines() {
                    if text.trim().is_empty() {
                        continue;
                    }
                    let frame: StreamFrame = match serde_json::from_str(text) {
                        Ok(f) => f,
                        Err(e) => {
                            log(&format!("script line skipped: {e}"));
                            continue;
                        }
                    };
                    if tx.send(line(&frame)).await.is_err() {
                        log(&format!("map stream of node {node:?} closed"));
                        return;
                    }
                    log(&format!(
                        "sent frame (claimed generation {:?}) to node {node:?}",
                        claimed_generation(&frame)
                    ));
                }
                last = Some(current);
            }
        }
        if keepalive.elapsed() >= KEEPALIVE {
            if tx.send(line(&StreamFrame::Keepalive)).await.is_err() {
                return;
            }
            keepalive = Instant::now();
        }
        tokio::select! {
            _ = tokio::time::sleep(SCRIPT_POLL) => {}
            _ = tx.closed() => {
                log(&format!("map stream of node {node:?} closed"));
                return;
            }
        }
    }
}

/// A `fake-control` process in the router namespace at the real control's
/// address (stop the real one first); killed on drop.
#[derive(Debug)]
pub struct FakeControl {
    child: Option<Child>,
    /// Its log.
    pub log: PathBuf,
    /// The script it serves.
    pub script: PathBuf,
}

impl FakeControl {
    /// Starts it with an empty script, serving the script to `node` only.
    pub fn start(cluster: &Cluster<'_>, node: NodeId) -> anyhow::Result<Self> {
        let lab = cluster.lab;
        let script = lab.path(&format!("fake-control-{}.ndjson", node.0));
        std::fs::write(&script, b"")?;
        let log = lab.path(&format!("fake-control-{}.log", node.0));
        let listen = format!("{CONTROL_IP}:{CONTROL_PORT}");
        let args = [
            cluster.bins.lab.to_string_lossy().into_owned(),
            "fake-control".into(),
            "--data-dir".into(),
            cluster.control_dir.to_string_lossy().into_owned(),
            "--listen".into(),
            listen,
            "--script".into(),
            script.to_string_lossy().into_owned(),
            "--node".into(),
            node.0.to_string(),
        ];
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let child = lab.router.spawn(&argv, &log)?;
        let fake = Self {
            child: Some(child),
            log,
            script,
        };
        wait_for(Duration::from_secs(20), || {
            fake.log_text().contains("listening").then_some(())
        })
        .ok_or_else(|| anyhow::anyhow!("fake control did not start: {}", fake.log_text()))?;
        Ok(fake)
    }

    /// Replaces the script (atomically: the server never reads half of it).
    pub fn set_script(&self, frames: &[StreamFrame]) -> anyhow::Result<()> {
        let mut text = String::new();
        for f in frames {
            text.push_str(&serde_json::to_string(f)?);
            text.push('\n');
        }
        write_atomic(&self.script, text.as_bytes())
    }

    /// What it logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the process is still running (for failure messages).
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }
}

fn write_atomic(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

impl Drop for FakeControl {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
