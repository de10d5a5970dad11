//! The control server under test: a `rustynet-control serve` child process
//! (what the benchmark measures), one already running, or a server in this
//! process (the CI smoke test, which checks correctness only).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rustynet_control::datadir::DataDir;
use rustynet_control::server::{RunningServer, ServeOptions, start};
use rustynet_control_client::ControlClient;

use crate::LoadError;

/// How the server under test is run.
#[derive(Debug, Clone)]
pub enum ServerSpec {
    /// Spawn `BIN serve` on the data directory (`extra` appended to its
    /// arguments); one process per replica.
    Spawn {
        /// The `rustynet-control` binary.
        bin: PathBuf,
        /// Replicas to start (each on its own port).
        replicas: usize,
        /// More `serve` arguments (e.g. `--database URL`).
        extra: Vec<String>,
    },
    /// A server already running on the data directory.
    Attach {
        /// Its control URLs (one per replica).
        urls: Vec<String>,
        /// Its process ids (one per replica).
        pids: Vec<u32>,
    },
    /// A server inside this process (tests).
    InProcess,
}

/// One running replica.
pub enum Replica {
    /// A child process (killed when dropped).
    Child(Child),
    /// Someone else's process.
    External(u32),
    /// Inside this process.
    InProcess(Box<RunningServer>),
}

impl Replica {
    /// The process to measure.
    pub fn pid(&self) -> u32 {
        match self {
            Replica::Child(c) => c.id(),
            Replica::External(pid) => *pid,
            Replica::InProcess(_) => std::process::id(),
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Replica::Child(child) = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The running server: its replicas and their URLs.
pub struct Server {
    /// Replicas, in the order of `urls`.
    pub replicas: Vec<Replica>,
    /// `https://127.0.0.1:PORT` of each replica.
    pub urls: Vec<String>,
}

impl Server {
    /// Starts (or attaches to) the server and waits until every replica
    /// answers over TLS.
    pub async fn start(
        spec: &ServerSpec,
        data: &DataDir,
        data_path: &Path,
        database: Option<&str>,
        logs: &Path,
    ) -> Result<Self, LoadError> {
        let setup =
            |what: &str, e: &dyn std::fmt::Display| LoadError::Setup(format!("{what}: {e}"));
        let server = match spec {
            ServerSpec::Spawn {
                bin,
                replicas,
                extra,
            } => {
                let mut started = Vec::new();
                let mut urls = Vec::new();
                for r in 0..(*replicas).max(1) {
                    let addr = free_port().map_err(|e| setup("no free port", &e))?;
                    let log = std::fs::File::create(logs.join(format!("serve-{r}.log")))
                        .map_err(|e| setup("serve log", &e))?;
                    let child = Command::new(bin)
                        .arg("serve")
                        .arg("--data-dir")
                        .arg(data_path)
                        .arg("--listen")
                        .arg(addr.to_string())
                        .args(database.map(|db| ["--database", db]).into_iter().flatten())
                        .args(extra)
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(log)
                        .spawn()
                        .map_err(|e| setup(&format!("spawn {}", bin.display()), &e))?;
                    started.push(Replica::Child(child));
                    urls.push(format!("https://{addr}"));
                }
                Self {
                    replicas: started,
                    urls,
                }
            }
            ServerSpec::Attach { urls, pids } => Self {
                replicas: pids.iter().map(|p| Replica::External(*p)).collect(),
                urls: urls.clone(),
            },
            ServerSpec::InProcess => {
                let listen: SocketAddr = ([127, 0, 0, 1], 0).into();
                let running = start(data, ServeOptions::new(listen))
                    .await
                    .map_err(|e| setup("start server", &e))?;
                let url = format!("https://{}", running.addr);
                Self {
                    replicas: vec![Replica::InProcess(Box::new(running))],
                    urls: vec![url],
                }
            }
        };
        let ca = std::fs::read_to_string(data.ca_cert()).map_err(|e| setup("read CA", &e))?;
        for url in &server.urls {
            wait_healthy(url, &ca).await?;
        }
        Ok(server)
    }

    /// Process ids to measure (the same id twice for an in-process server
    /// is never the case: it has one replica).
    pub fn pids(&self) -> Vec<u32> {
        self.replicas.iter().map(Replica::pid).collect()
    }
}

/// A port free on 127.0.0.1 now.
fn free_port() -> std::io::Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    l.local_addr()
}

async fn wait_healthy(url: &str, ca: &str) -> Result<(), LoadError> {
    let client = ControlClient::new(url, ca).map_err(|e| LoadError::Setup(e.to_string()))?;
    let mut last = String::new();
    for _ in 0..300 {
        match client.health().await {
            Ok(()) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(LoadError::Setup(format!(
        "server at {url} never answered: {last}"
    )))
}
