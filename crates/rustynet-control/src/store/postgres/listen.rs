//! The change listener: one extra connection per replica that `LISTEN`s on
//! [`CHANNEL`], to which every committed change `NOTIFY`s (see `changed`).
//! A notification wakes the replica's change watcher at once instead of at
//! its next poll. Notifications are a hint, never the record: the watcher
//! still compares the change marker, and still polls it, so a notification
//! lost while this connection was down costs one poll interval, not a change.

use std::sync::{Arc, Weak};
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator as _;
use postgres::{Client, Config, NoTls};
use tokio::sync::Notify;

/// The notification channel.
pub(super) const CHANNEL: &str = "rustynet_changes";

/// How long to wait for a notification before checking that the store is
/// still in use (the thread ends when nobody holds the [`Notify`]).
const WAIT: Duration = Duration::from_secs(5);

/// How long to wait before reconnecting a lost listener connection.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// Starts the listener thread; the returned [`Notify`] is woken on every
/// notification, and once after each (re)connection (a catch-up read for
/// whatever happened while the listener was away).
pub(super) fn start(config: Config) -> Arc<Notify> {
    let notify = Arc::new(Notify::new());
    let weak = Arc::downgrade(&notify);
    let spawned = std::thread::Builder::new()
        .name("rustynet-pg-listen".into())
        .spawn(move || run(&config, &weak));
    if let Err(e) = spawned {
        // The poll still catches every change, only later.
        tracing::error!(error = %e, "cannot start the database change listener");
    }
    notify
}

fn run(config: &Config, notify: &Weak<Notify>) {
    while notify.strong_count() > 0 {
        match listen(config) {
            Ok(mut client) => {
                wake(notify);
                if let Err(e) = relay_notifications(&mut client, notify) {
                    tracing::warn!(error = %e, "database change listener lost its connection");
                }
            }
            Err(e) => tracing::warn!(error = %e, "database change listener cannot connect"),
        }
        std::thread::sleep(RECONNECT_AFTER);
    }
}

fn listen(config: &Config) -> Result<Client, postgres::Error> {
    let mut client = config.connect(NoTls)?;
    client.batch_execute(&format!("LISTEN {CHANNEL}"))?;
    Ok(client)
}

/// Wakes the watcher on each notification until the connection fails or
/// nobody listens any more.
fn relay_notifications(client: &mut Client, notify: &Weak<Notify>) -> Result<(), postgres::Error> {
    loop {
        let got = client.notifications().timeout_iter(WAIT).next()?;
        match got {
            Some(_) => wake(notify),
            None if notify.strong_count() == 0 => return Ok(()),
            // Quiet: make sure the connection is still there (a dead one
            // would otherwise wait forever without an error).
            None => client.batch_execute("SELECT 1")?,
        }
    }
}

fn wake(notify: &Weak<Notify>) {
    if let Some(n) = notify.upgrade() {
        n.notify_one();
    }
}
