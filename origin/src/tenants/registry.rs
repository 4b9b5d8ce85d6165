//! The registry interface every store backend implements ([`TenantRegistry`]: rows
//! in, rows out), and the operations built on it once for all backends ([`Tenants`]:
//! issuing, rotating and verifying keys).

use std::sync::Arc;

use async_trait::async_trait;
use contract::Tenant as TenantId;
use serde::Serialize;
use thiserror::Error;

use super::keys::{self, KeyHash, KeyKind, KeyRecord, PlainKey, MAX_OVERLAP_S};
use super::tenant::{InvalidTenant, NewTenant, Tenant};

/// Why a registry operation failed.
#[derive(Debug, Error)]
pub enum TenantError {
    #[error(transparent)]
    Invalid(#[from] InvalidTenant),
    #[error(transparent)]
    InvalidKind(#[from] keys::UnknownKeyKind),
    #[error("the overlap may be at most {MAX_OVERLAP_S} seconds, not {0}")]
    InvalidOverlap(u64),
    #[error("tenant {0} already exists")]
    Exists(TenantId),
    #[error("no tenant {0}")]
    NotFound(TenantId),
    #[error("cannot draw random bytes for a key: {0}")]
    Randomness(String),
    /// The backend failed (its error says where).
    #[error("tenant registry: {0}")]
    Storage(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl TenantError {
    /// A backend's error.
    pub fn storage(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        TenantError::Storage(Box::new(e))
    }
}

/// A registry row that cannot be read back (an id, name or hash no longer valid).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("the tenant registry holds a row that cannot be read back: {0}")]
pub struct CorruptRow(pub String);

/// Rows removed from one table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RemovedRows {
    pub table: String,
    pub rows: u64,
}

/// What deleting a tenant removed, table by table (every table with a tenant
/// column, the registry's own last), and what it left and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeleteReport {
    pub tenant: TenantId,
    pub removed: Vec<RemovedRows>,
    /// Files removed (SQLite: the tenant's own database file and its WAL).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed_files: Vec<String>,
    /// Data the backend could not attribute to the tenant and left in place.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept: Option<String>,
}

impl DeleteReport {
    /// Rows removed from `table` (0 when it is not in the report).
    pub fn rows(&self, table: &str) -> u64 {
        self.removed
            .iter()
            .find(|r| r.table == table)
            .map_or(0, |r| r.rows)
    }
}

/// Where tenants and the records of their keys are kept. Implemented by each store
/// backend (`store/sqlite/tenants.rs`, `store/postgres/tenants.rs`); the same suite
/// (`store/tenants_suite.rs`) runs against each. Keys arrive already hashed: a backend
/// never sees one in clear.
#[async_trait]
pub trait TenantRegistry: Send + Sync {
    /// Where the registry lives, for messages (a path, or a URL without password).
    fn location(&self) -> String;

    /// Stores a new tenant with its first keys, in one transaction;
    /// [`TenantError::Exists`] when the id is taken (nothing is changed then).
    async fn insert(&self, tenant: &Tenant, keys: &[KeyRecord]) -> Result<(), TenantError>;

    /// Every tenant, by id.
    async fn list(&self) -> Result<Vec<Tenant>, TenantError>;

    /// One tenant, when registered.
    async fn get(&self, id: &TenantId) -> Result<Option<Tenant>, TenantError>;

    /// The records of a tenant's keys (the replaced ones still in their overlap too),
    /// by kind, then newest first.
    async fn keys(&self, id: &TenantId) -> Result<Vec<KeyRecord>, TenantError>;

    /// In one transaction: every key of `key.kind` of the tenant valid beyond
    /// `old_until` now expires at `old_until`, keys of the tenant expired at `now` are
    /// dropped, and `key` is added. [`TenantError::NotFound`] for an unknown tenant.
    async fn rotate(
        &self,
        id: &TenantId,
        key: &KeyRecord,
        old_until: i64,
        now: i64,
    ) -> Result<(), TenantError>;

    /// The key with this hash and its tenant, when stored (valid or not).
    async fn find_key(&self, hash: &KeyHash) -> Result<Option<(TenantId, KeyRecord)>, TenantError>;

    /// Removes the tenant's rows from every table with a tenant column, in one
    /// transaction, and says what it removed; [`TenantError::NotFound`] (nothing
    /// removed) for a tenant not in the registry.
    /// Sets (or, with `None`, clears) the tenant's model; `NotFound` when there is no
    /// such tenant.
    async fn set_model(
        &self,
        id: &TenantId,
        model: Option<&crate::tenants::ModelSetting>,
    ) -> Result<(), TenantError>;

    async fn delete(&self, id: &TenantId) -> Result<DeleteReport, TenantError>;
}

/// A shared handle on a registry.
pub type SharedRegistry = Arc<dyn TenantRegistry>;

/// A new tenant and its keys, shown this once.
#[derive(Debug, Clone, Serialize)]
pub struct Created {
    pub tenant: Tenant,
    pub client_key: PlainKey,
    pub server_key: PlainKey,
}

/// A rotated key, shown this once, and until when the keys it replaces still work.
#[derive(Debug, Clone, Serialize)]
pub struct Rotated {
    pub tenant: TenantId,
    pub kind: KeyKind,
    pub key: PlainKey,
    /// Unix seconds from which the replaced keys are refused.
    pub previous_valid_until: i64,
}

/// A key as listings show it: never the key, never its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    pub kind: KeyKind,
    pub hint: String,
    pub created_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

/// A tenant with its keys, as `show` answers.
#[derive(Debug, Clone, Serialize)]
pub struct TenantView {
    #[serde(flatten)]
    pub tenant: Tenant,
    pub keys: Vec<KeyInfo>,
}

/// A key that passed [`Tenants::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub tenant: TenantId,
    pub kind: KeyKind,
}

/// The registry's operations, the same on every backend: keys are drawn from the
/// operating system's random source here, and only their records reach the backend.
/// Every operation takes the time (unix seconds).
#[derive(Clone)]
pub struct Tenants {
    registry: SharedRegistry,
}

fn draw(kind: KeyKind, now: i64) -> Result<(PlainKey, KeyRecord), TenantError> {
    keys::generate(kind, &mut rand::rngs::OsRng, now)
        .map_err(|e| TenantError::Randomness(e.to_string()))
}

impl Tenants {
    pub fn new(registry: SharedRegistry) -> Self {
        Tenants { registry }
    }

    /// Where the registry lives.
    pub fn location(&self) -> String {
        self.registry.location()
    }

    /// Registers `new` at `now` with a client and a server key.
    pub async fn create(&self, new: NewTenant, now: i64) -> Result<Created, TenantError> {
        let tenant = Tenant::created(new, now);
        let (client_key, client) = draw(KeyKind::Client, now)?;
        let (server_key, server) = draw(KeyKind::Server, now)?;
        self.registry.insert(&tenant, &[client, server]).await?;
        Ok(Created {
            tenant,
            client_key,
            server_key,
        })
    }

    /// Every tenant, by id.
    pub async fn list(&self) -> Result<Vec<Tenant>, TenantError> {
        self.registry.list().await
    }

    /// A tenant and its keys still valid at `now`.
    pub async fn show(&self, id: &TenantId, now: i64) -> Result<TenantView, TenantError> {
        let tenant = self
            .registry
            .get(id)
            .await?
            .ok_or_else(|| TenantError::NotFound(id.clone()))?;
        let keys = self
            .registry
            .keys(id)
            .await?
            .into_iter()
            .filter(|k| k.valid_at(now))
            .map(|k| KeyInfo {
                kind: k.kind,
                hint: k.hint,
                created_at: k.created_at,
                expires_at: k.expires_at,
            })
            .collect();
        Ok(TenantView { tenant, keys })
    }

    /// Issues a new key of `kind` at `now`; the tenant's other keys of that kind stay
    /// valid for `overlap_s` seconds more (at most [`MAX_OVERLAP_S`]; 0 ends them now).
    pub async fn rotate_key(
        &self,
        id: &TenantId,
        kind: KeyKind,
        now: i64,
        overlap_s: u64,
    ) -> Result<Rotated, TenantError> {
        if overlap_s > MAX_OVERLAP_S {
            return Err(TenantError::InvalidOverlap(overlap_s));
        }
        let (key, record) = draw(kind, now)?;
        let until = keys::overlap_deadline(now, overlap_s);
        self.registry.rotate(id, &record, until, now).await?;
        Ok(Rotated {
            tenant: id.clone(),
            kind,
            key,
            previous_valid_until: until,
        })
    }

    /// The tenant and kind of `key` when it is one of a tenant's keys and valid at
    /// `now`; `None` for anything else (malformed, unknown, expired). A malformed key
    /// is refused without a lookup; a stored hash is compared in constant time. The
    /// lookup is by the key's SHA-256, so its timing tells nothing about the key's
    /// characters (only whether some key has that hash).
    pub async fn verify(&self, key: &str, now: i64) -> Result<Option<Verified>, TenantError> {
        if KeyKind::of_key(key).is_none() {
            return Ok(None);
        }
        let Some((tenant, record)) = self.registry.find_key(&KeyHash::of(key)).await? else {
            return Ok(None);
        };
        Ok(keys::accepts(&record, key, now).then_some(Verified {
            tenant,
            kind: record.kind,
        }))
    }

    /// Removes the tenant and its rows (see [`TenantRegistry::delete`]).
    /// Sets or clears a tenant's model (see [`TenantRegistry::set_model`]).
    pub async fn set_model(
        &self,
        id: &TenantId,
        model: Option<&crate::tenants::ModelSetting>,
    ) -> Result<(), TenantError> {
        self.registry.set_model(id, model).await
    }

    pub async fn delete(&self, id: &TenantId) -> Result<DeleteReport, TenantError> {
        self.registry.delete(id).await
    }
}
