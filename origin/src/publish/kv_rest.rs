//! Workers KV through Cloudflare's REST API, as a publish target: the bulk endpoint
//! (`PUT /accounts/{account}/storage/kv/namespaces/{namespace}/bulk`, up to
//! [`MAX_PAIRS_PER_CALL`] pairs and [`MAX_CALL_BYTES`] per call) for whole generations,
//! so a million users take about a hundred calls instead of thousands of Worker
//! invocations.
//!
//! What it guarantees:
//! - Cloudflare's limits are checked before anything is sent: a key over
//!   [`MAX_KEY_BYTES`] or a value over [`MAX_VALUE_BYTES`] is an error naming the user,
//!   never a failed batch; batches stay within the pair and byte limits.
//! - A call answered 429 or 5xx (or not answered) is retried with exponential backoff and
//!   jitter (`backon`), at most [`KvApiSettings::attempts`] times; calls are spaced by at
//!   least `1 / requests_per_second` (Cloudflare's API allows 1,200 requests per 5
//!   minutes). A batch that still fails is an error saying which batch, and the bulk
//!   publish stops before the generation pointer is flipped, so readers keep the old
//!   generation whole.
//! - No key is written twice within a second ([`KeySpacing`]): a call holding a key
//!   written less than a second ago waits for the rest of that second (the pointer of two
//!   quick publishes, a document replaced right after a bulk write).
//! - Values expire `stale_until` after publishing (at least 60 s, KV's minimum), as the
//!   Worker's own `/admin/publish` sets them.
//!
//! There is no purge through this API: the edge cache lives in each location's Cache
//! API, reached only from the Worker (`EdgeKv` does that).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use contract::keys::{
    kv_generation_pointer, kv_popular, kv_subject, Generation, GenerationPointer,
};
use contract::{RecommendationDoc, Region, Tenant};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::{Activated, KeySpacing, PublishError, PublishTarget, KV_KEY_INTERVAL};
use crate::auth::Secret;

/// Most pairs in one bulk call.
pub const MAX_PAIRS_PER_CALL: usize = 10_000;
/// Largest bulk request body, in bytes (the API's limit is 100 MB; a margin is kept).
pub const MAX_CALL_BYTES: usize = 95_000_000;
/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 512;
/// Largest value, in bytes (25 MiB).
pub const MAX_VALUE_BYTES: usize = 25 * 1024 * 1024;
/// Shortest expiration KV takes, in seconds.
pub const MIN_TTL_S: u64 = 60;

/// One pair of a bulk write, as the API documents it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkPair {
    pub key: String,
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_ttl: Option<u64>,
}

/// The API's answer envelope.
#[derive(Debug, Deserialize)]
struct Envelope {
    success: bool,
    #[serde(default)]
    errors: Vec<ApiMessage>,
    #[serde(default)]
    result: Option<BulkResult>,
}

#[derive(Debug, Deserialize)]
struct ApiMessage {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    message: String,
}

#[derive(Debug, Deserialize)]
struct BulkResult {
    #[serde(default)]
    unsuccessful_keys: Vec<String>,
}

/// Where and how to reach the API.
#[derive(Debug, Clone)]
pub struct KvApiSettings {
    /// `https://api.cloudflare.com/client/v4`, or a local server implementing it in tests.
    pub base_url: String,
    pub account_id: String,
    pub namespace_id: String,
    pub token: Secret,
    /// Calls per second at most.
    pub requests_per_second: f64,
    /// Tries per call (the first included).
    pub attempts: usize,
    /// First retry delay; doubled each time, with jitter.
    pub first_backoff: Duration,
    /// Largest request body sent (at most [`MAX_CALL_BYTES`]).
    pub max_call_bytes: usize,
}

impl KvApiSettings {
    /// Settings with the defaults: 4 calls a second, 5 tries from 500 ms.
    pub fn new(base_url: &str, account_id: &str, namespace_id: &str, token: Secret) -> Self {
        KvApiSettings {
            base_url: base_url.trim_end_matches('/').to_owned(),
            account_id: account_id.to_owned(),
            namespace_id: namespace_id.to_owned(),
            token,
            requests_per_second: 4.0,
            attempts: 5,
            first_backoff: Duration::from_millis(500),
            max_call_bytes: MAX_CALL_BYTES,
        }
    }
}

/// Why one call failed.
#[derive(Debug)]
enum CallError {
    /// Worth another try (429, 5xx, no answer).
    Transient(String),
    /// Not worth another try (other 4xx, an answer that says it failed).
    Final(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Transient(m) | CallError::Final(m) => f.write_str(m),
        }
    }
}

/// Workers KV through the REST API.
#[derive(Clone, Debug)]
pub struct KvRest {
    settings: KvApiSettings,
    client: reqwest::Client,
    /// When the next call may start (the rate bound).
    next_call: Arc<Mutex<Instant>>,
    /// KV's one write per key per second.
    spacing: Arc<std::sync::Mutex<KeySpacing>>,
    /// How long the generation being written must stay readable (see
    /// [`PublishTarget::begin`]).
    keep_until: Arc<Mutex<Option<u64>>>,
    /// Pairs of the generation being written, waiting to fill a call.
    pending: Arc<Mutex<Vec<BulkPair>>>,
    /// Number of the next bulk call of this target (named in errors).
    next_batch: Arc<std::sync::atomic::AtomicUsize>,
}

/// The pair of `doc` under `key`, checked against KV's limits, expiring at the document's
/// `stale_until` or `keep_until`, whichever is later; `who` names the document in errors.
pub fn pair_for(
    key: String,
    doc: &RecommendationDoc,
    now_s: u64,
    keep_until: Option<u64>,
    who: &str,
) -> Result<BulkPair, PublishError> {
    if key.len() > MAX_KEY_BYTES {
        return Err(PublishError::TooLarge(format!(
            "{who}: KV key of {} bytes is over the {MAX_KEY_BYTES}-byte limit",
            key.len()
        )));
    }
    let value = serde_json::to_string(doc)?;
    if value.len() > MAX_VALUE_BYTES.min(contract::MAX_DOC_BYTES) {
        return Err(PublishError::TooLarge(format!(
            "{who}: document of {} bytes is over the {}-byte limit",
            value.len(),
            MAX_VALUE_BYTES.min(contract::MAX_DOC_BYTES)
        )));
    }
    Ok(BulkPair {
        key,
        value,
        expiration_ttl: Some(
            doc.stale_until()
                .max(keep_until.unwrap_or(0))
                .saturating_sub(now_s)
                .max(MIN_TTL_S),
        ),
    })
}

/// Splits pairs into calls of at most [`MAX_PAIRS_PER_CALL`] pairs and `max_bytes` of
/// JSON each.
pub fn batches(pairs: Vec<BulkPair>, max_bytes: usize) -> Vec<Vec<BulkPair>> {
    let mut out: Vec<Vec<BulkPair>> = Vec::new();
    let mut bytes = 2; // "[]"
    for pair in pairs {
        // Key, value (escaped by JSON: at most about twice as long), ttl and punctuation.
        let size = serde_json::to_string(&pair).map_or(usize::MAX, |s| s.len()) + 1;
        let full = out
            .last()
            .is_none_or(|b| b.len() >= MAX_PAIRS_PER_CALL || bytes + size > max_bytes);
        if full {
            out.push(Vec::new());
            bytes = 2;
        }
        bytes += size;
        if let Some(last) = out.last_mut() {
            last.push(pair);
        }
    }
    out
}

impl KvRest {
    pub fn new(settings: KvApiSettings) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        KvRest {
            settings,
            client,
            next_call: Arc::new(Mutex::new(Instant::now())),
            spacing: Arc::new(std::sync::Mutex::new(KeySpacing::new(KV_KEY_INTERVAL))),
            keep_until: Arc::new(Mutex::new(None)),
            pending: Arc::new(Mutex::new(Vec::new())),
            next_batch: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        }
    }

    fn namespace_url(&self) -> String {
        format!(
            "{}/accounts/{}/storage/kv/namespaces/{}",
            self.settings.base_url, self.settings.account_id, self.settings.namespace_id
        )
    }

    /// Waits until the rate bound lets the next call start.
    async fn pace(&self) {
        let gap = Duration::from_secs_f64(1.0 / self.settings.requests_per_second.max(0.001));
        let start = {
            let mut next = self.next_call.lock().await;
            let start = (*next).max(Instant::now());
            *next = start + gap;
            start
        };
        tokio::time::sleep_until(start).await;
    }

    async fn put_once(&self, body: &str) -> Result<(), CallError> {
        self.pace().await;
        let url = format!("{}/bulk", self.namespace_url());
        let resp = self
            .client
            .put(&url)
            .bearer_auth(self.settings.token.expose())
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .map_err(|e| CallError::Transient(format!("cannot reach {url}: {e}")))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| CallError::Transient(format!("reading the answer of {url}: {e}")))?;
        let envelope: Option<Envelope> = serde_json::from_str(&text).ok();
        let detail = envelope
            .as_ref()
            .and_then(|e| e.errors.first())
            .map(|m| format!("{} {}", m.code, m.message))
            .unwrap_or_else(|| text.chars().take(200).collect());
        if status.as_u16() == 429 || status.is_server_error() {
            return Err(CallError::Transient(format!("{status}: {detail}")));
        }
        match envelope {
            Some(e) if status.is_success() && e.success => {
                let failed = e.result.map(|r| r.unsuccessful_keys).unwrap_or_default();
                if failed.is_empty() {
                    Ok(())
                } else {
                    Err(CallError::Transient(format!(
                        "{} keys were not written, e.g. {:?}",
                        failed.len(),
                        failed.first()
                    )))
                }
            }
            _ => Err(CallError::Final(format!("{status}: {detail}"))),
        }
    }

    /// Writes one batch, retrying transient failures with backoff and jitter.
    async fn put_batch(&self, index: usize, batch: &[BulkPair]) -> Result<(), PublishError> {
        let body = serde_json::to_string(batch)?;
        let wait = self
            .spacing
            .lock()
            .map(|mut s| {
                s.reserve(
                    batch.iter().map(|p| p.key.as_str()),
                    std::time::Instant::now(),
                )
            })
            .unwrap_or(KV_KEY_INTERVAL);
        if !wait.is_zero() {
            tracing::debug!(
                batch = index,
                wait_ms = wait.as_millis() as u64,
                "waiting for KV's one write per key per second"
            );
            tokio::time::sleep(wait).await;
        }
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.settings.first_backoff)
            .with_max_delay(Duration::from_secs(30))
            .with_max_times(self.settings.attempts.saturating_sub(1))
            .with_jitter();
        (|| self.put_once(&body))
            .retry(backoff)
            .when(|e| matches!(e, CallError::Transient(_)))
            .notify(|e, after| {
                tracing::warn!(batch = index, error = %e, retry_in_ms = after.as_millis() as u64, "KV bulk write failed; retrying");
            })
            .await
            .map_err(|e| PublishError::KvApi {
                batch: index,
                keys: batch.len(),
                first_key: batch.first().map(|p| p.key.clone()).unwrap_or_default(),
                message: e.to_string(),
            })
    }

    /// Queues a generation's pairs and sends every full call; the rest waits for more
    /// pairs or [`KvRest::flush`], so a bulk publish fills calls up to the API's limits
    /// whatever its chunk size. Returns how many pairs were taken.
    async fn enqueue(&self, pairs: Vec<BulkPair>) -> Result<usize, PublishError> {
        let taken = pairs.len();
        let mut pending = self.pending.lock().await;
        pending.extend(pairs);
        let mut calls = batches(std::mem::take(&mut *pending), self.settings.max_call_bytes);
        // The last call may not be full yet: it waits for more pairs.
        if let Some(last) = calls.pop() {
            *pending = last;
        }
        for batch in calls {
            let index = self
                .next_batch
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.put_batch(index, &batch).await?;
        }
        Ok(taken)
    }

    /// Sends every queued pair.
    async fn flush(&self) -> Result<(), PublishError> {
        let mut pending = self.pending.lock().await;
        for batch in batches(std::mem::take(&mut *pending), self.settings.max_call_bytes) {
            let index = self
                .next_batch
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.put_batch(index, &batch).await?;
        }
        Ok(())
    }

    /// The tenant's current generation, read from the pointer key.
    async fn current_generation(&self, tenant: &Tenant) -> Result<Generation, PublishError> {
        let key = kv_generation_pointer(tenant);
        let url = format!("{}/values/{}", self.namespace_url(), encode_key(&key));
        let resp = self
            .client
            .get(&url)
            .bearer_auth(self.settings.token.expose())
            .send()
            .await
            .map_err(|e| PublishError::Http {
                url: url.clone(),
                source: e,
            })?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| PublishError::Http {
            url: url.clone(),
            source: e,
        })?;
        if status.as_u16() == 404 {
            return Err(PublishError::NoKvGeneration(tenant.as_str().to_owned()));
        }
        if !status.is_success() {
            return Err(PublishError::KvApi {
                batch: 0,
                keys: 1,
                first_key: key,
                message: format!("reading the pointer: {status}"),
            });
        }
        GenerationPointer::parse(&text)
            .map(|p| p.generation)
            .map_err(|e| PublishError::KvApi {
                batch: 0,
                keys: 1,
                first_key: key,
                message: format!("the pointer holds no generation: {e}"),
            })
    }
}

/// A key as one URL path segment (KV keys may hold `/`).
fn encode_key(key: &str) -> String {
    key.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[async_trait]
impl PublishTarget for KvRest {
    fn name(&self) -> &'static str {
        "kv-api"
    }

    fn supports_delta(&self) -> bool {
        true
    }

    async fn begin(
        &self,
        _tenant: &Tenant,
        _generation: &Generation,
        keep_until: Option<u64>,
    ) -> Result<(), PublishError> {
        // A KV generation exists once something is written into it.
        *self.keep_until.lock().await = keep_until;
        Ok(())
    }

    async fn write_users(
        &self,
        tenant: &Tenant,
        generation: &Generation,
        docs: Arc<Vec<RecommendationDoc>>,
    ) -> Result<usize, PublishError> {
        let now = crate::snapshot::now_unix();
        let keep_until = *self.keep_until.lock().await;
        let pairs = docs
            .iter()
            .map(|doc| {
                let subject = super::subject_of(doc)?;
                pair_for(
                    kv_subject(tenant, generation, &subject),
                    doc,
                    now,
                    keep_until,
                    &subject.describe(),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.enqueue(pairs).await
    }

    async fn write_popular(
        &self,
        tenant: &Tenant,
        generation: &Generation,
        docs: &[RecommendationDoc],
    ) -> Result<usize, PublishError> {
        let now = crate::snapshot::now_unix();
        let keep_until = *self.keep_until.lock().await;
        let pairs = docs
            .iter()
            .map(|doc| {
                let region = Region::parse(&doc.region).map_err(|e| {
                    PublishError::Task(format!("popular list region {:?}: {e}", doc.region))
                })?;
                pair_for(
                    kv_popular(tenant, generation, &region),
                    doc,
                    now,
                    keep_until,
                    &format!("popular list of {}", doc.region),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let taken = self.enqueue(pairs).await?;
        // The generation is complete: everything goes out before it can be activated.
        self.flush().await?;
        Ok(taken)
    }

    async fn activate(
        &self,
        tenant: &Tenant,
        pointer: &GenerationPointer,
    ) -> Result<Activated, PublishError> {
        self.flush().await?;
        let pointer = BulkPair {
            key: kv_generation_pointer(tenant),
            value: pointer.encode(),
            expiration_ttl: None,
        };
        self.put_batch(0, &[pointer]).await?;
        Ok(Activated::default())
    }

    async fn write_current(
        &self,
        tenant: &Tenant,
        doc: &RecommendationDoc,
        _traceparent: Option<&str>,
    ) -> Result<(), PublishError> {
        let generation = self.current_generation(tenant).await?;
        let subject = super::subject_of(doc)?;
        let pair = pair_for(
            kv_subject(tenant, &generation, &subject),
            doc,
            crate::snapshot::now_unix(),
            None,
            &subject.describe(),
        )?;
        self.put_batch(0, &[pair]).await
    }
}
