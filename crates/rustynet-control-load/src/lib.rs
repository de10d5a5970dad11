//! Load generator for the Rustynet control server.
//!
//! Enrolls thousands of simulated nodes (real keys, real enrollment
//! requests, real TLS 1.3 to a real `rustynet-control serve`), holds their
//! map streams and verifies every map as a node would, then measures the
//! server: memory per held stream, CPU while idle, and how long a policy
//! change and a single-node change take to reach the nodes they affect
//! (and whether nodes they do not affect are sent maps anyway).
#![warn(missing_docs)]

pub mod changes;
pub mod fleet;
pub mod procstat;
pub mod scenario;
pub mod server;
pub mod sim_node;
pub mod stats;
pub mod topology;
pub mod verify_pool;

/// Why a load run failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Preparing the data directory or starting the server failed.
    #[error("setup: {0}")]
    Setup(String),
    /// A node could not enroll.
    #[error("enrolling {hostname}: {reason}")]
    Enroll {
        /// Its host label.
        hostname: String,
        /// Why.
        reason: String,
    },
    /// An admin change (policy set, rename) failed.
    #[error("admin change: {0}")]
    Admin(String),
}

/// Raises this process's open-file limit as far as allowed: the soft limit
/// to the hard one, and, as root, the hard one to `want` first. Returns the
/// soft limit in force.
pub fn raise_fd_limit(want: u64) -> std::io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit through a valid, exclusive pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if limit.rlim_max < want {
        let raised = libc::rlimit {
            rlim_cur: want,
            rlim_max: want,
        };
        // SAFETY: setrlimit reads one rlimit through a valid pointer; a
        // refusal (not root) leaves the limit as it was.
        let _ = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) };
    }
    rustynet_control::fdlimit::raise_nofile_limit()
}
