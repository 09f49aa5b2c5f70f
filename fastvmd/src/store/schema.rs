//! Numbered schema migrations, recorded in `schema_migrations`.
//!
//! Migrations are append-only: never edit a shipped one, add the next number.
//! Each is applied in its own `BEGIN IMMEDIATE` transaction together with
//! its `schema_migrations` row, so a crash leaves it either fully applied or
//! not at all, and two processes opening the same file apply it once.

use rusqlite::{Connection, TransactionBehavior};

use super::{Result, StoreError, now_ms};

/// Migration 1: the whole initial schema.
const M1: &str = r#"
CREATE TABLE orgs (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    org_id      TEXT NOT NULL REFERENCES orgs(id),
    hash        TEXT NOT NULL UNIQUE,
    prefix      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
CREATE INDEX api_keys_org ON api_keys(org_id);

CREATE TABLE quota_limits (
    org_id          TEXT PRIMARY KEY REFERENCES orgs(id),
    vcpu            INTEGER NOT NULL CHECK (vcpu >= 0),
    memory_mib      INTEGER NOT NULL CHECK (memory_mib >= 0),
    disk_gib        INTEGER NOT NULL CHECK (disk_gib >= 0),
    snapshot_count  INTEGER NOT NULL CHECK (snapshot_count >= 0)
);

CREATE TABLE vms (
    id                  TEXT PRIMARY KEY,
    org_id              TEXT NOT NULL REFERENCES orgs(id),
    name                TEXT NOT NULL,
    machine_name        TEXT NOT NULL,
    source_name         TEXT,
    source_snapshot_id  TEXT,
    vcpus               INTEGER NOT NULL CHECK (vcpus >= 0),
    memory_mib          INTEGER NOT NULL CHECK (memory_mib >= 0),
    disk_gib            INTEGER NOT NULL CHECK (disk_gib >= 0),
    status              TEXT NOT NULL,
    firewall_json       TEXT NOT NULL,
    public_ipv6         TEXT,
    vsock_cid           INTEGER NOT NULL CHECK (vsock_cid >= 3),
    monitor_pid         INTEGER,
    created_at          INTEGER NOT NULL,
    deleted_at          INTEGER
);
CREATE INDEX vms_org ON vms(org_id) WHERE deleted_at IS NULL;
CREATE UNIQUE INDEX vms_live_cid ON vms(vsock_cid) WHERE deleted_at IS NULL;

CREATE TABLE snapshots (
    id          TEXT PRIMARY KEY,
    org_id      TEXT NOT NULL REFERENCES orgs(id),
    vm_id       TEXT NOT NULL,
    name        TEXT NOT NULL,
    status      TEXT NOT NULL,
    firewall_json TEXT NOT NULL,
    vcpus       INTEGER NOT NULL CHECK (vcpus >= 0),
    memory_mib  INTEGER NOT NULL CHECK (memory_mib >= 0),
    disk_gib    INTEGER NOT NULL CHECK (disk_gib >= 0),
    created_at  INTEGER NOT NULL
);
CREATE INDEX snapshots_org ON snapshots(org_id);

CREATE TABLE console_tokens (
    token_hash  TEXT PRIMARY KEY,
    vm_id       TEXT NOT NULL REFERENCES vms(id),
    org_id      TEXT NOT NULL REFERENCES orgs(id),
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER
);
"#;

/// How commands run in a VM by default (its image's `Env`, `WorkingDir`,
/// `User`), kept with VMs and with their snapshots for the clones.
const M2: &str = r#"
ALTER TABLE vms ADD COLUMN run_json TEXT NOT NULL DEFAULT '{}';
ALTER TABLE snapshots ADD COLUMN run_json TEXT NOT NULL DEFAULT '{}';
"#;

/// All migrations, in order; index + 1 is the version.
const MIGRATIONS: &[&str] = &[M1, M2];

/// The schema version this build writes (highest known migration).
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Highest applied migration (0 for a fresh database).
pub(super) fn current_version(c: &Connection) -> Result<i64> {
    Ok(c.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
        [],
        |r| r.get(0),
    )?)
}

/// Creates `schema_migrations` and applies every missing migration.
/// Refuses a database whose version is newer than [`SCHEMA_VERSION`].
pub(super) fn migrate(c: &mut Connection) -> Result<()> {
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version     INTEGER PRIMARY KEY,
            applied_at  INTEGER NOT NULL
        )",
    )?;
    for (i, sql) in MIGRATIONS.iter().enumerate() {
        let version = i as i64 + 1;
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Checked inside the write lock: another process may have just
        // applied it (or be newer than us).
        let found = current_version(&tx)?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema {
                found,
                supported: SCHEMA_VERSION,
            });
        }
        let applied: bool = tx.query_row(
            "SELECT EXISTS(SELECT 1 FROM schema_migrations WHERE version = ?1)",
            [version],
            |r| r.get(0),
        )?;
        if applied {
            continue;
        }
        let apply = || -> rusqlite::Result<()> {
            tx.execute_batch(sql)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
                (version, now_ms()),
            )?;
            Ok(())
        };
        apply().map_err(|source| StoreError::Migration { version, source })?;
        tx.commit()?;
    }
    let found = current_version(c)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(())
}
