//! `rustynet-control`: the control server and its admin commands.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod cli_routes;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use rustynet_control::datadir::DataDir;
use rustynet_control::embedded_relay::{DEFAULT_RELAY_NAME, RelayOptions};
use rustynet_control::relay_registry::{self, PinSource, RelaySpec};
use rustynet_control::server::{ServeOptions, start};
use rustynet_control::store::DatabaseUrl;
use rustynet_control::{admin, node_admin, nodes_table, now_unix};

/// mimalloc instead of glibc's malloc: building maps for a burst of changes
/// allocates and frees a lot from many threads, and glibc's per-thread
/// arenas kept that memory resident (docs/scaling.md has the figures).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `purge_delay` option (v2 numbering).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Memory freed after a burst goes back to the kernel at once: by default
/// mimalloc delays that and only acts on the delay at its next allocation,
/// which an idle server holding 10,000 streams may not make for minutes.
/// And no transparent huge pages: where the kernel's setting is `always`, a
/// few live objects kept whole 2 MiB pages resident.
fn tune_allocator() {
    // SAFETY: mi_option_set stores one option value; it runs first thing in
    // main, before any other thread exists (the call is not thread-safe).
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and only sets a flag
    // of this process's memory map (inherited by children, as documented).
    let refused = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) } != 0;
    if refused {
        // Only the footprint changes; logging is not up yet.
        eprintln!(
            "warning: could not turn transparent huge pages off: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Where the data directory is unless `--data-dir`, `data_dir` in the
/// `--config` file or the environment says otherwise.
const DEFAULT_DATA_DIR: &str = "/var/lib/rustynet-control";
/// The environment variable naming the data directory.
const DATA_DIR_ENV: &str = "RUSTYNET_CONTROL_DATA_DIR";

#[derive(Parser)]
#[command(name = "rustynet-control", version, about = "Rustynet control server")]
struct Cli {
    /// PostgreSQL connection string (postgres://user@host/db or
    /// key=value pairs) holding the store instead of the data directory's
    /// SQLite file; `serve` replicas share one. A password belongs in the
    /// `serve --config` file (`database = "…"`), not on a command line.
    #[arg(long, global = true, value_name = "URL")]
    database: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the CA, TLS certificate, signing key and database.
    Init {
        /// Data directory.
        #[arg(long, env = DATA_DIR_ENV, default_value = DEFAULT_DATA_DIR)]
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
        #[arg(long, env = DATA_DIR_ENV, default_value = DEFAULT_DATA_DIR)]
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
        /// Run a relay in this process, its TLS listener on this address
        /// (its key and certificate are made in the data directory).
        #[arg(long)]
        relay_listen: Option<SocketAddr>,
        /// UDP address answering the relay's binding requests (repeatable;
        /// two IPs let nodes detect destination-dependent NAT).
        #[arg(long = "relay-stun", requires = "relay_listen")]
        relay_stun: Vec<SocketAddr>,
        /// IP:PORT announced for the relay (required when --relay-listen
        /// is an unspecified address such as 0.0.0.0).
        #[arg(long, requires = "relay_listen")]
        relay_advertise: Option<SocketAddr>,
        /// The relay's name in maps.
        #[arg(long, default_value = DEFAULT_RELAY_NAME, requires = "relay_listen")]
        relay_name: String,
        /// Relayed bytes per second per node (0: unlimited; the standalone
        /// relay's `--rate`).
        #[arg(long, default_value_t = rustynet_relay::core::Limits::default().rate_bytes_per_sec, requires = "relay_listen")]
        relay_rate: u64,
        /// Lifetime of a node's keys from enrollment or renewal (`rustynet up
        /// --force-reauth`), e.g. 180d; `never` for keys that do not expire.
        #[arg(long, default_value = "180d", value_parser = parse_expiry)]
        node_key_expiry: Expiry,
        /// Serve Prometheus metrics (plain HTTP `/metrics`) on ADDR:PORT,
        /// e.g. 127.0.0.1:9103; off unless given.
        #[arg(long)]
        metrics_listen: Option<SocketAddr>,
        /// Serve this TLS certificate chain (PEM) instead of the data
        /// directory's; nodes then pin its issuer with `--ca-cert`.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The private key (PEM, owner-only) of --tls-cert.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
    /// Set or show the ACL policy.
    Policy {
        #[command(subcommand)]
        action: PolicyAction,
    },
    /// Create, list or revoke pre-auth keys.
    Preauth {
        #[command(subcommand)]
        action: PreauthAction,
    },
    /// List, expire or remove nodes.
    Nodes {
        #[command(subcommand)]
        action: NodesAction,
    },
    /// Register, list or remove standalone relays (announced in every map).
    Relays {
        #[command(subcommand)]
        action: RelaysAction,
    },
    /// List, approve or reject the LAN routes nodes advertise.
    Routes {
        #[command(subcommand)]
        action: cli_routes::RoutesAction,
    },
    /// Explain the ACL: which rule admits a packet, or why none does.
    Acl {
        #[command(subcommand)]
        action: cli_routes::AclAction,
    },
    /// Copy the data directory's SQLite store into the empty PostgreSQL
    /// database given by --database, then serve with --database
    /// (docs/scaling.md). The SQLite file is left as it was.
    MigrateStore {
        /// Data directory holding the SQLite store.
        #[arg(long, env = DATA_DIR_ENV, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
    },
    /// Rotate the control signing key.
    SigningKey {
        #[command(subcommand)]
        action: SigningKeyAction,
    },
    /// Manage the TLS server certificate.
    Cert {
        #[command(subcommand)]
        action: CertAction,
    },
}

#[derive(Subcommand)]
enum CertAction {
    /// Issue a new server certificate for these names from the same CA
    /// (enrolled nodes keep working); restart `serve` to use it.
    Reissue {
        /// DNS name or IP address the certificate is valid for (repeatable;
        /// the new list replaces the old one).
        #[arg(long = "san", required = true)]
        sans: Vec<String>,
        /// Data directory.
        #[arg(long, env = DATA_DIR_ENV, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// The secret the keys were encrypted under at init.
        #[arg(long)]
        key_encryption_file: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum RelaysAction {
    /// Register a relay; a running `serve` announces it within a second.
    Add {
        /// Short name (lowercase letters, digits, '-'), shown by `status`.
        name: String,
        /// TLS address(es) nodes connect to, IP:PORT (comma-separated or repeated).
        #[arg(long = "addr", value_delimiter = ',', required = true)]
        addrs: Vec<String>,
        /// Name for SNI and the Host header (default: the first address's IP).
        #[arg(long)]
        server_name: Option<String>,
        /// SHA-256 of the relay's public key, hex or base64 (`rustynet-relay init` prints it).
        #[arg(long, conflicts_with = "cert", required_unless_present = "cert")]
        pin: Option<String>,
        /// The relay's certificate (PEM): the pin is computed from it.
        #[arg(long)]
        cert: Option<PathBuf>,
        /// Binding (STUN) address(es), IP:PORT (comma-separated or repeated).
        #[arg(long = "stun", value_delimiter = ',')]
        stun: Vec<String>,
        /// Data directory.
        #[arg(long, env = DATA_DIR_ENV, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
    },
    /// List registered relays.
    List {
        /// Data directory.
        #[arg(long, env = DATA_DIR_ENV, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// One JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Remove a registered relay: maps stop announcing it.
    Remove {
        /// The relay's name.
        name: String,
        /// Data directory.
        #[arg(long, env = DATA_DIR_ENV, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum SigningKeyAction {
    /// Make a new map-signing key; the current one signs a handover naming
    /// it, which nodes follow with their next map (no re-enrollment).
    Rotate {
        /// Data directory.
        #[arg(long, env = DATA_DIR_ENV, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// The secret the signing key is encrypted under.
        #[arg(long)]
        key_encryption_file: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum PolicyAction {
    /// Validate and store a policy file (nothing changes if it is invalid).
    Set {
        /// Policy file (JSON or HuJSON: comments and trailing commas).
        file: PathBuf,
        /// Data directory.
        #[arg(long, env = DATA_DIR_ENV, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
    },
    /// Dry run of `set`: check FILE against the live nodes and print who
    /// gains or loses access; changes nothing (exit 1 if it is invalid).
    Check {
        /// Policy file (JSON or HuJSON).
        file: PathBuf,
        /// Data directory.
        #[arg(long, env = DATA_DIR_ENV, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// One JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Print the stored policy.
    Get {
        /// Data directory.
        #[arg(long, env = DATA_DIR_ENV, default_value = DEFAULT_DATA_DIR)]
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
        /// Lifetime, e.g. 30m or 7d; `never` for a key that does not expire.
        #[arg(long, default_value = "1h", value_parser = parse_expiry)]
        expires: Expiry,
        /// Data directory.
        #[arg(long, env = DATA_DIR_ENV, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
    },
    /// List pre-auth keys (never the keys themselves).
    List {
        /// Data directory.
        #[arg(long, env = DATA_DIR_ENV, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// One JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a pre-auth key: it enrolls no more nodes.
    Revoke {
        /// The key's ID (from `preauth list`).
        id: i64,
        /// Data directory.
        #[arg(long, env = DATA_DIR_ENV, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
    },
}

/// A lifetime, or none.
#[derive(Debug, Clone, Copy)]
struct Expiry(Option<Duration>);

fn parse_expiry(text: &str) -> Result<Expiry, String> {
    if text == "never" {
        return Ok(Expiry(None));
    }
    let d = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("a lifetime of 0 would expire at once; use a duration or `never`".into());
    }
    Ok(Expiry(Some(d)))
}

#[derive(Subcommand)]
enum NodesAction {
    /// List nodes.
    List {
        /// Data directory.
        #[arg(long, env = DATA_DIR_ENV, default_value = DEFAULT_DATA_DIR)]
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
        #[arg(long, env = DATA_DIR_ENV, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
    },
    /// Remove a node.
    Remove {
        /// Host label.
        name: String,
        /// Data directory.
        #[arg(long, env = DATA_DIR_ENV, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
    },
    /// Give a node a new host label (and Magic DNS name).
    Rename {
        /// Current host label.
        name: String,
        /// New host label (a-z, 0-9, inner '-').
        new_name: String,
        /// Data directory.
        #[arg(long, env = DATA_DIR_ENV, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
    },
    /// Replace a node's tags (each tag:NAME, owned by the node's user in
    /// the policy); no tags clears them.
    Tag {
        /// Host label.
        name: String,
        /// Tags.
        tags: Vec<String>,
        /// Data directory.
        #[arg(long, env = DATA_DIR_ENV, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    tune_allocator();
    if let Some(code) =
        rustynet_service::docs::generate_if_asked(<Cli as clap::CommandFactory>::command, "8")
    {
        return code;
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
    // Checked here rather than by clap, whose error would repeat the
    // string (and a password in it).
    let db = &cli
        .database
        .as_deref()
        .map(DatabaseUrl::parse)
        .transpose()?;
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
            let report = data_dir_with(data_dir, db, key_encryption_file.as_deref())?
                .init(&suffix, &sans)?;
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
            relay_listen,
            relay_stun,
            relay_advertise,
            relay_name,
            relay_rate,
            node_key_expiry,
            metrics_listen,
            tls_cert,
            tls_key,
        } => {
            let data = data_dir_with(data_dir, db, key_encryption_file.as_deref())?;
            let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
            runtime.block_on(async {
                let mut opts = ServeOptions::new(listen);
                opts.map_ttl = map_ttl;
                opts.max_connections = max_connections;
                opts.max_connections_per_source = max_connections_per_source;
                opts.relay = relay_listen.map(|listen| RelayOptions {
                    listen,
                    stun: relay_stun,
                    advertise: relay_advertise,
                    name: relay_name,
                    rate_bytes_per_sec: relay_rate,
                });
                opts.node_key_expiry = node_key_expiry.0;
                opts.metrics_listen = metrics_listen;
                opts.tls_files = tls_cert
                    .zip(tls_key)
                    .map(|(cert, key)| rustynet_control::server::TlsFiles { cert, key });
                let server = start(&data, opts).await?;
                println!("listening on {}", server.addr);
                if let Some(addr) = server.metrics_addr {
                    println!("metrics on http://{addr}/metrics");
                }
                if let Some(relay) = &server.relay {
                    println!(
                        "relay {} on {} (announced {}, pin {})",
                        relay.info.name,
                        relay.addr,
                        join(&relay.info.addrs),
                        relay.info.cert_sha256
                    );
                }
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
                admin::policy_set(&dir(data_dir, db), &file)?;
                println!("policy updated");
            }
            PolicyAction::Check {
                file,
                data_dir,
                json,
            } => {
                let diff = admin::policy_check(&dir(data_dir, db), &file)?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&diff)?);
                } else if diff.is_empty() {
                    println!("policy is valid; nobody gains or loses access");
                } else {
                    println!("policy is valid; access changes:");
                    diff.gained.iter().for_each(|l| println!("+ {l}"));
                    diff.lost.iter().for_each(|l| println!("- {l}"));
                }
            }
            PolicyAction::Get { data_dir } => {
                println!("{}", admin::policy_get(&dir(data_dir, db))?);
            }
        },
        Command::Preauth { action } => preauth(action, db)?,
        Command::Nodes { action } => nodes(action, db)?,
        Command::SigningKey {
            action:
                SigningKeyAction::Rotate {
                    data_dir,
                    key_encryption_file,
                },
        } => {
            let data = data_dir_with(data_dir, db, key_encryption_file.as_deref())?;
            let handover = admin::signing_key_rotate(&data)?;
            println!("signing public key: {}", handover.to);
            println!("handed over from: {}", handover.from);
        }
        Command::Relays { action } => relays(action, db)?,
        Command::Routes { action } => cli_routes::run_routes(action, db)?,
        Command::Acl { action } => cli_routes::run_acl(action, db)?,
        Command::Cert {
            action:
                CertAction::Reissue {
                    sans,
                    data_dir,
                    key_encryption_file,
                },
        } => {
            let data = data_dir_with(data_dir, db, key_encryption_file.as_deref())?;
            data.reissue_server_cert(&sans)?;
            println!(
                "server certificate reissued for {}: {}",
                sans.join(", "),
                data.server_cert().display()
            );
            println!("restart `rustynet-control serve` to use it (nodes need no change)");
        }
        Command::MigrateStore { data_dir } => {
            let Some(url) = db else {
                anyhow::bail!("migrate-store copies into the database given by --database");
            };
            let copied = DataDir::new(data_dir).migrate_store_to(url)?;
            println!(
                "copied {} nodes, {} pre-auth keys, {} relays and {} into {}",
                copied.nodes,
                copied.preauth_keys,
                copied.relays,
                if copied.policy {
                    "the policy"
                } else {
                    "no policy"
                },
                url.describe()
            );
        }
    }
    Ok(())
}

fn join(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn relays(action: RelaysAction, db: &Option<DatabaseUrl>) -> anyhow::Result<()> {
    match action {
        RelaysAction::Add {
            name,
            addrs,
            server_name,
            pin,
            cert,
            stun,
            data_dir,
        } => {
            let pin = match (pin, cert) {
                (Some(text), _) => PinSource::Text(text),
                (None, Some(path)) => PinSource::CertFile(path),
                (None, None) => anyhow::bail!("give --pin or --cert"),
            };
            let spec = RelaySpec {
                name,
                addrs,
                server_name,
                pin,
                stun,
            };
            let relay = relay_registry::relays_add(&dir(data_dir, db), &spec)?;
            println!(
                "added relay {} ({}, pin {})",
                relay.name,
                join(&relay.addrs),
                relay.cert_sha256
            );
        }
        RelaysAction::List { data_dir, json } => {
            let relays = relay_registry::relays_list(&dir(data_dir, db))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&relays)?);
                return Ok(());
            }
            println!(
                "NAME         ADDRS                          SERVER NAME          PIN                                          STUN"
            );
            for r in relays {
                println!(
                    "{:<12} {:<30} {:<20} {:<44} {}",
                    r.name,
                    join(&r.addrs),
                    r.server_name,
                    r.cert_sha256,
                    join(&r.stun)
                );
            }
        }
        RelaysAction::Remove { name, data_dir } => {
            let relay = relay_registry::relays_remove(&dir(data_dir, db), &name)?;
            println!("removed relay {}", relay.name);
        }
    }
    Ok(())
}

/// The data directory at `root`, its store in `db` when one was given.
fn dir(root: PathBuf, db: &Option<DatabaseUrl>) -> DataDir {
    DataDir::new(root).with_database(db.clone())
}

fn data_dir_with(
    root: PathBuf,
    db: &Option<DatabaseUrl>,
    kek_file: Option<&std::path::Path>,
) -> anyhow::Result<DataDir> {
    let data = dir(root, db);
    Ok(match kek_file {
        Some(path) => data.with_key_encryption(rustynet_proto::keyseal::kek_from_file(path)?),
        None => data,
    })
}

fn unix_time(t: Option<i64>) -> String {
    t.and_then(|t| u64::try_from(t).ok())
        .map(|t| {
            humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(t))
                .to_string()
        })
        .unwrap_or_else(|| "never".into())
}

fn preauth(action: PreauthAction, db: &Option<DatabaseUrl>) -> anyhow::Result<()> {
    match action {
        PreauthAction::Create {
            user,
            tags,
            reusable,
            expires,
            data_dir,
        } => {
            let (key, _) =
                admin::preauth_create(&dir(data_dir, db), &user, &tags, reusable, expires.0)?;
            println!("{}", key.as_str());
        }
        PreauthAction::List { data_dir, json } => {
            let keys = admin::preauth_list(&dir(data_dir, db))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&keys)?);
                return Ok(());
            }
            let now = now_unix();
            println!("ID     USER         STATE    REUSABLE USED  EXPIRES               TAGS");
            for k in keys {
                println!(
                    "{:<6} {:<12} {:<8} {:<8} {:<5} {:<21} {}",
                    k.id,
                    k.user,
                    k.state(now),
                    if k.reusable { "yes" } else { "no" },
                    k.used,
                    unix_time(k.expires_at),
                    k.tags.join(",")
                );
            }
        }
        PreauthAction::Revoke { id, data_dir } => {
            let k = admin::preauth_revoke(&dir(data_dir, db), id)?;
            println!("revoked pre-auth key {} (user {})", k.id, k.user);
        }
    }
    Ok(())
}

fn nodes(action: NodesAction, db: &Option<DatabaseUrl>) -> anyhow::Result<()> {
    match action {
        NodesAction::List { data_dir, json } => {
            let data = dir(data_dir, db);
            let nodes = admin::nodes_list(&data)?;
            // Route states need a valid stored policy; without one the
            // listing still works and says nothing about approval.
            let statuses = rustynet_control::routes::statuses(&data).unwrap_or_default();
            let status = |n: &rustynet_control::store::NodeRecord, r: &ipnet::IpNet| {
                statuses.get(&(n.id, r.trunc()))
            };
            if json {
                let mut docs = Vec::with_capacity(nodes.len());
                for n in &nodes {
                    let mut doc = serde_json::to_value(n)?;
                    let routes: Vec<serde_json::Value> = n
                        .advertised_routes
                        .iter()
                        .map(|r| serde_json::json!({"prefix": r, "status": status(n, r)}))
                        .collect();
                    if let Some(obj) = doc.as_object_mut() {
                        obj.insert("routes".into(), routes.into());
                    }
                    docs.push(doc);
                }
                println!("{}", serde_json::to_string_pretty(&docs)?);
                return Ok(());
            }
            let word = |n: &rustynet_control::store::NodeRecord, r: &ipnet::IpNet| {
                status(n, r).map(|s| s.word())
            };
            print!("{}", nodes_table::render(&nodes, now_unix(), &word));
        }
        NodesAction::Expire { name, data_dir } => {
            let n = admin::nodes_expire(&dir(data_dir, db), &name)?;
            println!("expired {} ({})", n.hostname, n.tunnel_ip);
        }
        NodesAction::Remove { name, data_dir } => {
            let n = admin::nodes_remove(&dir(data_dir, db), &name)?;
            println!("removed {} ({})", n.hostname, n.tunnel_ip);
        }
        NodesAction::Rename {
            name,
            new_name,
            data_dir,
        } => {
            let n = node_admin::nodes_rename(&dir(data_dir, db), &name, &new_name)?;
            println!("renamed {name} to {} ({})", n.hostname, n.tunnel_ip);
        }
        NodesAction::Tag {
            name,
            tags,
            data_dir,
        } => {
            let n = node_admin::nodes_tag(&dir(data_dir, db), &name, &tags)?;
            println!("{} tags: {}", n.hostname, n.tags.join(","));
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
