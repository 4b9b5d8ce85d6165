//! The tenant registry in the SQLite file ([`SqliteTenants`]): tables `tenants` and
//! `tenant_keys` (a key's SHA-256, never the key), created with the rest of the
//! schema by [`super::Database::migrate`].
//!
//! A SQLite file holds one tenant's data (its tables have no tenant column), so
//! deleting a tenant here removes its registry rows only, and its report says so.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use contract::Tenant as TenantId;
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::store::StoreError;
use crate::tenants::keys::{KeyHash, KeyKind, KeyRecord};
use crate::tenants::registry::{CorruptRow, DeleteReport, RemovedRows, TenantError};
use crate::tenants::{DisplayName, ModelSetting, Quotas, Tenant, TenantRegistry};

use super::Database;

/// The registry's tables (idempotent; part of [`Database::migrate`]).
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tenants(
    tenant TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    requests_per_second INTEGER NOT NULL,
    events_per_day INTEGER NOT NULL,
    max_users INTEGER NOT NULL,
    max_items INTEGER NOT NULL,
    created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS tenant_keys(
    key_hash TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    kind TEXT NOT NULL,
    hint TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NULL);
CREATE INDEX IF NOT EXISTS tenant_keys_by_tenant ON tenant_keys(tenant, kind);";

/// What deleting a tenant leaves in a SQLite file.
pub const KEPT_ON_DELETE: &str = "the main SQLite file's event log, catalogue, \
     interactions, projections and analytics belong to the tenant `origin serve --tenant` \
     names and have no tenant column; if that was this tenant, they were left as they are \
     (every other tenant's data lives in a file of its own, removed here)";

/// The tenant registry of one SQLite file.
#[derive(Clone)]
pub struct SqliteTenants {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
}

const TENANT_COLUMNS: &str =
    "tenant, name, requests_per_second, events_per_day, max_users, max_items, created_at, model";
const KEY_COLUMNS: &str = "kind, key_hash, hint, created_at, expires_at";

fn corrupt(what: impl std::fmt::Display) -> TenantError {
    TenantError::storage(CorruptRow(what.to_string()))
}

fn quota(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Stored as a signed 64-bit integer (quotas are at most `MAX_QUOTA`).
fn stored(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

type TenantRow = (String, String, i64, i64, i64, i64, i64, Option<String>);
type KeyRow = (String, String, String, i64, Option<i64>);

fn tenant_row(r: &Row<'_>) -> rusqlite::Result<TenantRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
    ))
}

fn key_row(r: &Row<'_>) -> rusqlite::Result<KeyRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

fn tenant_of(row: TenantRow) -> Result<Tenant, TenantError> {
    let (id, name, rps, events, users, items, created_at, model) = row;
    Ok(Tenant {
        id: TenantId::parse(&id).map_err(|e| corrupt(format!("tenant {id:?}: {e}")))?,
        name: DisplayName::parse(&name).map_err(|e| corrupt(format!("tenant {id}: {e}")))?,
        quotas: Quotas {
            requests_per_second: quota(rps),
            events_per_day: quota(events),
            max_users: quota(users),
            max_items: quota(items),
        },
        model: model
            .map(|m| ModelSetting::parse(&m))
            .transpose()
            .map_err(|e| corrupt(format!("tenant {id}: {e}")))?,
        created_at,
    })
}

fn key_of(row: KeyRow) -> Result<KeyRecord, TenantError> {
    let (kind, hash, hint, created_at, expires_at) = row;
    Ok(KeyRecord {
        kind: KeyKind::parse(&kind).map_err(corrupt)?,
        hash: KeyHash::from_hex(&hash).map_err(corrupt)?,
        hint,
        created_at,
        expires_at,
    })
}

fn insert_key(conn: &Connection, id: &TenantId, key: &KeyRecord) -> rusqlite::Result<usize> {
    conn.execute(
        "INSERT INTO tenant_keys(tenant, kind, key_hash, hint, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            id.as_str(),
            key.kind.as_str(),
            key.hash.to_hex(),
            key.hint,
            key.created_at,
            key.expires_at
        ],
    )
}

impl SqliteTenants {
    /// Opens (creating, checking and migrating, as the store does) the file at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::open(path)?;
        Ok(SqliteTenants {
            path: path.to_owned(),
            conn: Arc::new(Mutex::new(db.into_connection())),
        })
    }

    /// Runs `f` on the registry's connection in the blocking pool; SQLite errors name
    /// the file.
    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, Failure> + Send + 'static,
    ) -> Result<T, TenantError> {
        let conn = self.conn.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut conn).map_err(|e| match e {
                Failure::Sql(e) => TenantError::storage(StoreError::at(&path, e)),
                Failure::Tenant(e) => e,
            })
        })
        .await
        .map_err(|e| TenantError::storage(StoreError::Task(e.to_string())))?
    }
}

/// A failure inside [`SqliteTenants::call`].
enum Failure {
    Sql(rusqlite::Error),
    Tenant(TenantError),
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        Failure::Sql(e)
    }
}

impl From<TenantError> for Failure {
    fn from(e: TenantError) -> Self {
        Failure::Tenant(e)
    }
}

#[async_trait]
impl TenantRegistry for SqliteTenants {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    async fn insert(&self, tenant: &Tenant, keys: &[KeyRecord]) -> Result<(), TenantError> {
        let tenant = tenant.clone();
        let keys = keys.to_vec();
        self.call(move |conn| {
            let tx = conn.transaction()?;
            let q = &tenant.quotas;
            let inserted = tx.execute(
                "INSERT INTO tenants(tenant, name, requests_per_second, events_per_day,
                     max_users, max_items, created_at, model)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT(tenant) DO NOTHING",
                params![
                    tenant.id.as_str(),
                    tenant.name.as_str(),
                    stored(q.requests_per_second),
                    stored(q.events_per_day),
                    stored(q.max_users),
                    stored(q.max_items),
                    tenant.created_at,
                    tenant.model.as_ref().map(|m| m.as_str().to_owned())
                ],
            )?;
            if inserted == 0 {
                return Err(TenantError::Exists(tenant.id).into());
            }
            for key in &keys {
                insert_key(&tx, &tenant.id, key)?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn list(&self) -> Result<Vec<Tenant>, TenantError> {
        self.call(|conn| {
            let rows = conn
                .prepare(&format!(
                    "SELECT {TENANT_COLUMNS} FROM tenants ORDER BY tenant"
                ))?
                .query_map([], tenant_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows.into_iter().map(tenant_of).collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn get(&self, id: &TenantId) -> Result<Option<Tenant>, TenantError> {
        let id = id.clone();
        self.call(move |conn| {
            let row = conn
                .query_row(
                    &format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE tenant = ?1"),
                    [id.as_str()],
                    tenant_row,
                )
                .optional()?;
            Ok(row.map(tenant_of).transpose()?)
        })
        .await
    }

    async fn keys(&self, id: &TenantId) -> Result<Vec<KeyRecord>, TenantError> {
        let id = id.clone();
        self.call(move |conn| {
            let rows = conn
                .prepare(&format!(
                    "SELECT {KEY_COLUMNS} FROM tenant_keys WHERE tenant = ?1
                     ORDER BY kind, expires_at IS NOT NULL, expires_at DESC,
                         created_at DESC, key_hash"
                ))?
                .query_map([id.as_str()], key_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows.into_iter().map(key_of).collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn rotate(
        &self,
        id: &TenantId,
        key: &KeyRecord,
        old_until: i64,
        now: i64,
    ) -> Result<(), TenantError> {
        let id = id.clone();
        let key = key.clone();
        self.call(move |conn| {
            let tx = conn.transaction()?;
            let known = tx
                .query_row(
                    "SELECT 1 FROM tenants WHERE tenant = ?1",
                    [id.as_str()],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            if !known {
                return Err(TenantError::NotFound(id).into());
            }
            tx.execute(
                "UPDATE tenant_keys SET expires_at = ?3
                 WHERE tenant = ?1 AND kind = ?2 AND (expires_at IS NULL OR expires_at > ?3)",
                params![id.as_str(), key.kind.as_str(), old_until],
            )?;
            tx.execute(
                "DELETE FROM tenant_keys WHERE tenant = ?1 AND expires_at <= ?2",
                params![id.as_str(), now],
            )?;
            insert_key(&tx, &id, &key)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn find_key(&self, hash: &KeyHash) -> Result<Option<(TenantId, KeyRecord)>, TenantError> {
        let hash = hash.to_hex();
        self.call(move |conn| {
            let row = conn
                .query_row(
                    &format!("SELECT tenant, {KEY_COLUMNS} FROM tenant_keys WHERE key_hash = ?1"),
                    [hash],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            (r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?),
                        ))
                    },
                )
                .optional()?;
            let Some((tenant, key)) = row else {
                return Ok(None);
            };
            let tenant = TenantId::parse(&tenant)
                .map_err(|e| corrupt(format!("key of tenant {tenant:?}: {e}")))?;
            Ok(Some((tenant, key_of(key)?)))
        })
        .await
    }

    async fn set_model(
        &self,
        id: &TenantId,
        model: Option<&ModelSetting>,
    ) -> Result<(), TenantError> {
        let (id, model) = (id.clone(), model.map(|m| m.as_str().to_owned()));
        self.call(move |conn| {
            let changed = conn.execute(
                "UPDATE tenants SET model = ?2 WHERE tenant = ?1",
                params![id.as_str(), model],
            )?;
            if changed == 0 {
                return Err(TenantError::NotFound(id).into());
            }
            Ok(())
        })
        .await
    }

    async fn delete(&self, id: &TenantId) -> Result<DeleteReport, TenantError> {
        let id = id.clone();
        let own_file = super::tenant_file(&self.path, id.as_str());
        let mut report = self
            .call(move |conn| {
                let tx = conn.transaction()?;
                let keys =
                    tx.execute("DELETE FROM tenant_keys WHERE tenant = ?1", [id.as_str()])?;
                let tenants = tx.execute("DELETE FROM tenants WHERE tenant = ?1", [id.as_str()])?;
                if tenants == 0 {
                    // Dropping the transaction rolls it back.
                    return Err(TenantError::NotFound(id).into());
                }
                tx.commit()?;
                Ok(DeleteReport {
                    tenant: id,
                    removed: vec![
                        RemovedRows {
                            table: "tenant_keys".into(),
                            rows: keys as u64,
                        },
                        RemovedRows {
                            table: "tenants".into(),
                            rows: tenants as u64,
                        },
                    ],
                    removed_files: Vec::new(),
                    kept: Some(KEPT_ON_DELETE.into()),
                })
            })
            .await?;
        report.removed_files = super::remove_tenant_file(&own_file).map_err(|source| {
            TenantError::storage(StoreError::File {
                path: own_file.display().to_string(),
                source,
            })
        })?;
        Ok(report)
    }
}
