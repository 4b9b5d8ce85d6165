//! The edge's KV as a publish target, through the Worker's admin routes
//! (`POST /admin/publish`, `POST /admin/purge`).
//!
//! A generation's documents go in batches of [`KV_BATCH`] into `{gen}`; activation is
//! one more request that flips the tenant's generation pointer. A generation's keys and
//! its pointer are not sent twice within a second ([`KeySpacing`]): such a request waits
//! for the rest of that second. Single documents (publish on miss, republish) are spaced
//! by the serving process's publish gate (`--publish-min-interval-ms`) instead.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use contract::admin::{PublishRequest, PublishResponse, PurgeRequest, PurgeResponse};
use contract::keys::{Generation, GenerationPointer};
use contract::{ErrorBody, RecommendationDoc, Subject, Tenant};

use super::{Activated, KeySpacing, PublishError, PublishTarget, KV_KEY_INTERVAL};
use crate::auth::Secret;

/// Most documents sent in one KV publish request (the edge accepts up to
/// [`contract::admin::MAX_PUBLISH_DOCS`]).
pub const KV_BATCH: usize = 500;

/// The edge's admin publish route.
#[derive(Clone, Debug)]
pub struct EdgeClient {
    client: reqwest::Client,
    url: String,
    purge_url: String,
    delete_tenant_url: String,
    token: Secret,
}

impl EdgeClient {
    /// A client for `{base_url}/admin/publish`, authenticating with `token`.
    pub fn new(base_url: &str, token: Secret) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        EdgeClient {
            client,
            url: format!("{}/admin/publish", base_url.trim_end_matches('/')),
            purge_url: format!("{}/admin/purge", base_url.trim_end_matches('/')),
            delete_tenant_url: format!("{}/admin/delete-tenant", base_url.trim_end_matches('/')),
            token,
        }
    }

    /// Sends one publish request; a non-2xx answer becomes [`PublishError::Edge`] with
    /// the edge's JSON error message.
    pub async fn publish(&self, req: &PublishRequest) -> Result<PublishResponse, PublishError> {
        self.publish_traced(req, None).await
    }

    /// [`EdgeClient::publish`] carrying a W3C `traceparent` header.
    pub async fn publish_traced(
        &self,
        req: &PublishRequest,
        traceparent: Option<&str>,
    ) -> Result<PublishResponse, PublishError> {
        self.post(&self.url, req, traceparent).await
    }

    /// Drops the edge-cache entries of some users (`POST {edge}/admin/purge`).
    pub async fn purge(
        &self,
        req: &PurgeRequest,
        traceparent: Option<&str>,
    ) -> Result<PurgeResponse, PublishError> {
        self.post(&self.purge_url, req, traceparent).await
    }

    /// Deletes a deleted tenant's KV generation pointer at the edge.
    pub async fn delete_tenant(
        &self,
        tenant: &Tenant,
    ) -> Result<contract::admin::DeleteTenantResponse, PublishError> {
        let req = contract::admin::DeleteTenantRequest {
            tenant: tenant.to_string(),
        };
        self.post(&self.delete_tenant_url, &req, None).await
    }

    async fn post<Req: serde::Serialize, Resp: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        req: &Req,
        traceparent: Option<&str>,
    ) -> Result<Resp, PublishError> {
        let http = |source| PublishError::Http {
            url: url.to_owned(),
            source,
        };
        let mut builder = self
            .client
            .post(url)
            .bearer_auth(self.token.expose())
            .json(req);
        if let Some(tp) = traceparent {
            builder = builder.header("traceparent", tp);
        }
        let resp = builder.send().await.map_err(http)?;
        let status = resp.status();
        let text = resp.text().await.map_err(http)?;
        if !status.is_success() {
            let (code, message) = match serde_json::from_str::<ErrorBody>(&text) {
                Ok(b) => (b.error.code, b.error.message),
                Err(_) => ("http_error".into(), text.chars().take(300).collect()),
            };
            return Err(PublishError::Edge {
                url: url.to_owned(),
                status: status.as_u16(),
                code,
                message,
            });
        }
        Ok(serde_json::from_str(&text)?)
    }
}

/// The edge's KV, written through the Worker's admin routes.
#[derive(Clone, Debug)]
pub struct EdgeKv {
    client: EdgeClient,
    spacing: Arc<std::sync::Mutex<KeySpacing>>,
}

impl EdgeKv {
    pub fn new(client: EdgeClient) -> Self {
        EdgeKv {
            client,
            spacing: Arc::new(std::sync::Mutex::new(KeySpacing::new(KV_KEY_INTERVAL))),
        }
    }

    /// Waits until none of `keys` was sent within the last second.
    async fn space(&self, keys: impl IntoIterator<Item = String>) {
        let keys: Vec<String> = keys.into_iter().collect();
        let wait = self
            .spacing
            .lock()
            .map(|mut s| s.reserve(keys.iter().map(String::as_str), std::time::Instant::now()))
            .unwrap_or(KV_KEY_INTERVAL);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    fn request(
        tenant: &Tenant,
        generation: Option<&Generation>,
        activate: bool,
        documents: Vec<RecommendationDoc>,
        popular: Vec<RecommendationDoc>,
    ) -> PublishRequest {
        PublishRequest {
            tenant: Some(tenant.as_str().to_owned()),
            generation: generation.map(|g| g.as_str().to_owned()),
            activate,
            documents,
            popular,
        }
    }
}

#[async_trait]
impl PublishTarget for EdgeKv {
    fn name(&self) -> &'static str {
        "kv"
    }

    async fn remove_tenant(&self, tenant: &Tenant) -> Result<String, PublishError> {
        let done = self.client.delete_tenant(tenant).await?;
        Ok(match done.pointer_deleted {
            true => "KV generation pointer deleted: no document is read again; they expire within their stale window".into(),
            false => "no KV generation pointer".into(),
        })
    }

    async fn begin(
        &self,
        _tenant: &Tenant,
        _generation: &Generation,
        _keep_until: Option<u64>,
    ) -> Result<(), PublishError> {
        // A KV generation exists once something is written into it.
        Ok(())
    }

    async fn write_users(
        &self,
        tenant: &Tenant,
        generation: &Generation,
        docs: Arc<Vec<RecommendationDoc>>,
    ) -> Result<usize, PublishError> {
        let mut written = 0;
        for batch in docs.chunks(KV_BATCH) {
            self.space(
                batch
                    .iter()
                    .filter_map(|d| super::subject_of(d).ok())
                    .map(|s| contract::keys::kv_subject(tenant, generation, &s)),
            )
            .await;
            let req = Self::request(tenant, Some(generation), false, batch.to_vec(), Vec::new());
            written += self.client.publish(&req).await?.written;
        }
        Ok(written)
    }

    async fn write_popular(
        &self,
        tenant: &Tenant,
        generation: &Generation,
        docs: &[RecommendationDoc],
    ) -> Result<usize, PublishError> {
        let req = Self::request(tenant, Some(generation), false, Vec::new(), docs.to_vec());
        Ok(self.client.publish(&req).await?.written)
    }

    async fn activate(
        &self,
        tenant: &Tenant,
        pointer: &GenerationPointer,
    ) -> Result<Activated, PublishError> {
        // The Worker writes a bare pointer: no base.
        if pointer.base.is_some() {
            return Err(PublishError::DeltaUnsupported("kv"));
        }
        self.space([contract::keys::kv_generation_pointer(tenant)])
            .await;
        let req = Self::request(
            tenant,
            Some(&pointer.generation),
            true,
            Vec::new(),
            Vec::new(),
        );
        self.client.publish(&req).await?;
        Ok(Activated::default())
    }

    async fn write_current(
        &self,
        tenant: &Tenant,
        doc: &RecommendationDoc,
        traceparent: Option<&str>,
    ) -> Result<(), PublishError> {
        // No KeySpacing here: in `origin serve`, the only caller, the publish gate already
        // keeps one user's publishes --publish-min-interval-ms apart (KV's one write a
        // second by default), and a second, fixed bound would override that setting.
        let req = Self::request(tenant, None, false, vec![doc.clone()], Vec::new());
        self.client.publish_traced(&req, traceparent).await?;
        Ok(())
    }

    async fn purge(
        &self,
        tenant: &Tenant,
        subjects: &[Subject],
        traceparent: Option<&str>,
    ) -> Result<bool, PublishError> {
        // At most the Worker's bound of users and item lists per call.
        for chunk in subjects.chunks(contract::admin::MAX_PURGE_IDS) {
            let mut req = PurgeRequest {
                tenant: Some(tenant.as_str().to_owned()),
                ..Default::default()
            };
            for subject in chunk {
                match subject {
                    Subject::User(u) => req.user_ids.push(u.as_str().to_owned()),
                    Subject::Item(list, item) => {
                        req.item_lists.push(contract::admin::ItemListRef {
                            list: *list,
                            item_id: item.as_str().to_owned(),
                        })
                    }
                }
            }
            self.client.purge(&req, traceparent).await?;
        }
        Ok(true)
    }
}
