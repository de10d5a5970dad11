//! Online / last seen for `nodes list`, which runs in another process than
//! `serve` and so cannot see its open streams: `serve` writes `last_seen`
//! when a map stream opens and then every [`PRESENCE_INTERVAL`] for every
//! node still holding one, and a node counts as online while its
//! `last_seen` is within [`ONLINE_WITHIN`].

use std::sync::Arc;
use std::time::Duration;

use crate::network::Network;
use crate::now_unix;

/// How often `serve` records that streaming nodes are still there.
pub const PRESENCE_INTERVAL: Duration = Duration::from_secs(60);

/// A node seen this recently (seconds) is online: two refreshes and a
/// margin, so one slow write does not flip it.
pub const ONLINE_WITHIN: i64 = 150;

/// Whether a node last seen at `last_seen` counts as online at `now`.
pub fn is_online(last_seen: Option<i64>, now: i64) -> bool {
    last_seen.is_some_and(|t| now.saturating_sub(t) <= ONLINE_WITHIN)
}

/// `12s ago`, `5m ago`, `3h ago`, `2d ago`, or `never`.
pub fn ago(last_seen: Option<i64>, now: i64) -> String {
    let Some(t) = last_seen else {
        return "never".into();
    };
    let s = now.saturating_sub(t).max(0);
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86_400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

/// Runs in `serve`: every `interval`, writes `last_seen = now` for each
/// node with an open map stream (one transaction for all of them, off the
/// async threads; a failure is logged and retried next round).
pub async fn record_presence(network: Arc<Network>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let online: Vec<_> = network.current().online.iter().copied().collect();
        if online.is_empty() {
            continue;
        }
        let store = network.store().clone();
        let done = tokio::task::spawn_blocking(move || store.touch(&online, now_unix())).await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot record which nodes are online"),
            Err(e) => tracing::warn!(error = %e, "presence task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn online_window_and_ages() {
        assert!(is_online(Some(1000), 1000 + ONLINE_WITHIN));
        assert!(!is_online(Some(1000), 1001 + ONLINE_WITHIN));
        assert!(!is_online(None, 1000));
        assert_eq!(ago(None, 5), "never");
        assert_eq!(ago(Some(90), 100), "10s ago");
        assert_eq!(ago(Some(0), 125), "2m ago");
        assert_eq!(ago(Some(0), 7200), "2h ago");
        assert_eq!(ago(Some(0), 3 * 86_400), "3d ago");
        // A clock that went back shows 0s, not a negative age.
        assert_eq!(ago(Some(200), 100), "0s ago");
    }
}
