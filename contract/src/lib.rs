//! The wire contract between the edge and the origin.
//!
//! Everything that both sides must agree on lives here, so the two cannot drift:
//! the recommendation document ([`RecommendationDoc`]), what the edge adds when it
//! serves one ([`ServedDoc`], [`Source`]), the JSON error body ([`ErrorBody`]), the
//! rules for user, item and tenant ids ([`ids`]), the storage keys and CDN paths built
//! from them ([`keys`]), the admin publish/purge bodies ([`admin`]) and the
//! country-to-region map ([`region`]).
//!
//! # Layout
//! - `doc`: the recommendation document (a user's list or an item's list: [`Subject`])
//!   and its served form.
//! - `ids`: validation of ids that end up in keys and paths (tenant isolation).
//! - `keys`: KV keys and secondary-CDN paths, all namespaced by tenant.
//! - `admin`: bodies of `POST /admin/publish` and `POST /admin/purge`.
//! - `events`: live events (`POST /v1/events` at edge and origin): wire types, validation,
//!   interaction weights; and the edge's cache report.
//! - `region`: the country → region map shipped in `geo-data/`.
//! - `auth`: the bearer-token check (scheme case-insensitive, constant-time compare).
//! - `trace`: the W3C `traceparent` parser.
//! - `params`: the `n`, `tenant`, `exclude` and `category` query rules, and [`params::Filters`].
//! - `json`: strict JSON for closed bodies (duplicate keys refused).

pub mod admin;
pub mod auth;
pub mod doc;
pub mod events;
pub mod ids;
pub mod json;
pub mod keys;
pub mod params;
pub mod region;
pub mod trace;

pub use doc::{
    is_variant_name, parse_doc, DocError, ErrorBody, ErrorDetail, ItemList, RecItem,
    RecommendationDoc, ServedDoc, Source, Subject, MAX_DOC_BYTES, MAX_VARIANT_LEN,
};
pub use ids::{EventId, IdError, ItemId, Tenant, UserId};
pub use region::{Region, RegionMap};

/// Tenant used when a request names none.
pub const DEFAULT_TENANT: &str = "default";
/// Largest `n` a client may ask for; documents are published with this many items at most.
pub const MAX_N: usize = 100;
