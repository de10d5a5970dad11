//! A recording fake of [`Firewall`] for the daemon's unit tests.

use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;

use super::render::render_ruleset;
use super::{Firewall, FirewallError, Ruleset};

/// One call made on a [`FakeFirewall`], in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirewallCall {
    /// [`Firewall::apply`] with this ruleset.
    Apply(Ruleset),
    /// [`Firewall::check`] with this ruleset.
    Check(Ruleset),
    /// [`Firewall::remove`].
    Remove,
    /// [`Firewall::current`].
    Current,
}

#[derive(Debug, Default)]
struct Inner {
    installed: Option<Ruleset>,
    calls: Vec<FirewallCall>,
    fail_next: bool,
}

/// Keeps the "installed" ruleset in memory and records every call. It
/// validates and renders like the real one, so invalid input fails the same
/// way. Clones share state.
#[derive(Debug, Clone, Default)]
pub struct FakeFirewall {
    inner: Arc<Mutex<Inner>>,
}

impl FakeFirewall {
    /// An empty fake (no table installed).
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The ruleset currently "in the kernel".
    pub fn installed(&self) -> Option<Ruleset> {
        self.lock().installed.clone()
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<FirewallCall> {
        self.lock().calls.clone()
    }

    /// Makes the next apply/check/remove fail as if nft refused it, leaving
    /// the installed ruleset unchanged (like the real, transactional one).
    pub fn fail_next_call(&self) {
        self.lock().fail_next = true;
    }

    fn take_failure(inner: &mut Inner, action: &'static str) -> Result<(), FirewallError> {
        if std::mem::take(&mut inner.fail_next) {
            return Err(FirewallError::NftFailed {
                action,
                code: Some(1),
                stderr: "injected failure".into(),
            });
        }
        Ok(())
    }
}

impl Firewall for FakeFirewall {
    fn apply(&mut self, ruleset: &Ruleset) -> Result<(), FirewallError> {
        let mut inner = self.lock();
        inner.calls.push(FirewallCall::Apply(ruleset.clone()));
        Self::take_failure(&mut inner, "apply")?;
        render_ruleset(ruleset)?;
        inner.installed = Some(ruleset.clone());
        Ok(())
    }

    fn check(&mut self, ruleset: &Ruleset) -> Result<(), FirewallError> {
        let mut inner = self.lock();
        inner.calls.push(FirewallCall::Check(ruleset.clone()));
        Self::take_failure(&mut inner, "check")?;
        render_ruleset(ruleset).map(drop)
    }

    fn remove(&mut self) -> Result<(), FirewallError> {
        let mut inner = self.lock();
        inner.calls.push(FirewallCall::Remove);
        Self::take_failure(&mut inner, "remove")?;
        inner.installed = None;
        Ok(())
    }

    fn current(&mut self) -> Result<Option<Value>, FirewallError> {
        let mut inner = self.lock();
        inner.calls.push(FirewallCall::Current);
        inner.installed.as_ref().map(render_ruleset).transpose()
    }
}
