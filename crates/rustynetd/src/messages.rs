//! What the daemon's tasks say to the engine, and the handle they say it
//! through.
//!
//! A leaf module: the engine, the control task and the IPC server all depend
//! on it and on nothing of each other, so none of them imports another in a
//! circle.
//!
//! The engine's queue is bounded. IPC commands that find it full are refused
//! at once with `busy` (a caller cannot grow the daemon's memory by
//! flooding it); the control task waits for room (back-pressure on the map
//! stream); a periodic tick that finds it full is skipped.

use std::net::SocketAddr;

use rustynet_proto::SignedEnvelope;
use rustynet_proto::control_api::RegisterResponse;
use rustynet_proto::handover::KeyHandover;
use rustynet_proto::ipc::{Command, ErrorCode, Reply, UpArgs};
use tokio::sync::{mpsc, oneshot};

use crate::state_store::NodeKeys;

/// How many messages may wait for the engine.
pub const ENGINE_QUEUE: usize = 256;

/// Messages to the engine.
pub enum EngineMsg {
    /// An IPC command from an authenticated caller.
    Ipc {
        /// The command.
        cmd: Command,
        /// Who sent it.
        caller: Caller,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<Reply, IpcFailure>>,
    },
    /// A signed map as received from control (not yet verified), with the
    /// control signing key's handovers sent beside it.
    Map(SignedEnvelope, Vec<KeyHandover>),
    /// Control connection news.
    Control(ControlEvent),
    /// Periodic health check.
    Tick,
    /// A task the engine started has finished; its result comes back here
    /// so the engine thread never waits on the network.
    Done(TaskDone),
    /// Stop the engine (the daemon is exiting; the dataplane stays as is).
    Shutdown,
}

/// Results of work the engine ran off its own thread.
pub enum TaskDone {
    /// The control host was resolved (at `up` or at start-up).
    ControlResolved {
        /// The control URL the lookup was for (a later `up` may have changed it).
        control_url: String,
        /// What it resolved to; empty when the lookup failed.
        addrs: Vec<SocketAddr>,
    },
    /// A registration with control finished.
    Enrolled(Box<Enrolled>),
    /// A relay ticket request finished.
    RelayTicket(Result<SignedEnvelope, String>),
}

/// The outcome of `rustynet up` registering with control, carried back to
/// the engine with everything it needs to finish the command.
pub struct Enrolled {
    /// The `up` arguments.
    pub args: UpArgs,
    /// The fresh keys the node registered with (kept only on success).
    pub keys: NodeKeys,
    /// Control's answer.
    pub result: Result<RegisterResponse, IpcFailure>,
    /// The caller waiting for `up`.
    pub reply: oneshot::Sender<Result<Reply, IpcFailure>>,
    /// The engine's enrollment epoch when it started (a `down` meanwhile
    /// cancels it).
    pub epoch: u64,
    /// It renewed the keys of the enrolled node (`up --force-reauth`).
    pub renew: bool,
}

/// A refused or failed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpcFailure {
    /// Category.
    pub code: ErrorCode,
    /// One line for the operator.
    pub message: String,
}

impl IpcFailure {
    /// A failure of category `code`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Every command.
    Admin,
    /// Read-only commands.
    ReadOnly,
}

/// An authenticated IPC peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Peer uid.
    pub uid: u32,
    /// Peer pid.
    pub pid: i32,
    /// Role.
    pub role: Role,
}

/// News from the control task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlEvent {
    /// The map stream is open.
    Connected {
        /// The control URL it is open to.
        url: String,
        /// It moved from another URL (failover, or back to the preferred).
        switched: bool,
    },
    /// The connection dropped (will retry).
    Disconnected(String),
    /// Control refused this node.
    Refused {
        /// Stable code (e.g. `node_expired`).
        code: String,
        /// Message.
        message: String,
    },
}

/// Why a message could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// The queue is full; try again later.
    Busy,
    /// The engine has stopped.
    Gone,
}

/// A cloneable handle to the engine.
#[derive(Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<EngineMsg>,
}

impl EngineHandle {
    /// A handle and the receiver the engine reads.
    pub fn new() -> (Self, mpsc::Receiver<EngineMsg>) {
        let (tx, rx) = mpsc::channel(ENGINE_QUEUE);
        (Self { tx }, rx)
    }

    /// Queues a message without waiting.
    pub fn try_send(&self, msg: EngineMsg) -> Result<(), SendError> {
        self.tx.try_send(msg).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SendError::Busy,
            mpsc::error::TrySendError::Closed(_) => SendError::Gone,
        })
    }

    /// Queues a message, waiting for room; `false` if the engine is gone.
    pub async fn send(&self, msg: EngineMsg) -> bool {
        self.tx.send(msg).await.is_ok()
    }

    /// Queues a message from a thread outside the runtime (the daemon's
    /// main thread at shutdown), waiting for room.
    pub fn blocking_send(&self, msg: EngineMsg) -> bool {
        self.tx.blocking_send(msg).is_ok()
    }

    /// A handle whose messages land in the returned receiver, for tests of
    /// the engine's callers (IPC, control) without an engine.
    #[cfg(test)]
    pub(crate) fn channel() -> (Self, mpsc::Receiver<EngineMsg>) {
        Self::new()
    }
}
