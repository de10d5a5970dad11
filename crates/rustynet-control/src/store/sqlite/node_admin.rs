//! Administrator edits of a node: its host label and its tags.

use rusqlite::{Connection, params};

use super::{query_nodes, to_json};
use crate::store::{NodeRecord, StoreError};

fn by_name(conn: &Connection, hostname: &str) -> Result<NodeRecord, StoreError> {
    query_nodes(conn, "WHERE hostname = ?1", params![hostname])?
        .pop()
        .ok_or_else(|| StoreError::UnknownNode(hostname.to_owned()))
}

/// Renames `hostname` to `new` (inside the caller's write transaction, so
/// the uniqueness check and the write cannot race an enrollment).
pub(super) fn rename(
    conn: &Connection,
    hostname: &str,
    new: &str,
) -> Result<NodeRecord, StoreError> {
    let node = by_name(conn, hostname)?;
    if hostname == new {
        return Ok(node);
    }
    if !query_nodes(conn, "WHERE hostname = ?1", params![new])?.is_empty() {
        return Err(StoreError::NameTaken(new.to_owned()));
    }
    conn.execute(
        "UPDATE nodes SET hostname = ?1 WHERE id = ?2",
        params![new, node.id.0 as i64],
    )?;
    by_name(conn, new)
}

/// Replaces the tags of `hostname`.
pub(super) fn set_tags(
    conn: &Connection,
    hostname: &str,
    tags: &[String],
) -> Result<NodeRecord, StoreError> {
    let node = by_name(conn, hostname)?;
    conn.execute(
        "UPDATE nodes SET tags = ?1 WHERE id = ?2",
        params![to_json(&tags), node.id.0 as i64],
    )?;
    by_name(conn, hostname)
}
