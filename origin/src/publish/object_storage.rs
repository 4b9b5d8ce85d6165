//! S3-compatible object storage (Cloudflare R2, AWS S3, …) as a publish target, for
//! the secondary CDN in production: the same layout as the CDN folder under a prefix,
//! with a small pointer object instead of the folder's symlink, since object storage
//! has no atomic rename.
//!
//! Layout (under `prefix`):
//! - `generations/{gen}/{tenant}/users/{user}.json`, `…/popular/{region}.json`: the
//!   documents of each generation, written once and never changed by a bulk publish.
//! - `generations/{gen}/.started`: written first; a generation whose marker exists is
//!   taken (another publisher chose the same name).
//! - `current`: the pointer object, holding the current generation's name. A single
//!   PUT replaces it, which S3 makes atomic for readers: they see the old name or the
//!   new, so never a mix of two generations. Readers (the edge) read the pointer, cache
//!   it briefly, then read documents under its generation.
//!
//! After an activation, generations older than the newest `keep` are deleted (never the
//! one `current` names), in `DeleteObjects` calls of up to 1,000 keys.
//!
//! Requests are signed with AWS Signature V4 by `rusty-s3` (sans-IO: it builds presigned
//! URLs, and our `reqwest` client sends them), so no second HTTP stack is compiled in.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use contract::keys::{
    cdn_generation_dir, cdn_popular, cdn_subject, Generation, GenerationPointer, CDN_POINTER,
};
use contract::{RecommendationDoc, Region, Tenant};
use rusty_s3::actions::{DeleteObjects, ListObjectsV2, ObjectIdentifier};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use tokio::task::JoinSet;

use super::{Activated, PublishError, PublishTarget};

/// How long a signed request stays valid.
const SIGNED_FOR: Duration = Duration::from_secs(600);
/// PUTs in flight at once during a bulk publish.
const CONCURRENT_PUTS: usize = 32;
/// Keys per `DeleteObjects` call (the S3 limit).
const DELETE_BATCH: usize = 1000;
/// Name of the pointer object, under the prefix (the contract's, which the edge reads).
pub const POINTER: &str = CDN_POINTER;

/// Where the bucket is and how to sign for it.
#[derive(Clone, Debug)]
pub struct ObjectStorageSettings {
    /// `https://<account>.r2.cloudflarestorage.com`, `https://s3.<region>.amazonaws.com`,
    /// or a local S3-compatible server.
    pub endpoint: String,
    pub bucket: String,
    /// `auto` for R2.
    pub region: String,
    pub access_key: String,
    pub secret_key: crate::auth::Secret,
    /// Prepended to every object name (empty, or ending in `/`).
    pub prefix: String,
    /// Generations kept after an activation (0 keeps all).
    pub keep_generations: usize,
}

/// An S3-compatible bucket.
#[derive(Clone)]
pub struct ObjectStorage {
    bucket: Bucket,
    credentials: Credentials,
    prefix: String,
    keep_generations: usize,
    client: reqwest::Client,
}

impl std::fmt::Debug for ObjectStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStorage")
            .field("bucket", &self.bucket.name())
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn failed(what: &str, e: impl std::fmt::Display) -> PublishError {
    PublishError::ObjectStorage(format!("{what}: {e}"))
}

impl ObjectStorage {
    pub fn new(settings: ObjectStorageSettings) -> Result<Self, PublishError> {
        let endpoint = settings
            .endpoint
            .parse()
            .map_err(|e| failed(&format!("endpoint {:?}", settings.endpoint), e))?;
        let bucket = Bucket::new(endpoint, UrlStyle::Path, settings.bucket, settings.region)
            .map_err(|e| failed("bucket", e))?;
        let prefix = match settings.prefix.trim_matches('/') {
            "" => String::new(),
            p => format!("{p}/"),
        };
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Ok(ObjectStorage {
            bucket,
            credentials: Credentials::new(settings.access_key, settings.secret_key.expose()),
            prefix,
            keep_generations: settings.keep_generations,
            client,
        })
    }

    fn generations_prefix(&self) -> String {
        format!("{}generations/", self.prefix)
    }

    fn generation_object(&self, generation: &Generation, rest: &str) -> String {
        format!("{}{}/{rest}", self.prefix, cdn_generation_dir(generation))
    }

    /// Stores `body` as `key`.
    pub async fn put(
        &self,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> Result<(), PublishError> {
        let url = self
            .bucket
            .put_object(Some(&self.credentials), key)
            .sign(SIGNED_FOR);
        let resp = self
            .client
            .put(url)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .map_err(|e| failed(&format!("PUT {key}"), e))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            return Err(failed(
                &format!("PUT {key}"),
                format!("{status}: {}", text.chars().take(200).collect::<String>()),
            ));
        }
        Ok(())
    }

    /// The object `key`, or `None` when there is none.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, PublishError> {
        let url = self
            .bucket
            .get_object(Some(&self.credentials), key)
            .sign(SIGNED_FOR);
        let resp = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| failed(&format!("GET {key}"), e))?;
        if resp.status().as_u16() == 404 {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(failed(&format!("GET {key}"), resp.status()));
        }
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| failed(&format!("GET {key}"), e))?;
        Ok(Some(bytes.to_vec()))
    }

    /// What the pointer holds, if there is one.
    pub async fn current_pointer(&self) -> Result<Option<GenerationPointer>, PublishError> {
        let key = format!("{}{POINTER}", self.prefix);
        let Some(raw) = self.get(&key).await? else {
            return Ok(None);
        };
        GenerationPointer::parse(&String::from_utf8_lossy(&raw))
            .map(Some)
            .map_err(|e| failed(&format!("pointer {key}"), e))
    }

    /// The generation the pointer names, if any.
    pub async fn current_generation(&self) -> Result<Option<Generation>, PublishError> {
        Ok(self.current_pointer().await?.map(|p| p.generation))
    }

    /// Every key under `prefix` (all pages), or with `delimiter` the common prefixes.
    async fn list(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
    ) -> Result<Vec<String>, PublishError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut action: ListObjectsV2<'_> =
                self.bucket.list_objects_v2(Some(&self.credentials));
            action.with_prefix(prefix.to_owned());
            if let Some(d) = delimiter {
                action.with_delimiter(d.to_owned());
            }
            if let Some(t) = &token {
                action.with_continuation_token(t.clone());
            }
            let url = action.sign(SIGNED_FOR);
            let resp = self
                .client
                .get(url)
                .send()
                .await
                .map_err(|e| failed(&format!("LIST {prefix}"), e))?;
            if !resp.status().is_success() {
                return Err(failed(&format!("LIST {prefix}"), resp.status()));
            }
            let text = resp
                .text()
                .await
                .map_err(|e| failed(&format!("LIST {prefix}"), e))?;
            let page = ListObjectsV2::parse_response(&text)
                .map_err(|e| failed(&format!("LIST {prefix}"), e))?;
            if delimiter.is_some() {
                out.extend(page.common_prefixes.into_iter().map(|p| p.prefix));
            } else {
                out.extend(page.contents.into_iter().map(|c| c.key));
            }
            match page.next_continuation_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => return Ok(out),
            }
        }
    }

    /// Deletes `keys` in calls of up to [`DELETE_BATCH`].
    async fn delete(&self, keys: Vec<String>) -> Result<(), PublishError> {
        for chunk in keys.chunks(DELETE_BATCH) {
            let objects: Vec<ObjectIdentifier> = chunk
                .iter()
                .map(|k| ObjectIdentifier::new(k.clone()))
                .collect();
            let action: DeleteObjects<'_, _> = self
                .bucket
                .delete_objects(Some(&self.credentials), objects.iter());
            let url = action.sign(SIGNED_FOR);
            let (body, md5) = action.body_with_md5();
            let resp = self
                .client
                .post(url)
                .header("content-md5", md5)
                .body(body)
                .send()
                .await
                .map_err(|e| failed("DeleteObjects", e))?;
            if !resp.status().is_success() {
                return Err(failed("DeleteObjects", resp.status()));
            }
        }
        Ok(())
    }

    /// Deletes all generations but the newest `keep`, the current one and its base;
    /// returns how many were deleted.
    pub async fn prune(&self, keep: usize) -> Result<usize, PublishError> {
        let current = self.current_pointer().await?;
        let in_use = |name: &str| {
            current.as_ref().is_some_and(|p| {
                p.generation.as_str() == name || p.base.as_ref().is_some_and(|b| b.as_str() == name)
            })
        };
        let root = self.generations_prefix();
        let mut names: Vec<(u64, u32, String)> = self
            .list(&root, Some("/"))
            .await?
            .into_iter()
            .filter_map(|p| {
                let name = p.strip_prefix(&root)?.trim_end_matches('/').to_owned();
                let (secs, counter) = Generation::age(&name)?;
                Some((secs, counter, name))
            })
            .collect();
        names.sort();
        let old = names.len().saturating_sub(keep);
        let mut deleted = 0;
        for (_, _, name) in names.into_iter().take(old) {
            if in_use(&name) {
                continue;
            }
            let keys = self.list(&format!("{root}{name}/"), None).await?;
            self.delete(keys).await?;
            deleted += 1;
        }
        Ok(deleted)
    }

    /// PUTs `(key, document)` pairs, [`CONCURRENT_PUTS`] at a time.
    async fn put_docs(&self, objects: Vec<(String, Vec<u8>)>) -> Result<usize, PublishError> {
        let total = objects.len();
        let mut pending = objects.into_iter();
        let mut running = JoinSet::new();
        loop {
            while running.len() < CONCURRENT_PUTS {
                let Some((key, body)) = pending.next() else {
                    break;
                };
                let me = self.clone();
                running.spawn(async move { me.put(&key, body, "application/json").await });
            }
            match running.join_next().await {
                None => return Ok(total),
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => return Err(e),
                Some(Err(e)) => return Err(PublishError::Task(e.to_string())),
            }
        }
    }
}

#[async_trait]
impl PublishTarget for ObjectStorage {
    fn name(&self) -> &'static str {
        "object-storage"
    }

    fn supports_delta(&self) -> bool {
        true
    }

    async fn begin(
        &self,
        _tenant: &Tenant,
        generation: &Generation,
        _keep_until: Option<u64>,
    ) -> Result<(), PublishError> {
        let marker = self.generation_object(generation, ".started");
        if self.get(&marker).await?.is_some() {
            return Err(PublishError::GenerationTaken(
                generation.as_str().to_owned(),
            ));
        }
        self.put(&marker, Vec::new(), "text/plain").await
    }

    async fn write_users(
        &self,
        tenant: &Tenant,
        generation: &Generation,
        docs: Arc<Vec<RecommendationDoc>>,
    ) -> Result<usize, PublishError> {
        let objects = docs
            .iter()
            .map(|doc| {
                let path = cdn_subject(tenant, &super::subject_of(doc)?);
                Ok((
                    self.generation_object(generation, &path),
                    serde_json::to_vec(doc)?,
                ))
            })
            .collect::<Result<Vec<_>, PublishError>>()?;
        self.put_docs(objects).await
    }

    async fn write_popular(
        &self,
        tenant: &Tenant,
        generation: &Generation,
        docs: &[RecommendationDoc],
    ) -> Result<usize, PublishError> {
        let objects = docs
            .iter()
            .map(|doc| {
                let region = Region::parse(&doc.region).map_err(|e| {
                    PublishError::Task(format!("popular list region {:?}: {e}", doc.region))
                })?;
                Ok((
                    self.generation_object(generation, &cdn_popular(tenant, &region)),
                    serde_json::to_vec(doc)?,
                ))
            })
            .collect::<Result<Vec<_>, PublishError>>()?;
        self.put_docs(objects).await
    }

    async fn activate(
        &self,
        _tenant: &Tenant,
        pointer: &GenerationPointer,
    ) -> Result<Activated, PublishError> {
        let key = format!("{}{POINTER}", self.prefix);
        self.put(&key, pointer.encode().into_bytes(), "text/plain")
            .await?;
        let pruned = match self.keep_generations {
            0 => 0,
            keep => self.prune(keep).await?,
        };
        Ok(Activated { pruned })
    }

    async fn write_current(
        &self,
        tenant: &Tenant,
        doc: &RecommendationDoc,
        _traceparent: Option<&str>,
    ) -> Result<(), PublishError> {
        let generation = self.current_generation().await?.ok_or_else(|| {
            failed(
                "write after a miss",
                "no current generation (publish one first)",
            )
        })?;
        let path = cdn_subject(tenant, &super::subject_of(doc)?);
        let key = self.generation_object(&generation, &path);
        self.put(&key, serde_json::to_vec(doc)?, "application/json")
            .await
    }
}
