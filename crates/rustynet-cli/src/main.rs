//! `rustynet`: the command-line client of `rustynetd`. It keeps no state of
//! its own; every command is one request over the daemon's IPC socket.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod client;
mod error;
mod explain;
mod lookup;
mod render;
mod table;
mod up;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ipnet::IpNet;
use rustynet_proto::ipc::{Command, Reply};

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
    /// Enroll (if needed) and connect. Bare `rustynet up` reconnects with
    /// the saved control server and CA.
    Up {
        /// Control server, https://HOST[:PORT] (port 443 by default); the
        /// saved one when omitted. Replicas of one control server (one CA):
        /// comma-separated or the flag repeated, the preferred first; the
        /// node fails over between them.
        #[arg(long, value_name = "URL[,URL...]")]
        control: Vec<String>,
        /// The control CA certificate to pin; the saved one when omitted
        /// (required with a new control server).
        #[arg(long)]
        ca_cert: Option<PathBuf>,
        /// Pre-auth key: enrolls a new node, or renews this one when it
        /// differs from the key it enrolled with; enrolls anew after control
        /// refused (expired or removed) the node.
        #[arg(long, conflicts_with = "auth_key_file")]
        auth_key: Option<String>,
        /// Read the pre-auth key from a file instead (keeps it out of the process list).
        #[arg(long)]
        auth_key_file: Option<PathBuf>,
        /// Host name to ask for.
        #[arg(long)]
        hostname: Option<String>,
        /// Offer this node as an exit node (`--advertise-exit-node=false` to stop).
        #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
        advertise_exit_node: Option<bool>,
        /// LAN prefixes to offer, comma-separated.
        #[arg(long, value_delimiter = ',')]
        advertise_routes: Option<Vec<IpNet>>,
        /// As a subnet router, masquerade forwarded clients behind this
        /// node's LAN address (default). `--snat-subnet-routes=false` keeps
        /// their tunnel addresses; the LAN then needs a route back to
        /// 100.64.0.0/10 through this node.
        #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
        snat_subnet_routes: Option<bool>,
        /// Renew this node's keys with the pre-auth key (after they expired,
        /// or to replace them); it keeps its name and address.
        #[arg(long)]
        force_reauth: bool,
        /// Drop settings of earlier `up`s that this one does not name
        /// (otherwise such an `up` is refused with the command to use).
        #[arg(long)]
        reset: bool,
        /// Return only once the dataplane is applied; fail if the node
        /// fails closed or the timeout passes.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits (e.g. 30s, 2m).
        #[arg(long, requires = "wait", default_value = "60s")]
        timeout: humantime::Duration,
    },
    /// Disconnect and restore routes, firewall and DNS.
    Down,
    /// Disconnect, then forget this node's enrollment and keys: the next
    /// `up` needs a pre-auth key. Control is not told; an admin removes the
    /// node there.
    Logout,
    /// Show state, peers, exit node and LAN access.
    Status,
    /// This node's tunnel address, or a peer's (by host name, Magic DNS
    /// name or address).
    Ip {
        /// A peer; this node when omitted.
        name: Option<String>,
    },
    /// Which node owns a tunnel address: its name and Magic DNS name.
    Whois {
        /// A tunnel address.
        addr: std::net::IpAddr,
    },
    /// Exit nodes.
    ExitNode {
        #[command(subcommand)]
        action: ExitAction,
    },
    /// Reach LANs behind peers — the exit node's, a subnet router's — that
    /// the policy grants (on) or not (off). Was `lan-access`.
    #[command(name = "exit-lan", visible_alias = "lan-access")]
    LanAccess {
        /// on or off.
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
    /// Node settings (admin only).
    Set {
        #[command(subcommand)]
        setting: SetCmd,
    },
    /// While using an exit node, still reach this node's own LAN (its
    /// on-link private prefixes) outside the tunnel (on), or not (off,
    /// the default). Like Tailscale's --exit-node-allow-lan-access.
    LocalLan {
        /// on or off.
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
    /// Advertise or withdraw LAN routes; explain where a packet goes.
    Route {
        #[command(subcommand)]
        action: RouteAction,
    },
    /// What this node's current map lets in from and out to a peer.
    Acl {
        #[command(subcommand)]
        action: AclAction,
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
    /// Which rule, route, peer and path a packet to ADDR takes now, and
    /// what the firewall does with it.
    Explain {
        /// Destination address.
        addr: std::net::IpAddr,
    },
}

#[derive(Subcommand)]
enum AclAction {
    /// What the current map admits from PEER (to PORT), forwards for it,
    /// and lets out through it.
    Explain {
        /// Host name, Magic DNS name or tunnel IP, optionally with :PORT.
        #[arg(value_name = "PEER[:PORT]")]
        peer: String,
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

/// `rustynet set ...`.
#[derive(Subcommand)]
enum SetCmd {
    /// Lockdown mode (Mullvad's "always require VPN"): on, nothing but the
    /// tunnel leaves this node — with or without an exit node, while
    /// disconnected or `down`, and while the daemon is stopped — until an
    /// admin turns it off.
    Lockdown {
        /// on or off.
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
}

fn command(cmd: Cmd) -> anyhow::Result<Command> {
    Ok(match cmd {
        Cmd::Down => Command::Down,
        Cmd::Logout => Command::Logout,
        Cmd::Status => Command::Status,
        Cmd::ExitNode { action } => match action {
            ExitAction::List => Command::ExitNodeList,
            ExitAction::Select { name } => Command::ExitNodeSelect { name },
            ExitAction::Off => Command::ExitNodeOff,
        },
        Cmd::LanAccess { state } => Command::LanAccess { on: state == "on" },
        Cmd::LocalLan { state } => Command::LocalLan { on: state == "on" },
        Cmd::Set {
            setting: SetCmd::Lockdown { state },
        } => Command::Lockdown { on: state == "on" },
        Cmd::Route { action } => match action {
            RouteAction::Advertise { cidrs } => Command::RouteAdvertise { cidrs },
            RouteAction::Withdraw { cidrs } => Command::RouteWithdraw { cidrs },
            RouteAction::Explain { addr } => Command::RouteExplain { addr },
        },
        Cmd::Acl {
            action: AclAction::Explain { peer },
        } => {
            let (peer, port) = explain::peer_port(&peer)?;
            Command::AclExplain { peer, port }
        }
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
        Cmd::Up { .. } | Cmd::Ip { .. } | Cmd::Whois { .. } | Cmd::Version => {
            anyhow::bail!("answered by the client itself")
        }
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
        anyhow::bail!(error::CliError::new(
            "invalid_argument",
            "-c must be at least 1"
        ));
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
            anyhow::bail!(error::CliError::new(
                "protocol",
                "rustynetd answered ping with something else"
            ));
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
    if let Some(code) =
        rustynet_service::docs::generate_if_asked(<Cli as clap::CommandFactory>::command, "1")
    {
        return code;
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
    let json = cli.json;
    let result = match cli.command {
        Cmd::Ping { .. } => ping(&cli.socket, json, cli.command),
        Cmd::Up {
            control,
            ca_cert,
            auth_key,
            auth_key_file,
            hostname,
            advertise_exit_node,
            advertise_routes,
            snat_subnet_routes,
            force_reauth,
            reset,
            wait,
            timeout,
        } => {
            let flags = up::UpFlags {
                control: up::control_list(&control),
                ca_cert,
                auth_key: auth_key.is_some(),
                auth_key_file,
                hostname,
                advertise_exit_node,
                advertise_routes,
                snat_subnet_routes,
                force_reauth,
                reset,
                wait,
                timeout: wait.then(|| timeout.to_string()),
            };
            up::run(&cli.socket, json, &flags, auth_key, timeout.into()).map(|()| true)
        }
        Cmd::Ip { name } => {
            lookup_cmd(&cli.socket, json, |s| lookup::ip(s, name.as_deref())).map(|n| {
                if !json {
                    println!("{}", n.tunnel_ip);
                }
                true
            })
        }
        Cmd::Whois { addr } => lookup_cmd(&cli.socket, json, |s| lookup::whois(s, addr)).map(|n| {
            if !json {
                print!("{}", lookup::whois_text(&n));
            }
            true
        }),
        other => command(other)
            .and_then(|cmd| client::call(&cli.socket, cmd))
            .map(|reply| {
                if json {
                    println!("{}", render::json(&reply));
                } else {
                    print!("{}", render::text(&reply));
                }
                true
            }),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            // One line on stderr either way (stdout stays for results).
            if json {
                eprintln!("{}", error::json(&e));
            } else {
                eprintln!("{}", error::text(&e));
            }
            ExitCode::FAILURE
        }
    }
}

/// `ip` and `whois`: one `status`, then `find` in it; `--json` prints the
/// node found.
fn lookup_cmd(
    socket: &std::path::Path,
    json: bool,
    find: impl FnOnce(&rustynet_proto::ipc::StatusDoc) -> Result<lookup::NodeView, error::CliError>,
) -> anyhow::Result<lookup::NodeView> {
    let Reply::Status(status) = client::call(socket, Command::Status)? else {
        anyhow::bail!(error::CliError::new(
            "protocol",
            "rustynetd answered status with something else"
        ));
    };
    let node = find(&status)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&node)?);
    }
    Ok(node)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("rustynet").chain(args.iter().copied()))
    }

    #[test]
    fn bare_up_parses_and_flags_keep_whether_they_were_given() {
        let Cmd::Up {
            control,
            ca_cert,
            advertise_exit_node,
            advertise_routes,
            wait,
            ..
        } = parse(&["up"]).unwrap().command
        else {
            panic!("not up");
        };
        assert_eq!((control, ca_cert), (vec![], None));
        assert_eq!((advertise_exit_node, advertise_routes), (None, None));
        assert!(!wait);
        let Cmd::Up {
            advertise_exit_node,
            advertise_routes,
            timeout,
            ..
        } = parse(&[
            "up",
            "--advertise-exit-node",
            "--advertise-routes",
            "10.1.0.0/16,192.168.7.0/24",
            "--wait",
            "--timeout",
            "90s",
        ])
        .unwrap()
        .command
        else {
            panic!("not up");
        };
        assert_eq!(advertise_exit_node, Some(true));
        assert_eq!(advertise_routes.unwrap().len(), 2);
        assert_eq!(std::time::Duration::from(timeout).as_secs(), 90);
        let Cmd::Up {
            advertise_exit_node,
            ..
        } = parse(&["up", "--advertise-exit-node=false"])
            .unwrap()
            .command
        else {
            panic!("not up");
        };
        assert_eq!(advertise_exit_node, Some(false));
        assert!(
            parse(&["up", "--timeout", "5s"]).is_err(),
            "--timeout needs --wait"
        );
    }

    #[test]
    fn ip_whois_logout_parse() {
        assert!(matches!(
            parse(&["ip"]).unwrap().command,
            Cmd::Ip { name: None }
        ));
        assert!(matches!(
            parse(&["ip", "server"]).unwrap().command,
            Cmd::Ip { name: Some(n) } if n == "server"
        ));
        assert!(matches!(
            parse(&["--json", "whois", "100.64.0.2"]).unwrap().command,
            Cmd::Whois { .. }
        ));
        assert!(
            parse(&["whois", "server"]).is_err(),
            "whois takes an address"
        );
        assert_eq!(
            command(parse(&["logout"]).unwrap().command).unwrap(),
            Command::Logout
        );
    }

    #[test]
    fn lan_toggles_and_lockdown_parse() {
        let cmd = |args: &[&str]| command(parse(args).unwrap().command).unwrap();
        // The old name stays an alias of exit-lan.
        assert_eq!(cmd(&["exit-lan", "on"]), Command::LanAccess { on: true });
        assert_eq!(
            cmd(&["lan-access", "off"]),
            Command::LanAccess { on: false }
        );
        assert_eq!(cmd(&["local-lan", "on"]), Command::LocalLan { on: true });
        assert_eq!(
            cmd(&["set", "lockdown", "on"]),
            Command::Lockdown { on: true }
        );
        assert_eq!(
            cmd(&["set", "lockdown", "off"]),
            Command::Lockdown { on: false }
        );
        assert!(parse(&["set", "lockdown", "maybe"]).is_err());
        assert!(parse(&["local-lan"]).is_err());
    }

    /// Several control URLs: comma-separated, the flag repeated, or both,
    /// reach the daemon as one comma-separated list in the order typed.
    #[test]
    fn control_urls_may_be_listed_or_repeated() {
        let Cmd::Up { control, .. } = parse(&[
            "up",
            "--control",
            "https://a.example:8443,https://b.example:8443",
            "--control",
            "https://c.example",
        ])
        .unwrap()
        .command
        else {
            panic!("not up");
        };
        assert_eq!(
            up::control_list(&control).as_deref(),
            Some("https://a.example:8443,https://b.example:8443,https://c.example")
        );
        assert_eq!(up::control_list(&[]), None);
    }
}
