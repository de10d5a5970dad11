//! Packet capture on a node's physical link (tcpdump), for leak tests.

use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use crate::netns::Netns;

/// A running capture; stop it to read what it saw.
#[derive(Debug)]
pub struct Capture {
    child: Option<Child>,
    file: PathBuf,
    log: PathBuf,
    ns_name: String,
}

impl Capture {
    /// Starts capturing every packet on `ifname` in `ns` into `file`.
    pub fn start(ns: &Netns, ifname: &str, file: PathBuf) -> anyhow::Result<Self> {
        let log = file.with_extension("log");
        let file_arg = file.to_string_lossy().into_owned();
        // Immediate mode: without it libpcap hands packets over in ring
        // blocks retired only every second or so, and the packets of the
        // last block are lost when the capture is stopped — a leak in the
        // last moments of a window would go unseen.
        let child = ns.spawn(
            &[
                "tcpdump",
                "-i",
                ifname,
                "-n",
                "-U",
                "--immediate-mode",
                "-s",
                "0",
                "-w",
                &file_arg,
            ],
            &log,
        )?;
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if std::fs::read_to_string(&log).is_ok_and(|l| l.contains("listening on")) {
                return Ok(Self {
                    child: Some(child),
                    file,
                    log,
                    ns_name: ns.name().to_owned(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        anyhow::bail!("tcpdump did not start on {ifname} in {}", ns.name())
    }

    /// Stops the capture (flushing it) and returns the decoded packets that
    /// match the tcpdump `filter` ("" = all), one line each.
    pub fn stop(mut self, filter: &str) -> anyhow::Result<Vec<String>> {
        self.finish();
        let file = self.file.to_string_lossy().into_owned();
        let mut args = vec!["tcpdump", "-r", &file, "-n", "-tt"];
        let parts: Vec<&str> = filter.split_whitespace().collect();
        args.extend(parts);
        let out = std::process::Command::new(args[0])
            .args(&args[1..])
            .output()?;
        if !out.status.success() {
            anyhow::bail!(
                "tcpdump -r failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect())
    }

    /// Whether the raw capture contains `needle` anywhere (cleartext check).
    pub fn raw_contains(&self, needle: &[u8]) -> bool {
        std::fs::read(&self.file).is_ok_and(|data| data.windows(needle.len()).any(|w| w == needle))
    }

    /// Stops the capture and returns the raw pcap path.
    pub fn stop_raw(mut self) -> PathBuf {
        self.finish();
        self.file.clone()
    }

    fn finish(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A packet sent just now may still be on its way through the
            // kernel to tcpdump, which stops reading at SIGINT; under load
            // the last canary of a window could go missing without this.
            std::thread::sleep(Duration::from_millis(250));
            // tcpdump runs under `ip netns exec`; signal the tcpdump itself.
            let _ = std::process::Command::new("pkill")
                .args([
                    "-INT",
                    "-f",
                    &format!("tcpdump -i .* -w {}", self.file.display()),
                ])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
            tracing_free_note(&self.ns_name, &self.log);
        }
    }
}

fn tracing_free_note(ns: &str, log: &std::path::Path) {
    // The lab has no logger; a capture that had to be killed is worth a line.
    let _ = std::fs::OpenOptions::new()
        .append(true)
        .open(log)
        .map(|mut f| {
            std::io::Write::write_all(
                &mut f,
                format!("capture in {ns} killed after timeout\n").as_bytes(),
            )
        });
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.finish();
    }
}
