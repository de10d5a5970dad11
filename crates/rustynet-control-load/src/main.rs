//! `rustynet-control-load`: enrolls and holds N simulated nodes against a
//! control server and writes the figures as JSON (see
//! `scripts/bench/control_scale.sh`).
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use rustynet_control_load::scenario::{Config, run};
use rustynet_control_load::server::ServerSpec;

#[derive(Parser)]
#[command(
    name = "rustynet-control-load",
    version,
    about = "Enroll and hold N simulated nodes against rustynet-control; measure it"
)]
struct Cli {
    /// Simulated nodes.
    #[arg(long, default_value_t = 10_000)]
    nodes: usize,
    /// Work directory (logs, policy files, and the data directory under
    /// data/ unless --data-dir).
    #[arg(long)]
    work_dir: PathBuf,
    /// The control data directory (initialised if it is not yet).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The rustynet-control binary to spawn `serve` from.
    #[arg(long, conflicts_with = "url")]
    control_bin: Option<PathBuf>,
    /// PostgreSQL store (`rustynet-control --database`) for setup, the
    /// admin changes and every spawned replica; SQLite in the data
    /// directory when absent. Only for a database without a password
    /// (such as scripts/ci/with_postgres.sh's): it is passed to `serve`
    /// on its command line.
    #[arg(long, value_name = "URL", conflicts_with = "database_env")]
    database: Option<String>,
    /// Read --database from this environment variable (e.g.
    /// RUSTYNET_TEST_POSTGRES, set by scripts/ci/with_postgres.sh).
    #[arg(long, value_name = "VAR")]
    database_env: Option<String>,
    /// Replicas to spawn (all on the data directory / --database).
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// Extra `serve` argument (repeatable), e.g. --serve-arg=--map-ttl=1h.
    #[arg(long = "serve-arg", allow_hyphen_values = true)]
    serve_args: Vec<String>,
    /// A running server's URL (repeatable, one per replica) instead of
    /// spawning one; it must serve --data-dir.
    #[arg(long, requires = "server_pid")]
    url: Vec<String>,
    /// The running server's process id (repeatable, as --url).
    #[arg(long)]
    server_pid: Vec<u32>,
    /// Nodes per loopback source address (127.1.x.y).
    #[arg(long, default_value_t = 100)]
    per_source: usize,
    /// How long to measure idle CPU, e.g. 60s: the default spans one
    /// period of everything an idle server does once a minute (a keepalive
    /// on every stream, the presence writes), so the figure is the average
    /// an idle server costs, not a lucky or unlucky slice of it.
    #[arg(long, default_value = "60s", value_parser = humantime_secs)]
    idle_window: Duration,
    /// Longest wait for one phase, e.g. 300s.
    #[arg(long, default_value = "600s", value_parser = humantime_secs)]
    phase_deadline: Duration,
    /// Label recorded with the figures, KEY=VALUE (repeatable).
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Write the figures here (stdout otherwise).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// `30s`, `2m` or a plain number of seconds.
fn humantime_secs(text: &str) -> Result<Duration, String> {
    let (num, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, "s"), |at| text.split_at(at));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {text:?}"))?;
    match unit {
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "ms" => Ok(Duration::from_millis(n)),
        _ => Err(format!("invalid duration {text:?}: use s, m or ms")),
    }
}

fn main() -> ExitCode {
    rustynet_service::init_logging("rustynet-control-load");
    match real_main(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    let fds = rustynet_control_load::raise_fd_limit(65_536).context("open-file limit")?;
    let needed = u64::try_from(cli.nodes).unwrap_or(u64::MAX) + 256;
    anyhow::ensure!(
        fds >= needed,
        "open-file limit {fds} is below the {needed} descriptors {} nodes need",
        cli.nodes
    );
    std::fs::create_dir_all(&cli.work_dir).context("work dir")?;
    let server = match (&cli.control_bin, cli.url.is_empty()) {
        (Some(bin), true) => ServerSpec::Spawn {
            bin: bin.clone(),
            replicas: cli.replicas,
            extra: cli.serve_args.clone(),
        },
        (None, false) => {
            anyhow::ensure!(
                cli.url.len() == cli.server_pid.len(),
                "give one --server-pid per --url"
            );
            ServerSpec::Attach {
                urls: cli.url.clone(),
                pids: cli.server_pid.clone(),
            }
        }
        _ => anyhow::bail!("give --control-bin (spawn serve) or --url and --server-pid"),
    };
    let mut labels = serde_json::Map::new();
    for l in &cli.labels {
        let (k, v) = l.split_once('=').context("--label KEY=VALUE")?;
        labels.insert(k.to_owned(), v.into());
    }
    let database = match (&cli.database, &cli.database_env) {
        (Some(url), _) => Some(url.clone()),
        (None, Some(var)) => {
            Some(std::env::var(var).with_context(|| format!("--database-env: {var} is not set"))?)
        }
        (None, None) => None,
    };
    let cfg = Config {
        nodes: cli.nodes,
        per_source: cli.per_source,
        data_dir: cli
            .data_dir
            .clone()
            .unwrap_or_else(|| cli.work_dir.join("data")),
        work_dir: cli.work_dir.clone(),
        server,
        database,
        idle_window: cli.idle_window,
        quiet: Duration::from_secs(2),
        phase_deadline: cli.phase_deadline,
        labels: labels.into(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let (figures, verdict) = rt.block_on(run(&cfg))?;
    let text = serde_json::to_string_pretty(&figures)?;
    match &cli.out {
        Some(path) => std::fs::write(path, text + "\n").context("write figures")?,
        None => println!("{text}"),
    }
    eprintln!("{verdict:?}");
    Ok(())
}
