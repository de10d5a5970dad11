//! The tunnel backend's lifecycle: start it with the node's key, notice when
//! it (or its interface) is gone, recreate it, stop it. A stopped or lost
//! engine is replaced by a fresh one from the factory, because an engine is
//! not restartable after its interface vanished under it.

use rustynet_tunnel::{
    BackendInfo, InterfaceConfig, NetcheckDone, PathConfig, PeerConfig, PingDone, TunnelBackend,
    TunnelError, TunnelPublicKey, TunnelStats,
};

/// Makes a fresh engine (the daemon passes the backend selector; tests a fake).
pub type BackendFactory = Box<dyn Fn() -> Box<dyn TunnelBackend> + Send>;

/// What [`BackendManager::ensure_started`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Started {
    /// It was already running.
    Running,
    /// It was started for the first time.
    Fresh,
    /// It had been expected to run but was gone; a new one was started.
    Recreated,
}

/// Owns the tunnel engine.
pub struct BackendManager {
    backend: Box<dyn TunnelBackend>,
    make: BackendFactory,
    expected: bool,
    /// The path config last asked for: a recreated engine gets it again.
    paths: Option<PathConfig>,
}

impl BackendManager {
    /// Wraps `backend`; `make` builds replacements.
    pub fn new(backend: Box<dyn TunnelBackend>, make: BackendFactory) -> Self {
        Self {
            backend,
            make,
            expected: false,
            paths: None,
        }
    }

    /// Starts the engine unless it runs. When it was expected to run but is
    /// gone, the old one is torn down and a fresh one started.
    pub fn ensure_started(&mut self, config: &InterfaceConfig) -> Result<Started, TunnelError> {
        if self.expected && self.backend.is_running() {
            return Ok(Started::Running);
        }
        let recreated = self.expected;
        if recreated {
            let _ = self.backend.stop();
            self.backend = (self.make)();
            self.expected = false;
        }
        self.backend.start(config)?;
        self.expected = true;
        if let Some(paths) = &self.paths
            && let Err(e) = self.backend.set_paths(paths)
        {
            tracing::warn!(error = %e, "cannot configure relays and path discovery");
        }
        Ok(if recreated {
            Started::Recreated
        } else {
            Started::Fresh
        })
    }

    /// Stops the engine and removes its interface (a fresh engine replaces
    /// it for the next start).
    pub fn stop(&mut self) -> Result<(), TunnelError> {
        if !self.expected {
            return Ok(());
        }
        let result = self.backend.stop();
        self.backend = (self.make)();
        self.expected = false;
        result
    }

    /// Whether the engine should be running (it was started and not stopped).
    pub fn expected(&self) -> bool {
        self.expected
    }

    /// Whether it is expected and actually running.
    pub fn is_running(&self) -> bool {
        self.expected && self.backend.is_running()
    }

    /// Replaces the peer set (when running; a stopped engine has none).
    pub fn set_peers(&mut self, peers: &[PeerConfig]) -> Result<(), TunnelError> {
        if !self.expected && peers.is_empty() {
            return Ok(());
        }
        self.backend.set_peers(peers)
    }

    /// Relays and path discovery; applied again whenever the engine is
    /// (re)started, and a no-op when unchanged.
    pub fn set_paths(&mut self, config: PathConfig) -> Result<(), TunnelError> {
        if self.paths.as_ref() == Some(&config) {
            return Ok(());
        }
        let result = if self.expected {
            self.backend.set_paths(&config)
        } else {
            Ok(())
        };
        self.paths = Some(config);
        result
    }

    /// Starts a netcheck; `done` gets an empty report when no engine runs.
    pub fn netcheck(&self, done: NetcheckDone) {
        if self.expected {
            self.backend.netcheck(done);
        } else {
            done(Default::default());
        }
    }

    /// Pings `peer` along its current path (`all_paths`: on every path).
    pub fn ping(&self, peer: &TunnelPublicKey, all_paths: bool, done: PingDone) {
        self.backend.ping(peer, all_paths, done);
    }

    /// Statistics.
    pub fn stats(&self) -> Result<TunnelStats, TunnelError> {
        self.backend.stats()
    }

    /// Which engine and why.
    pub fn info(&self) -> BackendInfo {
        self.backend.info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustynet_tunnel::{FakeBackend, TunnelPrivateKey};
    use std::sync::{Arc, Mutex};

    fn config() -> InterfaceConfig {
        InterfaceConfig {
            ifname: "rn0".into(),
            private_key: TunnelPrivateKey::from_bytes([1; 32]),
            listen_port: 0,
            mtu: 1280,
            fwmark: None,
        }
    }

    #[test]
    fn start_recreate_stop() {
        let handles = Arc::new(Mutex::new(Vec::new()));
        let first = FakeBackend::new();
        handles.lock().unwrap().push(first.handle());
        let made = handles.clone();
        let mut m = BackendManager::new(
            Box::new(first),
            Box::new(move || {
                let b = FakeBackend::new();
                made.lock().unwrap().push(b.handle());
                Box::new(b)
            }),
        );
        assert!(!m.is_running());
        assert_eq!(m.ensure_started(&config()).unwrap(), Started::Fresh);
        assert_eq!(m.ensure_started(&config()).unwrap(), Started::Running);
        handles.lock().unwrap()[0].simulate_interface_gone();
        assert!(!m.is_running() && m.expected());
        assert_eq!(m.ensure_started(&config()).unwrap(), Started::Recreated);
        assert!(m.is_running());
        assert_eq!(handles.lock().unwrap().len(), 2);
        m.stop().unwrap();
        assert!(!m.expected() && !m.is_running());
        // A stopped engine accepts an empty peer set without starting.
        m.set_peers(&[]).unwrap();
    }
}
