//! The `rustynetd` binary.
#![allow(clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use rustynet_netos::{NetlinkRouting, NftFirewall, ProcSysctl, RoutingScope};
use rustynetd::apply::Effects;
use rustynetd::backend_manager::BackendManager;
use rustynetd::config::DaemonConfig;
use rustynetd::dns_manager::DnsManager;
use rustynetd::engine::Engine;
use rustynetd::ipc_server::{self, Groups};
use rustynetd::messages::EngineMsg;
use rustynetd::metrics::{self, Metrics};
use rustynetd::plan::TABLE;
use rustynetd::state_store::StateStore;
use rustynetd::sysctl_manager::SysctlPlan;

#[derive(Parser)]
#[command(name = "rustynetd", version, about = "Rustynet daemon")]
struct Args {
    /// TOML config file (default: /etc/rustynet/rustynetd.toml when it
    /// exists; every key is documented in docs/configuration.md).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Check the configuration (file, values, groups) and exit.
    #[arg(long)]
    check_config: bool,
    /// Undo what a stopped daemon left (firewall table, routes, host DNS,
    /// sysctls) and exit — systemd's `ExecStopPost=`. While protected mode
    /// was last wanted it keeps the blocking ruleset instead.
    #[arg(long, conflicts_with = "check_config")]
    cleanup: bool,
    /// State directory (default /var/lib/rustynet).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// IPC socket (default /run/rustynet/rustynetd.sock).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// TUN interface name (default rustynet0).
    #[arg(long)]
    tun: Option<String>,
    /// Serve Prometheus metrics on ADDR:PORT.
    #[arg(long)]
    metrics: Option<std::net::SocketAddr>,
    /// Tunnel UDP port (default 41641).
    #[arg(long)]
    listen_port: Option<u16>,
    /// resolv.conf to manage (default /etc/resolv.conf).
    #[arg(long)]
    resolv_conf: Option<PathBuf>,
    /// Group allowed read-only IPC (default rustynet).
    #[arg(long)]
    ipc_group: Option<String>,
    /// Group allowed mutating IPC besides root (default rustynet-admin).
    #[arg(long)]
    admin_group: Option<String>,
    /// Encrypt the node keys at rest under the secret in this file (e.g. a
    /// systemd credential: $CREDENTIALS_DIRECTORY/rustynet-kek).
    #[arg(long)]
    key_encryption_file: Option<PathBuf>,
    /// Tunnel engine: `userspace` (default: direct paths, relays and NAT
    /// traversal) or `kernel` (the kernel module when present: direct
    /// paths only).
    #[arg(long, value_parser = ["userspace", "kernel"])]
    engine: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// The transition audit log (`audit.log` in the state directory).
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(clap::Subcommand)]
enum AuditCommand {
    /// Walk the hash chain (rotated files first) and name the first broken
    /// entry; exits non-zero when the chain is broken or the log is missing.
    Verify {
        /// The log to check with its rotated files (default: audit.log in
        /// the state directory).
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

/// Read when `--config` is not given and the file exists (the package
/// installs a commented one).
const DEFAULT_CONFIG: &str = "/etc/rustynet/rustynetd.toml";

fn config(args: Args) -> anyhow::Result<DaemonConfig> {
    let mut cfg = DaemonConfig::default();
    let default = PathBuf::from(DEFAULT_CONFIG);
    match &args.config {
        Some(path) => cfg = cfg.with_file(path)?,
        None if default.is_file() => cfg = cfg.with_file(&default)?,
        None => {}
    }
    cfg.merge(rustynetd::config::FileConfig {
        state_dir: args.state_dir,
        socket: args.socket,
        tun: args.tun,
        metrics: args.metrics,
        listen_port: args.listen_port,
        mtu: None,
        resolv_conf: args.resolv_conf,
        ipc_group: args.ipc_group,
        admin_group: args.admin_group,
        key_encryption_file: args.key_encryption_file,
        engine: args.engine,
        lockdown: None,
    })?;
    cfg.validate()?;
    Ok(cfg)
}

fn main() -> ExitCode {
    rustynet_service::alloc::tune_allocator();
    if let Some(code) =
        rustynet_service::docs::generate_if_asked(<Args as clap::CommandFactory>::command, "8")
    {
        return code;
    }
    rustynet_service::init_logging("rustynetd");
    let mut args = Args::parse();
    let result = if let Some(Command::Audit(AuditCommand::Verify { file })) = args.command.take() {
        audit_verify(args, file)
    } else if args.check_config {
        check_config(args)
    } else if args.cleanup {
        cleanup(args)
    } else {
        run(args)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--check-config`: everything start-up would refuse, without side effects.
#[allow(clippy::print_stdout)]
fn check_config(args: Args) -> anyhow::Result<()> {
    let cfg = config(args)?;
    Groups::lookup(&cfg.ipc_group, &cfg.admin_group)?;
    if let Some(path) = &cfg.key_encryption_file {
        rustynet_proto::keyseal::kek_from_file(path)
            .with_context(|| format!("key_encryption_file {}", path.display()))?;
    }
    let dns = rustynet_netos::detect_dns_mode(&cfg.resolv_conf);
    println!(
        "configuration ok: state_dir={} socket={} tun={} listen_port={} ipc_group={} admin_group={}\nhost DNS: {}: {}",
        cfg.state_dir.display(),
        cfg.socket.display(),
        cfg.tun,
        cfg.listen_port,
        cfg.ipc_group,
        cfg.admin_group,
        dns.mode,
        dns.why
    );
    Ok(())
}

/// `audit verify`: walks the transition log's hash chain.
#[allow(clippy::print_stdout)]
fn audit_verify(args: Args, file: Option<PathBuf>) -> anyhow::Result<()> {
    use rustynetd::audit_log;
    let path = match file {
        Some(f) => f,
        None => config(args)?.state_dir.join(audit_log::FILE_NAME),
    };
    let files = audit_log::chain_files(&path);
    if files.is_empty() {
        anyhow::bail!("no audit log at {}", path.display());
    }
    let ok = audit_log::verify(&files).context("audit log broken")?;
    println!(
        "audit log ok: {} entries (seq {}..={}) in {} file(s); last hash {}",
        ok.entries,
        ok.first_seq,
        ok.last_seq,
        ok.files.len(),
        ok.last_hash
    );
    if ok.first_seq > 0 {
        println!("entries before seq {} were rotated away", ok.first_seq);
    }
    Ok(())
}

/// `--cleanup`: after the daemon stopped (or failed to start).
fn cleanup(args: Args) -> anyhow::Result<()> {
    use rustynet_netos::Firewall as _;
    let cfg = config(args)?;
    if cfg.lockdown || rustynetd::early_boot::is_armed(&cfg.state_dir) {
        // Protected mode (or lockdown) was wanted: the blocking ruleset
        // (and the host pointed at the stopped Magic DNS) stays until
        // `rustynet down` (lockdown: until an admin turns it off).
        match rustynetd::early_boot::install_persisted(&cfg.state_dir) {
            Ok(_) => tracing::info!("protected mode was active: the blocking ruleset stays"),
            Err(e) => tracing::error!(error = %e, "cannot reload the blocking ruleset"),
        }
        return Ok(());
    }
    let mut problems = Vec::new();
    if let Err(e) = NftFirewall::new(TABLE).and_then(|mut f| f.remove()) {
        problems.push(format!("firewall: {e}"));
    }
    let routing = RoutingScope::new(cfg.tun.clone()).and_then(NetlinkRouting::new);
    if let Err(e) = routing.and_then(|mut r| rustynetd::route_manager::RouteOps::clear(&mut r)) {
        problems.push(format!("routes: {e}"));
    }
    let mut os = rustynetd::dns_os::select(&cfg.resolv_conf, &cfg.tun, &cfg.state_dir);
    if let Err(e) = os.configurator.repair_stale() {
        problems.push(format!("dns: {e}"));
    }
    if let Ok(store) = StateStore::open(&cfg.state_dir)
        && let Ok(Some(state)) = store.load()
    {
        let mut sysctl = SysctlPlan::new(Box::new(ProcSysctl::new()), state.saved_sysctls);
        if let Err(e) = sysctl.apply(&[]) {
            problems.push(format!("sysctl: {e}"));
        }
    }
    if problems.is_empty() {
        tracing::info!("cleaned up after the daemon");
        Ok(())
    } else {
        anyhow::bail!("cleanup finished with errors: {}", problems.join("; "))
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let cfg = config(args)?;
    // Before anything that can fail: if protected mode was last wanted, the
    // blocking ruleset goes in first, so a failed start leaves the host
    // blocked, not open (issue 10 item 4).
    match rustynetd::early_boot::install_persisted(&cfg.state_dir) {
        Ok(true) => tracing::info!("protected mode was active: blocking ruleset installed first"),
        Ok(false) => {}
        Err(e) => tracing::error!(error = %e, "cannot install the persisted blocking ruleset"),
    }
    let caps = rustynet_netos::probe();
    if !caps.ready_for_tunnel() {
        anyhow::bail!(
            "missing prerequisites, refusing to start: {:?}",
            caps.missing()
        );
    }
    let store = StateStore::open(&cfg.state_dir)?;
    let store = match &cfg.key_encryption_file {
        Some(path) => store.with_key_encryption(rustynet_proto::keyseal::kek_from_file(path)?),
        None => {
            tracing::warn!(
                "node keys are stored unencrypted (owner-only files); pass --key-encryption-file to encrypt them at rest"
            );
            store
        }
    };
    let groups = Groups::lookup(&cfg.ipc_group, &cfg.admin_group)?;
    let listener = ipc_server::bind(&cfg.socket, groups)
        .with_context(|| format!("binding {}", cfg.socket.display()))?;
    // Everything that needed more than network administration (the state
    // directory, the socket's group) is done: drop the rest for good. This
    // runs before any thread exists, because capabilities are per thread and
    // every thread started later inherits the reduced sets.
    let kept = rustynetd::privileges::drop_to_network_admin()?;
    tracing::info!(
        uid = kept.uid,
        capabilities = ?kept.effective,
        ambient = ?kept.ambient,
        no_new_privs = kept.no_new_privs,
        "dropped all other capabilities"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("rustynetd-io")
        .build()
        .context("starting the runtime")?;
    let rt = runtime.handle().clone();
    let scope = RoutingScope::new(cfg.tun.clone())?;
    let engine = cfg.engine;
    let fx = Effects {
        backend: BackendManager::new(
            rustynet_backend_wireguard::select_backend(cfg.engine),
            Box::new(move || rustynet_backend_wireguard::select_backend(engine)),
        ),
        routing: Box::new(NetlinkRouting::new(scope)?),
        firewall: Box::new(NftFirewall::new(TABLE)?),
        sysctl: SysctlPlan::new(Box::new(ProcSysctl::new()), vec![]),
        dns: Box::new(DnsManager::new(
            rt.clone(),
            cfg.dns_mark,
            rustynetd::dns_os::select(&cfg.resolv_conf, &cfg.tun, &cfg.state_dir),
        )),
    };
    tracing::info!(engine = %fx.backend.info().detail, "tunnel engine selected");
    let metrics = Metrics::default();
    let listener = {
        let _guard = rt.enter();
        tokio::net::UnixListener::from_std(listener).context("registering the IPC socket")?
    };
    let (engine, handle, rx) = Engine::new(cfg.clone(), rt.clone(), store, fx, metrics.clone());
    let engine_thread = std::thread::Builder::new()
        .name("rustynetd-engine".into())
        .spawn(move || engine.run(rx))
        .context("starting the engine")?;
    rt.spawn(ipc_server::serve(listener, groups, handle.clone()));
    let ticker = handle.clone();
    rt.spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_secs(2));
        loop {
            interval.tick().await;
            // A full queue means the engine is busy: skip this tick.
            if ticker.try_send(EngineMsg::Tick) == Err(rustynetd::messages::SendError::Gone) {
                return;
            }
        }
    });
    if let Some(addr) = cfg.metrics {
        let metrics = metrics.clone();
        rt.spawn(async move {
            if let Err(e) = metrics::serve(addr, metrics).await {
                tracing::error!(error = %e, "metrics server failed");
            }
        });
    }
    tracing::info!(socket = %cfg.socket.display(), state_dir = %cfg.state_dir.display(), "rustynetd started");
    if let Err(e) = rustynet_service::notify("READY=1") {
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
    runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        anyhow::Ok(())
    })?;
    tracing::info!("stopping");
    let _ = rustynet_service::notify("STOPPING=1");
    handle.blocking_send(EngineMsg::Shutdown);
    let _ = engine_thread.join();
    let _ = std::fs::remove_file(&cfg.socket);
    Ok(())
}
