//! The measured run: set up, enroll, hold, then change things and time how
//! the maps reach the nodes. Returns the figures as JSON.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustynet_control::datadir::DataDir;
use rustynet_control::store::DatabaseUrl;
use rustynet_control::{admin, node_admin};
use std::net::SocketAddr;

use rustynet_proto::control_api::{API_VERSION, UpdateRequest};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::changes::{Expect, observe};
use crate::fleet::{Fleet, Planned};
use crate::server::{Server, ServerSpec};
use crate::topology::{self, Role};
use crate::{LoadError, procstat};

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Simulated nodes.
    pub nodes: usize,
    /// Nodes per loopback source address.
    pub per_source: usize,
    /// Work directory (logs, policy files; the data directory by default).
    pub work_dir: PathBuf,
    /// The control data directory (initialised if it is not yet).
    pub data_dir: PathBuf,
    /// The server under test.
    pub server: ServerSpec,
    /// The PostgreSQL store (`--database`); the data directory's SQLite
    /// file when `None`.
    pub database: Option<String>,
    /// How long the idle CPU is measured.
    pub idle_window: Duration,
    /// No map for this long: the server has sent everything.
    pub quiet: Duration,
    /// Longest wait for any one phase.
    pub phase_deadline: Duration,
    /// Labels recorded with the figures (backend, ...).
    pub labels: Value,
}

/// Correctness of a run (what the CI smoke test asserts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Nodes holding a stream with a verified map.
    pub streaming: usize,
    /// Every node got a new map after the policy change.
    pub policy_change_ok: bool,
    /// Every node the rename affects got a new map.
    pub rename_ok: bool,
    /// Every node the endpoint update affects got a new map.
    pub endpoint_update_ok: bool,
    /// Nodes the rename affects.
    pub single_affected: usize,
    /// Maps refused because their generation went backwards (or repeated).
    pub backwards: u64,
    /// Maps refused by the verifier for any other reason.
    pub verify_failures: u64,
}

/// The node whose rename is the single-node change: number 1, a client.
const PROBE: usize = 1;

/// Runs the scenario; the figures and the verdict.
pub async fn run(cfg: &Config) -> Result<(Value, Verdict), LoadError> {
    let started = Instant::now();
    let load_before = procstat::loadavg();
    let database = match &cfg.database {
        Some(url) => Some(
            DatabaseUrl::parse(url).map_err(|e| LoadError::Setup(format!("--database: {e}")))?,
        ),
        None => None,
    };
    let data = DataDir::new(&cfg.data_dir).with_database(database);
    let keys = prepare(&data, &cfg.work_dir).await?;
    let server = Server::start(
        &cfg.server,
        &data,
        &cfg.data_dir,
        cfg.database.as_deref(),
        &cfg.work_dir,
    )
    .await?;
    let pids = server.pids();
    let ca = std::fs::read_to_string(data.ca_cert())
        .map_err(|e| LoadError::Setup(format!("read CA: {e}")))?;
    let replicas = server.urls.len();
    let rss0 = rss(&pids);

    let plan: Vec<Planned> = (0..cfg.nodes)
        .map(|i| Planned {
            hostname: topology::hostname(i),
            auth_key: keys.for_node(i),
            target: target(i, replicas),
        })
        .collect();
    tracing::info!(nodes = cfg.nodes, replicas, "enrolling");
    let (mut fleet, enrolled) = Fleet::enroll(plan, &server.urls, &ca, cfg.per_source).await?;
    tracing::info!(elapsed = ?enrolled.elapsed, "enrolled; opening map streams");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_enrolled = rss(&pids);
    let cpu_before_streams = cpu(&pids);

    let opening = Instant::now();
    fleet.open_streams(PROBE, cfg.phase_deadline).await;
    let opened_in = opening.elapsed();
    let quiet = fleet.wait_quiet(cfg.quiet, cfg.phase_deadline).await;
    let settled_in = opening.elapsed();
    let streaming = fleet.count(|s| s.streaming && s.maps > 0);
    tracing::info!(streaming, ?opened_in, ?settled_in, quiet, "streams held");
    let rss_held = rss(&pids);
    let fds: Vec<usize> = pids
        .iter()
        .map(|p| procstat::open_fds(*p).unwrap_or(0))
        .collect();
    let maps_to_settle = fleet.sum(|s| u64::from(s.maps));
    let cpu_streams = cpu(&pids).saturating_sub(cpu_before_streams);

    // Idle: nothing changes; keepalives and presence only.
    let maps_before_idle = fleet.sum(|s| u64::from(s.maps));
    let idle_start = (cpu(&pids), Instant::now());
    tokio::time::sleep(cfg.idle_window).await;
    let idle_cpu = cpu(&pids).saturating_sub(idle_start.0);
    let idle_wall = idle_start.1.elapsed();
    let maps_while_idle = fleet.sum(|s| u64::from(s.maps)) - maps_before_idle;

    // A policy change touching every node.
    tracing::info!("policy change");
    let targets: Vec<usize> = (0..cfg.nodes).map(|i| target(i, replicas)).collect();
    fleet.mark();
    let policy_file = write_policy(&cfg.work_dir, 2)?;
    let (policy_admin_ms, committed) = admin_call({
        let data = data.clone();
        move || admin::policy_set(&data, &policy_file).map(|_| ())
    })
    .await?;
    let all = vec![Expect::Affected; cfg.nodes];
    let cpu_at_change = CpuSplit::now(&pids);
    let (mut policy_change, policy_ok) = observe(
        &fleet,
        &all,
        committed,
        cfg.phase_deadline,
        cfg.quiet,
        &targets,
        None,
    )
    .await;
    policy_change["admin_command_ms"] = json!(policy_admin_ms);
    policy_change["cpu_seconds_until_quiet"] = cpu_at_change.since(&pids);

    // The probe's peers (and the probe itself for a rename) are affected
    // by a change to the probe; every other node should receive nothing.
    let seers: Vec<bool> = fleet.snapshot().iter().map(|s| s.sees_probe).collect();
    let expect = |probe_itself: Expect| -> Vec<Expect> {
        seers
            .iter()
            .enumerate()
            .map(|(i, sees)| match (i == PROBE, sees) {
                (true, _) => probe_itself,
                (false, true) => Expect::Affected,
                (false, false) => Expect::Unaffected,
            })
            .collect()
    };

    // A single-node change by an admin command: rename the probe.
    tracing::info!("single-node change: rename");
    fleet.mark();
    let (rename_ms, renamed) = admin_call({
        let data = data.clone();
        let name = topology::hostname(PROBE);
        move || node_admin::nodes_rename(&data, &name, &format!("{name}-renamed")).map(|_| ())
    })
    .await?;
    let cpu_at_change = CpuSplit::now(&pids);
    let (mut rename, rename_ok) = observe(
        &fleet,
        &expect(Expect::Affected),
        renamed,
        cfg.phase_deadline,
        cfg.quiet,
        &targets,
        None,
    )
    .await;
    rename["kind"] = json!("admin command: nodes rename of one client node");
    rename["admin_command_ms"] = json!(rename_ms);
    rename["cpu_seconds_until_quiet"] = cpu_at_change.since(&pids);

    // A single-node change through the API: the probe reports a new
    // endpoint through its replica (with two replicas its peers stream
    // from the other one).
    tracing::info!("single-node change: endpoint update through the API");
    fleet.mark();
    let update = UpdateRequest {
        version: API_VERSION,
        endpoints: Some(vec![SocketAddr::from(([198, 51, 100, 7], 41641))]),
        ..UpdateRequest::default()
    };
    let cpu_at_change = CpuSplit::now(&pids);
    let sent = Instant::now();
    fleet.probe_update(&update).await?;
    let answered = sent.elapsed();
    let (mut endpoint, endpoint_ok) = observe(
        &fleet,
        &expect(Expect::Either),
        sent,
        cfg.phase_deadline,
        cfg.quiet,
        &targets,
        (replicas > 1).then(|| targets.get(PROBE).copied().unwrap_or(0)),
    )
    .await;
    endpoint["kind"] = json!("POST /v1/update (new endpoint) by one client node");
    endpoint["latency_counted_from"] = json!("the request being sent");
    endpoint["update_answered_ms"] = json!(answered.as_secs_f64() * 1000.0);
    endpoint["cpu_seconds_until_quiet"] = cpu_at_change.since(&pids);

    let totals = fleet.snapshot();
    let sum = |f: fn(&crate::sim_node::NodeState) -> u32| -> u64 {
        totals.iter().map(|s| u64::from(f(s))).sum()
    };
    let verdict = Verdict {
        streaming,
        policy_change_ok: policy_ok,
        rename_ok,
        endpoint_update_ok: endpoint_ok,
        single_affected: rename["affected_nodes"].as_u64().unwrap_or(0) as usize,
        backwards: sum(|s| s.backwards),
        verify_failures: sum(|s| s.verify_failures),
    };
    let generator_rss = procstat::rss_kib(std::process::id()).unwrap_or(0);
    // Before the stop, which ends every stream on purpose.
    let stream_ends = json!(*fleet.ends.lock().unwrap_or_else(|e| e.into_inner()));
    fleet.stop().await;
    drop(server);

    let n = cfg.nodes.max(1) as f64;
    let per_node_kib = rss_held.saturating_sub(rss_enrolled) as f64 / n;
    let idle_pct = 100.0 * idle_cpu.as_secs_f64() / idle_wall.as_secs_f64().max(1e-9);
    let figures = json!({
        "labels": cfg.labels,
        "conditions": {
            "cpus": std::thread::available_parallelism().map_or(0, usize::from),
            "loadavg_start": load_before,
            "loadavg_end": procstat::loadavg(),
            "nodes": cfg.nodes,
            "replicas": replicas,
            "backend": if cfg.database.is_some() { "postgresql" } else { "sqlite" },
            "source_addresses": cfg.nodes.div_ceil(cfg.per_source.max(1)),
            "server": match &cfg.server {
                ServerSpec::Spawn { .. } => "child process",
                ServerSpec::Attach { .. } => "attached",
                ServerSpec::InProcess => "in process (with the generator)",
            },
            "generator_and_server_share_the_cpus": true,
            "run_seconds": started.elapsed().as_secs_f64(),
        },
        "enroll": {
            "seconds": enrolled.elapsed.as_secs_f64(),
            "per_second": n / enrolled.elapsed.as_secs_f64().max(1e-9),
            "rate_limited_retries": enrolled.rate_limited,
            "orphaned_by_timeouts": enrolled.orphaned,
        },
        "streams": {
            "held": streaming,
            "open_seconds": opened_in.as_secs_f64(),
            "settled_seconds": settled_in.as_secs_f64(),
            "settled": quiet,
            "maps_until_settled": maps_to_settle,
            "server_cpu_seconds_opening": cpu_streams.as_secs_f64(),
            "server_open_fds": fds,
        },
        "memory": {
            "server_rss_kib_start": rss0,
            "server_rss_kib_enrolled": rss_enrolled,
            "server_rss_kib_holding": rss_held,
            "per_held_node_kib": per_node_kib,
            "generator_rss_kib": generator_rss,
        },
        "idle": {
            "window_seconds": idle_wall.as_secs_f64(),
            "server_cpu_seconds": idle_cpu.as_secs_f64(),
            "server_cpu_percent_of_a_core": idle_pct,
            "maps_sent": maps_while_idle,
        },
        "policy_change": policy_change,
        "single_node_change": rename,
        "single_node_update_via_api": endpoint,
        "maps": {
            "received": sum(|s| s.maps),
            "unchanged_content_resent": sum(|s| s.unchanged),
            "generation_backwards": verdict.backwards,
            "verify_failures": verdict.verify_failures,
            "reconnects": sum(|s| s.reconnects),
            "stream_ends": stream_ends,
        },
    });
    Ok((figures, verdict))
}

/// The replica node `i` enrolls and streams through: groups of ten
/// alternate, so each service's servers (and each team's clients) sit on
/// one replica and the probe's peers on another than the probe.
fn target(i: usize, replicas: usize) -> usize {
    (i / 10) % replicas.max(1)
}

/// The pre-auth keys of every team and service.
struct Keys {
    teams: Vec<Arc<str>>,
    services: Vec<Arc<str>>,
}

impl Keys {
    fn for_node(&self, i: usize) -> Arc<str> {
        match topology::role(i) {
            Role::Client(t) => self.teams[t].clone(),
            Role::Server(s) => self.services[s].clone(),
        }
    }
}

/// Initialises the data directory if needed, sets the first policy and
/// creates one reusable pre-auth key per team and per service.
async fn prepare(data: &DataDir, work: &Path) -> Result<Keys, LoadError> {
    let policy_file = write_policy(work, 1)?;
    let data = data.clone();
    let task = tokio::task::spawn_blocking(move || -> Result<Keys, LoadError> {
        let err = |e: &dyn std::fmt::Display| LoadError::Setup(e.to_string());
        if !data.ca_cert().exists() {
            data.init(
                "rustynet.internal",
                &["127.0.0.1".to_owned(), "localhost".to_owned()],
            )
            .map_err(|e| err(&e))?;
        }
        admin::policy_set(&data, &policy_file).map_err(|e| err(&e))?;
        let key = |user: &str, tags: &[String]| -> Result<Arc<str>, LoadError> {
            let (key, _) =
                admin::preauth_create(&data, user, tags, true, None).map_err(|e| err(&e))?;
            Ok(Arc::from(key.as_str()))
        };
        let teams = (0..topology::TEAMS)
            .map(|t| key(&topology::team_user(t), &[]))
            .collect::<Result<_, _>>()?;
        let services = (0..topology::SERVICES)
            .map(|s| key(topology::OPS_USER, &[topology::service_tag(s)]))
            .collect::<Result<_, _>>()?;
        Ok(Keys { teams, services })
    });
    task.await.map_err(|e| LoadError::Setup(e.to_string()))?
}

fn write_policy(work: &Path, shift: usize) -> Result<PathBuf, LoadError> {
    let path = work.join(format!("policy-{shift}.json"));
    std::fs::write(&path, topology::policy(shift).to_string())
        .map_err(|e| LoadError::Setup(format!("write {}: {e}", path.display())))?;
    Ok(path)
}

/// Runs an admin command (as `rustynet-control` would) off the runtime;
/// how long it took, and when it returned (its change committed).
async fn admin_call(
    f: impl FnOnce() -> Result<(), admin::AdminError> + Send + 'static,
) -> Result<(f64, Instant), LoadError> {
    let t = Instant::now();
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| LoadError::Setup(e.to_string()))?
        .map_err(|e| LoadError::Admin(e.to_string()))?;
    let done = Instant::now();
    Ok((done.duration_since(t).as_secs_f64() * 1000.0, done))
}

fn rss(pids: &[u32]) -> u64 {
    pids.iter()
        .map(|p| procstat::rss_kib(*p).unwrap_or(0))
        .sum()
}

/// CPU used by the server processes and by the generator (which verifies
/// every map its nodes receive on the same CPUs), to tell whose work a
/// change's latency is.
struct CpuSplit {
    server: Duration,
    generator: Duration,
}

impl CpuSplit {
    fn now(pids: &[u32]) -> Self {
        Self {
            server: cpu(pids),
            generator: procstat::cpu_time(std::process::id()).unwrap_or_default(),
        }
    }

    /// The CPU seconds each used since `self` (including the quiet wait).
    fn since(&self, pids: &[u32]) -> Value {
        let now = Self::now(pids);
        json!({
            "server": now.server.saturating_sub(self.server).as_secs_f64(),
            "generator": now.generator.saturating_sub(self.generator).as_secs_f64(),
        })
    }
}

fn cpu(pids: &[u32]) -> Duration {
    pids.iter()
        .map(|p| procstat::cpu_time(*p).unwrap_or_default())
        .sum()
}
