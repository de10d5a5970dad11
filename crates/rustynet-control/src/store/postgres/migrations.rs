//! The PostgreSQL dialect of each migration in `store/migrations.rs`, at the
//! same index (a test keeps the lists the same length): `BIGSERIAL` for
//! `AUTOINCREMENT`, `BYTEA` for `BLOB`, `BOOLEAN` for SQLite's 0/1 and the
//! reserved word `user` quoted.

/// Each entry moves the schema from version `index` to `index + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: initial schema. PostgreSQL also keeps in `meta` the counter that
    // replaces SQLite's `data_version` (bumped by every committed change,
    // read by replicas watching for changes) and the generation high-water
    // mark every replica reserves from.
    r#"
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    INSERT INTO meta(key, value) VALUES ('change_marker', '0'), ('generation_high_water', '0');
    CREATE TABLE policy (
        id         INTEGER PRIMARY KEY CHECK (id = 1),
        json       TEXT NOT NULL,
        updated_at BIGINT NOT NULL
    );
    CREATE TABLE preauth_keys (
        id         BIGSERIAL PRIMARY KEY,
        key_hash   BYTEA NOT NULL UNIQUE,
        "user"     TEXT NOT NULL,
        tags       TEXT NOT NULL,
        reusable   BOOLEAN NOT NULL,
        expires_at BIGINT,
        created_at BIGINT NOT NULL,
        used       BIGINT NOT NULL DEFAULT 0
    );
    CREATE TABLE nodes (
        id                 BIGSERIAL PRIMARY KEY,
        hostname           TEXT NOT NULL UNIQUE,
        requested_hostname TEXT NOT NULL,
        "user"             TEXT NOT NULL,
        tags               TEXT NOT NULL,
        tunnel_ip          TEXT NOT NULL UNIQUE,
        node_key           TEXT NOT NULL UNIQUE,
        signing_key        TEXT NOT NULL UNIQUE,
        endpoints          TEXT NOT NULL,
        advertise_exit     BOOLEAN NOT NULL,
        advertised_routes  TEXT NOT NULL,
        created_at         BIGINT NOT NULL,
        expired_at         BIGINT,
        last_seen          BIGINT,
        preauth_id         BIGINT NOT NULL REFERENCES preauth_keys(id)
    );
    CREATE TABLE seen_nonces (
        node_id BIGINT NOT NULL,
        nonce   BYTEA NOT NULL,
        ts_ms   BIGINT NOT NULL,
        PRIMARY KEY (node_id, nonce)
    );
    CREATE INDEX seen_nonces_ts ON seen_nonces(ts_ms);
    "#,
    // 2: the node's LAN-access toggle.
    r#"
    ALTER TABLE nodes ADD COLUMN lan_access BOOLEAN NOT NULL DEFAULT FALSE;
    "#,
    // 3: pre-auth keys can be revoked.
    r#"
    ALTER TABLE preauth_keys ADD COLUMN revoked_at BIGINT;
    "#,
    // 4: node keys expire; nodes enrolled before get the default lifetime
    // (180 days) from the upgrade on.
    r#"
    ALTER TABLE nodes ADD COLUMN key_expires_at BIGINT;
    UPDATE nodes SET key_expires_at = CAST(EXTRACT(EPOCH FROM now()) AS BIGINT) + 15552000;
    "#,
    // 5: paths and relays.
    r#"
    ALTER TABLE nodes ADD COLUMN path_key TEXT;
    ALTER TABLE nodes ADD COLUMN home_relay TEXT;
    CREATE TABLE relays (
        name        TEXT PRIMARY KEY,
        addrs       TEXT NOT NULL,
        server_name TEXT NOT NULL,
        cert_sha256 TEXT NOT NULL,
        stun        TEXT NOT NULL,
        created_at  BIGINT NOT NULL
    );
    "#,
    // 6: an admin's route decisions per node.
    r#"
    ALTER TABLE nodes ADD COLUMN admin_routes TEXT NOT NULL DEFAULT '{"approved":[],"rejected":[]}';
    "#,
    // 7: per-node rate buckets every replica draws from (store::RateKind),
    // in thousandths of a token, stamped with the database clock.
    r#"
    CREATE TABLE rate_buckets (
        node_id BIGINT NOT NULL,
        kind    SMALLINT NOT NULL,
        milli   BIGINT NOT NULL,
        at_ms   BIGINT NOT NULL,
        PRIMARY KEY (node_id, kind)
    );
    "#,
    // 8: row versions (see the SQLite text). Every writer of these columns
    // holds the write lock, so numbers are taken, and committed, in order:
    // a reading sees every number up to the last it sees.
    r#"
    ALTER TABLE nodes ADD COLUMN row_version BIGINT NOT NULL DEFAULT 0;
    CREATE INDEX nodes_row_version ON nodes(row_version);
    CREATE TABLE row_versions (
        id   INTEGER PRIMARY KEY CHECK (id = 1),
        last BIGINT NOT NULL
    );
    INSERT INTO row_versions(id, last) VALUES (1, 0);
    CREATE TABLE removed_nodes (
        id          BIGINT PRIMARY KEY,
        row_version BIGINT NOT NULL
    );
    CREATE FUNCTION rustynet_next_row_version() RETURNS BIGINT LANGUAGE sql AS $$
        UPDATE row_versions SET last = last + 1 WHERE id = 1 RETURNING last
    $$;
    CREATE FUNCTION rustynet_node_versioned() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        NEW.row_version := rustynet_next_row_version();
        RETURN NEW;
    END
    $$;
    CREATE FUNCTION rustynet_node_removed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO removed_nodes(id, row_version) VALUES (OLD.id, rustynet_next_row_version())
            ON CONFLICT (id) DO UPDATE SET row_version = excluded.row_version;
        RETURN OLD;
    END
    $$;
    CREATE TRIGGER nodes_versioned_insert BEFORE INSERT ON nodes
        FOR EACH ROW EXECUTE FUNCTION rustynet_node_versioned();
    CREATE TRIGGER nodes_versioned_update BEFORE UPDATE OF hostname, requested_hostname, "user", tags, tunnel_ip, node_key, signing_key, endpoints, advertise_exit, advertised_routes, created_at, expired_at, preauth_id, lan_access, key_expires_at, path_key, home_relay, admin_routes ON nodes
        FOR EACH ROW EXECUTE FUNCTION rustynet_node_versioned();
    CREATE TRIGGER nodes_versioned_delete AFTER DELETE ON nodes
        FOR EACH ROW EXECUTE FUNCTION rustynet_node_removed();
    "#,
];
