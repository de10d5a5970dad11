//! Control as two `serve` replicas on one PostgreSQL database (issue 12):
//! replica A on the control address's usual port, replica B beside it on
//! [`REPLICA_B_PORT`], both in the router namespace. B runs on a copy of
//! A's data directory (the CA, TLS certificate and signing key the
//! replicas share, as docs/scaling.md says); the nodes' state lives in the
//! database.

use std::time::Duration;

use super::{CONTROL_PORT, Cluster, kill, ok, serve_argv, unix_ms, wait_for};
use crate::topology::{CONTROL_IP, Lab};

/// The second replica's port (same address as the first).
pub const REPLICA_B_PORT: u16 = 8444;

impl<'a> Cluster<'a> {
    /// Starts control as two replicas on the PostgreSQL `database` (a
    /// connection string that works from the router namespace, e.g. with
    /// the server's Unix socket directory as its host), with `map_ttl` for
    /// signed maps, and the internet services. Admin commands
    /// ([`Cluster::admin`]) go to the shared database.
    pub fn start_replicated(lab: &'a Lab, map_ttl: &str, database: &str) -> anyhow::Result<Self> {
        let mut cluster = Self::start_opts(lab, map_ttl, false, Some(database.to_owned()))?;
        let dir_b = lab.path("control-b");
        ok(
            &std::process::Command::new("cp")
                .arg("-a")
                .arg(&cluster.control_dir)
                .arg(&dir_b)
                .output()?,
            "copy the control data directory for replica B",
        )?;
        let ctl = cluster.bins.control.to_string_lossy().into_owned();
        let args = serve_argv(
            &ctl,
            &dir_b.to_string_lossy(),
            map_ttl,
            false,
            REPLICA_B_PORT,
            Some(database),
        );
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let log = lab.path(&format!("control-b-{}.log", unix_ms()));
        cluster.replica_b = Some(lab.router.spawn(&argv, &log)?);
        let probe = format!("exec 3<>/dev/tcp/{CONTROL_IP}/{REPLICA_B_PORT}");
        wait_for(Duration::from_secs(20), || {
            lab.router.succeeds(&["bash", "-c", &probe]).then_some(())
        })
        .ok_or_else(|| {
            anyhow::anyhow!(
                "control replica B did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        })?;
        Ok(cluster)
    }

    /// The URL of replica `index` (0: A, 1: B).
    pub fn replica_url(&self, index: usize) -> String {
        let port = if index == 0 {
            CONTROL_PORT
        } else {
            REPLICA_B_PORT
        };
        format!("https://{CONTROL_IP}:{port}")
    }

    /// SIGKILLs replica `index` (0: A, 1: B): its streams end at once.
    pub fn kill_replica(&mut self, index: usize) {
        if index == 0 {
            kill(&mut self.control);
        } else {
            kill(&mut self.replica_b);
        }
    }
}
