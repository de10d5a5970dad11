//! `rustynet`: the command-line client of `rustynetd`. It keeps no state of
//! its own; every command is one request over the daemon's IPC socket.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod client;
mod render;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ipnet::IpNet;
use rustynet_proto::control_api::SecretString;
use rustynet_proto::ipc::{Command, UpArgs};

#[derive(Parser)]
#[command(name = "rustynet", version, about = "Rustynet mesh VPN client")]
struct Cli {
    /// Daemon socket.
    #[arg(long, global = true, default_value = "/run/rustynet/rustynetd.sock")]
    socket: PathBuf,
    /// Print one JSON document instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Enroll (if needed) and connect.
    Up {
        /// Control server, https://HOST:PORT.
        #[arg(long)]
        control: String,
        /// The control CA certificate to pin.
        #[arg(long)]
        ca_cert: PathBuf,
        /// Pre-auth key (needed only to enroll).
        #[arg(long, conflicts_with = "auth_key_file")]
        auth_key: Option<String>,
        /// Read the pre-auth key from a file instead (keeps it out of the process list).
        #[arg(long)]
        auth_key_file: Option<PathBuf>,
        /// Host name to ask for.
        #[arg(long)]
        hostname: Option<String>,
        /// Offer this node as an exit node.
        #[arg(long)]
        advertise_exit_node: bool,
        /// LAN prefixes to offer, comma-separated.
        #[arg(long, value_delimiter = ',')]
        advertise_routes: Vec<IpNet>,
        /// Renew this node's keys with the pre-auth key (after they expired,
        /// or to replace them); it keeps its name and address.
        #[arg(long)]
        force_reauth: bool,
    },
    /// Disconnect and restore routes, firewall and DNS.
    Down,
    /// Show state, peers, exit node and LAN access.
    Status,
    /// Exit nodes.
    ExitNode {
        #[command(subcommand)]
        action: ExitAction,
    },
    /// Reach the exit node's LAN (on) or not (off).
    LanAccess {
        /// on or off.
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
    /// Advertise or withdraw LAN routes.
    Route {
        #[command(subcommand)]
        action: RouteAction,
    },
    /// Magic DNS.
    Dns {
        #[command(subcommand)]
        action: DnsAction,
    },
    /// UDP reachability, mapped addresses and NAT behaviour, relay round
    /// trips, control reachability.
    Netcheck,
    /// Ping a peer on its path and show which path each answer took.
    Ping {
        /// Host name, Magic DNS name or tunnel IP.
        name: String,
        /// Pings to send, one a second (default 1; 10 with --until-direct).
        #[arg(short = 'c', long = "count")]
        count: Option<u32>,
        /// Ping every path the peer may have and stop at the first answer
        /// over a direct path.
        #[arg(long)]
        until_direct: bool,
    },
    /// Print the client's version and, when it answers, the daemon's.
    Version,
}

#[derive(Subcommand)]
enum ExitAction {
    /// Exit nodes this node may use.
    List,
    /// Send all internet traffic through NAME.
    Select {
        /// Host name or Magic DNS name.
        name: String,
    },
    /// Stop using an exit node.
    Off,
}

#[derive(Subcommand)]
enum RouteAction {
    /// Offer LAN prefixes.
    Advertise {
        /// Prefixes.
        #[arg(required = true)]
        cidrs: Vec<IpNet>,
    },
    /// Withdraw LAN prefixes.
    Withdraw {
        /// Prefixes.
        #[arg(required = true)]
        cidrs: Vec<IpNet>,
    },
}

#[derive(Subcommand)]
enum DnsAction {
    /// Records, resolver, protection, and why a name resolves as it does.
    Inspect {
        /// A name to explain.
        name: Option<String>,
    },
    /// Protected DNS without an exit node (always on with one): DNS to
    /// anything but Magic DNS is dropped.
    Protect {
        /// on or off.
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
}

fn command(cmd: Cmd) -> anyhow::Result<Command> {
    Ok(match cmd {
        Cmd::Up {
            control,
            ca_cert,
            auth_key,
            auth_key_file,
            hostname,
            advertise_exit_node,
            advertise_routes,
            force_reauth,
        } => {
            let ca_cert_pem = std::fs::read_to_string(&ca_cert)
                .map_err(|e| anyhow::anyhow!("--ca-cert {}: {e}", ca_cert.display()))?;
            let auth_key = match (auth_key, auth_key_file) {
                (Some(k), _) => Some(SecretString::new(k)),
                (None, Some(path)) => {
                    let text =
                        zeroize::Zeroizing::new(std::fs::read_to_string(&path).map_err(|e| {
                            anyhow::anyhow!("--auth-key-file {}: {e}", path.display())
                        })?);
                    Some(SecretString::new(text.trim().to_owned()))
                }
                (None, None) => None,
            };
            Command::Up(UpArgs {
                control_url: control,
                ca_cert_pem,
                auth_key,
                hostname,
                advertise_exit_node,
                advertise_routes,
                force_reauth,
            })
        }
        Cmd::Down => Command::Down,
        Cmd::Status => Command::Status,
        Cmd::ExitNode { action } => match action {
            ExitAction::List => Command::ExitNodeList,
            ExitAction::Select { name } => Command::ExitNodeSelect { name },
            ExitAction::Off => Command::ExitNodeOff,
        },
        Cmd::LanAccess { state } => Command::LanAccess { on: state == "on" },
        Cmd::Route { action } => match action {
            RouteAction::Advertise { cidrs } => Command::RouteAdvertise { cidrs },
            RouteAction::Withdraw { cidrs } => Command::RouteWithdraw { cidrs },
        },
        Cmd::Dns { action } => match action {
            DnsAction::Inspect { name } => Command::DnsInspect { name },
            DnsAction::Protect { state } => Command::DnsProtect { on: state == "on" },
        },
        Cmd::Netcheck => Command::Netcheck,
        Cmd::Ping {
            name, until_direct, ..
        } => Command::Ping {
            name,
            all_paths: until_direct,
        },
        Cmd::Version => anyhow::bail!("version is answered by the client itself"),
    })
}

/// `ping`: one request per ping, a second apart; stops early at the first
/// direct answer with `--until-direct`. Fails when no answer came (or, with
/// `--until-direct`, none came over a direct path).
fn ping(socket: &std::path::Path, json: bool, cmd: Cmd) -> anyhow::Result<bool> {
    let Cmd::Ping {
        name,
        count,
        until_direct,
    } = cmd
    else {
        anyhow::bail!("not a ping");
    };
    let count = count.unwrap_or(if until_direct { 10 } else { 1 });
    if count == 0 {
        anyhow::bail!("-c must be at least 1");
    }
    let mut docs = Vec::new();
    for i in 0..count {
        if i > 0 {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
        let reply = client::call(
            socket,
            Command::Ping {
                name: name.clone(),
                all_paths: until_direct,
            },
        )?;
        let rustynet_proto::ipc::Reply::Ping(doc) = reply else {
            anyhow::bail!("rustynetd answered ping with something else");
        };
        if !json {
            print!("{}", render::ping_line(&doc));
        }
        let direct = doc.path == rustynet_proto::ipc::PathKind::Direct && doc.rtt_us.is_some();
        docs.push(doc);
        if until_direct && direct {
            break;
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&docs)?);
    }
    let answered = docs.iter().any(|d| d.rtt_us.is_some());
    let direct = docs
        .iter()
        .any(|d| d.rtt_us.is_some() && d.path == rustynet_proto::ipc::PathKind::Direct);
    Ok(if until_direct { direct } else { answered })
}

fn main() -> ExitCode {
    if let Some(done) =
        rustynet_service::docs::generate_if_asked(<Cli as clap::CommandFactory>::command, "1")
    {
        return match done {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let cli = Cli::parse();
    if let Cmd::Version = cli.command {
        // The daemon's version when it answers; the client's always.
        let version = env!("CARGO_PKG_VERSION");
        let daemon = match client::call(&cli.socket, Command::Status) {
            Ok(rustynet_proto::ipc::Reply::Status(s)) if !s.daemon_version.is_empty() => {
                Some(s.daemon_version)
            }
            _ => None,
        };
        if cli.json {
            println!(
                "{}",
                serde_json::json!({ "client": version, "daemon": daemon })
            );
        } else {
            println!("rustynet {version}");
            match daemon {
                Some(d) => println!("rustynetd {d}"),
                None => println!("rustynetd: not reachable at {}", cli.socket.display()),
            }
        }
        return ExitCode::SUCCESS;
    }
    if matches!(cli.command, Cmd::Ping { .. }) {
        return match ping(&cli.socket, cli.json, cli.command) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let result = command(cli.command).and_then(|cmd| client::call(&cli.socket, cmd));
    match result {
        Ok(reply) => {
            if cli.json {
                println!("{}", render::json(&reply));
            } else {
                print!("{}", render::text(&reply));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
