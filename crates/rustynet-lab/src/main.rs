//! `rustynet-lab`: the demo and the helper services the lab runs.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod demo;
mod demo_paths;
mod soak;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use rustynet_lab::services;

#[derive(Parser)]
#[command(name = "rustynet-lab", about = "Rustynet network-namespace lab")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Bring up control and several nodes in namespaces and show each capability working.
    Demo,
    /// Keep the demo network busy for a while and write a soak verdict (JSON).
    Soak {
        /// How long, in seconds.
        #[arg(long, default_value_t = 120)]
        seconds: u64,
        /// Where the verdict goes.
        #[arg(long, default_value = "artifacts/soak/soak.json")]
        out: std::path::PathBuf,
    },
    /// Measure the path goals (fallback, failback, one-way loss, roaming,
    /// hard NAT, relay throughput, netcheck) and write them as JSON.
    PathsBench {
        /// Fallback trials.
        #[arg(long, default_value_t = 20)]
        trials: usize,
        /// Where the figures go.
        #[arg(long, default_value = "artifacts/bench/paths.json")]
        out: std::path::PathBuf,
        /// Which goals to measure (`throughput`: only the relay's, with
        /// `--trials` repetitions).
        #[arg(long, value_enum, default_value = "all")]
        part: rustynet_lab::paths_bench::Part,
    },
    /// (lab helper) TCP/UDP echo service that reports the client address.
    ServeEcho {
        /// Comma-separated addresses.
        #[arg(long, value_delimiter = ',')]
        listen: Vec<SocketAddr>,
    },
    /// (lab helper) DNS server answering every A query.
    ServeDns {
        /// Address.
        #[arg(long)]
        listen: SocketAddr,
        /// The A record every name gets (default 203.0.113.80).
        #[arg(long)]
        answer: Option<std::net::Ipv4Addr>,
    },
    /// (lab helper) Malformed DNS at a resolver over UDP and TCP; prints JSON counts.
    DnsFlood {
        /// Resolver address.
        #[arg(long, default_value = "100.100.100.100:53")]
        target: SocketAddr,
        /// Seconds to send.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// UDP datagrams per second (0 = unpaced).
        #[arg(long, default_value_t = 20_000)]
        rate: u64,
        /// TCP senders at once.
        #[arg(long, default_value_t = 4)]
        tcp_senders: usize,
    },
    /// (lab helper) One TCP or UDP probe; prints JSON.
    Probe {
        /// tcp or udp.
        #[arg(value_parser = ["tcp", "udp"])]
        kind: String,
        /// Target.
        addr: SocketAddr,
        /// Timeout.
        #[arg(long, default_value_t = 3000)]
        timeout_ms: u64,
    },
    /// (lab helper) Scripted control server: TLS 1.3 with the real
    /// control's certificate, `/v1/map` streams the frames of an NDJSON script.
    FakeControl {
        /// The real control's data directory.
        #[arg(long)]
        data_dir: std::path::PathBuf,
        /// Address.
        #[arg(long)]
        listen: SocketAddr,
        /// NDJSON file of stream frames (re-read when it changes).
        #[arg(long)]
        script: std::path::PathBuf,
        /// Only this node id gets the script (others get keepalives).
        #[arg(long)]
        node: Option<u64>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Demo => demo::run(),
        Cmd::Soak { seconds, out } => soak::run(Duration::from_secs(seconds), &out),
        Cmd::PathsBench { trials, out, part } => rustynet_lab::paths_bench::run(&out, trials, part),
        Cmd::ServeEcho { listen } => services::serve_echo(&listen),
        Cmd::ServeDns { listen, answer } => {
            services::serve_dns_answering(listen, answer.unwrap_or(services::INTERNET_DNS_ANSWER))
        }
        Cmd::FakeControl {
            data_dir,
            listen,
            script,
            node,
        } => rustynet_lab::fake_control::serve(rustynet_lab::fake_control::Options {
            data_dir,
            listen,
            script,
            node,
        }),
        Cmd::DnsFlood {
            target,
            seconds,
            rate,
            tcp_senders,
        } => rustynet_lab::dnsflood::flood(&rustynet_lab::dnsflood::FloodOptions {
            target,
            duration: Duration::from_secs(seconds),
            rate,
            tcp_senders,
        })
        .map(|report| println!("{}", serde_json::to_string(&report).unwrap_or_default())),
        Cmd::Probe {
            kind,
            addr,
            timeout_ms,
        } => {
            let timeout = Duration::from_millis(timeout_ms);
            let r = if kind == "tcp" {
                services::probe_tcp(addr, timeout)
            } else {
                services::probe_udp(addr, timeout)
            };
            println!("{}", serde_json::to_string(&r).unwrap_or_default());
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
