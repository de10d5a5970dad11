//! `rustynet-control`: the control server and its admin commands.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use rustynet_control::datadir::DataDir;
use rustynet_control::server::{ServeOptions, start};
use rustynet_control::{admin, now_unix};

#[derive(Parser)]
#[command(name = "rustynet-control", version, about = "Rustynet control server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the CA, TLS certificate, signing key and database.
    Init {
        /// Data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// Magic DNS suffix.
        #[arg(long, default_value = "rustynet.internal")]
        suffix: String,
        /// DNS name or IP address the server certificate is valid for (repeatable).
        #[arg(long = "san")]
        sans: Vec<String>,
        /// Encrypt the signing key under the secret in this file (e.g. a systemd credential).
        #[arg(long)]
        key_encryption_file: Option<PathBuf>,
    },
    /// Serve the control API over TLS 1.3. `--config FILE` reads these
    /// settings from a TOML file (keys are the flags' names with `_`;
    /// flags given here win), e.g. /etc/rustynet/control.toml.
    Serve {
        /// Data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// Address to listen on.
        #[arg(long)]
        listen: SocketAddr,
        /// Validity of each signed map (re-signed at half), e.g. 30m.
        #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
        map_ttl: Duration,
        /// The secret the signing key was encrypted under at init.
        #[arg(long)]
        key_encryption_file: Option<PathBuf>,
        /// Most connections open at once (also capped by the open-file limit).
        #[arg(long, default_value_t = 16_384)]
        max_connections: usize,
        /// Most connections from one address (IPv6: one /64); every node
        /// behind one NAT holds a map stream.
        #[arg(long, default_value_t = 1024)]
        max_connections_per_source: usize,
    },
    /// Set or show the ACL policy.
    Policy {
        #[command(subcommand)]
        action: PolicyAction,
    },
    /// Create pre-auth keys.
    Preauth {
        #[command(subcommand)]
        action: PreauthAction,
    },
    /// List, expire or remove nodes.
    Nodes {
        #[command(subcommand)]
        action: NodesAction,
    },
}

#[derive(Subcommand)]
enum PolicyAction {
    /// Validate and store a policy file (nothing changes if it is invalid).
    Set {
        /// Policy JSON file.
        file: PathBuf,
        /// Data directory.
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Print the stored policy.
    Get {
        /// Data directory.
        #[arg(long)]
        data_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum PreauthAction {
    /// Create a pre-auth key; prints only the key.
    Create {
        /// Owner of nodes enrolled with it.
        #[arg(long)]
        user: String,
        /// Tag for enrolled nodes (repeatable; must be owned by the user).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Allow more than one enrollment.
        #[arg(long)]
        reusable: bool,
        /// Lifetime, e.g. 1h.
        #[arg(long, value_parser = humantime::parse_duration)]
        expires: Option<Duration>,
        /// Data directory.
        #[arg(long)]
        data_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum NodesAction {
    /// List nodes.
    List {
        /// Data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// One JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Expire a node: it gets no more maps and disappears from its peers'.
    Expire {
        /// Host label.
        name: String,
        /// Data directory.
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Remove a node.
    Remove {
        /// Host label.
        name: String,
        /// Data directory.
        #[arg(long)]
        data_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    if let Some(done) =
        rustynet_service::docs::generate_if_asked(<Cli as clap::CommandFactory>::command, "8")
    {
        return match done {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    rustynet_service::init_logging("rustynet-control");
    let args = match rustynet_control::config_file::expand(std::env::args_os().collect()) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match run(Cli::parse_from(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Init {
            data_dir,
            suffix,
            mut sans,
            key_encryption_file,
        } => {
            if sans.is_empty() {
                sans = vec!["localhost".into(), "127.0.0.1".into()];
            }
            let report =
                data_dir_with(data_dir, key_encryption_file.as_deref())?.init(&suffix, &sans)?;
            println!("ca certificate: {}", report.ca_cert.display());
            println!("signing public key: {}", report.signing_public_key);
        }
        Command::Serve {
            data_dir,
            listen,
            map_ttl,
            key_encryption_file,
            max_connections,
            max_connections_per_source,
        } => {
            let data = data_dir_with(data_dir, key_encryption_file.as_deref())?;
            let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
            runtime.block_on(async {
                let mut opts = ServeOptions::new(listen);
                opts.map_ttl = map_ttl;
                opts.max_connections = max_connections;
                opts.max_connections_per_source = max_connections_per_source;
                let server = start(&data, opts).await?;
                println!("listening on {}", server.addr);
                if let Err(e) = rustynet_service::notify("READY=1") {
                    tracing::warn!(error = %e, "cannot notify the service manager");
                }
                wait_for_signal().await;
                server.shutdown();
                anyhow::Ok(())
            })?;
        }
        Command::Policy { action } => match action {
            PolicyAction::Set { file, data_dir } => {
                admin::policy_set(&DataDir::new(data_dir), &file)?;
                println!("policy updated");
            }
            PolicyAction::Get { data_dir } => {
                println!("{}", admin::policy_get(&DataDir::new(data_dir))?);
            }
        },
        Command::Preauth {
            action:
                PreauthAction::Create {
                    user,
                    tags,
                    reusable,
                    expires,
                    data_dir,
                },
        } => {
            let (key, _) =
                admin::preauth_create(&DataDir::new(data_dir), &user, &tags, reusable, expires)?;
            println!("{}", key.as_str());
        }
        Command::Nodes { action } => nodes(action)?,
    }
    Ok(())
}

fn data_dir_with(root: PathBuf, kek_file: Option<&std::path::Path>) -> anyhow::Result<DataDir> {
    let data = DataDir::new(root);
    Ok(match kek_file {
        Some(path) => data.with_key_encryption(rustynet_proto::keyseal::kek_from_file(path)?),
        None => data,
    })
}

fn nodes(action: NodesAction) -> anyhow::Result<()> {
    match action {
        NodesAction::List { data_dir, json } => {
            let nodes = admin::nodes_list(&DataDir::new(data_dir))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&nodes)?);
                return Ok(());
            }
            let now = now_unix();
            println!(
                "ID     NAME                     TUNNEL IP        USER         STATE      TAGS/ADVERTISED"
            );
            for n in nodes {
                let state = if n.is_expired(now) {
                    "expired"
                } else {
                    "active"
                };
                let mut extra = n.tags.join(",");
                if n.advertise_exit_node {
                    extra.push_str(" exit-node");
                }
                for r in &n.advertised_routes {
                    extra.push_str(&format!(" route:{r}"));
                }
                println!(
                    "{:<6} {:<24} {:<16} {:<12} {:<10} {}",
                    n.id.0,
                    n.hostname,
                    n.tunnel_ip,
                    n.user,
                    state,
                    extra.trim()
                );
            }
        }
        NodesAction::Expire { name, data_dir } => {
            let n = admin::nodes_expire(&DataDir::new(data_dir), &name)?;
            println!("expired {} ({})", n.hostname, n.tunnel_ip);
        }
        NodesAction::Remove { name, data_dir } => {
            let n = admin::nodes_remove(&DataDir::new(data_dir), &name)?;
            println!("removed {} ({})", n.hostname, n.tunnel_ip);
        }
    }
    Ok(())
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
