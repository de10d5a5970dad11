//! `nodes rename` and `nodes tag`: administrator edits of a node. Both
//! change what the policy grants (`node:HOST` and `tag:NAME` selectors), so
//! the edited node set is checked against the policy as `policy set` would
//! check it before anything is written; a running `serve` notices the commit
//! and re-issues the maps of every node the change touches.

use rustynet_proto::names::{MAX_LABEL, validate_label};

use crate::admin::{AdminError, check_live, current_policy};
use crate::datadir::DataDir;
use crate::store::NodeRecord;

/// Longest tag name after `tag:` (the policy's limit for names).
const MAX_TAG: usize = 128;

/// `nodes rename NODE NEW`: the node's host label (and Magic DNS name)
/// becomes `NEW`, which must be a valid label no other node holds.
pub fn nodes_rename(data: &DataDir, name: &str, new: &str) -> Result<NodeRecord, AdminError> {
    let new = new.trim().to_ascii_lowercase();
    validate_label(&new, MAX_LABEL)
        .map_err(|e| AdminError::Invalid(format!("invalid name {new:?}: {e}")))?;
    let store = data.open_store()?;
    let node = find(&*store, name)?;
    let policy = current_policy(&*store)?;
    let edited = NodeRecord {
        hostname: new.clone(),
        ..node
    };
    check_live(&*store, &policy, Some(&edited))?;
    Ok(store.rename_node(name, &new)?)
}

/// `nodes tag NODE TAG...`: replaces the node's tags. Each is `tag:NAME`
/// and owned by the node's user in the current policy (as for pre-auth
/// keys: a tag a user does not own would grant nothing, silently).
/// No tags clears them.
pub fn nodes_tag(data: &DataDir, name: &str, tags: &[String]) -> Result<NodeRecord, AdminError> {
    let mut tags: Vec<String> = tags.iter().map(|t| t.trim().to_owned()).collect();
    for tag in &tags {
        valid_tag(tag)?;
    }
    tags.sort();
    tags.dedup();
    let store = data.open_store()?;
    let node = find(&*store, name)?;
    let policy = current_policy(&*store)?;
    for tag in &tags {
        if !policy.tag_owned_by(tag, &node.user) {
            return Err(AdminError::Invalid(format!(
                "{tag}: not owned by {:?} (the node's user) in the current policy's tag_owners",
                node.user
            )));
        }
    }
    let edited = NodeRecord {
        tags: tags.clone(),
        ..node
    };
    check_live(&*store, &policy, Some(&edited))?;
    Ok(store.set_node_tags(name, &tags)?)
}

fn find(store: &dyn crate::store::Store, name: &str) -> Result<NodeRecord, AdminError> {
    store
        .nodes()?
        .into_iter()
        .find(|n| n.hostname == name)
        .ok_or_else(|| AdminError::Store(crate::store::StoreError::UnknownNode(name.to_owned())))
}

/// `tag:NAME`, NAME as the policy spells names: 1 to 128 lowercase
/// letters, digits, `-`, `_` and `.`.
fn valid_tag(tag: &str) -> Result<(), AdminError> {
    let bad = |why: &str| AdminError::Invalid(format!("invalid tag {tag:?}: {why}"));
    let name = tag
        .strip_prefix("tag:")
        .ok_or_else(|| bad("tags are spelled tag:NAME"))?;
    if name.is_empty() || name.len() > MAX_TAG {
        return Err(bad("the name after tag: must be 1 to 128 characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
    {
        return Err(bad("use lowercase letters, digits, '-', '_' and '.'"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tag_syntax() {
        assert!(valid_tag("tag:web").is_ok());
        assert!(valid_tag("tag:web-1").is_ok());
        assert!(valid_tag("tag:web_1.x").is_ok());
        for bad in ["web", "tag:", "tag:Web", "tag:a b", "tag:a/b", "group:x"] {
            assert!(valid_tag(bad).is_err(), "{bad}");
        }
    }
}
