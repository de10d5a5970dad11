//! An in-memory backend for the daemon's tests.
//!
//! It applies the same validation as the real engines (through [`PeerSet`]),
//! records every call, and can be told to fail the next call or to lose its
//! interface, which is what rollback and recovery tests need.

use std::sync::{Arc, Mutex, MutexGuard};

use rustynet_proto::TunnelPublicKey;

use crate::{
    BackendInfo, InterfaceConfig, PeerConfig, PeerSet, PeerStats, TunnelBackend, TunnelError,
    TunnelStats,
};

/// Port the fake reports when asked for an ephemeral one.
const FAKE_EPHEMERAL_PORT: u16 = 40_000;

/// One recorded call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FakeCall {
    /// `start` with this interface name.
    Start(String),
    /// `set_peers` with this list.
    SetPeers(Vec<PeerConfig>),
    /// `add_peer`.
    AddPeer(PeerConfig),
    /// `update_peer`.
    UpdatePeer(PeerConfig),
    /// `remove_peer`.
    RemovePeer(TunnelPublicKey),
    /// `stats`.
    Stats,
    /// `stop`.
    Stop,
}

impl FakeCall {
    fn op(&self) -> &'static str {
        match self {
            Self::Start(_) => "start",
            Self::SetPeers(_) => "set_peers",
            Self::AddPeer(_) => "add_peer",
            Self::UpdatePeer(_) => "update_peer",
            Self::RemovePeer(_) => "remove_peer",
            Self::Stats => "stats",
            Self::Stop => "stop",
        }
    }
}

#[derive(Default)]
struct State {
    config: Option<InterfaceConfig>,
    interface_gone: bool,
    peers: PeerSet,
    calls: Vec<FakeCall>,
    /// (only this op, or any op if `None`) -> the error to return.
    fail_next: Option<(Option<&'static str>, TunnelError)>,
}

/// The in-memory backend. Clone a [`FakeHandle`] from it before handing it
/// to the code under test.
pub struct FakeBackend {
    state: Arc<Mutex<State>>,
}

/// Inspects and steers a [`FakeBackend`] from the test.
#[derive(Clone)]
pub struct FakeHandle {
    state: Arc<Mutex<State>>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic in another test thread must not hide this test's result.
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl Default for FakeBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeBackend {
    /// A stopped fake with no peers.
    pub fn new() -> Self {
        Self {
            state: Arc::new(Mutex::new(State::default())),
        }
    }

    /// A handle that sees the same state.
    pub fn handle(&self) -> FakeHandle {
        FakeHandle {
            state: Arc::clone(&self.state),
        }
    }

    /// Records the call and returns an injected failure if one is armed.
    fn enter(&self, call: FakeCall) -> Result<MutexGuard<'_, State>, TunnelError> {
        let mut st = lock(&self.state);
        let op = call.op();
        st.calls.push(call);
        let armed = matches!(&st.fail_next, Some((None, _)))
            || matches!(&st.fail_next, Some((Some(o), _)) if *o == op);
        if armed && let Some((_, err)) = st.fail_next.take() {
            return Err(err);
        }
        Ok(st)
    }

    fn running(st: &State) -> Result<(), TunnelError> {
        match &st.config {
            None => Err(TunnelError::NotRunning),
            Some(cfg) if st.interface_gone => Err(TunnelError::InterfaceGone {
                ifname: cfg.ifname.clone(),
            }),
            Some(_) => Ok(()),
        }
    }
}

impl FakeHandle {
    /// Every call made so far, in order.
    pub fn calls(&self) -> Vec<FakeCall> {
        lock(&self.state).calls.clone()
    }

    /// Forgets the recorded calls.
    pub fn clear_calls(&self) {
        lock(&self.state).calls.clear();
    }

    /// Makes the next call fail with [`TunnelError::Injected`] (no state change).
    pub fn fail_next(&self) {
        lock(&self.state).fail_next = Some((None, TunnelError::Injected { op: "any" }));
    }

    /// Makes the next call of `op` (e.g. `"set_peers"`) fail with `err`.
    pub fn fail_next_op(&self, op: &'static str, err: TunnelError) {
        lock(&self.state).fail_next = Some((Some(op), err));
    }

    /// Pretends the interface was deleted externally.
    pub fn simulate_interface_gone(&self) {
        lock(&self.state).interface_gone = true;
    }

    /// The peers currently configured.
    pub fn peers(&self) -> Vec<PeerConfig> {
        lock(&self.state).peers.iter().cloned().collect()
    }

    /// The config of the running interface.
    pub fn config(&self) -> Option<InterfaceConfig> {
        lock(&self.state).config.clone()
    }
}

impl TunnelBackend for FakeBackend {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            path_discovery: false,
            engine: "fake".into(),
            detail: "in-memory test backend".into(),
        }
    }

    fn start(&mut self, config: &InterfaceConfig) -> Result<(), TunnelError> {
        let mut st = self.enter(FakeCall::Start(config.ifname.clone()))?;
        if st.config.is_some() {
            return Err(TunnelError::AlreadyRunning);
        }
        config.validate()?;
        st.config = Some(config.clone());
        st.interface_gone = false;
        st.peers = PeerSet::new();
        Ok(())
    }

    fn set_peers(&mut self, peers: &[PeerConfig]) -> Result<(), TunnelError> {
        let mut st = self.enter(FakeCall::SetPeers(peers.to_vec()))?;
        Self::running(&st)?;
        st.peers = PeerSet::from_peers(peers)?;
        Ok(())
    }

    fn add_peer(&mut self, peer: &PeerConfig) -> Result<(), TunnelError> {
        let mut st = self.enter(FakeCall::AddPeer(peer.clone()))?;
        Self::running(&st)?;
        st.peers = st.peers.with_added(peer)?;
        Ok(())
    }

    fn update_peer(&mut self, peer: &PeerConfig) -> Result<(), TunnelError> {
        let mut st = self.enter(FakeCall::UpdatePeer(peer.clone()))?;
        Self::running(&st)?;
        st.peers = st.peers.with_updated(peer)?;
        Ok(())
    }

    fn remove_peer(&mut self, key: &TunnelPublicKey) -> Result<(), TunnelError> {
        let mut st = self.enter(FakeCall::RemovePeer(*key))?;
        Self::running(&st)?;
        st.peers = st.peers.with_removed(key)?;
        Ok(())
    }

    fn stats(&self) -> Result<TunnelStats, TunnelError> {
        let st = self.enter(FakeCall::Stats)?;
        Self::running(&st)?;
        let port = st.config.as_ref().map_or(0, |c| c.listen_port);
        Ok(TunnelStats {
            path_switches: Vec::new(),
            mapped: Vec::new(),
            probes: Default::default(),
            relays: Vec::new(),
            listen_port: if port == 0 { FAKE_EPHEMERAL_PORT } else { port },
            peers: st
                .peers
                .iter()
                .map(|p| PeerStats {
                    path: Default::default(),
                    public_key: p.public_key,
                    endpoint: p.endpoint,
                    last_handshake: None,
                    rx_bytes: 0,
                    tx_bytes: 0,
                })
                .collect(),
            rx_source_mismatch: 0,
        })
    }

    fn stop(&mut self) -> Result<(), TunnelError> {
        let mut st = self.enter(FakeCall::Stop)?;
        st.config = None;
        st.interface_gone = false;
        st.peers = PeerSet::new();
        Ok(())
    }

    fn is_running(&self) -> bool {
        let st = lock(&self.state);
        st.config.is_some() && !st.interface_gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TunnelPrivateKey;

    fn cfg() -> InterfaceConfig {
        InterfaceConfig {
            ifname: "rnfake0".into(),
            private_key: TunnelPrivateKey::from_bytes([3; 32]),
            listen_port: 0,
            mtu: 1420,
            fwmark: Some(0x51820),
        }
    }
    fn peer(b: u8, net: &str) -> PeerConfig {
        PeerConfig {
            candidates: Vec::new(),
            home_relay: None,
            path_key: None,
            public_key: TunnelPublicKey([b; 32]),
            endpoint: None,
            allowed_ips: vec![net.parse().unwrap()],
            persistent_keepalive_secs: None,
        }
    }

    #[test]
    fn records_calls_in_order() {
        let mut fake = FakeBackend::new();
        let h = fake.handle();
        fake.start(&cfg()).unwrap();
        fake.set_peers(&[peer(1, "100.64.0.1/32")]).unwrap();
        fake.remove_peer(&TunnelPublicKey([1; 32])).unwrap();
        fake.stop().unwrap();
        let ops: Vec<_> = h.calls().iter().map(FakeCall::op).collect();
        assert_eq!(ops, ["start", "set_peers", "remove_peer", "stop"]);
        h.clear_calls();
        assert!(h.calls().is_empty());
    }

    #[test]
    fn injected_failure_changes_nothing_and_fires_once() {
        let mut fake = FakeBackend::new();
        let h = fake.handle();
        fake.start(&cfg()).unwrap();
        fake.set_peers(&[peer(1, "100.64.0.1/32")]).unwrap();
        h.fail_next();
        let err = fake.set_peers(&[peer(2, "100.64.0.2/32")]).unwrap_err();
        assert!(matches!(err, TunnelError::Injected { .. }));
        assert_eq!(h.peers(), vec![peer(1, "100.64.0.1/32")]);
        fake.set_peers(&[peer(2, "100.64.0.2/32")]).unwrap();
        assert_eq!(h.peers(), vec![peer(2, "100.64.0.2/32")]);
    }

    #[test]
    fn op_specific_failure_waits_for_that_op() {
        let mut fake = FakeBackend::new();
        let h = fake.handle();
        h.fail_next_op("add_peer", TunnelError::Injected { op: "add_peer" });
        fake.start(&cfg()).unwrap();
        fake.stats().unwrap();
        assert!(fake.add_peer(&peer(1, "100.64.0.1/32")).is_err());
        fake.add_peer(&peer(1, "100.64.0.1/32")).unwrap();
        assert_eq!(h.peers().len(), 1);
    }

    #[test]
    fn ephemeral_port_is_resolved_and_config_kept() {
        let mut fake = FakeBackend::new();
        fake.start(&cfg()).unwrap();
        assert_eq!(fake.stats().unwrap().listen_port, FAKE_EPHEMERAL_PORT);
        assert_eq!(fake.handle().config(), Some(cfg()));
    }
}
