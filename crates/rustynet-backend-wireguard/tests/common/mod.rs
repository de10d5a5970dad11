//! Shared scaffolding of the root-only network-namespace tests: unique names,
//! namespaces and veth pairs that delete themselves, child processes that are
//! killed on drop, and running code inside a namespace.
#![allow(dead_code, clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name no other test (or concurrent test process) uses, at most 15 bytes.
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = format!("{prefix}{:x}{n:x}", std::process::id() & 0xfffff);
    assert!(name.len() <= 15, "name {name} too long");
    name
}

/// Fails the test (never skips) unless we are root and every tool exists.
pub fn require_root_and_tools(tools: &[&str]) {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test needs root (network namespaces, TUN); run the suite as root"
    );
    for tool in tools {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            found,
            "required tool `{tool}` is not installed (scripts/lib/bootstrap.sh installs it)"
        );
    }
    assert!(
        std::path::Path::new("/dev/net/tun").exists(),
        "/dev/net/tun is missing"
    );
}

/// Runs a command; panics with its stderr when it fails.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = output(program, args);
    assert!(
        out.status.success(),
        "`{program} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn output(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

/// A named network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new() -> Self {
        let name = format!("rntest-{}", unique("n"));
        run("ip", &["netns", "add", &name]);
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n <ns> ...`
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Runs a program inside the namespace, returning its output.
    pub fn exec(&self, program: &str, args: &[&str]) -> Output {
        let mut full = vec!["netns", "exec", &self.name, program];
        full.extend_from_slice(args);
        output("ip", &full)
    }

    /// Starts a long-running program inside the namespace.
    pub fn spawn(&self, program: &str, args: &[&str]) -> ChildGuard {
        self.spawn_env(program, args, &[])
    }

    /// Like [`Netns::spawn`] with extra environment variables.
    pub fn spawn_env(&self, program: &str, args: &[&str], env: &[(&str, &str)]) -> ChildGuard {
        let mut full = vec!["netns", "exec", &self.name, program];
        full.extend_from_slice(args);
        let child = Command::new("ip")
            .args(&full)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        ChildGuard(Some(child))
    }

    /// Pings `dst` from inside the namespace until it answers or time runs out.
    pub fn ping_until(&self, dst: &str, extra: &[&str], within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let mut args = vec!["-c", "1", "-W", "1"];
            args.extend_from_slice(extra);
            args.push(dst);
            if self.exec("ping", &args).status.success() {
                return true;
            }
        }
        false
    }

    /// Runs `f` on a thread that has entered this namespace. TUN devices,
    /// sockets and threads created there belong to the namespace.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
                // SAFETY: a valid namespace fd; only this thread switches.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = output("ip", &["netns", "del", &self.name]);
    }
}

/// Two namespaces joined by a veth pair with RFC 1918 addresses.
pub struct Link {
    pub a: Netns,
    pub b: Netns,
    pub a_if: String,
    pub b_if: String,
    pub a_addr: String,
    pub b_addr: String,
}

impl Link {
    pub fn new(subnet: u8) -> Self {
        let a = Netns::new();
        let b = Netns::new();
        let a_if = unique("rva");
        let b_if = unique("rvb");
        run(
            "ip",
            &[
                "link", "add", &a_if, "netns", &a.name, "type", "veth", "peer", "name", &b_if,
                "netns", &b.name,
            ],
        );
        let a_addr = format!("10.{subnet}.0.1");
        let b_addr = format!("10.{subnet}.0.2");
        a.ip(&["addr", "add", &format!("{a_addr}/24"), "dev", &a_if]);
        b.ip(&["addr", "add", &format!("{b_addr}/24"), "dev", &b_if]);
        a.ip(&["link", "set", &a_if, "up"]);
        b.ip(&["link", "set", &b_if, "up"]);
        Self {
            a,
            b,
            a_if,
            b_if,
            a_addr,
            b_addr,
        }
    }
}

/// A child process killed (and reaped) on drop.
pub struct ChildGuard(pub Option<Child>);

impl ChildGuard {
    /// Stops the process and returns what it printed.
    pub fn finish(mut self) -> Output {
        let mut child = self.0.take().unwrap_or_else(|| panic!("already finished"));
        // SIGTERM first so tools like tcpdump flush their output.
        // SAFETY: signalling a child we started and have not reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("wait for child: {e}"))
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
