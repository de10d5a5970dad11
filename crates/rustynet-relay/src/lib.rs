//! Rustynet's relay: carries opaque packets between nodes that cannot reach
//! each other directly, addressed by their 32-byte node keys. It never sees
//! plaintext (the packets are already encrypted end to end) and never names
//! the tunnel protocol.
//!
//! - [`core`]: the sans-IO protocol core (admission, pair rules, queues,
//!   token buckets, deadlines), tested on a fake clock.
//! - [`server`]: the tokio shell around it: TLS 1.3, the HTTP/1.1 upgrade,
//!   `/healthz`, `/metrics`, and the UDP binding responder.
//! - [`client`]: the node side, one thread per relay, for the thread-based
//!   dataplane engine.
//! - [`frame`], [`login`], [`upgrade`], [`binding`], [`udp`]: the wire
//!   formats, pure.
#![warn(missing_docs)]

pub mod binding;
pub mod client;
pub mod core;
mod error;
pub mod frame;
pub mod login;
mod metrics;
pub mod server;
pub mod tls;
mod tlsio;
pub mod udp;
pub mod upgrade;

pub use client::{ClientConfig, ClientSink, ClientTimeouts, ConnState, RelayClient};
pub use error::RelayError;
pub use metrics::Metrics;
pub use server::{ControlKeys, RelayServer, ServerConfig, serve};
