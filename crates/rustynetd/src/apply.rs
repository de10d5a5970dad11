//! Applying a generation as a transaction (Phase 10 section 8).
//!
//! Order: backend peers, then routes and rules, then the firewall table (ACL,
//! kill switch, NAT and DNS protection in one atomic replacement), then
//! forwarding sysctls, then Magic DNS. Step 1 (trust) happened before the
//! plan was made and step 7 (the generation marker) is the caller's commit.
//! A step whose desired part equals what is applied is skipped. When a step
//! fails, it and every step before it are put back to their previous state
//! in reverse order; if that fails too, the caller must fail closed.

use std::fmt;

use rustynet_netos::{Firewall, FirewallError, RoutingConfig, RoutingError, Ruleset};
use rustynet_tunnel::{PeerConfig, TunnelError};

use crate::backend_manager::BackendManager;

use crate::dns_manager::{DnsError, DnsOps};
use crate::plan::{Desired, DnsPlan};
use crate::route_manager::RouteOps;
use crate::sysctl_manager::{SysctlError, SysctlPlan};

/// The apply steps, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// Tunnel peers.
    Backend,
    /// Addresses, routes, policy rules.
    Routes,
    /// The nftables table.
    Firewall,
    /// Forwarding sysctls (exit node / LAN router).
    Forwarding,
    /// Magic DNS resolver and OS resolver configuration.
    Dns,
}

impl Step {
    /// All steps in apply order.
    pub const ALL: [Step; 5] = [
        Step::Backend,
        Step::Routes,
        Step::Firewall,
        Step::Forwarding,
        Step::Dns,
    ];

    /// Wire name (also what the fault-injection switch takes).
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Backend => "backend",
            Step::Routes => "routes",
            Step::Firewall => "firewall",
            Step::Forwarding => "forwarding",
            Step::Dns => "dns",
        }
    }

    /// Parses [`Step::as_str`].
    pub fn parse(name: &str) -> Option<Step> {
        Step::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure of one effect.
#[derive(Debug, thiserror::Error)]
pub enum EffectError {
    /// Tunnel backend.
    #[error(transparent)]
    Backend(#[from] TunnelError),
    /// Routing.
    #[error(transparent)]
    Routing(#[from] RoutingError),
    /// Firewall.
    #[error(transparent)]
    Firewall(#[from] FirewallError),
    /// Sysctl.
    #[error(transparent)]
    Sysctl(#[from] SysctlError),
    /// DNS.
    #[error(transparent)]
    Dns(#[from] DnsError),
    /// Injected by the fault-injection switch (tests only).
    #[error("injected failure")]
    Injected,
}

/// A generation that could not be applied.
#[derive(Debug, thiserror::Error)]
#[error("apply failed at step {step}: {error}{}", match rollback { Ok(()) => " (rolled back)".to_owned(), Err(e) => format!("; rollback failed: {e}") })]
pub struct ApplyError {
    /// Step that failed.
    pub step: Step,
    /// Why.
    pub error: EffectError,
    /// Outcome of putting earlier steps back.
    pub rollback: Result<(), RollbackError>,
}

/// Rollback steps that failed.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(|(s, e)| format!("{s}: {e}")).collect::<Vec<_>>().join("; "))]
pub struct RollbackError(pub Vec<(Step, EffectError)>);

/// The effects a transaction drives.
pub struct Effects {
    /// Tunnel engine.
    pub backend: BackendManager,
    /// Routing.
    pub routing: Box<dyn RouteOps>,
    /// Firewall.
    pub firewall: Box<dyn Firewall + Send>,
    /// Sysctls.
    pub sysctl: SysctlPlan,
    /// Magic DNS.
    pub dns: Box<dyn DnsOps>,
}

/// What is currently applied, per step (`None`: nothing known).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Peers.
    pub peers: Option<Vec<PeerConfig>>,
    /// Routing.
    pub routing: Option<RoutingConfig>,
    /// Firewall.
    pub firewall: Option<Ruleset>,
    /// Sysctls.
    pub sysctls: Option<Vec<(&'static str, &'static str)>>,
    /// DNS.
    pub dns: Option<DnsPlan>,
}

/// Test-only fault injection: fail `step` right after its effect was
/// applied (so rollback has something to undo), and optionally fail that
/// step's rollback too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Step to fail.
    pub step: Option<Step>,
    /// Also fail its rollback.
    pub rollback: bool,
}

impl Faults {
    /// Reads `RUSTYNET_FAULT_STEP` (and `RUSTYNET_FAULT_ROLLBACK=1`). Only
    /// builds with the `fault-injection` feature look at the environment.
    pub fn from_env() -> Self {
        #[cfg(feature = "fault-injection")]
        {
            let step = std::env::var("RUSTYNET_FAULT_STEP")
                .ok()
                .and_then(|s| Step::parse(&s));
            let rollback = std::env::var("RUSTYNET_FAULT_ROLLBACK").is_ok_and(|v| v == "1");
            Self { step, rollback }
        }
        #[cfg(not(feature = "fault-injection"))]
        {
            Self::default()
        }
    }

    /// The faults for the next apply. With `RUSTYNET_FAULT_FILE=PATH` (in
    /// fault-injection builds only) a test arms a fault in a daemon that is
    /// already running: while PATH exists it holds `STEP` or `STEP rollback`
    /// and overrides the environment; without it these faults stand.
    pub fn for_next_apply(self) -> Self {
        #[cfg(feature = "fault-injection")]
        if let Some(text) =
            std::env::var_os("RUSTYNET_FAULT_FILE").and_then(|p| std::fs::read_to_string(p).ok())
        {
            let mut words = text.split_whitespace();
            let step = words.next().and_then(Step::parse);
            let rollback = words.any(|w| w == "rollback");
            return Self { step, rollback };
        }
        self
    }
}

fn changed<T: PartialEq>(applied: &Option<T>, desired: &T) -> bool {
    applied.as_ref() != Some(desired)
}

fn run_step(fx: &mut Effects, step: Step, d: &Desired) -> Result<(), EffectError> {
    match step {
        Step::Backend => fx.backend.set_peers(&d.peers)?,
        Step::Routes => {
            fx.routing.apply(&d.routing)?;
        }
        Step::Firewall => fx.firewall.apply(&d.firewall)?,
        Step::Forwarding => fx.sysctl.apply(&d.sysctls)?,
        Step::Dns => fx.dns.apply(&d.dns)?,
    }
    Ok(())
}

fn undo_step(fx: &mut Effects, step: Step, prev: &Applied) -> Result<(), EffectError> {
    match step {
        Step::Backend => fx.backend.set_peers(prev.peers.as_deref().unwrap_or(&[]))?,
        Step::Routes => match &prev.routing {
            Some(r) => {
                fx.routing.apply(r)?;
            }
            None => {
                fx.routing.clear()?;
            }
        },
        Step::Firewall => match &prev.firewall {
            Some(r) => fx.firewall.apply(r)?,
            None => fx.firewall.remove()?,
        },
        Step::Forwarding => fx.sysctl.apply(prev.sysctls.as_deref().unwrap_or(&[]))?,
        Step::Dns => match &prev.dns {
            Some(plan) => fx.dns.apply(plan)?,
            None => fx.dns.stop()?,
        },
    }
    Ok(())
}

fn needs(step: Step, prev: &Applied, d: &Desired) -> bool {
    match step {
        Step::Backend => changed(&prev.peers, &d.peers),
        Step::Routes => changed(&prev.routing, &d.routing),
        Step::Firewall => changed(&prev.firewall, &d.firewall),
        Step::Forwarding => changed(&prev.sysctls, &d.sysctls),
        Step::Dns => changed(&prev.dns, &d.dns),
    }
}

/// Applies `desired` over `applied`. On success `applied` describes the new
/// generation; on failure it is unchanged (and, if the rollback succeeded,
/// so is the OS), except that a step whose rollback failed is marked
/// unknown (`None`): what the OS holds there is no longer known, so the
/// next apply must redo it rather than trust the old bookkeeping.
pub fn apply(
    fx: &mut Effects,
    applied: &mut Applied,
    desired: &Desired,
    faults: Faults,
) -> Result<Vec<Step>, ApplyError> {
    let mut touched: Vec<Step> = Vec::new();
    for step in Step::ALL {
        if !needs(step, applied, desired) {
            continue;
        }
        touched.push(step);
        let mut result = run_step(fx, step, desired);
        if result.is_ok() && faults.step == Some(step) {
            result = Err(EffectError::Injected);
        }
        if let Err(error) = result {
            let rollback = rollback(fx, &touched, applied, faults);
            if let Err(RollbackError(failed)) = &rollback {
                for (step, _) in failed {
                    forget(applied, *step);
                }
            }
            return Err(ApplyError {
                step,
                error,
                rollback,
            });
        }
    }
    applied.peers = Some(desired.peers.clone());
    applied.routing = Some(desired.routing.clone());
    applied.firewall = Some(desired.firewall.clone());
    applied.sysctls = Some(desired.sysctls.clone());
    applied.dns = Some(desired.dns.clone());
    Ok(touched)
}

fn forget(applied: &mut Applied, step: Step) {
    match step {
        Step::Backend => applied.peers = None,
        Step::Routes => applied.routing = None,
        Step::Firewall => applied.firewall = None,
        Step::Forwarding => applied.sysctls = None,
        Step::Dns => applied.dns = None,
    }
}

fn rollback(
    fx: &mut Effects,
    touched: &[Step],
    prev: &Applied,
    faults: Faults,
) -> Result<(), RollbackError> {
    let mut failures = Vec::new();
    for step in touched.iter().rev() {
        let mut result = undo_step(fx, *step, prev);
        if faults.rollback && faults.step == Some(*step) {
            result = Err(EffectError::Injected);
        }
        if let Err(e) = result {
            tracing::error!(step = %step, error = %e, "rollback step failed");
            failures.push((*step, e));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(RollbackError(failures))
    }
}

#[cfg(test)]
mod tests;
