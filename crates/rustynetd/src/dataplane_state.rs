//! The dataplane state machine of Phase 10 section 7, as a pure value.
//!
//! Every change goes through [`StateMachine::handle`], which refuses
//! transitions the plan forbids (for example `fail_closed` straight to
//! `dataplane_applied`: trust must be re-validated first) and returns the
//! transitions it made so the caller can log them.

use rustynet_proto::ipc::DataplaneState;
use serde::Serialize;

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// A map passed TLS, signature and freshness checks.
    TrustEstablished,
    /// A generation was applied; `exit` says whether an exit node is in use.
    Applied {
        /// Exit node active in the applied generation.
        exit: bool,
    },
    /// Trust was lost (map expired, control key mismatch, ...).
    TrustLost(String),
    /// An apply failed and could not be rolled back.
    RollbackFailed(String),
    /// State failed its integrity check.
    IntegrityFailure(String),
    /// The tunnel or another dataplane part is unhealthy.
    HealthLost(String),
    /// The user asked to disconnect.
    Down,
}

impl Trigger {
    /// Short reason for logs.
    pub fn reason(&self) -> String {
        match self {
            Trigger::TrustEstablished => "signed map verified".into(),
            Trigger::Applied { exit: true } => "generation applied with exit node".into(),
            Trigger::Applied { exit: false } => "generation applied".into(),
            Trigger::TrustLost(r) => format!("trust lost: {r}"),
            Trigger::RollbackFailed(r) => format!("apply failed and rollback failed: {r}"),
            Trigger::IntegrityFailure(r) => format!("integrity failure: {r}"),
            Trigger::HealthLost(r) => format!("health lost: {r}"),
            Trigger::Down => "down requested".into(),
        }
    }
}

/// One state change, as logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transition {
    /// Previous state.
    pub from_state: DataplaneState,
    /// New state.
    pub to_state: DataplaneState,
    /// Why.
    pub reason: String,
    /// Generation involved (0 if none).
    pub generation: u64,
}

/// A trigger that is not allowed in the current state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("transition from {from} on '{trigger}' is not allowed")]
pub struct Forbidden {
    /// Current state.
    pub from: &'static str,
    /// The refused trigger.
    pub trigger: String,
}

/// The state machine.
#[derive(Debug, Clone)]
pub struct StateMachine {
    state: DataplaneState,
}

impl Default for StateMachine {
    fn default() -> Self {
        Self {
            state: DataplaneState::Init,
        }
    }
}

impl StateMachine {
    /// Current state.
    pub fn state(&self) -> DataplaneState {
        self.state
    }

    /// Whether the state machine is failing closed.
    pub fn is_fail_closed(&self) -> bool {
        self.state == DataplaneState::FailClosed
    }

    /// Applies `trigger`; returns the transitions made (empty if none).
    pub fn handle(
        &mut self,
        trigger: Trigger,
        generation: u64,
    ) -> Result<Vec<Transition>, Forbidden> {
        use DataplaneState::*;
        let targets: Vec<DataplaneState> = match (&self.state, &trigger) {
            (_, Trigger::Down) => vec![Init],
            (
                _,
                Trigger::TrustLost(_)
                | Trigger::RollbackFailed(_)
                | Trigger::IntegrityFailure(_)
                | Trigger::HealthLost(_),
            ) => {
                vec![FailClosed]
            }
            (Init | FailClosed, Trigger::TrustEstablished) => vec![ControlTrusted],
            (ControlTrusted | DataplaneApplied | ExitActive, Trigger::TrustEstablished) => vec![],
            (ControlTrusted, Trigger::Applied { exit: false }) => vec![DataplaneApplied],
            (ControlTrusted, Trigger::Applied { exit: true }) => vec![DataplaneApplied, ExitActive],
            (DataplaneApplied, Trigger::Applied { exit: true }) => vec![ExitActive],
            (ExitActive, Trigger::Applied { exit: false }) => vec![DataplaneApplied],
            (DataplaneApplied, Trigger::Applied { exit: false })
            | (ExitActive, Trigger::Applied { exit: true }) => vec![],
            (Init | FailClosed, Trigger::Applied { .. }) => {
                return Err(Forbidden {
                    from: self.state.as_str(),
                    trigger: trigger.reason(),
                });
            }
        };
        let reason = trigger.reason();
        let mut out = Vec::new();
        for to in targets {
            if to == self.state {
                continue;
            }
            out.push(Transition {
                from_state: self.state,
                to_state: to,
                reason: reason.clone(),
                generation,
            });
            self.state = to;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DataplaneState::*;

    fn run(triggers: &[Trigger]) -> (StateMachine, Vec<Result<Vec<Transition>, Forbidden>>) {
        let mut sm = StateMachine::default();
        let out = triggers.iter().map(|t| sm.handle(t.clone(), 1)).collect();
        (sm, out)
    }

    #[test]
    fn happy_path_and_exit() {
        let (sm, out) = run(&[
            Trigger::TrustEstablished,
            Trigger::Applied { exit: false },
            Trigger::Applied { exit: true },
            Trigger::Applied { exit: false },
        ]);
        assert_eq!(sm.state(), DataplaneApplied);
        let path: Vec<_> = out
            .iter()
            .flat_map(|r| r.as_ref().unwrap())
            .map(|t| t.to_state)
            .collect();
        assert_eq!(
            path,
            [
                ControlTrusted,
                DataplaneApplied,
                ExitActive,
                DataplaneApplied
            ]
        );
    }

    #[test]
    fn cannot_apply_without_trust() {
        let (sm, out) = run(&[Trigger::Applied { exit: false }]);
        assert!(out[0].is_err());
        assert_eq!(sm.state(), Init);
        let (sm, out) = run(&[
            Trigger::HealthLost("tun gone".into()),
            Trigger::Applied { exit: true },
        ]);
        assert!(out[1].is_err());
        assert_eq!(sm.state(), FailClosed);
    }

    #[test]
    fn fail_closed_recovers_only_through_trust() {
        let (sm, out) = run(&[
            Trigger::TrustEstablished,
            Trigger::Applied { exit: true },
            Trigger::TrustLost("expired".into()),
            Trigger::TrustEstablished,
            Trigger::Applied { exit: true },
        ]);
        assert!(out.iter().all(Result::is_ok));
        assert_eq!(sm.state(), ExitActive);
        let last = out[4].as_ref().unwrap();
        assert_eq!(
            last.len(),
            2,
            "control_trusted -> dataplane_applied -> exit_active"
        );
    }

    #[test]
    fn every_state_can_fail_closed_and_go_down() {
        for prefix in [
            vec![],
            vec![Trigger::TrustEstablished],
            vec![Trigger::TrustEstablished, Trigger::Applied { exit: true }],
        ] {
            let mut triggers = prefix.clone();
            triggers.push(Trigger::IntegrityFailure("x".into()));
            assert_eq!(run(&triggers).0.state(), FailClosed);
            let mut triggers = prefix;
            triggers.push(Trigger::Down);
            assert_eq!(run(&triggers).0.state(), Init);
        }
    }
}
