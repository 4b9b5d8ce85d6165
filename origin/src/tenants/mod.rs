//! Tenants as data: a registry of tenants in the origin's store, each with a display
//! name, quotas and two API keys, managed with `origin tenants …` and the admin routes
//! `/v1/admin/tenants…`. One `origin serve` serves every registered tenant
//! (`crate::tenant_host`).
//!
//! Keys are random (256 bits), shown once, stored only as SHA-256 hashes, compared in
//! constant time and rotatable with an overlap period ([`keys`]). The quotas are
//! enforced by the serving origin ([`quota`],
//! `http::quota`); `POST /v1/events` needs one of the tenant's keys once it is registered
//! (`http::events`).
//!
//! This module does not know the store: each backend implements [`TenantRegistry`]
//! (`store/sqlite/tenants.rs`, `store/postgres/tenants.rs`) and `store::open_tenants`
//! opens the one `--db` names.
//!
//! # Layout
//! - `tenant`: [`Tenant`], [`DisplayName`], [`Quotas`], [`NewTenant`] and their checks.
//! - `keys`: [`KeyKind`], key generation, hashing, verification, the overlap deadline.
//! - `registry`: the [`TenantRegistry`] interface, [`TenantError`], [`DeleteReport`],
//!   and [`Tenants`], the operations on any registry (create, rotate, verify…).
//! - `quota`: [`quota::QuotaMeter`], the requests-per-second and events-per-day rules
//!   (pure, given the time); enforced on the API by `http::quota`.
//! - `labels`: [`labels::TenantLabels`], tenant names as metric labels with bounded
//!   cardinality (the busiest by name, the rest `other`).
//! - `model_cache`: [`model_cache::ModelCache`], which tenants' models stay in memory
//!   under `--model-cache-mb` (least recently used evicted; pure).
//! - `cli`: `origin tenants create|list|show|delete|rotate-key`.

pub mod cli;
pub mod keys;
pub mod labels;
pub mod model_cache;
pub mod quota;
pub mod registry;
pub mod tenant;

pub use keys::{KeyKind, PlainKey, DEFAULT_OVERLAP_S};
pub use registry::{
    Created, DeleteReport, KeyInfo, RemovedRows, Rotated, SharedRegistry, TenantError,
    TenantRegistry, TenantView, Tenants, Verified,
};
pub use tenant::{DisplayName, InvalidTenant, ModelSetting, NewTenant, Quotas, Tenant};
