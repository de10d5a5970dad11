//! Named network namespaces and commands run inside them (argv only).

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Whether `tool` is on PATH.
pub fn have(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(tool).is_file()))
}

/// A short id unique to this process and call (for namespace and link names).
pub fn unique_id() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:x}{:x}", std::process::id() & 0xfffff, n)
}

/// Runs a host command, failing with its stderr.
pub fn run(args: &[&str]) -> anyhow::Result<Output> {
    let out = Command::new(args[0]).args(&args[1..]).output()?;
    if !out.status.success() {
        anyhow::bail!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// A network namespace deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `name` (must be unique) with loopback up.
    pub fn create(name: &str) -> anyhow::Result<Self> {
        run(&["ip", "netns", "add", name])?;
        let ns = Self {
            name: name.to_owned(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs inside, failing with stderr on a non-zero exit.
    pub fn exec(&self, args: &[&str]) -> anyhow::Result<Output> {
        let out = self.command(args[0]).args(&args[1..]).output()?;
        if !out.status.success() {
            anyhow::bail!(
                "[{}] {}: {}{}",
                self.name,
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            );
        }
        Ok(out)
    }

    /// Runs inside and returns whether it succeeded (for probes).
    pub fn succeeds(&self, args: &[&str]) -> bool {
        self.command(args[0])
            .args(&args[1..])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// `ip ARGS...` inside.
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<Output> {
        let mut full = vec!["ip"];
        full.extend_from_slice(args);
        self.exec(&full)
    }

    /// Standard output of a command inside, as text.
    pub fn stdout(&self, args: &[&str]) -> anyhow::Result<String> {
        Ok(String::from_utf8_lossy(&self.exec(args)?.stdout).into_owned())
    }

    /// Starts a long-running process inside; its output goes to `log`.
    pub fn spawn(&self, args: &[&str], log: &Path) -> anyhow::Result<Child> {
        self.spawn_with_env(args, &[], log)
    }

    /// Like [`Netns::spawn`], with extra environment variables.
    pub fn spawn_with_env(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
        log: &Path,
    ) -> anyhow::Result<Child> {
        let file = std::fs::File::create(log)?;
        let err = file.try_clone()?;
        Ok(self
            .command(args[0])
            .args(&args[1..])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()?)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Processes still inside keep a namespace alive only through their
        // own references; everything the lab started is killed before this.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}
