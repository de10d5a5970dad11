//! `rustynet-relay`: the standalone relay server.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use clap::{Parser, Subcommand};
use rustynet_proto::SigningPublicKey;
use rustynet_relay::core::Limits;
use rustynet_relay::{ServerConfig, tls};

#[derive(Parser)]
#[command(name = "rustynet-relay", version, about = "Rustynet relay server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a self-signed TLS certificate and key; print the key's pin.
    Init {
        /// Directory for relay.pem and relay.key (created 0700).
        #[arg(long)]
        data_dir: PathBuf,
        /// Name put in the certificate (informational: nodes trust the pin).
        #[arg(long = "san", default_value = "rustynet-relay")]
        sans: Vec<String>,
    },
    /// Print the SPKI SHA-256 pin of a certificate (PEM).
    Pin {
        /// Certificate file.
        #[arg(long)]
        cert: PathBuf,
    },
    /// Serve the relay.
    Serve {
        /// TCP address for TLS (repeatable).
        #[arg(long, required = true)]
        listen: Vec<SocketAddr>,
        /// TLS certificate chain (PEM).
        #[arg(long)]
        cert: PathBuf,
        /// TLS private key (PEM, owner-only).
        #[arg(long)]
        key: PathBuf,
        /// Control signing public key, base64 (repeatable).
        #[arg(long = "control-key")]
        control_keys: Vec<String>,
        /// File with control signing public keys, one base64 key per line.
        #[arg(long)]
        control_key_file: Option<PathBuf>,
        /// UDP address answering binding requests (repeatable; two IPs let
        /// nodes detect destination-dependent NAT).
        #[arg(long = "stun")]
        stun: Vec<SocketAddr>,
        /// Most open connections.
        #[arg(long, default_value_t = Limits::default().max_conns)]
        max_conns: usize,
        /// Forwarded bytes per second per node (0: unlimited).
        #[arg(long, default_value_t = Limits::default().rate_bytes_per_sec)]
        rate: u64,
        /// Burst of the per-node bucket, bytes.
        #[arg(long, default_value_t = Limits::default().burst_bytes)]
        burst: u64,
        /// Plain-HTTP Prometheus /metrics address.
        #[arg(long)]
        metrics: Option<SocketAddr>,
    },
}

fn main() -> ExitCode {
    rustynet_service::alloc::tune_allocator();
    if let Some(code) =
        rustynet_service::docs::generate_if_asked(<Cli as clap::CommandFactory>::command, "8")
    {
        return code;
    }
    // journald-native under systemd, JSON lines otherwise (same fields as
    // rustynetd and rustynet-control).
    rustynet_service::init_logging("rustynet-relay");
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Init { data_dir, sans } => init(&data_dir, &sans),
        Command::Pin { cert } => {
            println!("{}", B64.encode(tls::spki_sha256_of_pem_file(&cert)?));
            Ok(())
        }
        Command::Serve {
            listen,
            cert,
            key,
            control_keys,
            control_key_file,
            stun,
            max_conns,
            rate,
            burst,
            metrics,
        } => {
            let control_keys = load_control_keys(&control_keys, control_key_file.as_deref())?;
            let limits = Limits {
                max_conns,
                rate_bytes_per_sec: rate,
                burst_bytes: burst,
                ..Limits::default()
            };
            raise_fd_limit(max_conns);
            let config = ServerConfig {
                listen,
                tls: tls::server_config(&cert, &key)?,
                control_keys,
                binding: stun,
                metrics,
                limits,
            };
            let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
            runtime.block_on(async {
                let server = rustynet_relay::RelayServer::bind(config).await?;
                tracing::info!(
                    listen = ?server.local_addrs(),
                    stun = ?server.binding_addrs(),
                    metrics = ?server.metrics_addr(),
                    "relay serving"
                );
                server.run(wait_for_signal()).await
            })?;
            Ok(())
        }
    }
}

fn init(dir: &Path, sans: &[String]) -> anyhow::Result<()> {
    let cert_path = dir.join("relay.pem");
    let key_path = dir.join("relay.key");
    if cert_path.exists() || key_path.exists() {
        bail!(
            "{} already holds a relay certificate (refusing to overwrite)",
            dir.display()
        );
    }
    fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .with_context(|| dir.display().to_string())?;
    let generated = tls::self_signed(sans)?;
    write_new(&key_path, generated.key_pem.as_bytes(), 0o600)?;
    write_new(&cert_path, generated.cert_pem.as_bytes(), 0o644)?;
    println!("cert: {}", cert_path.display());
    println!("key: {}", key_path.display());
    println!("spki-sha256: {}", B64.encode(generated.pin));
    Ok(())
}

fn write_new(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| path.display().to_string())?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .with_context(|| path.display().to_string())
}

fn load_control_keys(
    inline: &[String],
    file: Option<&Path>,
) -> anyhow::Result<Vec<SigningPublicKey>> {
    let mut texts: Vec<String> = inline.to_vec();
    if let Some(path) = file {
        let content = fs::read_to_string(path).with_context(|| path.display().to_string())?;
        texts.extend(
            content
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned),
        );
    }
    let mut keys = Vec::new();
    for text in texts {
        let key: SigningPublicKey = text
            .parse()
            .with_context(|| format!("control key {text:?}"))?;
        if !key.is_valid() {
            bail!("control key {text:?} is not a valid Ed25519 key");
        }
        keys.push(key);
    }
    if keys.is_empty() {
        bail!("give the control signing key with --control-key or --control-key-file");
    }
    Ok(keys)
}

/// Lifts the soft open-file limit toward the hard one so `--max-conns`
/// connections fit (each needs a descriptor).
fn raise_fd_limit(max_conns: usize) {
    let want = (max_conns as u64).saturating_add(256);
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit the call writes into.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 || limit.rlim_cur >= want {
        return;
    }
    limit.rlim_cur = want.min(limit.rlim_max);
    // SAFETY: `limit` is a valid, initialised rlimit read by the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        tracing::warn!("could not raise the open-file limit");
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
