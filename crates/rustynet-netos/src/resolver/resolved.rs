//! systemd-resolved mode: the tunnel link is given Magic DNS as its DNS
//! server and the tailnet suffix as a routing domain (`~suffix`), plus `~.`
//! (every name) only while DNS is protected, through resolved's D-Bus API
//! (`org.freedesktop.resolve1` `SetLinkDNS`/`SetLinkDomains`/
//! `SetLinkDefaultRoute`, called by `resolvectl`). resolv.conf keeps naming
//! resolved's stub, so resolved's cache and the other links' servers stay.
//! resolved authorizes these calls for a caller holding `CAP_NET_ADMIN`, so
//! the daemon's dedicated user needs no polkit rule; `resolvectl` runs as a
//! child and inherits the daemon's ambient capabilities.
//!
//! Nothing persists in resolved beyond the link: when the TUN goes away
//! resolved drops its settings, and `revert` undoes them otherwise.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::mode::nameservers_in;
use super::{RESOLVED_UPSTREAM, RepairOutcome, ResolverConfigurator, ResolverError};
use crate::validate::{validate_ifname, validate_search_domain};

/// Whether `tool` is an executable on PATH.
pub(super) fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(tool).is_file()))
}

/// The tunnel link's DNS settings in systemd-resolved.
#[derive(Debug, Clone)]
pub struct ResolvedLink {
    link: String,
    resolvectl: PathBuf,
    upstream: PathBuf,
    exclusive: bool,
    applied: Option<(Vec<IpAddr>, Vec<String>, bool)>,
}

impl ResolvedLink {
    /// Configures `link` (the TUN) with the system's `resolvectl`.
    pub fn new(link: &str) -> Result<Self, ResolverError> {
        validate_ifname(link)?;
        Ok(Self {
            link: link.to_owned(),
            resolvectl: "resolvectl".into(),
            upstream: RESOLVED_UPSTREAM.into(),
            exclusive: false,
            applied: None,
        })
    }

    /// Uses another `resolvectl` and upstream list (tests).
    pub fn with_paths(mut self, resolvectl: impl Into<PathBuf>, upstream: &Path) -> Self {
        self.resolvectl = resolvectl.into();
        self.upstream = upstream.to_path_buf();
        self
    }

    /// The argument lists `take_over` runs, in order (pure: tested).
    pub fn commands(
        link: &str,
        nameservers: &[IpAddr],
        domains: &[String],
        exclusive: bool,
    ) -> Vec<Vec<String>> {
        let mut dns = vec!["dns".to_owned(), link.to_owned()];
        dns.extend(nameservers.iter().map(IpAddr::to_string));
        let mut domain = vec!["domain".to_owned(), link.to_owned()];
        domain.extend(domains.iter().map(|d| format!("~{d}")));
        if exclusive {
            domain.push("~.".to_owned());
        }
        vec![
            dns,
            domain,
            vec![
                "default-route".to_owned(),
                link.to_owned(),
                if exclusive { "yes" } else { "no" }.to_owned(),
            ],
        ]
    }

    fn run(&self, args: &[String]) -> Result<(), ResolverError> {
        let out = Command::new(&self.resolvectl)
            .args(args)
            .output()
            .map_err(|e| ResolverError::Command {
                command: format!("{} {}", self.resolvectl.display(), args.join(" ")),
                message: e.to_string(),
            })?;
        if out.status.success() {
            return Ok(());
        }
        Err(ResolverError::Command {
            command: format!("{} {}", self.resolvectl.display(), args.join(" ")),
            message: format!(
                "{} ({})",
                String::from_utf8_lossy(&out.stderr).trim(),
                out.status
            ),
        })
    }

    fn revert(&self) -> Result<(), ResolverError> {
        self.run(&["revert".to_owned(), self.link.clone()])
    }
}

impl ResolverConfigurator for ResolvedLink {
    fn take_over(
        &mut self,
        nameservers: &[IpAddr],
        search_domains: &[String],
    ) -> Result<(), ResolverError> {
        if nameservers.is_empty() {
            return Err(ResolverError::NoNameservers);
        }
        for domain in search_domains {
            validate_search_domain(domain)?;
        }
        let want = (
            nameservers.to_vec(),
            search_domains.to_vec(),
            self.exclusive,
        );
        if self.applied.as_ref() == Some(&want) {
            return Ok(());
        }
        for args in Self::commands(&self.link, nameservers, search_domains, self.exclusive) {
            self.run(&args)?;
        }
        self.applied = Some(want);
        Ok(())
    }

    fn restore(&mut self) -> Result<bool, ResolverError> {
        if self.applied.take().is_none() {
            return Ok(false);
        }
        // The link may be gone already (then resolved forgot it too).
        match self.revert() {
            Ok(()) => Ok(true),
            Err(e) if !link_exists(&self.link) => {
                let _ = e;
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }

    fn repair_stale(&mut self) -> Result<RepairOutcome, ResolverError> {
        // A crashed daemon may leave the TUN with its resolved settings;
        // they are undone before anything else.
        if link_exists(&self.link) {
            self.revert()?;
            return Ok(RepairOutcome::Restored);
        }
        Ok(RepairOutcome::Clean)
    }

    fn original_nameservers(&self) -> Result<Vec<IpAddr>, ResolverError> {
        // resolved's real upstreams (its stub would loop back to us).
        Ok(nameservers_in(&self.upstream))
    }

    fn is_taken_over(&self) -> Result<bool, ResolverError> {
        Ok(self.applied.is_some())
    }

    fn set_exclusive(&mut self, exclusive: bool) -> Result<(), ResolverError> {
        self.exclusive = exclusive;
        match self.applied.clone() {
            Some((ns, domains, was)) if was != exclusive => self.take_over(&ns, &domains),
            _ => Ok(()),
        }
    }
}

fn link_exists(link: &str) -> bool {
    Path::new("/sys/class/net").join(link).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_route_only_the_suffix_unless_exclusive() {
        let ns: Vec<IpAddr> = vec!["100.100.100.100".parse().unwrap_or_else(|e| panic!("{e}"))];
        let domains = vec!["rustynet.internal".to_owned()];
        let open = ResolvedLink::commands("rustynet0", &ns, &domains, false);
        assert_eq!(
            open,
            vec![
                vec!["dns", "rustynet0", "100.100.100.100"],
                vec!["domain", "rustynet0", "~rustynet.internal"],
                vec!["default-route", "rustynet0", "no"],
            ]
        );
        let protected = ResolvedLink::commands("rustynet0", &ns, &domains, true);
        assert_eq!(
            protected[1],
            vec!["domain", "rustynet0", "~rustynet.internal", "~."]
        );
        assert_eq!(protected[2], vec!["default-route", "rustynet0", "yes"]);
    }

    #[test]
    fn bad_input_runs_nothing() {
        assert!(ResolvedLink::new("bad name").is_err());
        let mut link = ResolvedLink::new("rn0")
            .unwrap_or_else(|e| panic!("{e}"))
            .with_paths("/nonexistent/resolvectl", Path::new("/nonexistent"));
        assert!(matches!(
            link.take_over(&[], &[]),
            Err(ResolverError::NoNameservers)
        ));
        let evil = vec!["a.example\nnameserver 203.0.113.9".to_owned()];
        assert!(matches!(
            link.take_over(
                &["100.100.100.100".parse().unwrap_or_else(|e| panic!("{e}"))],
                &evil
            ),
            Err(ResolverError::InvalidName(_))
        ));
        assert!(!link.is_taken_over().unwrap_or(true));
    }
}
