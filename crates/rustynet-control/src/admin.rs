//! Admin subcommands: they work on the data directory directly; a running
//! `serve` notices their commits and pushes new maps.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand_core::RngCore as _;
use rustynet_policy::{Policy, PolicyError};
use rustynet_proto::handover::KeyHandover;
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::datadir::{DataDir, DataDirError};
use crate::map_check::{MapRefusal, check_network};
use crate::now_unix;
use crate::policy_diff::{AccessDiff, access_diff};
use crate::store::{NewPreauth, NodeRecord, PreauthRecord, Store, StoreError};

/// Largest policy file accepted.
pub const MAX_POLICY_BYTES: u64 = 1024 * 1024;

/// Why an admin command failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Data directory problem.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// Store problem.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The policy is invalid (nothing was changed).
    #[error("invalid policy: {0}")]
    Policy(#[from] PolicyError),
    /// The policy file could not be read.
    #[error("{path}: {reason}")]
    File {
        /// File.
        path: String,
        /// Problem.
        reason: String,
    },
    /// The policy would give a node a map its verifier refuses (nothing was
    /// changed).
    #[error("invalid policy: {0}")]
    MapLimit(#[from] MapRefusal),
    /// An argument is invalid (nothing was changed).
    #[error("{0}")]
    Invalid(String),
}

/// `policy set FILE`: validates, checks that every live node's map under it
/// passes the node's verifier, then stores the canonical form.
pub fn policy_set(data: &DataDir, file: &Path) -> Result<(), AdminError> {
    let policy = read_policy_file(file)?;
    let store = data.open_store()?;
    check_live(&*store, &policy, None)?;
    store.set_policy(&policy.to_json_pretty(), now_unix())?;
    Ok(())
}

/// `policy check FILE`: everything `policy set` checks, and who would gain
/// or lose access compared with the current policy; changes nothing.
pub fn policy_check(data: &DataDir, file: &Path) -> Result<AccessDiff, AdminError> {
    let policy = read_policy_file(file)?;
    let store = data.open_store()?;
    let live = check_live(&*store, &policy, None)?;
    let current = current_policy(&*store)?;
    Ok(access_diff(&current, &policy, &live))
}

/// Reads and parses a policy file (JSON or HuJSON), bounded in size.
fn read_policy_file(file: &Path) -> Result<Policy, AdminError> {
    let file_err = |reason: String| AdminError::File {
        path: file.display().to_string(),
        reason,
    };
    let meta = std::fs::metadata(file).map_err(|e| file_err(e.to_string()))?;
    if meta.len() > MAX_POLICY_BYTES {
        return Err(file_err(format!("larger than {MAX_POLICY_BYTES} bytes")));
    }
    let text = std::fs::read_to_string(file).map_err(|e| file_err(e.to_string()))?;
    Ok(Policy::parse(&text)?)
}

/// The stored policy (the empty policy when none was set).
pub(crate) fn current_policy(store: &dyn Store) -> Result<Policy, AdminError> {
    Ok(match store.policy()? {
        Some(json) => Policy::parse(&json)?,
        None => Policy::default(),
    })
}

/// Checks `policy` against the live nodes (with `replace` standing in for
/// the stored record of the same node, for an edit not yet committed): its
/// split DNS and every map it yields must pass. Returns the live nodes.
pub(crate) fn check_live(
    store: &dyn Store,
    policy: &Policy,
    replace: Option<&NodeRecord>,
) -> Result<Vec<NodeRecord>, AdminError> {
    let suffix = store.suffix()?;
    check_split_dns(policy, &suffix)?;
    let now = now_unix();
    let live: crate::netmap_builder::LiveNodes = store
        .nodes()?
        .into_iter()
        .filter(|n| !n.is_expired(now))
        .map(|n| match replace {
            Some(r) if r.id == n.id => r.clone(),
            _ => n,
        })
        .map(|n| (n.id, std::sync::Arc::new(n)))
        .collect();
    // Registered relays are in every map (the embedded relay, known only
    // to `serve`, adds at most one entry of a few hundred bytes).
    let (relays, _) = crate::relay_registry::announce(None, &store.relays()?);
    check_network(policy, &suffix, live.clone(), &relays)?;
    Ok(live
        .into_values()
        .map(std::sync::Arc::unwrap_or_clone)
        .collect())
}

/// A split-DNS domain may not be the tailnet suffix or lie under it: Magic
/// DNS answers those names itself, and a node refuses a DNS section that
/// says otherwise (its resolver would not serve it faithfully).
pub fn check_split_dns(policy: &Policy, suffix: &str) -> Result<(), AdminError> {
    let under = format!(".{suffix}");
    match policy
        .split_dns()
        .iter()
        .find(|route| route.domain == suffix || route.domain.ends_with(&under))
    {
        Some(route) => Err(AdminError::Invalid(format!(
            "invalid policy: dns.split[{:?}] overlaps the Magic DNS suffix {suffix:?}, which Rustynet answers itself",
            route.domain
        ))),
        None => Ok(()),
    }
}

/// `policy get`: the stored policy (an empty policy when none was set).
pub fn policy_get(data: &DataDir) -> Result<String, AdminError> {
    let store = data.open_store()?;
    Ok(match store.policy()? {
        Some(json) => json,
        None => Policy::default().to_json_pretty(),
    })
}

fn valid_user(user: &str) -> bool {
    !user.is_empty()
        && user.len() <= 64
        && user
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.@".contains(c))
}

/// `preauth create`: returns the key (shown once; only its hash is stored).
pub fn preauth_create(
    data: &DataDir,
    user: &str,
    tags: &[String],
    reusable: bool,
    expires_in: Option<Duration>,
) -> Result<(Zeroizing<String>, PreauthRecord), AdminError> {
    if !valid_user(user) {
        return Err(AdminError::Invalid(format!(
            "invalid --user {user:?}: use lowercase letters, digits and - _ . @"
        )));
    }
    let store = data.open_store()?;
    let policy = current_policy(&*store)?;
    for tag in tags {
        if !policy.tag_owned_by(tag, user) {
            return Err(AdminError::Invalid(format!(
                "--tag {tag}: not owned by {user:?} in the current policy's tag_owners"
            )));
        }
    }
    let mut secret = Zeroizing::new([0u8; 32]);
    rand_core::OsRng.fill_bytes(secret.as_mut());
    let key = Zeroizing::new(format!("rnk_{}", URL_SAFE_NO_PAD.encode(*secret)));
    let now = now_unix();
    let expires_at =
        expires_in.map(|d| now.saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)));
    let mut tags = tags.to_vec();
    tags.sort();
    tags.dedup();
    let record = store.create_preauth(
        &NewPreauth {
            key_hash: Sha256::digest(key.as_bytes()).into(),
            user: user.to_owned(),
            tags,
            reusable,
            expires_at,
        },
        now,
    )?;
    Ok((key, record))
}

/// `preauth list`: every pre-auth key (never the key itself).
pub fn preauth_list(data: &DataDir) -> Result<Vec<PreauthRecord>, AdminError> {
    Ok(data.open_store()?.preauth_keys()?)
}

/// `preauth revoke ID`: the key enrolls no more nodes.
pub fn preauth_revoke(data: &DataDir, id: i64) -> Result<PreauthRecord, AdminError> {
    Ok(data.open_store()?.revoke_preauth(id, now_unix())?)
}

/// `signing-key rotate`: a new map-signing key, handed over to by the
/// current one; a running `serve` switches to it and nodes follow.
pub fn signing_key_rotate(data: &DataDir) -> Result<KeyHandover, AdminError> {
    Ok(data.rotate_signing_key(now_unix())?)
}

/// `nodes list`.
pub fn nodes_list(data: &DataDir) -> Result<Vec<NodeRecord>, AdminError> {
    Ok(data.open_store()?.nodes()?)
}

/// `nodes expire NAME`.
pub fn nodes_expire(data: &DataDir, name: &str) -> Result<NodeRecord, AdminError> {
    Ok(data.open_store()?.expire_node(name, now_unix())?)
}

/// `nodes remove NAME`.
pub fn nodes_remove(data: &DataDir, name: &str) -> Result<NodeRecord, AdminError> {
    Ok(data.open_store()?.remove_node(name)?)
}
