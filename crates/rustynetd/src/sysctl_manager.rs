//! Sysctls a generation needs (IPv4 forwarding on exit nodes and routers,
//! `src_valid_mark` with an exit node), with the original values remembered
//! per key so they can be put back — also after a crash, because the
//! originals are persisted in the state store.

use std::collections::BTreeMap;

use rustynet_netos::Sysctl;

pub use rustynet_netos::SysctlError;

/// Desired sysctls over a [`Sysctl`] implementation.
pub struct SysctlPlan {
    sysctl: Box<dyn Sysctl + Send>,
    originals: BTreeMap<String, String>,
}

impl SysctlPlan {
    /// Wraps `sysctl`; `originals` are values saved before a crash.
    pub fn new(sysctl: Box<dyn Sysctl + Send>, originals: Vec<(String, String)>) -> Self {
        Self {
            sysctl,
            originals: originals.into_iter().collect(),
        }
    }

    /// Sets exactly `desired` and restores every other key we changed.
    pub fn apply(&mut self, desired: &[(&'static str, &'static str)]) -> Result<(), SysctlError> {
        for (key, value) in desired {
            if !self.originals.contains_key(*key) {
                let original = self.sysctl.get(key)?;
                self.originals.insert((*key).to_owned(), original);
            }
            self.sysctl.set(key, value)?;
        }
        let stale: Vec<String> = self
            .originals
            .keys()
            .filter(|k| !desired.iter().any(|(d, _)| d == k))
            .cloned()
            .collect();
        for key in stale {
            if let Some(original) = self.originals.get(&key).cloned() {
                self.sysctl.set(&key, &original)?;
                self.originals.remove(&key);
            }
        }
        Ok(())
    }

    /// Originals recorded before a restart (from the state store).
    pub fn set_originals(&mut self, originals: Vec<(String, String)>) {
        self.originals.extend(originals);
    }

    /// Values to restore, for the state store.
    pub fn originals(&self) -> Vec<(String, String)> {
        self.originals.clone().into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustynet_netos::FakeSysctl;

    #[test]
    fn sets_and_restores_per_key() {
        let fake = FakeSysctl::with_values([
            ("net.ipv4.ip_forward", "0"),
            ("net.ipv4.conf.all.src_valid_mark", "0"),
        ]);
        let mut plan = SysctlPlan::new(Box::new(fake.clone()), vec![]);
        plan.apply(&[("net.ipv4.ip_forward", "1")]).unwrap();
        assert_eq!(fake.clone().get("net.ipv4.ip_forward").unwrap(), "1");
        assert_eq!(
            plan.originals(),
            vec![("net.ipv4.ip_forward".to_owned(), "0".to_owned())]
        );
        plan.apply(&[]).unwrap();
        assert_eq!(fake.clone().get("net.ipv4.ip_forward").unwrap(), "0");
        assert!(plan.originals().is_empty());
    }

    #[test]
    fn originals_survive_a_restart() {
        let fake = FakeSysctl::with_values([("net.ipv4.ip_forward", "1")]);
        // Before the crash the original was "0" and we had set "1".
        let mut plan = SysctlPlan::new(
            Box::new(fake.clone()),
            vec![("net.ipv4.ip_forward".into(), "0".into())],
        );
        plan.apply(&[]).unwrap();
        assert_eq!(fake.clone().get("net.ipv4.ip_forward").unwrap(), "0");
    }
}
