//! Service plumbing shared by `rustynetd`, `rustynet-control` (and any
//! other long-running Rustynet binary), so they log and report readiness
//! the same way:
//!
//! - [`log`]: under systemd (`$JOURNAL_STREAM` set) events go to journald
//!   natively — one entry per event, `PRIORITY` from the level (so
//!   `journalctl -p warning` works), every field its own journal field;
//!   otherwise JSON lines on stderr. Both carry the same fields: `message`,
//!   `level`, `target` and the event's own fields, flattened.
//! - [`notify`]: `sd_notify` readiness for `Type=notify` units.
//! - [`metric_names`]: metric names an exposition carries and a rules file
//!   uses (the deploy checks' shared half).
//! - [`metrics_http`]: the bounded plain-HTTP `GET /metrics` endpoint.
//! - [`docs`]: man pages and shell completions from each binary's own
//!   command-line definition (the package ships them).
//! - [`alloc`]: allocator tuning for processes that move packets.
#![warn(missing_docs)]

pub mod alloc;
pub mod docs;
pub mod log;
pub mod metric_names;
pub mod metrics_http;
pub mod notify;

pub use log::init_logging;
pub use notify::notify;
