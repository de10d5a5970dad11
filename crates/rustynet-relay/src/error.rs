//! The crate's error type.

use std::net::SocketAddr;

/// Why a relay server or client could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// A configuration value or file is unusable.
    #[error("relay configuration: {0}")]
    Config(String),
    /// TLS setup failed.
    #[error("relay TLS: {0}")]
    Tls(String),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Another I/O failure.
    #[error("relay I/O: {0}")]
    Io(#[from] std::io::Error),
}
