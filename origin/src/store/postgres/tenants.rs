//! The tenant registry in PostgreSQL ([`PostgresTenants`]): tables `tenants` and
//! `tenant_keys` (migration 4 in `schema`). Deleting a tenant removes its rows from
//! every table of the schema with a `tenant` column, in one transaction, and counts
//! them per table.

use async_trait::async_trait;
use contract::Tenant as TenantId;
use deadpool_postgres::Pool;
use tokio_postgres::Row;

use crate::store::StoreError;
use crate::tenants::keys::{KeyHash, KeyKind, KeyRecord};
use crate::tenants::registry::{CorruptRow, DeleteReport, RemovedRows, TenantError};
use crate::tenants::{DisplayName, ModelSetting, Quotas, Tenant, TenantRegistry};

use super::{event_log, schema, PostgresStore};

/// The registry's own tables, deleted from last.
const REGISTRY_TABLES: [&str; 2] = ["tenant_keys", "tenants"];

/// The tenant registry of one PostgreSQL database.
#[derive(Clone)]
pub struct PostgresTenants {
    location: String,
    pool: Pool,
}

fn corrupt(what: impl std::fmt::Display) -> TenantError {
    TenantError::storage(CorruptRow(what.to_string()))
}

fn quota(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Stored as `bigint` (quotas are at most `MAX_QUOTA`).
fn stored(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

const TENANT_COLUMNS: &str =
    "tenant, name, requests_per_second, events_per_day, max_users, max_items, created_at, model";
const KEY_COLUMNS: &str = "kind, key_hash, hint, created_at, expires_at";

/// A tenant from a row of [`TENANT_COLUMNS`].
fn tenant_of(r: &Row) -> Result<Tenant, TenantError> {
    let id: String = r.get(0);
    let name: String = r.get(1);
    Ok(Tenant {
        id: TenantId::parse(&id).map_err(|e| corrupt(format!("tenant {id:?}: {e}")))?,
        name: DisplayName::parse(&name).map_err(|e| corrupt(format!("tenant {id}: {e}")))?,
        quotas: Quotas {
            requests_per_second: quota(r.get(2)),
            events_per_day: quota(r.get(3)),
            max_users: quota(r.get(4)),
            max_items: quota(r.get(5)),
        },
        model: r
            .get::<_, Option<String>>(7)
            .map(|m| ModelSetting::parse(&m))
            .transpose()
            .map_err(|e| corrupt(format!("tenant {id}: {e}")))?,
        created_at: r.get(6),
    })
}

/// A key record from a row of [`KEY_COLUMNS`] starting at column `at`.
fn key_of(r: &Row, at: usize) -> Result<KeyRecord, TenantError> {
    let kind: String = r.get(at);
    let hash: String = r.get(at + 1);
    Ok(KeyRecord {
        kind: KeyKind::parse(&kind).map_err(corrupt)?,
        hash: KeyHash::from_hex(&hash).map_err(corrupt)?,
        hint: r.get(at + 2),
        created_at: r.get(at + 3),
        expires_at: r.get(at + 4),
    })
}

/// `name` as a quoted SQL identifier.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

async fn insert_key(
    tx: &impl tokio_postgres::GenericClient,
    id: &TenantId,
    key: &KeyRecord,
) -> Result<u64, tokio_postgres::Error> {
    tx.execute(
        "INSERT INTO tenant_keys(tenant, kind, key_hash, hint, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &id.as_str(),
            &key.kind.as_str(),
            &key.hash.to_hex(),
            &key.hint,
            &key.created_at,
            &key.expires_at,
        ],
    )
    .await
}

impl PostgresTenants {
    /// Connects to `url` and applies the migrations (as [`PostgresStore::connect`]
    /// does, under the same lock), without starting an event writer.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let (location, pool) = PostgresStore::pool_for(url)?;
        let at = |e: StoreError| StoreError::Postgres(format!("{location}: {e}"));
        {
            let mut conn = pool.get().await.map_err(|e| at(e.into()))?;
            let client: &mut tokio_postgres::Client = &mut conn;
            // A schema this creates has the default number of per-user partitions.
            schema::migrate(client, event_log::now_ms() / 1000, schema::USER_PARTITIONS)
                .await
                .map_err(at)?;
        }
        Ok(PostgresTenants { location, pool })
    }

    /// A backend error, naming the database (without its password).
    fn failed(&self, e: impl Into<StoreError>) -> TenantError {
        TenantError::storage(StoreError::Postgres(format!(
            "{}: {}",
            self.location,
            e.into()
        )))
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, TenantError> {
        self.pool.get().await.map_err(|e| self.failed(e))
    }
}

#[async_trait]
impl TenantRegistry for PostgresTenants {
    fn location(&self) -> String {
        self.location.clone()
    }

    async fn insert(&self, tenant: &Tenant, keys: &[KeyRecord]) -> Result<(), TenantError> {
        let mut conn = self.client().await?;
        let tx = conn.transaction().await.map_err(|e| self.failed(e))?;
        let q = &tenant.quotas;
        let inserted = tx
            .execute(
                "INSERT INTO tenants(tenant, name, requests_per_second, events_per_day,
                     max_users, max_items, created_at, model)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (tenant) DO NOTHING",
                &[
                    &tenant.id.as_str(),
                    &tenant.name.as_str(),
                    &stored(q.requests_per_second),
                    &stored(q.events_per_day),
                    &stored(q.max_users),
                    &stored(q.max_items),
                    &tenant.created_at,
                    &tenant.model.as_ref().map(|m| m.as_str()),
                ],
            )
            .await
            .map_err(|e| self.failed(e))?;
        if inserted == 0 {
            return Err(TenantError::Exists(tenant.id.clone()));
        }
        for key in keys {
            insert_key(&*tx, &tenant.id, key)
                .await
                .map_err(|e| self.failed(e))?;
        }
        tx.commit().await.map_err(|e| self.failed(e))
    }

    async fn list(&self) -> Result<Vec<Tenant>, TenantError> {
        let conn = self.client().await?;
        conn.query(
            &format!("SELECT {TENANT_COLUMNS} FROM tenants ORDER BY tenant"),
            &[],
        )
        .await
        .map_err(|e| self.failed(e))?
        .iter()
        .map(tenant_of)
        .collect()
    }

    async fn get(&self, id: &TenantId) -> Result<Option<Tenant>, TenantError> {
        let conn = self.client().await?;
        conn.query_opt(
            &format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE tenant = $1"),
            &[&id.as_str()],
        )
        .await
        .map_err(|e| self.failed(e))?
        .as_ref()
        .map(tenant_of)
        .transpose()
    }

    async fn keys(&self, id: &TenantId) -> Result<Vec<KeyRecord>, TenantError> {
        let conn = self.client().await?;
        conn.query(
            &format!(
                "SELECT {KEY_COLUMNS} FROM tenant_keys WHERE tenant = $1
                 ORDER BY kind, expires_at DESC NULLS FIRST, created_at DESC, key_hash"
            ),
            &[&id.as_str()],
        )
        .await
        .map_err(|e| self.failed(e))?
        .iter()
        .map(|r| key_of(r, 0))
        .collect()
    }

    async fn rotate(
        &self,
        id: &TenantId,
        key: &KeyRecord,
        old_until: i64,
        now: i64,
    ) -> Result<(), TenantError> {
        let mut conn = self.client().await?;
        let tx = conn.transaction().await.map_err(|e| self.failed(e))?;
        // Locks the tenant row: a concurrent rotation or delete waits.
        let known = tx
            .query_opt(
                "SELECT 1 FROM tenants WHERE tenant = $1 FOR UPDATE",
                &[&id.as_str()],
            )
            .await
            .map_err(|e| self.failed(e))?;
        if known.is_none() {
            return Err(TenantError::NotFound(id.clone()));
        }
        tx.execute(
            "UPDATE tenant_keys SET expires_at = $3
             WHERE tenant = $1 AND kind = $2 AND (expires_at IS NULL OR expires_at > $3)",
            &[&id.as_str(), &key.kind.as_str(), &old_until],
        )
        .await
        .map_err(|e| self.failed(e))?;
        tx.execute(
            "DELETE FROM tenant_keys WHERE tenant = $1 AND expires_at <= $2",
            &[&id.as_str(), &now],
        )
        .await
        .map_err(|e| self.failed(e))?;
        insert_key(&*tx, id, key)
            .await
            .map_err(|e| self.failed(e))?;
        tx.commit().await.map_err(|e| self.failed(e))
    }

    async fn find_key(&self, hash: &KeyHash) -> Result<Option<(TenantId, KeyRecord)>, TenantError> {
        let conn = self.client().await?;
        let Some(row) = conn
            .query_opt(
                &format!("SELECT tenant, {KEY_COLUMNS} FROM tenant_keys WHERE key_hash = $1"),
                &[&hash.to_hex()],
            )
            .await
            .map_err(|e| self.failed(e))?
        else {
            return Ok(None);
        };
        let tenant: String = row.get(0);
        let tenant = TenantId::parse(&tenant)
            .map_err(|e| corrupt(format!("key of tenant {tenant:?}: {e}")))?;
        Ok(Some((tenant, key_of(&row, 1)?)))
    }

    async fn set_model(
        &self,
        id: &TenantId,
        model: Option<&ModelSetting>,
    ) -> Result<(), TenantError> {
        let conn = self.client().await?;
        let changed = conn
            .execute(
                "UPDATE tenants SET model = $2 WHERE tenant = $1",
                &[&id.as_str(), &model.map(|m| m.as_str())],
            )
            .await
            .map_err(|e| self.failed(e))?;
        if changed == 0 {
            return Err(TenantError::NotFound(id.clone()));
        }
        Ok(())
    }

    async fn delete(&self, id: &TenantId) -> Result<DeleteReport, TenantError> {
        let mut conn = self.client().await?;
        let tx = conn.transaction().await.map_err(|e| self.failed(e))?;
        let known = tx
            .query_opt(
                "SELECT 1 FROM tenants WHERE tenant = $1 FOR UPDATE",
                &[&id.as_str()],
            )
            .await
            .map_err(|e| self.failed(e))?;
        if known.is_none() {
            return Err(TenantError::NotFound(id.clone()));
        }
        // Every table (a partitioned one as a whole, not its partitions) of the schema
        // with a `tenant` column: tables added later are covered without a change here.
        let mut tables: Vec<String> = tx
            .query(
                "SELECT c.relname::text FROM pg_attribute a
                 JOIN pg_class c ON c.oid = a.attrelid
                 WHERE a.attname = 'tenant' AND a.attnum > 0 AND NOT a.attisdropped
                   AND c.relkind IN ('r', 'p') AND NOT c.relispartition
                   AND c.relnamespace = current_schema()::regnamespace
                 ORDER BY c.relname",
                &[],
            )
            .await
            .map_err(|e| self.failed(e))?
            .iter()
            .map(|r| r.get(0))
            .filter(|t: &String| !REGISTRY_TABLES.contains(&t.as_str()))
            .collect();
        tables.extend(REGISTRY_TABLES.iter().map(|t| (*t).to_owned()));
        let mut removed = Vec::with_capacity(tables.len());
        for table in tables {
            // The name comes from the catalogue and is quoted; the tenant is a parameter.
            let rows = tx
                .execute(
                    &format!("DELETE FROM {} WHERE tenant = $1", quoted(&table)),
                    &[&id.as_str()],
                )
                .await
                .map_err(|e| self.failed(e))?;
            removed.push(RemovedRows { table, rows });
        }
        tx.commit().await.map_err(|e| self.failed(e))?;
        Ok(DeleteReport {
            tenant: id.clone(),
            removed,
            removed_files: Vec::new(),
            kept: None,
        })
    }
}
