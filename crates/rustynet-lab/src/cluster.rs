//! The real product running in a [`Lab`]: `rustynet-control` in the router
//! namespace, one `rustynetd` per node, the `rustynet` CLI against each.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Output};
use std::time::{Duration, Instant};

use rustynet_proto::ipc::{DataplaneState, StatusDoc};

use crate::bins::{Bins, bins};
use crate::netns::Netns;
use crate::services::{INTERNET_DNS_ANSWER, ProbeResult};
use crate::topology::{CONTROL_IP, DNS_IP, ECHO_IP, ECHO_IP6, LAN_HOST_IP, Lab};

mod replicas;

pub use replicas::REPLICA_B_PORT;

/// The control server's port.
pub const CONTROL_PORT: u16 = 8443;

/// A daemon on one node.
#[derive(Debug)]
pub struct Node {
    /// Node name.
    pub name: String,
    /// Its state directory.
    pub state_dir: PathBuf,
    /// Its IPC socket.
    pub socket: PathBuf,
    /// Its resolv.conf (the daemon manages this file).
    pub resolv_conf: PathBuf,
    /// Daemon log.
    pub log: PathBuf,
    child: Option<Child>,
}

/// Control plus daemons; every process is killed on drop.
pub struct Cluster<'a> {
    /// The lab.
    pub lab: &'a Lab,
    /// Binaries in use.
    pub bins: Bins,
    /// Control data directory.
    pub control_dir: PathBuf,
    /// The CA certificate nodes pin.
    pub ca: PathBuf,
    /// `https://192.0.2.1:8443`.
    pub url: String,
    control: Option<Child>,
    services: Vec<Child>,
    nodes: BTreeMap<String, Node>,
    /// `/etc/netns/<ns>` directories made for daemons started with their
    /// defaults; removed on drop.
    etc_dirs: Vec<PathBuf>,
    /// Control embeds the relay.
    relay: bool,
    /// Scratch directories of private systemd-resolved instances; their
    /// bus and resolved are killed on drop.
    resolved_scratch: Vec<PathBuf>,
    /// The PostgreSQL connection string control uses (`--database`);
    /// `None`: the data directory's SQLite file.
    database: Option<String>,
    /// The second control replica ([`Cluster::start_replicated`]).
    replica_b: Option<Child>,
}

fn ok(out: &Output, what: &str) -> anyhow::Result<String> {
    if !out.status.success() {
        anyhow::bail!("{what}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// TLS port of the relay embedded in control.
pub const RELAY_PORT: u16 = 443;
/// UDP port of the embedded relay's binding service.
pub const STUN_PORT: u16 = 3478;

/// The control server's command line (listening on `port` of the control
/// address; on the PostgreSQL `database` when given).
fn serve_argv(
    ctl: &str,
    dir: &str,
    map_ttl: &str,
    relay: bool,
    port: u16,
    database: Option<&str>,
) -> Vec<String> {
    let mut args: Vec<String> = [
        ctl,
        "serve",
        "--data-dir",
        dir,
        "--listen",
        &format!("{CONTROL_IP}:{port}"),
        "--map-ttl",
        map_ttl,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    if relay {
        args.extend(relay_args());
    }
    if let Some(db) = database {
        args.extend(["--database".to_owned(), db.to_owned()]);
    }
    args
}

/// `serve` flags that embed the relay. `RUSTYNET_LAB_RELAY_RATE` (bytes per
/// second per node, 0 = unlimited) overrides the relay's default rate limit
/// (the throughput bench measures the paths, not the limit).
fn relay_args() -> Vec<String> {
    let mut args = vec![
        "--relay-listen".into(),
        format!("{CONTROL_IP}:{RELAY_PORT}"),
        "--relay-stun".into(),
        format!("{CONTROL_IP}:{STUN_PORT}"),
        "--relay-stun".into(),
        format!("{}:{STUN_PORT}", crate::topology::RELAY_IP2),
    ];
    if let Ok(rate) = std::env::var("RUSTYNET_LAB_RELAY_RATE") {
        args.extend(["--relay-rate".into(), rate]);
    }
    args
}

/// Polls `f` until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

impl<'a> Cluster<'a> {
    /// Starts control (TLS 1.3, SQLite) in the router namespace and the
    /// internet services (echo, DNS), with `map_ttl` for signed maps.
    pub fn start(lab: &'a Lab, map_ttl: &str) -> anyhow::Result<Self> {
        Self::start_opts(lab, map_ttl, false, None)
    }

    /// Like [`Cluster::start`], with the relay embedded in control: TLS on
    /// [`RELAY_PORT`] of the control address, binding answers on both
    /// [`CONTROL_IP`] and [`RELAY_IP2`].
    pub fn start_with_relay(lab: &'a Lab, map_ttl: &str) -> anyhow::Result<Self> {
        Self::start_opts(lab, map_ttl, true, None)
    }

    fn start_opts(
        lab: &'a Lab,
        map_ttl: &str,
        relay: bool,
        database: Option<String>,
    ) -> anyhow::Result<Self> {
        let bins = bins()?;
        let control_dir = lab.path("control");
        let dir_arg = control_dir.to_string_lossy().into_owned();
        let ctl = bins.control.to_string_lossy().into_owned();
        let db_args: Vec<&str> = database
            .as_deref()
            .map(|db| vec!["--database", db])
            .unwrap_or_default();
        ok(
            &lab.router
                .command(&bins.control)
                .args([
                    "init",
                    "--data-dir",
                    &dir_arg,
                    "--san",
                    &CONTROL_IP.to_string(),
                ])
                .args(&db_args)
                .output()?,
            "control init",
        )?;
        let args = serve_argv(
            &ctl,
            &dir_arg,
            map_ttl,
            relay,
            CONTROL_PORT,
            database.as_deref(),
        );
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let control = lab.router.spawn(&argv, &lab.path("control.log"))?;
        let lab_bin = bins.lab.to_string_lossy().into_owned();
        let echo_addrs = format!("{ECHO_IP}:7,[{ECHO_IP6}]:7");
        let mut services = vec![lab.internet.spawn(
            &[&lab_bin, "serve-echo", "--listen", &echo_addrs],
            &lab.path("echo.log"),
        )?];
        services.push(lab.internet.spawn(
            &[&lab_bin, "serve-dns", "--listen", &format!("{DNS_IP}:53")],
            &lab.path("dns.log"),
        )?);
        for node in lab.nodes.values() {
            if let Some(lan) = &node.lan {
                let addrs = format!("{LAN_HOST_IP}:22,{LAN_HOST_IP}:443,{LAN_HOST_IP}:8080");
                services.push(lan.spawn(
                    &[&lab_bin, "serve-echo", "--listen", &addrs],
                    &lab.path(&format!("lan-{}.log", lab.id)),
                )?);
            }
        }
        let cluster = Self {
            lab,
            bins,
            ca: control_dir.join("ca.pem"),
            control_dir,
            url: format!("https://{CONTROL_IP}:{CONTROL_PORT}"),
            control: Some(control),
            services,
            nodes: BTreeMap::new(),
            etc_dirs: Vec::new(),
            relay,
            resolved_scratch: Vec::new(),
            database,
            replica_b: None,
        };
        let up = wait_for(Duration::from_secs(20), || {
            lab.router
                .succeeds(&[
                    "bash",
                    "-c",
                    &format!("exec 3<>/dev/tcp/{CONTROL_IP}/{CONTROL_PORT}"),
                ])
                .then_some(())
        });
        if up.is_none() {
            anyhow::bail!(
                "control did not start: {}",
                std::fs::read_to_string(lab.path("control.log")).unwrap_or_default()
            );
        }
        Ok(cluster)
    }

    /// `rustynet-control ARGS --data-dir DIR` in the router namespace.
    pub fn admin(&self, args: &[&str]) -> anyhow::Result<String> {
        let dir = self.control_dir.to_string_lossy().into_owned();
        let out = self
            .lab
            .router
            .command(&self.bins.control)
            .args(args)
            .args(["--data-dir", &dir])
            .args(self.database.iter().flat_map(|db| ["--database", db]))
            .output()?;
        ok(&out, &format!("rustynet-control {}", args.join(" ")))
    }

    /// Sets the ACL policy.
    pub fn set_policy(&self, json: &str) -> anyhow::Result<()> {
        let path = self
            .lab
            .path(&format!("policy-{}.json", std::process::id()));
        std::fs::write(&path, json)?;
        self.admin(&["policy", "set", &path.to_string_lossy()])?;
        Ok(())
    }

    /// Creates a reusable pre-auth key for `user` with `tags`.
    pub fn preauth(&self, user: &str, tags: &[&str]) -> anyhow::Result<String> {
        let mut args = vec![
            "preauth",
            "create",
            "--user",
            user,
            "--reusable",
            "--expires",
            "1h",
        ];
        for t in tags {
            args.extend(["--tag", t]);
        }
        Ok(self.admin(&args)?.trim().to_owned())
    }

    /// Starts (or restarts) `rustynetd` on `name`.
    pub fn start_daemon(&mut self, name: &str) -> anyhow::Result<()> {
        self.start_daemon_with_env(name, &[])
    }

    /// Starts (or restarts) `rustynetd` on `name` with extra environment,
    /// e.g. `RUSTYNET_FAULT_STEP=routes` (the lab builds the daemon with its
    /// `fault-injection` feature).
    pub fn start_daemon_with_env(
        &mut self,
        name: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        self.start_daemon_wrapped(name, env, &[])
    }

    /// Starts `rustynetd` on `name` as the unprivileged `uid:gid` holding
    /// only the daemon's capabilities as ambient ones — what the systemd
    /// unit's `User=`/`AmbientCapabilities=` do — via `setpriv`. The node's
    /// directory (state, socket, resolv.conf) is handed to that user.
    /// Returns once the socket exists.
    pub fn start_daemon_as_user(&mut self, name: &str, uid: u32, gid: u32) -> anyhow::Result<()> {
        let dir = self.lab.path(name);
        std::fs::create_dir_all(dir.join("state"))?;
        for path in [dir.clone(), dir.join("state")] {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid))?;
        }
        let caps = "+net_admin,+net_raw,+net_bind_service";
        let (reuid, regid) = (format!("--reuid={uid}"), format!("--regid={gid}"));
        let (inh, amb) = (
            format!("--inh-caps={caps}"),
            format!("--ambient-caps={caps}"),
        );
        let bounding = format!("--bounding-set=-all,{caps}");
        // Debian's udev makes /dev/net/tun 0666 (opening it is harmless:
        // creating an interface needs CAP_NET_ADMIN). Some build hosts have
        // it 0600; the daemon's private mount namespace gets a 0666 node of
        // the same device, as a stock host has, without touching the host's.
        let tun = dir.join("tun-node").to_string_lossy().into_owned();
        let _ = std::fs::remove_file(&tun);
        self.start_daemon_wrapped(
            name,
            &[],
            &[
                "sh",
                "-c",
                "mknod -m 0666 \"$1\" c 10 200 && mount --bind \"$1\" /dev/net/tun && shift && exec \"$@\"",
                "sh",
                &tun,
                "setpriv",
                &reuid,
                &regid,
                "--clear-groups",
                &inh,
                &amb,
                &bounding,
                "--",
            ],
        )
    }

    fn start_daemon_wrapped(
        &mut self,
        name: &str,
        env: &[(&str, &str)],
        wrapper: &[&str],
    ) -> anyhow::Result<()> {
        self.start_daemon_custom(name, env, wrapper, None)
    }

    /// Starts `rustynetd` on `name` beside a real systemd-resolved on a
    /// private system bus in the daemon's mount namespace (see
    /// [`crate::resolved`]); `/etc/resolv.conf` there names resolved's stub
    /// (bind-mounted by `ip netns exec`), and the daemon gets no
    /// `--resolv-conf`, so it detects the `resolved` mode by itself.
    /// Returns the scratch directory holding resolved's log.
    pub fn start_daemon_with_resolved(&mut self, name: &str) -> anyhow::Result<PathBuf> {
        let resolved = crate::resolved::bins()?;
        let ns = &self.lab.node(name).ns;
        let etc = PathBuf::from("/etc/netns").join(ns.name());
        std::fs::create_dir_all(&etc)?;
        if !self.etc_dirs.contains(&etc) {
            self.etc_dirs.push(etc.clone());
        }
        std::fs::write(
            etc.join("resolv.conf"),
            "# systemd-resolved stub\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch corp.example\n",
        )?;
        let scratch = self.lab.path(name).join("resolved");
        std::fs::create_dir_all(&scratch)?;
        std::fs::write(scratch.join("bus.conf"), crate::resolved::BUS_CONFIG)?;
        self.resolved_scratch.push(scratch.clone());
        let (s, d, b) = (
            scratch.to_string_lossy().into_owned(),
            resolved.daemon.to_string_lossy().into_owned(),
            resolved.bin_dir.to_string_lossy().into_owned(),
        );
        let wrapper = ["sh", "-c", crate::resolved::PRELUDE, "sh", &s, &d, &b];
        self.start_daemon_custom(name, &[], &wrapper, Some(etc.join("resolv.conf")))?;
        Ok(scratch)
    }

    /// `system_resolv_conf`: `None` gives the daemon the lab's own file
    /// with `--resolv-conf`; `Some(path)` passes no flag (the daemon uses
    /// `/etc/resolv.conf`) and records `path`, its bind mount's source, as
    /// the node's file.
    fn start_daemon_custom(
        &mut self,
        name: &str,
        env: &[(&str, &str)],
        wrapper: &[&str],
        system_resolv_conf: Option<PathBuf>,
    ) -> anyhow::Result<()> {
        let dir = self.lab.path(name);
        std::fs::create_dir_all(&dir)?;
        let resolv_conf = system_resolv_conf
            .clone()
            .unwrap_or_else(|| dir.join("resolv.conf"));
        if system_resolv_conf.is_none() && !resolv_conf.exists() {
            std::fs::write(
                &resolv_conf,
                format!("# lab node {name}\nnameserver {DNS_IP}\n"),
            )?;
        }
        let node = Node {
            name: name.into(),
            state_dir: dir.join("state"),
            socket: dir.join("rustynetd.sock"),
            resolv_conf,
            log: dir.join(format!("rustynetd-{}.log", unix_ms())),
            child: None,
        };
        let mut args = vec![
            self.bins.daemon.to_string_lossy().into_owned(),
            "--state-dir".into(),
            node.state_dir.to_string_lossy().into_owned(),
            "--socket".into(),
            node.socket.to_string_lossy().into_owned(),
            "--tun".into(),
            "rn0".into(),
            "--ipc-group".into(),
            "nogroup".into(),
            "--admin-group".into(),
            "root".into(),
        ];
        if system_resolv_conf.is_none() {
            args.push("--resolv-conf".into());
            args.push(node.resolv_conf.to_string_lossy().into_owned());
        }
        let mut argv: Vec<&str> = wrapper.to_vec();
        argv.extend(args.iter().map(String::as_str));
        let ns = &self.lab.node(name).ns;
        let child = ns.spawn_with_env(&argv, env, &node.log)?;
        let socket = node.socket.clone();
        let mut node = node;
        node.child = Some(child);
        if let Some(mut old) = self.nodes.insert(name.into(), node) {
            kill(&mut old.child);
        }
        wait_for(Duration::from_secs(20), || socket.exists().then_some(())).ok_or_else(|| {
            anyhow::anyhow!(
                "rustynetd on {name} did not open its socket; log: {}",
                self.log(name)
            )
        })?;
        Ok(())
    }

    /// Starts `rustynetd` on `name` the way a user would: no flags at all,
    /// inside `ip netns exec`, which bind-mounts every file of
    /// `/etc/netns/<namespace>/` over the one in `/etc` — `resolv_conf`
    /// becomes a bind-mounted `/etc/resolv.conf`, as in Docker and
    /// Kubernetes — and a `group` file holding the host's groups plus
    /// `rustynet` and `rustynet-admin`. `/var/lib` and `/run` are lab
    /// directories in that process's private mount namespace only, so the
    /// defaults (`/var/lib/rustynet`, `/run/rustynet/rustynetd.sock`) never
    /// touch the host's. The node's `resolv_conf` is the bind mount's source
    /// file; its socket and state are reachable from the host. With
    /// `read_only_etc`, `/etc` (and the resolv.conf mounted in it) is
    /// read-only in that namespace, as on an immutable or sandboxed system.
    pub fn start_daemon_with_defaults(
        &mut self,
        name: &str,
        resolv_conf: &str,
        read_only_etc: bool,
    ) -> anyhow::Result<()> {
        let ns = &self.lab.node(name).ns;
        let etc = PathBuf::from("/etc/netns").join(ns.name());
        if !self.etc_dirs.contains(&etc) {
            std::fs::create_dir_all(&etc)?;
            self.etc_dirs.push(etc.clone());
            std::fs::write(etc.join("resolv.conf"), resolv_conf)?;
            let mut groups = std::fs::read_to_string("/etc/group")?;
            let used: Vec<u32> = groups
                .lines()
                .filter_map(|l| l.split(':').nth(2)?.parse().ok())
                .collect();
            let mut free = (60_000u32..65_000).filter(|g| !used.contains(g));
            for group in ["rustynet", "rustynet-admin"] {
                if !groups.lines().any(|l| l.starts_with(&format!("{group}:"))) {
                    let gid = free.next().ok_or_else(|| anyhow::anyhow!("no free gid"))?;
                    groups.push_str(&format!("{group}:x:{gid}:\n"));
                }
            }
            std::fs::write(etc.join("group"), groups)?;
        }
        let dir = self.lab.path(name);
        let (var_lib, run) = (dir.join("var-lib"), dir.join("run"));
        std::fs::create_dir_all(&var_lib)?;
        std::fs::create_dir_all(&run)?;
        let node = Node {
            name: name.into(),
            state_dir: var_lib.join("rustynet"),
            socket: run.join("rustynet/rustynetd.sock"),
            resolv_conf: etc.join("resolv.conf"),
            log: dir.join(format!("rustynetd-{}.log", unix_ms())),
            child: None,
        };
        let daemon = self.bins.daemon.to_string_lossy().into_owned();
        let (var_lib, run) = (
            var_lib.to_string_lossy().into_owned(),
            run.to_string_lossy().into_owned(),
        );
        let script = if read_only_etc {
            "mount --bind \"$1\" /var/lib && mount --bind \"$2\" /run \
             && mount --rbind /etc /etc && mount -o remount,bind,ro /etc \
             && mount -o remount,bind,ro /etc/resolv.conf && exec \"$3\""
        } else {
            "mount --bind \"$1\" /var/lib && mount --bind \"$2\" /run && exec \"$3\""
        };
        let argv = ["sh", "-c", script, "sh", &var_lib, &run, &daemon];
        let child = ns.spawn(&argv, &node.log)?;
        let socket = node.socket.clone();
        let mut node = node;
        node.child = Some(child);
        if let Some(mut old) = self.nodes.insert(name.into(), node) {
            kill(&mut old.child);
        }
        wait_for(Duration::from_secs(20), || socket.exists().then_some(())).ok_or_else(|| {
            anyhow::anyhow!(
                "rustynetd (defaults) on {name} did not open its socket; log: {}",
                self.log(name)
            )
        })?;
        Ok(())
    }

    /// SIGKILLs the control server (e.g. to put a scripted one in its place,
    /// see [`crate::fake_control::FakeControl`]).
    pub fn stop_control(&mut self) {
        kill(&mut self.control);
    }

    /// SIGKILLs the control server and starts it again on the same data
    /// directory (its log continues in `control-restart-<ms>.log`); returns
    /// once it listens.
    pub fn restart_control(&mut self, map_ttl: &str) -> anyhow::Result<()> {
        kill(&mut self.control);
        let dir = self.control_dir.to_string_lossy().into_owned();
        let ctl = self.bins.control.to_string_lossy().into_owned();
        let log = self.lab.path(&format!("control-restart-{}.log", unix_ms()));
        let args = serve_argv(
            &ctl,
            &dir,
            map_ttl,
            self.relay,
            CONTROL_PORT,
            self.database.as_deref(),
        );
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        self.control = Some(self.lab.router.spawn(&argv, &log)?);
        let probe = format!("exec 3<>/dev/tcp/{CONTROL_IP}/{CONTROL_PORT}");
        wait_for(Duration::from_secs(20), || {
            self.lab
                .router
                .succeeds(&["bash", "-c", &probe])
                .then_some(())
        })
        .ok_or_else(|| {
            anyhow::anyhow!(
                "control did not restart: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        })
    }

    /// SIGKILLs the daemon on `name` (nothing gets to clean up).
    pub fn kill_daemon(&mut self, name: &str) {
        if let Some(node) = self.nodes.get_mut(name) {
            kill(&mut node.child);
            let _ = std::fs::remove_file(&node.socket);
        }
    }

    /// SIGTERMs the daemon on `name` and waits for it.
    pub fn stop_daemon(&mut self, name: &str) {
        if let Some(node) = self.nodes.get_mut(name) {
            if let Some(child) = &mut node.child {
                // SAFETY: kill(2) on our own child's pid.
                unsafe {
                    libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
                }
                let _ = wait_for(Duration::from_secs(15), || child.try_wait().ok().flatten());
            }
            kill(&mut node.child);
        }
    }

    /// The pid of `name`'s daemon, while it runs.
    pub fn daemon_pid(&self, name: &str) -> Option<u32> {
        self.nodes.get(name)?.child.as_ref().map(Child::id)
    }

    /// The node's daemon handle.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.get(name)
    }

    /// The daemon log of `name`.
    pub fn log(&self, name: &str) -> String {
        self.nodes
            .get(name)
            .and_then(|n| std::fs::read_to_string(&n.log).ok())
            .unwrap_or_default()
    }

    /// Runs `rustynet --socket S ARGS` on `name` as root.
    pub fn cli(&self, name: &str, args: &[&str]) -> anyhow::Result<Output> {
        self.cli_as(name, None, args)
    }

    /// Runs the CLI as `user` (via setpriv) when given.
    pub fn cli_as(
        &self,
        name: &str,
        user: Option<(u32, u32)>,
        args: &[&str],
    ) -> anyhow::Result<Output> {
        let node = self
            .nodes
            .get(name)
            .ok_or_else(|| anyhow::anyhow!("no daemon on {name}"))?;
        let socket = node.socket.to_string_lossy().into_owned();
        let ns = &self.lab.node(name).ns;
        let mut cmd = match user {
            Some((uid, gid)) => {
                let mut c = ns.command("setpriv");
                c.args([
                    format!("--reuid={uid}"),
                    format!("--regid={gid}"),
                    "--clear-groups".into(),
                ]);
                c.arg(&self.bins.cli);
                c
            }
            None => ns.command(&self.bins.cli),
        };
        Ok(cmd.arg("--socket").arg(&socket).args(args).output()?)
    }

    /// Runs the CLI and fails on a non-zero exit.
    pub fn rustynet(&self, name: &str, args: &[&str]) -> anyhow::Result<String> {
        ok(
            &self.cli(name, args)?,
            &format!("rustynet {} on {name}", args.join(" ")),
        )
    }

    /// `rustynet up` for `name` with `auth_key` and extra flags.
    pub fn up(&self, name: &str, auth_key: &str, extra: &[&str]) -> anyhow::Result<String> {
        let ca = self.ca.to_string_lossy().into_owned();
        let mut args = vec![
            "up",
            "--control",
            &self.url,
            "--ca-cert",
            &ca,
            "--auth-key",
            auth_key,
            "--hostname",
            name,
        ];
        args.extend_from_slice(extra);
        self.rustynet(name, &args)
    }

    /// `status --json`.
    pub fn status(&self, name: &str) -> anyhow::Result<StatusDoc> {
        Ok(serde_json::from_str(
            &self.rustynet(name, &["--json", "status"])?,
        )?)
    }

    /// Waits until `pred` holds for `name`'s status.
    pub fn wait_status(
        &self,
        name: &str,
        timeout: Duration,
        pred: impl Fn(&StatusDoc) -> bool,
    ) -> anyhow::Result<StatusDoc> {
        let mut last = None;
        let found = wait_for(timeout, || {
            let s = self.status(name).ok()?;
            let hit = pred(&s);
            last = Some(s.clone());
            hit.then_some(s)
        });
        found.ok_or_else(|| anyhow::anyhow!("{name}: condition not reached in {timeout:?}; last status: {last:?}\nlog tail:\n{}", tail(&self.log(name), 40)))
    }

    /// Waits for the node to apply a map with `peers` peers.
    pub fn wait_applied(&self, name: &str, peers: usize) -> anyhow::Result<StatusDoc> {
        self.wait_status(name, Duration::from_secs(30), |s| {
            matches!(
                s.state,
                DataplaneState::DataplaneApplied | DataplaneState::ExitActive
            ) && s.peers.len() == peers
        })
    }

    /// Runs `rustynet-lab probe KIND ADDR` inside `ns`.
    pub fn probe(&self, ns: &Netns, kind: &str, addr: &str) -> ProbeResult {
        let out = ns
            .command(&self.bins.lab)
            .args(["probe", kind, addr, "--timeout-ms", "2500"])
            .output();
        match out {
            Ok(o) => serde_json::from_slice(&o.stdout).unwrap_or(ProbeResult {
                ok: false,
                answer: None,
                error: Some(String::from_utf8_lossy(&o.stderr).into_owned()),
            }),
            Err(e) => ProbeResult {
                ok: false,
                answer: None,
                error: Some(e.to_string()),
            },
        }
    }

    /// Routing, rules, firewall, status and log tail of `name`, for failure
    /// messages.
    pub fn diagnose(&self, name: &str) -> String {
        let ns = &self.lab.node(name).ns;
        let mut out = format!("==== diagnostics for {name}\n");
        for args in [
            &["ip", "addr"][..],
            &["ip", "rule"],
            &["ip", "route", "show", "table", "all"],
            &["nft", "list", "ruleset"],
            &["sysctl", "net.ipv4.ip_forward"],
        ] {
            out.push_str(&format!(
                "--- {}\n{}\n",
                args.join(" "),
                ns.stdout(args).unwrap_or_else(|e| e.to_string())
            ));
        }
        out.push_str(&format!("--- status\n{:?}\n", self.status(name)));
        out.push_str(&format!("--- log tail\n{}\n", tail(&self.log(name), 30)));
        out
    }

    /// The address every internet DNS name resolves to.
    pub fn internet_dns_answer(&self) -> std::net::Ipv4Addr {
        INTERNET_DNS_ANSWER
    }
}

fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn kill(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        // `ip netns exec` execs the program, so this is the daemon itself.
        let _ = c.kill();
        let _ = c.wait();
    }
}

impl Drop for Cluster<'_> {
    fn drop(&mut self) {
        for node in self.nodes.values_mut() {
            kill(&mut node.child);
        }
        kill(&mut self.control);
        kill(&mut self.replica_b);
        for s in &mut self.services {
            let _ = s.kill();
            let _ = s.wait();
        }
        for dir in &self.etc_dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
        for scratch in &self.resolved_scratch {
            crate::resolved::stop(scratch);
        }
    }
}
