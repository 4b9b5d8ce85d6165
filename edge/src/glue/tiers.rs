//! The I/O of each tier: Cache API, KV (with the generation pointer), and fetches
//! with timeouts to the secondary CDN and the origin. Each returns a
//! [`TierResult`] for the core's walk; nothing here decides what comes next.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use contract::keys::{self, Generation};
use contract::{RecommendationDoc, Region, Tenant, MAX_N};
use futures_util::future::{select, Either};
use worker::kv::KvStore;
use worker::{AbortController, Cache, Delay, Fetch, Method, Request, RequestInit, Response};

use super::convert::respond_with;
use crate::admin::{KvWrite, PublishPlan};
use crate::chain::{accept_doc, TierFailure, TierResult};
use crate::config::EdgeConfig;
use crate::error::EdgeError;
use crate::respond;
use crate::route::RecRequest;

thread_local! {
    /// Per isolate: tenant → (current generation, when it was read in ms).
    static GENERATIONS: RefCell<HashMap<String, (Option<Generation>, f64)>> = RefCell::new(HashMap::new());
}

pub async fn from_edge_cache(cache: &Cache, key: &str, r: &RecRequest) -> TierResult {
    match cache.get(key, false).await {
        Ok(Some(mut resp)) => match resp.text().await {
            Ok(body) => found(accept_doc(&body, &r.tenant, &r.user)),
            Err(e) => TierResult::Failed(TierFailure::Storage(e.to_string())),
        },
        Ok(None) => TierResult::NotFound,
        Err(e) => TierResult::Failed(TierFailure::Storage(e.to_string())),
    }
}

fn found(doc: Result<RecommendationDoc, TierFailure>) -> TierResult {
    match doc {
        Ok(doc) => TierResult::Found(doc),
        Err(f) => TierResult::Failed(f),
    }
}

/// Stores the (uncut) document in the edge cache for `ttl_s`. A failed put only
/// costs a future hit, so it is logged, not returned.
pub async fn put_in_edge_cache(cache: &Cache, key: &str, doc: &RecommendationDoc, ttl_s: u64) {
    let Ok(body) = serde_json::to_vec(doc) else {
        return;
    };
    let resp = match respond_with(200, &respond::cache_entry_headers(ttl_s), Some(body)) {
        Ok(r) => r,
        Err(e) => return worker::console_error!("edge cache: building entry failed: {e}"),
    };
    if let Err(e) = cache.put(key, resp).await {
        worker::console_error!("edge cache: put failed: {e}");
    }
}

/// Reads a tenant's generation pointer straight from KV.
pub async fn read_generation_pointer(
    kv: &KvStore,
    tenant: &Tenant,
) -> Result<Option<Generation>, TierFailure> {
    let raw = kv
        .get(&keys::kv_generation_pointer(tenant))
        .text()
        .await
        .map_err(|e| TierFailure::Storage(e.to_string()))?;
    raw.map(|g| {
        Generation::parse(g.trim())
            .map_err(|e| TierFailure::BadDocument(format!("generation pointer: {e}")))
    })
    .transpose()
}

/// The tenant's current generation, remembered per isolate for `generation_cache_s`.
async fn current_generation(
    kv: &KvStore,
    tenant: &Tenant,
    cfg: &EdgeConfig,
    now: f64,
) -> Result<Option<Generation>, TierFailure> {
    let max_age_ms = cfg.generation_cache_s as f64 * 1000.0;
    let remembered = GENERATIONS.with(|g| g.borrow().get(tenant.as_str()).cloned());
    if let Some((generation, read_at)) = remembered {
        if now - read_at < max_age_ms {
            return Ok(generation);
        }
    }
    let generation = read_generation_pointer(kv, tenant).await?;
    GENERATIONS.with(|g| {
        g.borrow_mut()
            .insert(tenant.to_string(), (generation.clone(), now))
    });
    Ok(generation)
}

pub async fn from_kv(kv: &KvStore, cfg: &EdgeConfig, r: &RecRequest, now: f64) -> TierResult {
    let generation = match current_generation(kv, &r.tenant, cfg, now).await {
        Ok(Some(g)) => g,
        Ok(None) => return TierResult::NotFound,
        Err(f) => return TierResult::Failed(f),
    };
    match kv
        .get(&keys::kv_user(&r.tenant, &generation, &r.user))
        .text()
        .await
    {
        Ok(Some(body)) => found(accept_doc(&body, &r.tenant, &r.user)),
        Ok(None) => TierResult::NotFound,
        Err(e) => TierResult::Failed(TierFailure::Storage(e.to_string())),
    }
}

/// GETs `url` and reads its body, all within `timeout_ms`; the fetch is aborted on timeout.
async fn get_with_timeout(
    url: &str,
    timeout_ms: u64,
    traceparent: Option<&str>,
) -> Result<(u16, String), TierFailure> {
    let controller = AbortController::default();
    let signal = controller.signal();
    let work = async {
        let mut init = RequestInit::new();
        init.with_method(Method::Get);
        let headers = worker::Headers::new();
        let _ = headers.set("Accept", "application/json");
        if let Some(tp) = traceparent {
            let _ = headers.set("traceparent", tp);
        }
        init.with_headers(headers);
        let req =
            Request::new_with_init(url, &init).map_err(|e| TierFailure::Network(e.to_string()))?;
        let mut resp: Response = Fetch::Request(req)
            .send_with_signal(&signal)
            .await
            .map_err(|e| TierFailure::Network(e.to_string()))?;
        let status = resp.status_code();
        let body = resp
            .text()
            .await
            .map_err(|e| TierFailure::Network(e.to_string()))?;
        Ok((status, body))
    };
    let timeout = Delay::from(Duration::from_millis(timeout_ms));
    futures_util::pin_mut!(work);
    match select(work, timeout).await {
        Either::Left((result, _)) => result,
        Either::Right(_) => {
            controller.abort();
            Err(TierFailure::Timeout)
        }
    }
}

fn doc_from_http(result: Result<(u16, String), TierFailure>, r: &RecRequest) -> TierResult {
    match result {
        Ok((200, body)) => found(accept_doc(&body, &r.tenant, &r.user)),
        Ok((404, _)) => TierResult::NotFound,
        Ok((status, _)) => TierResult::Failed(TierFailure::Status(status)),
        Err(f) => TierResult::Failed(f),
    }
}

pub async fn from_secondary_cdn(cfg: &EdgeConfig, r: &RecRequest) -> TierResult {
    let Some(base) = &cfg.secondary_cdn_url else {
        return TierResult::NotFound;
    };
    let url = format!("{base}/{}", keys::cdn_user(&r.tenant, &r.user));
    doc_from_http(
        get_with_timeout(&url, cfg.subrequest_timeout_ms, None).await,
        r,
    )
}

pub async fn from_origin(cfg: &EdgeConfig, r: &RecRequest, region: &Region) -> TierResult {
    let Some(base) = &cfg.origin_url else {
        return TierResult::NotFound;
    };
    // The whole list is asked for, so the cached copy can serve any `n`.
    let url = format!(
        "{base}/v1/recommendations/{}?tenant={}&region={}&n={MAX_N}",
        r.user, r.tenant, region
    );
    doc_from_http(
        get_with_timeout(&url, cfg.subrequest_timeout_ms, None).await,
        r,
    )
}

/// Writes a publish's documents, a few at a time; returns how many were written.
pub async fn write_kv(kv: &KvStore, writes: &[KvWrite]) -> Result<usize, EdgeError> {
    for chunk in writes.chunks(25) {
        let puts = chunk.iter().map(|w| async move {
            kv.put(&w.key, w.value.as_str())
                .map_err(|e| EdgeError::Internal(format!("kv put {}: {e}", w.key)))?
                .expiration_ttl(w.expiration_ttl_s)
                .execute()
                .await
                .map_err(|e| EdgeError::Internal(format!("kv put {}: {e}", w.key)))
        });
        for result in futures_util::future::join_all(puts).await {
            result?;
        }
    }
    Ok(writes.len())
}

/// Flips the tenant's pointer to the plan's generation, and remembers it in this isolate.
pub async fn activate_generation(
    kv: &KvStore,
    plan: &PublishPlan,
    now: f64,
) -> Result<(), EdgeError> {
    kv.put(&plan.pointer_key, plan.generation.as_str())
        .map_err(|e| EdgeError::Internal(e.to_string()))?
        .execute()
        .await
        .map_err(|e| EdgeError::Internal(format!("kv put {}: {e}", plan.pointer_key)))?;
    GENERATIONS.with(|g| {
        g.borrow_mut().insert(
            plan.tenant.to_string(),
            (Some(plan.generation.clone()), now),
        )
    });
    Ok(())
}
