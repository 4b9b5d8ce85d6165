//! Bodies of the edge's admin routes, which the origin calls to publish into KV and
//! to drop edge-cache entries. Both routes need `Authorization: Bearer <ADMIN_TOKEN>`.
//! Both bodies are closed: unknown fields are refused, and readers parse them with
//! [`crate::json::from_slice`] (no duplicate keys).

use serde::{Deserialize, Serialize};

use crate::doc::RecommendationDoc;

/// KV operations one Worker invocation may make (Cloudflare's limit).
pub const KV_OPS_PER_INVOCATION: usize = 1000;
/// Most documents (users plus popular lists) one publish request may carry: with the
/// generation pointer read and the pointer write of an activation, one call stays
/// within [`KV_OPS_PER_INVOCATION`]. Bulk publishing goes through Cloudflare's REST API
/// (`origin publish --targets kv-api`) instead.
pub const MAX_PUBLISH_DOCS: usize = KV_OPS_PER_INVOCATION - 2;
/// Most user ids one purge request may carry.
pub const MAX_PURGE_IDS: usize = 1000;
/// Largest admin request body the edge reads, in bytes.
pub const MAX_ADMIN_BODY_BYTES: usize = 8 * 1024 * 1024;
/// `user_id` of a stored popular list; the edge replaces it with the caller's id.
pub use crate::doc::POPULAR_USER_ID;

/// `POST /admin/publish`: write documents into KV.
///
/// Documents go into `generation` (or, when it is absent, the tenant's current
/// generation). With `activate`, the tenant's pointer is flipped to `generation`
/// after the writes, so a publish sends its batches without `activate` and flips
/// the pointer with its last request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    #[serde(default)]
    pub tenant: Option<String>,
    #[serde(default)]
    pub generation: Option<String>,
    #[serde(default)]
    pub activate: bool,
    #[serde(default)]
    pub documents: Vec<RecommendationDoc>,
    /// Per-region popular lists, keyed by their `region` field.
    #[serde(default)]
    pub popular: Vec<RecommendationDoc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishResponse {
    pub tenant: String,
    pub generation: String,
    pub written: usize,
    pub activated: bool,
}

/// `POST /admin/purge`: drop edge-cache entries of these users (and of these items'
/// lists).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurgeRequest {
    #[serde(default)]
    pub tenant: Option<String>,
    pub user_ids: Vec<String>,
    /// Items' lists: `{"list": "similar", "item_id": "i1"}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub item_lists: Vec<ItemListRef>,
}

/// One list of one item, as a purge names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemListRef {
    pub list: crate::ItemList,
    pub item_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PurgeResponse {
    pub tenant: String,
    pub purged: usize,
}

/// `POST /admin/delete-tenant`: a deleted tenant's KV pointer is removed, so none of
/// its documents is read again (they expire by their own TTL, at most their stale
/// window). One KV operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteTenantRequest {
    pub tenant: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeleteTenantResponse {
    pub tenant: String,
    /// Whether the tenant had a generation pointer (now deleted).
    pub pointer_deleted: bool,
}
