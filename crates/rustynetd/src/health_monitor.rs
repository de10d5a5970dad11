//! Health checks of a running node, as a pure verdict over observations the
//! engine gathers each tick: an expired map means trust is lost; a missing
//! tunnel interface or a dead engine means the dataplane is lost. Either way
//! the engine fails closed (and, for the tunnel, rebuilds and re-applies).

/// What the engine observed this tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observations {
    /// Unix seconds now.
    pub now: i64,
    /// Expiry of the map in use, if any.
    pub map_expires_at: Option<i64>,
    /// Already failing closed.
    pub fail_closed: bool,
    /// The tunnel engine should be running.
    pub tunnel_expected: bool,
    /// The tunnel interface exists (None: could not tell).
    pub interface_exists: Option<bool>,
    /// The engine reports itself running.
    pub engine_running: bool,
}

/// The health monitor's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to do.
    Healthy,
    /// The signed map expired without a fresh one: trust lost.
    MapExpired,
    /// The tunnel interface or engine is gone: dataplane lost.
    TunnelGone,
}

impl Verdict {
    /// The reason logged and shown in `status`.
    pub fn reason(self) -> &'static str {
        match self {
            Verdict::Healthy => "healthy",
            Verdict::MapExpired => "signed map expired without a fresh one",
            Verdict::TunnelGone => "tunnel interface gone",
        }
    }
}

/// Decides what, if anything, is wrong. Expiry wins over tunnel loss: with
/// no trusted map there is nothing to rebuild the tunnel for.
pub fn assess(o: &Observations) -> Verdict {
    if !o.fail_closed && o.map_expires_at.is_some_and(|t| o.now >= t) {
        return Verdict::MapExpired;
    }
    // An interface we cannot inspect counts as present: only a positive
    // observation of loss rebuilds the tunnel.
    if o.tunnel_expected && (o.interface_exists == Some(false) || !o.engine_running) {
        return Verdict::TunnelGone;
    }
    Verdict::Healthy
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> Observations {
        Observations {
            now: 100,
            map_expires_at: Some(200),
            fail_closed: false,
            tunnel_expected: true,
            interface_exists: Some(true),
            engine_running: true,
        }
    }

    #[test]
    fn verdicts() {
        assert_eq!(assess(&healthy()), Verdict::Healthy);
        assert_eq!(
            assess(&Observations {
                now: 200,
                ..healthy()
            }),
            Verdict::MapExpired
        );
        // Already failing closed: expiry is not news.
        assert_eq!(
            assess(&Observations {
                now: 200,
                fail_closed: true,
                ..healthy()
            }),
            Verdict::Healthy
        );
        assert_eq!(
            assess(&Observations {
                interface_exists: Some(false),
                ..healthy()
            }),
            Verdict::TunnelGone
        );
        assert_eq!(
            assess(&Observations {
                engine_running: false,
                ..healthy()
            }),
            Verdict::TunnelGone
        );
        assert_eq!(
            assess(&Observations {
                interface_exists: None,
                ..healthy()
            }),
            Verdict::Healthy
        );
        // Not expected to run (down, not enrolled): never "gone".
        assert_eq!(
            assess(&Observations {
                tunnel_expected: false,
                engine_running: false,
                interface_exists: Some(false),
                ..healthy()
            }),
            Verdict::Healthy
        );
        assert_eq!(
            assess(&Observations {
                now: 300,
                interface_exists: Some(false),
                ..healthy()
            }),
            Verdict::MapExpired
        );
    }
}
