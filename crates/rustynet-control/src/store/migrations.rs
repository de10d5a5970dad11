//! Schema migrations, applied in order: the SQLite text of each is here, its
//! PostgreSQL dialect at the same index in `postgres/migrations.rs` (a test
//! keeps the two lists the same length). SQLite records the version in
//! `PRAGMA user_version`, PostgreSQL in the `rustynet_schema` table; both
//! decide what to apply with [`pending`].

use std::ops::Range;

use super::StoreError;

/// The indexes of the migrations a database at schema version `found` still
/// needs when this build knows `supported` of them; a database written by a
/// newer build is refused (it may hold data this one would corrupt).
pub fn pending(found: i64, supported: usize) -> Result<Range<usize>, StoreError> {
    let newest = i64::try_from(supported).unwrap_or(i64::MAX);
    if found > newest {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: newest,
        });
    }
    let from = usize::try_from(found)
        .map_err(|_| StoreError::Corrupt(format!("schema version {found}")))?;
    Ok(from..supported)
}

/// Each entry moves the schema from version `index` to `index + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: initial schema.
    r#"
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE policy (
        id         INTEGER PRIMARY KEY CHECK (id = 1),
        json       TEXT NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE TABLE preauth_keys (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        key_hash   BLOB NOT NULL UNIQUE,
        user       TEXT NOT NULL,
        tags       TEXT NOT NULL,
        reusable   INTEGER NOT NULL,
        expires_at INTEGER,
        created_at INTEGER NOT NULL,
        used       INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE nodes (
        id                 INTEGER PRIMARY KEY AUTOINCREMENT,
        hostname           TEXT NOT NULL UNIQUE,
        requested_hostname TEXT NOT NULL,
        user               TEXT NOT NULL,
        tags               TEXT NOT NULL,
        tunnel_ip          TEXT NOT NULL UNIQUE,
        node_key           TEXT NOT NULL UNIQUE,
        signing_key        TEXT NOT NULL UNIQUE,
        endpoints          TEXT NOT NULL,
        advertise_exit     INTEGER NOT NULL,
        advertised_routes  TEXT NOT NULL,
        created_at         INTEGER NOT NULL,
        expired_at         INTEGER,
        last_seen          INTEGER,
        preauth_id         INTEGER NOT NULL REFERENCES preauth_keys(id)
    );
    CREATE TABLE seen_nonces (
        node_id INTEGER NOT NULL,
        nonce   BLOB NOT NULL,
        ts_ms   INTEGER NOT NULL,
        PRIMARY KEY (node_id, nonce)
    );
    CREATE INDEX seen_nonces_ts ON seen_nonces(ts_ms);
    "#,
    // 2: the node's LAN-access toggle (routers forward to their LAN only for
    // clients that have it on).
    r#"
    ALTER TABLE nodes ADD COLUMN lan_access INTEGER NOT NULL DEFAULT 0;
    "#,
    // 3: pre-auth keys can be revoked.
    r#"
    ALTER TABLE preauth_keys ADD COLUMN revoked_at INTEGER;
    "#,
    // 4: node keys expire. Nodes enrolled before get the default lifetime
    // (180 days) from the upgrade on, not an instant expiry.
    r#"
    ALTER TABLE nodes ADD COLUMN key_expires_at INTEGER;
    UPDATE nodes SET key_expires_at = CAST(strftime('%s', 'now') AS INTEGER) + 15552000;
    "#,
    // 5: paths and relays: each node's path key (authenticates its path
    // probes) and home relay, and the standalone relays an admin registered
    // (announced in every map with the embedded one).
    r#"
    ALTER TABLE nodes ADD COLUMN path_key TEXT;
    ALTER TABLE nodes ADD COLUMN home_relay TEXT;
    CREATE TABLE relays (
        name        TEXT PRIMARY KEY,
        addrs       TEXT NOT NULL,
        server_name TEXT NOT NULL,
        cert_sha256 TEXT NOT NULL,
        stun        TEXT NOT NULL,
        created_at  INTEGER NOT NULL
    );
    "#,
    // 6: an admin's route decisions per node (`routes approve|reject`),
    // beside the policy's own approvals.
    r#"
    ALTER TABLE nodes ADD COLUMN admin_routes TEXT NOT NULL DEFAULT '{"approved":[],"rejected":[]}';
    "#,
    // 7: nothing for SQLite. (PostgreSQL: per-node rate buckets shared by
    // replicas; one SQLite process keeps its buckets in memory.)
    r#"
    SELECT 1;
    "#,
    // 8: row versions, so a reload reads only the nodes changed since the
    // last one: every insert, removal and change to a column maps show
    // (not `last_seen`) takes the next number from `row_versions`, by
    // trigger so that no writer can forget it. Removed nodes leave their
    // number in `removed_nodes`.
    r#"
    ALTER TABLE nodes ADD COLUMN row_version INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX nodes_row_version ON nodes(row_version);
    CREATE TABLE row_versions (
        id   INTEGER PRIMARY KEY CHECK (id = 1),
        last INTEGER NOT NULL
    );
    INSERT INTO row_versions(id, last) VALUES (1, 0);
    CREATE TABLE removed_nodes (
        id          INTEGER PRIMARY KEY,
        row_version INTEGER NOT NULL
    );
    CREATE TRIGGER nodes_versioned_insert AFTER INSERT ON nodes BEGIN
        UPDATE row_versions SET last = last + 1 WHERE id = 1;
        UPDATE nodes SET row_version = (SELECT last FROM row_versions WHERE id = 1)
            WHERE id = NEW.id;
    END;
    CREATE TRIGGER nodes_versioned_update AFTER UPDATE OF hostname, requested_hostname, user, tags, tunnel_ip, node_key, signing_key, endpoints, advertise_exit, advertised_routes, created_at, expired_at, preauth_id, lan_access, key_expires_at, path_key, home_relay, admin_routes ON nodes BEGIN
        UPDATE row_versions SET last = last + 1 WHERE id = 1;
        UPDATE nodes SET row_version = (SELECT last FROM row_versions WHERE id = 1)
            WHERE id = NEW.id;
    END;
    CREATE TRIGGER nodes_versioned_delete AFTER DELETE ON nodes BEGIN
        UPDATE row_versions SET last = last + 1 WHERE id = 1;
        INSERT OR REPLACE INTO removed_nodes(id, row_version)
            VALUES (OLD.id, (SELECT last FROM row_versions WHERE id = 1));
    END;
    "#,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_dialects_have_every_migration() {
        // A migration added for SQLite needs its PostgreSQL dialect too.
        assert_eq!(MIGRATIONS.len(), super::super::postgres::MIGRATIONS.len());
    }

    #[test]
    fn pending_applies_what_is_missing_and_refuses_newer() {
        assert_eq!(pending(0, 5).unwrap(), 0..5);
        assert_eq!(pending(3, 5).unwrap(), 3..5);
        assert!(pending(5, 5).unwrap().is_empty());
        assert!(matches!(
            pending(6, 5),
            Err(StoreError::SchemaTooNew {
                found: 6,
                supported: 5
            })
        ));
        assert!(matches!(pending(-1, 5), Err(StoreError::Corrupt(_))));
    }
}
