//! Publishing recommendation documents to where the edge reads them, through one
//! interface, [`PublishTarget`], implemented by each place documents go.
//!
//! A bulk publish ([`publish_all`]) writes one whole *generation* to every target and
//! then activates it on each, so readers never see two generations mixed. Publishing
//! one answered document ([`publish_one`], after a miss or after events) replaces the
//! user's document in each target's current generation.
//!
//! # Layout
//! - [`PublishTarget`]: the interface (reserve a generation, write users, write popular
//!   lists, activate, replace one current document, purge cached copies).
//! - [`PublishTargets`]: the configured targets of a process, cheap to clone.
//! - `edge_kv`: the edge's KV through the Worker's `POST /admin/publish` ([`EdgeKv`],
//!   its HTTP client [`EdgeClient`]).
//! - `kv_rest`: Workers KV through Cloudflare's REST bulk API ([`KvRest`]), within the
//!   API's limits, with retries and a bounded rate.
//! - `object_storage`: the secondary CDN on S3-compatible storage (R2, S3) with a pointer
//!   object instead of a symlink ([`ObjectStorage`]).
//! - `spacing`: [`KeySpacing`], KV's one write per key per second, for both KV targets.
//! - `cdn_folder`: the secondary CDN folder of generations and a `current` symlink
//!   ([`CdnFolder`]).
//! - `bulk`: [`publish_all`], the bulk publish behind `origin publish`, with progress
//!   reported through a callback, whole or as a delta against a base.
//! - `delta`: when a publish may be a delta, and the state kept between publishes.
//! - [`publish_one`]: one answered document to every target.

mod bulk;
mod cdn_folder;
pub mod delta;
mod edge_kv;
mod kv_rest;
mod object_storage;
mod spacing;

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use contract::keys::{Generation, GenerationPointer};
use contract::{IdError, RecommendationDoc, Subject, Tenant};
use thiserror::Error;

pub use bulk::{
    content_hash, publish_all, DeltaBase, Progress, PublishJob, PublishReport, TargetReport,
};
pub use cdn_folder::CdnFolder;
pub use edge_kv::{EdgeClient, EdgeKv, KV_BATCH};
pub use kv_rest::{batches, pair_for, BulkPair, KvApiSettings, KvRest, MAX_CALL_BYTES};
pub use object_storage::{ObjectStorage, ObjectStorageSettings, POINTER};
pub use spacing::{KeySpacing, KV_KEY_INTERVAL};

#[derive(Debug, Error)]
pub enum PublishError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("edge answered {status} to {url}: {code}: {message}")]
    Edge {
        url: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("cannot reach the edge at {url}: {source}")]
    Http { url: String, source: reqwest::Error },
    #[error("user id {0:?} in the database is not valid: {1}")]
    BadUserId(String, IdError),
    #[error("a document to publish names no valid user or item: {0}")]
    BadSubject(String),
    #[error("{0} has no current generation (publish one with `origin publish --out`)")]
    NoCurrent(PathBuf),
    #[error("{0}")]
    TooLarge(String),
    #[error("object storage: {0}")]
    ObjectStorage(String),
    #[error("KV API: batch {batch} ({keys} keys, first {first_key:?}) failed: {message}; the generation pointer was not flipped by this call")]
    KvApi {
        batch: usize,
        keys: usize,
        first_key: String,
        message: String,
    },
    #[error("tenant {0} has no current KV generation (publish one with `origin publish`)")]
    NoKvGeneration(String),
    #[error("the {0} target cannot hold delta generations; publish without --delta")]
    DeltaUnsupported(&'static str),
    #[error("the {0} target cannot remove a tenant's documents; remove them by hand")]
    RemoveUnsupported(&'static str),
    #[error("generation {0} is already taken at this target")]
    GenerationTaken(String),
    #[error("no free generation name for this second after {0} tries")]
    NoFreeGeneration(u32),
    #[error("document encoding: {0}")]
    Json(#[from] serde_json::Error),
    #[error("background task failed: {0}")]
    Task(String),
}

/// Whose document this is (a user's, or an item's list): every target keys documents by
/// it ([`contract::keys::kv_subject`], [`contract::keys::cdn_subject`]).
pub fn subject_of(doc: &RecommendationDoc) -> Result<Subject, PublishError> {
    Subject::of(doc).map_err(|e| {
        let named = doc.item_id.as_deref().unwrap_or(&doc.user_id);
        PublishError::BadSubject(format!("{named:?}: {e}"))
    })
}

/// The name a document's content hash is kept under between publishes (delta
/// publishing): the user id, or `similar/{item}` / `bought-together/{item}` (user ids
/// cannot hold a `/`, so the two never meet).
pub fn hash_key(doc: &RecommendationDoc) -> String {
    match (&doc.list, &doc.item_id) {
        (Some(list), Some(item)) => format!("{}/{item}", list.as_str()),
        _ => doc.user_id.clone(),
    }
}

/// What activating a generation did at one target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Activated {
    /// Old generations deleted after the switch (targets that keep a bounded number).
    pub pruned: usize,
}

/// A place the edge reads documents from.
///
/// A bulk publish calls [`PublishTarget::begin`] with a generation name, writes users
/// and popular lists into it (not yet visible), then [`PublishTarget::activate`]s it:
/// the switch must be atomic for readers. [`PublishTarget::write_current`] replaces a
/// single user's document in whatever generation is current.
#[async_trait]
pub trait PublishTarget: Send + Sync + std::fmt::Debug {
    /// Short name for logs, `/health` and reports (`kv`, `cdn`).
    fn name(&self) -> &'static str;

    /// The lowest generation counter worth trying for a generation made in second
    /// `now` (targets that keep generations know which are used); 0 by default.
    async fn first_free_counter(&self, _now: u64) -> Result<u32, PublishError> {
        Ok(0)
    }

    /// Whether this target can hold delta generations (only changed documents, the rest
    /// read from a base; see [`contract::keys::GenerationPointer`]).
    fn supports_delta(&self) -> bool {
        false
    }

    /// Reserves `generation` for `tenant`; [`PublishError::GenerationTaken`] when this
    /// target already has it (the bulk publish then tries the next name). With
    /// `keep_until` (unix seconds), the generation's documents must stay readable until
    /// then (a base that later delta generations read through), not only until each
    /// document's own `stale_until`.
    async fn begin(
        &self,
        tenant: &Tenant,
        generation: &Generation,
        keep_until: Option<u64>,
    ) -> Result<(), PublishError>;

    /// Writes users' documents (and items' lists: key each by [`subject_of`]) into
    /// `generation`; returns how many were written.
    async fn write_users(
        &self,
        tenant: &Tenant,
        generation: &Generation,
        docs: Arc<Vec<RecommendationDoc>>,
    ) -> Result<usize, PublishError>;

    /// Writes the regions' popular lists into `generation`; returns how many.
    async fn write_popular(
        &self,
        tenant: &Tenant,
        generation: &Generation,
        docs: &[RecommendationDoc],
    ) -> Result<usize, PublishError>;

    /// Makes `pointer`'s generation (with its base, for a delta) the one readers see,
    /// atomically.
    async fn activate(
        &self,
        tenant: &Tenant,
        pointer: &GenerationPointer,
    ) -> Result<Activated, PublishError>;

    /// Replaces one user's (or item list's) document in the current generation (publish on miss, and
    /// republish after events), passing a W3C `traceparent` on where it can.
    async fn write_current(
        &self,
        tenant: &Tenant,
        doc: &RecommendationDoc,
        traceparent: Option<&str>,
    ) -> Result<(), PublishError>;

    /// Removes a deleted tenant's documents (or makes them unreadable at once, where
    /// they then expire); says what it removed. A target that cannot does nothing and
    /// says so in the error.
    async fn remove_tenant(&self, _tenant: &Tenant) -> Result<String, PublishError> {
        Err(PublishError::RemoveUnsupported(self.name()))
    }

    /// Drops copies of the subjects' documents (users', items' lists) that readers may
    /// have cached (the edge cache); a target with no such cache does nothing. Returns
    /// whether it purged.
    async fn purge(
        &self,
        _tenant: &Tenant,
        _subjects: &[Subject],
        _traceparent: Option<&str>,
    ) -> Result<bool, PublishError> {
        Ok(false)
    }
}

/// The publish targets of a process (possibly none); cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct PublishTargets(Arc<Vec<Arc<dyn PublishTarget>>>);

impl PublishTargets {
    pub fn new(targets: Vec<Arc<dyn PublishTarget>>) -> Self {
        PublishTargets(Arc::new(targets))
    }

    /// This set with `target` added.
    pub fn with(&self, target: Arc<dyn PublishTarget>) -> Self {
        let mut all = self.0.as_ref().clone();
        all.push(target);
        PublishTargets::new(all)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn PublishTarget>> {
        self.0.iter()
    }

    /// The target called `name`, if configured.
    pub fn named(&self, name: &str) -> Option<&Arc<dyn PublishTarget>> {
        self.0.iter().find(|t| t.name() == name)
    }
}

/// What [`publish_one`] did, per configured target.
#[derive(Debug, Default)]
pub struct PublishOneOutcome {
    /// (target name, result) in the order of the targets.
    pub results: Vec<(&'static str, Result<(), String>)>,
}

impl PublishOneOutcome {
    /// Every configured target took the document.
    pub fn all_ok(&self) -> bool {
        self.results.iter().all(|(_, r)| r.is_ok())
    }

    /// The result of the target called `name`, if it is configured.
    pub fn of(&self, name: &str) -> Option<&Result<(), String>> {
        self.results
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, r)| r)
    }
}

/// Publishes one answered document into every target's current generation, passing a
/// W3C `traceparent` on. Failures are logged and reported, never raised.
pub async fn publish_one(
    targets: &PublishTargets,
    tenant: &Tenant,
    doc: &RecommendationDoc,
    traceparent: Option<&str>,
) -> PublishOneOutcome {
    let mut outcome = PublishOneOutcome::default();
    for target in targets.iter() {
        let result = match target.write_current(tenant, doc, traceparent).await {
            Ok(()) => {
                tracing::debug!(user = %doc.user_id, target = target.name(), "published one document");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(user = %doc.user_id, target = target.name(), error = %e, "publishing one document failed");
                Err(e.to_string())
            }
        };
        outcome.results.push((target.name(), result));
    }
    outcome
}

#[cfg(test)]
mod tests;
