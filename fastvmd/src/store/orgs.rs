//! Orgs, API keys (stored only as SHA-256 hex) and org quotas.

use rusqlite::{OptionalExtension, Row, Transaction};

use super::{Result, SnapshotStatus, Store, StoreError, VmStatus, get_u64, new_id, now_ms, to_i64};

/// An org (tenant). Every other row is scoped by one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgRow {
    /// Org id (UUID string).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// An API key's stored metadata; the plaintext is never stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRow {
    /// Key id (UUID string).
    pub id: String,
    /// Owning org.
    pub org_id: String,
    /// Lowercase hex SHA-256 of the plaintext key.
    pub hash: String,
    /// Start of the plaintext, for display (e.g. `hlm_AbCd`).
    pub prefix: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds; `Some` once revoked.
    pub revoked_at: Option<i64>,
}

/// Result of looking a key up by hash, revoked or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLookup {
    /// Owning org.
    pub org_id: String,
    /// Key id.
    pub key_id: String,
    /// Whether the key has been revoked (the caller answers 401 "API key is revoked").
    pub revoked: bool,
}

/// Quota amounts, as in the API's `OrgQuotaValues`; used for limits and usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QuotaValues {
    /// vCPUs.
    pub vcpu: u64,
    /// Guest memory, MiB.
    pub memory_mib: u64,
    /// Disk, GiB.
    pub disk_gib: u64,
    /// Number of snapshots.
    pub snapshot_count: u64,
}

/// Limits applied to orgs that have no explicit `quota_limits` row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaDefaults(pub QuotaValues);

impl Default for QuotaDefaults {
    /// 16 vCPU, 32 GiB memory, 500 GiB disk, 50 snapshots.
    fn default() -> Self {
        QuotaDefaults(QuotaValues {
            vcpu: 16,
            memory_mib: 32 * 1024,
            disk_gib: 500,
            snapshot_count: 50,
        })
    }
}

fn org_from_row(r: &Row<'_>) -> rusqlite::Result<OrgRow> {
    Ok(OrgRow {
        id: r.get(0)?,
        name: r.get(1)?,
        created_at: r.get(2)?,
    })
}

/// Limits of `org` (its row, else the defaults), inside a transaction.
pub(super) fn limits_tx(tx: &Transaction<'_>, org: &str, d: QuotaDefaults) -> Result<QuotaValues> {
    let row = tx
        .query_row(
            "SELECT vcpu, memory_mib, disk_gib, snapshot_count FROM quota_limits WHERE org_id = ?1",
            [org],
            |r| {
                Ok(QuotaValues {
                    vcpu: get_u64(r, 0)?,
                    memory_mib: get_u64(r, 1)?,
                    disk_gib: get_u64(r, 2)?,
                    snapshot_count: get_u64(r, 3)?,
                })
            },
        )
        .optional()?;
    Ok(row.unwrap_or(d.0))
}

/// Usage of `org`, inside a transaction. Counts VMs that are not deleted and
/// not in status `error` (so provisioning, running, stopped and deleting
/// hold their resources), and snapshots whose status is not `error`.
pub(super) fn usage_tx(tx: &Transaction<'_>, org: &str) -> Result<QuotaValues> {
    let (vcpu, memory_mib, disk_gib) = tx.query_row(
        "SELECT COALESCE(SUM(vcpus), 0), COALESCE(SUM(memory_mib), 0), COALESCE(SUM(disk_gib), 0)
         FROM vms WHERE org_id = ?1 AND deleted_at IS NULL AND status <> ?2",
        (org, VmStatus::Error.as_str()),
        |r| Ok((get_u64(r, 0)?, get_u64(r, 1)?, get_u64(r, 2)?)),
    )?;
    let snapshot_count = tx.query_row(
        "SELECT COUNT(*) FROM snapshots WHERE org_id = ?1 AND status <> ?2",
        (org, SnapshotStatus::Error.as_str()),
        |r| get_u64(r, 0),
    )?;
    Ok(QuotaValues {
        vcpu,
        memory_mib,
        disk_gib,
        snapshot_count,
    })
}

/// Fails with [`StoreError::NotFound`] unless `org` exists.
pub(super) fn require_org(tx: &Transaction<'_>, org: &str) -> Result<()> {
    let exists: bool = tx.query_row(
        "SELECT EXISTS(SELECT 1 FROM orgs WHERE id = ?1)",
        [org],
        |r| r.get(0),
    )?;
    if exists {
        Ok(())
    } else {
        Err(StoreError::NotFound("org"))
    }
}

/// Fails with [`StoreError::Quota`] if `in_use + requested > limit`.
pub(super) fn check(
    limit: &'static str,
    limit_value: u64,
    in_use: u64,
    requested: u64,
) -> Result<()> {
    if in_use.saturating_add(requested) > limit_value {
        return Err(StoreError::Quota {
            limit,
            limit_value,
            requested,
            in_use,
        });
    }
    Ok(())
}

impl Store {
    /// Creates an org named `name`.
    pub fn create_org(&self, name: &str) -> Result<OrgRow> {
        let row = OrgRow {
            id: new_id(),
            name: name.to_owned(),
            created_at: now_ms(),
        };
        self.write(|tx| {
            tx.execute(
                "INSERT INTO orgs (id, name, created_at) VALUES (?1, ?2, ?3)",
                (&row.id, &row.name, row.created_at),
            )?;
            Ok(())
        })?;
        Ok(row)
    }

    /// The org with id `id`.
    pub fn get_org(&self, id: &str) -> Result<Option<OrgRow>> {
        let c = self.lock()?;
        Ok(c.query_row(
            "SELECT id, name, created_at FROM orgs WHERE id = ?1",
            [id],
            org_from_row,
        )
        .optional()?)
    }

    /// The first org ever created (the one made at first start), if any.
    pub fn default_org(&self) -> Result<Option<OrgRow>> {
        let c = self.lock()?;
        Ok(c.query_row(
            "SELECT id, name, created_at FROM orgs ORDER BY created_at, rowid LIMIT 1",
            [],
            org_from_row,
        )
        .optional()?)
    }

    /// Stores a new API key for `org_id` by its SHA-256 hex `hash`.
    /// A duplicate hash is a [`StoreError::Conflict`]; an unknown org [`StoreError::NotFound`].
    pub fn insert_api_key(&self, org_id: &str, hash: &str, prefix: &str) -> Result<KeyRow> {
        let row = KeyRow {
            id: new_id(),
            org_id: org_id.to_owned(),
            hash: hash.to_owned(),
            prefix: prefix.to_owned(),
            created_at: now_ms(),
            revoked_at: None,
        };
        self.write(|tx| {
            require_org(tx, org_id)?;
            let dup: bool = tx.query_row(
                "SELECT EXISTS(SELECT 1 FROM api_keys WHERE hash = ?1)",
                [hash],
                |r| r.get(0),
            )?;
            if dup {
                return Err(StoreError::Conflict("API key hash already exists".into()));
            }
            tx.execute(
                "INSERT INTO api_keys (id, org_id, hash, prefix, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                (&row.id, &row.org_id, &row.hash, &row.prefix, row.created_at),
            )?;
            Ok(())
        })?;
        Ok(row)
    }

    /// Looks up a key by hash, revoked or not.
    pub fn lookup_api_key(&self, hash: &str) -> Result<Option<KeyLookup>> {
        let c = self.lock()?;
        Ok(c.query_row(
            "SELECT org_id, id, revoked_at IS NOT NULL FROM api_keys WHERE hash = ?1",
            [hash],
            |r| {
                Ok(KeyLookup {
                    org_id: r.get(0)?,
                    key_id: r.get(1)?,
                    revoked: r.get(2)?,
                })
            },
        )
        .optional()?)
    }

    /// `(org_id, key_id)` of the non-revoked key with this hash.
    pub fn org_for_key_hash(&self, hash: &str) -> Result<Option<(String, String)>> {
        Ok(self
            .lookup_api_key(hash)?
            .filter(|k| !k.revoked)
            .map(|k| (k.org_id, k.key_id)))
    }

    /// The keys of `org_id`, oldest first (revoked ones included).
    pub fn list_api_keys(&self, org_id: &str) -> Result<Vec<KeyRow>> {
        let c = self.lock()?;
        let mut st = c.prepare(
            "SELECT id, org_id, hash, prefix, created_at, revoked_at FROM api_keys
             WHERE org_id = ?1 ORDER BY created_at, rowid",
        )?;
        let rows = st.query_map([org_id], |r| {
            Ok(KeyRow {
                id: r.get(0)?,
                org_id: r.get(1)?,
                hash: r.get(2)?,
                prefix: r.get(3)?,
                created_at: r.get(4)?,
                revoked_at: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Revokes key `key_id`; `false` if it does not exist or was already revoked.
    pub fn revoke_api_key(&self, key_id: &str) -> Result<bool> {
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                (key_id, now_ms()),
            )?;
            Ok(n == 1)
        })
    }

    /// Limits of `org` (explicit, else the defaults given at open).
    pub fn quota_limits(&self, org: &str) -> Result<QuotaValues> {
        let d = self.defaults;
        self.read(|tx| limits_tx(tx, org, d))
    }

    /// Sets explicit limits for `org` (which must exist).
    pub fn set_quota_limits(&self, org: &str, v: QuotaValues) -> Result<()> {
        self.write(|tx| {
            require_org(tx, org)?;
            tx.execute(
                "INSERT INTO quota_limits (org_id, vcpu, memory_mib, disk_gib, snapshot_count)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(org_id) DO UPDATE SET vcpu = ?2, memory_mib = ?3, disk_gib = ?4,
                     snapshot_count = ?5",
                (
                    org,
                    to_i64(v.vcpu, "vcpu")?,
                    to_i64(v.memory_mib, "memoryMiB")?,
                    to_i64(v.disk_gib, "diskGiB")?,
                    to_i64(v.snapshot_count, "snapshotCount")?,
                ),
            )?;
            Ok(())
        })
    }

    /// Current usage of `org` (see [`QuotaValues`]; VMs in `error` and
    /// deleted VMs, and snapshots in `error`, are not counted).
    pub fn quota_usage(&self, org: &str) -> Result<QuotaValues> {
        self.read(|tx| usage_tx(tx, org))
    }
}
