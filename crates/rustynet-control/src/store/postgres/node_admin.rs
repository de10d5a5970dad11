//! Administrator edits of a node (host label, tags, route decisions), each
//! inside the caller's write transaction so the checks and the write cannot
//! race an enrollment on another replica.

use postgres::Transaction;

use super::query_nodes;
use crate::store::{NodeRecord, StoreError};

/// The node with host label `hostname`.
pub(super) fn by_name(tx: &mut Transaction<'_>, hostname: &str) -> Result<NodeRecord, StoreError> {
    query_nodes(tx, "WHERE hostname = $1", &[&hostname])?
        .pop()
        .ok_or_else(|| StoreError::UnknownNode(hostname.to_owned()))
}

/// Renames `hostname` to `new`; refuses a label another node holds.
pub(super) fn rename(
    tx: &mut Transaction<'_>,
    hostname: &str,
    new: &str,
) -> Result<NodeRecord, StoreError> {
    let node = by_name(tx, hostname)?;
    if hostname == new {
        return Ok(node);
    }
    if !query_nodes(tx, "WHERE hostname = $1", &[&new])?.is_empty() {
        return Err(StoreError::NameTaken(new.to_owned()));
    }
    tx.execute(
        "UPDATE nodes SET hostname = $1 WHERE id = $2",
        &[&new, &(node.id.0 as i64)],
    )?;
    by_name(tx, new)
}

/// Sets one text column (`tags` or `admin_routes`, JSON) of `hostname`;
/// returns the node as changed.
pub(super) fn set_column(
    tx: &mut Transaction<'_>,
    hostname: &str,
    column: &'static str,
    json: &str,
) -> Result<NodeRecord, StoreError> {
    let node = by_name(tx, hostname)?;
    tx.execute(
        format!("UPDATE nodes SET {column} = $1 WHERE id = $2").as_str(),
        &[&json, &(node.id.0 as i64)],
    )?;
    by_name(tx, hostname)
}
