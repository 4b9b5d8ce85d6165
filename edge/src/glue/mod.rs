//! wasm glue: converts `Request`/`Env` into the core's facts, runs the core's plan
//! against the Cache API, Workers KV and `fetch`, and turns decisions into responses.
//! No decision is made here that the core could make.
//!
//! # Layout
//! - `convert`: core values ↔ `worker` types (headers, responses, the JS clock).
//! - `tiers`: the I/O of each tier, GeoIP loading, KV writes.
//! - `state`: what an isolate remembers (breakers, GeoIP DB, in-flight fetches, counters).
//! - `events`: `POST /v1/events` forwarding, impressions and hit-rate reports.

mod convert;
mod events;
mod state;
mod tiers;

use std::sync::OnceLock;

use contract::admin::{PublishResponse, PurgeResponse};
use contract::{RecommendationDoc, Source, MAX_N};
use worker::{event, Cache, Context, Env, Request, Response, Result};

use crate::admin;
use crate::cache_key;
use crate::chain::{chain_for, popular_answer, Final, PopularFrom, Step, Tier, TierResult, Walk};
use crate::config::EdgeConfig;
use crate::error::EdgeError;
use crate::geo::{self, Location};
use crate::origins::{AffinityKey, Origin};
use crate::respond::{self, Timings};
use crate::route::{self, RecRequest, Route};
use convert::{json_response, now_ms, random_bytes, respond_with};
use state::{Counters, COUNTERS};

/// Name of the KV binding in `wrangler.toml`.
const KV_BINDING: &str = "KV";
/// KV values are at most 25 MiB.
const MAX_GEO_DB_BYTES: usize = 25 * 1024 * 1024;
/// The demo page served at `/` (`edge/static/demo.html`).
const DEMO_PAGE_HTML: &str = include_str!("../../static/demo.html");
/// The global popular list baked in at build time (`edge/baked/popular.json`).
const BAKED_POPULAR_JSON: &str = include_str!("../../baked/popular.json");

fn baked_popular() -> Option<&'static RecommendationDoc> {
    static BAKED: OnceLock<Option<RecommendationDoc>> = OnceLock::new();
    BAKED
        .get_or_init(|| serde_json::from_str(BAKED_POPULAR_JSON).ok())
        .as_ref()
}

fn lookup(env: &Env, name: &str) -> Option<String> {
    env.var(name)
        .ok()
        .map(|v| v.to_string())
        .or_else(|| env.secret(name).ok().map(|v| v.to_string()))
}

fn internal(e: impl std::fmt::Display) -> EdgeError {
    EdgeError::Internal(e.to_string())
}

fn now_s() -> u64 {
    (now_ms() / 1000.0) as u64
}

thread_local! {
    /// The isolate's config: vars and secrets do not change during an isolate's life.
    static CONFIG: std::cell::RefCell<Option<std::rc::Rc<EdgeConfig>>> = const { std::cell::RefCell::new(None) };
}

/// The config, read from `Env` on an isolate's first request and kept.
fn config(env: &Env) -> std::result::Result<std::rc::Rc<EdgeConfig>, EdgeError> {
    if let Some(cfg) = CONFIG.with(|c| c.borrow().clone()) {
        return Ok(cfg);
    }
    let cfg = EdgeConfig::from_lookup(|name| lookup(env, name))
        .map_err(|e| EdgeError::Misconfigured(e.to_string()))?;
    let cfg = std::rc::Rc::new(cfg);
    CONFIG.with(|c| *c.borrow_mut() = Some(cfg.clone()));
    Ok(cfg)
}

#[event(fetch)]
pub async fn fetch(req: Request, env: Env, ctx: Context) -> Result<Response> {
    console_error_panic_hook::set_once();
    let cfg = match config(&env) {
        Ok(cfg) => cfg,
        Err(e) => return error_response(&e, &EdgeConfig::default(), None),
    };
    let cfg: &EdgeConfig = &cfg;
    let url = req.url()?;
    let headers = convert::header_pairs(req.headers());
    let route = route::check_header_size(headers.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .and_then(|()| {
            route::route(
                req.method().as_ref(),
                url.path(),
                url.query(),
                cfg.default_n,
            )
        });
    // Only answers to users need their location; admin calls and preflights do not.
    let location = match &route {
        Ok(Route::Recommendations(_) | Route::Health | Route::Events(_)) | Err(_) => {
            locate(&req, &env, cfg).await
        }
        Ok(_) => geo::locate(None, || None, &cfg.region_map),
    };
    let incoming_trace = req.headers().get("traceparent").ok().flatten();
    let traceparent = crate::trace::child_of(incoming_trace.as_deref(), random_bytes()).header();
    let result = match route {
        Ok(Route::Recommendations(mut r)) => match host_tenant(&req, cfg, &r) {
            Ok(tenant) => {
                r.tenant = tenant;
                recommendations(&req, &env, &ctx, cfg, &location, r, &traceparent).await
            }
            Err(e) => Err(e),
        },
        Ok(Route::Health) => health(cfg, &location),
        Ok(Route::Preflight) => {
            respond_with(204, &respond::preflight_headers(cfg), None).map_err(internal)
        }
        Ok(Route::AdminPublish) => admin_publish(req, &env, cfg).await,
        Ok(Route::AdminPurge) => admin_purge(req, cfg).await,
        Ok(Route::AdminDeleteTenant) => admin_delete_tenant(req, &env, cfg).await,
        Ok(Route::AdminGeoDb) => admin_geo_db(req, &env, cfg).await,
        Ok(Route::Events(asked)) => match tenant_of_request(&req, cfg, asked) {
            Err(e) => Err(e),
            Ok(tenant)
                if state::UNKNOWN_TENANTS
                    .with(|u| u.borrow().is_unknown(tenant.as_str(), now_ms())) =>
            {
                Err(EdgeError::UnknownTenant(tenant.to_string()))
            }
            Ok(tenant) => {
                let client = crate::client::client_key(client_ip(&req, cfg), cfg.client_hash_keys);
                let header = req
                    .headers()
                    .get(contract::auth::TENANT_KEY_HEADER)
                    .ok()
                    .flatten();
                match crate::forward::tenant_key(header.as_deref()) {
                    Ok(tenant_key) => {
                        match events::rate_limit(&env, cfg, &client, tenant_key.as_deref()).await {
                            Ok(()) => {
                                events::accept(
                                    req,
                                    cfg,
                                    &location,
                                    &events::Sender {
                                        tenant,
                                        client,
                                        tenant_key,
                                    },
                                    traceparent,
                                )
                                .await
                            }
                            Err(e) => Err(e),
                        }
                    }
                    Err(e) => Err(e),
                }
            }
        },
        Ok(Route::DemoPage) => {
            let body =
                (req.method() != worker::Method::Head).then(|| DEMO_PAGE_HTML.as_bytes().to_vec());
            respond_with(200, &respond::page_headers(), body).map_err(internal)
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(resp) => Ok(resp),
        Err(e) => error_response(&e, cfg, Some(&location)),
    }
}

/// The client's IP: `CF-Connecting-IP`, or the first `X-Forwarded-For` address when
/// trusted.
fn client_ip(req: &Request, cfg: &EdgeConfig) -> Option<std::net::IpAddr> {
    let header = |name: &str| req.headers().get(name).ok().flatten();
    geo::client_ip(
        header("CF-Connecting-IP").as_deref(),
        header("X-Forwarded-For").as_deref(),
        cfg.trust_x_forwarded_for,
    )
}

/// Cloudflare's country, else GeoIP of the client IP (the database is loaded only
/// when needed), else the default region.
async fn locate(req: &Request, env: &Env, cfg: &EdgeConfig) -> Location {
    let cf_country = req
        .cf()
        .and_then(|cf| cf.country())
        .filter(|c| geo::valid_country(c));
    let mut geoip_country = None;
    if cf_country.is_none() {
        let ip = client_ip(req, cfg);
        if let (Some(ip), Ok(kv)) = (ip, env.kv(KV_BINDING)) {
            if let Some(db) = tiers::geo_db(&kv, cfg).await {
                geoip_country = db.country(ip);
            }
        }
    }
    geo::locate(cf_country.as_deref(), || geoip_country, &cfg.region_map)
}

fn error_response(
    e: &EdgeError,
    cfg: &EdgeConfig,
    location: Option<&Location>,
) -> Result<Response> {
    let mut headers = respond::error_headers(cfg, location.map(|l| &l.region));
    headers.extend(e.extra_headers());
    json_response(e.status(), &headers, &e.body())
}

#[allow(clippy::too_many_arguments)] // the facts of one tier fetch; grouping them would be a struct used once
async fn fetch_tier(
    tier: Tier,
    cache: &Cache,
    cache_key: &str,
    env: &Env,
    cfg: &EdgeConfig,
    location: &Location,
    origins: &[Origin],
    r: &RecRequest,
    traceparent: &str,
) -> TierResult {
    match tier {
        Tier::EdgeCache => tiers::from_edge_cache(cache, cache_key, r, cfg).await,
        Tier::Kv => match env.kv(KV_BINDING) {
            Ok(kv) => tiers::from_kv(&kv, cfg, r).await,
            Err(e) => TierResult::Failed(crate::chain::TierFailure::Storage(e.to_string())),
        },
        Tier::SecondaryCdn => tiers::from_secondary_cdn(cfg, r).await,
        Tier::Origin(i) => match origins.get(i as usize) {
            Some(origin) => tiers::from_origin(cfg, r, &location.region, origin, traceparent).await,
            None => TierResult::NotFound,
        },
    }
}

/// Walks `refresh_with` in the background and stores what it finds fresh in the edge
/// cache (stale-while-revalidate).
#[allow(clippy::too_many_arguments)] // the request's facts, moved into a background task
async fn refresh(
    tiers_left: Vec<Tier>,
    env: Env,
    cfg: EdgeConfig,
    location: Location,
    origins: Vec<Origin>,
    cache_key: String,
    r: RecRequest,
    traceparent: String,
) {
    COUNTERS.with(|c| Counters::bump(&c.background_refreshes));
    let cache = Cache::default();
    let mut walk = Walk::new(tiers_left, cfg.edge_cache_ttl_s);
    while let Some(tier) = walk.next_tier() {
        let result = fetch_tier(
            tier,
            &cache,
            &cache_key,
            &env,
            &cfg,
            &location,
            &origins,
            &r,
            &traceparent,
        )
        .await;
        match walk.record(tier, result, now_s()) {
            Step::Serve {
                doc,
                cache_ttl_s: Some(ttl),
                ..
            } => return tiers::put_in_edge_cache(&cache, &cache_key, &doc, ttl, &cfg).await,
            Step::Serve { .. } | Step::ServeStaleAndRefresh { .. } => return,
            Step::UnknownTenant => {
                return state::UNKNOWN_TENANTS
                    .with(|u| u.borrow_mut().remember(r.tenant.as_str(), now_ms()))
            }
            Step::Continue => {}
        }
    }
}

async fn recommendations(
    req: &Request,
    env: &Env,
    ctx: &Context,
    cfg: &EdgeConfig,
    location: &Location,
    r: RecRequest,
    traceparent: &str,
) -> std::result::Result<Response, EdgeError> {
    // A tenant the origin said does not exist, within the last minute: no walk at all.
    if state::UNKNOWN_TENANTS.with(|u| u.borrow().is_unknown(r.tenant.as_str(), now_ms())) {
        return Err(EdgeError::UnknownTenant(r.tenant.to_string()));
    }
    let cache = Cache::default();
    let cache_key = cache_key::doc_key(&cfg.cache_host, &r.tenant, &location.region, &r.subject);
    // The user's (or item list's) failover order: the same instance of a rank for every
    // miss of theirs.
    let origins = cfg.origins_for(
        &location.region,
        &AffinityKey::subject(&r.tenant, &r.subject),
    );
    let mut walk = Walk::new(chain_for(cfg, &origins), cfg.edge_cache_ttl_s);
    let mut timings: Timings = Vec::new();
    let mut served_by_origin: Option<String> = None;

    let (doc, source, stale) = loop {
        let Some(tier) = walk.next_tier() else {
            match walk.finish() {
                Final::ServeStale { doc, .. } => {
                    COUNTERS.with(|c| Counters::bump(&c.stale_served));
                    break (doc, Source::Stale, true);
                }
                Final::Popular { attempts } => {
                    let started = now_ms();
                    let from_kv = match env.kv(KV_BINDING) {
                        Ok(kv) => tiers::kv_popular(&kv, cfg, &r.tenant, &location.region).await,
                        Err(_) => None,
                    };
                    timings.push(("popular", now_ms() - started));
                    match popular_answer(from_kv, baked_popular(), &r.tenant, &r.subject, now_s()) {
                        Some((doc, from)) => {
                            COUNTERS.with(|c| Counters::bump(&c.popular_served));
                            timings.push((
                                if from == PopularFrom::Kv {
                                    "popular-kv"
                                } else {
                                    "popular-baked"
                                },
                                0.0,
                            ));
                            break (doc, Source::Popular, false);
                        }
                        None => return Err(EdgeError::Unavailable { attempts }),
                    }
                }
            }
        };
        let started = now_ms();
        let result = fetch_tier(
            tier,
            &cache,
            &cache_key,
            env,
            cfg,
            location,
            &origins,
            &r,
            traceparent,
        )
        .await;
        timings.push((tier.name(), now_ms() - started));
        match walk.record(tier, result, now_s()) {
            Step::Serve {
                doc,
                source,
                cache_ttl_s,
            } => {
                if let Some(ttl) = cache_ttl_s {
                    tiers::put_in_edge_cache(&cache, &cache_key, &doc, ttl, cfg).await;
                }
                if let Tier::Origin(i) = tier {
                    served_by_origin = origins.get(i as usize).map(|o| o.name.clone());
                }
                break (doc, source, false);
            }
            Step::ServeStaleAndRefresh { doc, refresh_with } => {
                COUNTERS.with(|c| Counters::bump(&c.stale_served));
                let job = refresh(
                    refresh_with,
                    env.clone(),
                    cfg.clone(),
                    location.clone(),
                    origins.clone(),
                    cache_key.clone(),
                    r.clone(),
                    traceparent.to_string(),
                );
                ctx.wait_until(job);
                break (doc, Source::Stale, true);
            }
            Step::UnknownTenant => {
                state::UNKNOWN_TENANTS
                    .with(|u| u.borrow_mut().remember(r.tenant.as_str(), now_ms()));
                return Err(EdgeError::UnknownTenant(r.tenant.to_string()));
            }
            Step::Continue => {}
        }
    };

    let n = r.n.min(MAX_N);
    let served = respond::served_doc(doc, source, stale, n, &r.filters);
    let etag = respond::etag(&served);
    let mut headers =
        respond::served_headers(&served, &etag, &location.region, now_s(), cfg, &timings);
    headers.extend(respond::filter_short_header(&served, n, &r.filters));
    if let Some(name) = served_by_origin {
        headers.push(("X-Origin", name));
    }
    let hit = served.source == Source::EdgeCache;
    let answer_id = crate::forward::answer_id(random_bytes());
    let if_none_match = req.headers().get("If-None-Match").ok().flatten();
    if respond::if_none_match_matches(if_none_match.as_deref(), &etag) {
        events::record_served(ctx, cfg, location, None, hit, answer_id);
        return respond_with(304, &headers, None).map_err(internal);
    }
    let body = serde_json::to_vec(&served).map_err(internal)?;
    let shown = req.method() != worker::Method::Head;
    // Impressions are a user's: an item's list (no user) counts as served, not as shown.
    let user_list = matches!(r.subject, contract::Subject::User(_));
    events::record_served(
        ctx,
        cfg,
        location,
        (shown && user_list).then_some(&served),
        hit,
        answer_id,
    );
    respond_with(200, &headers, shown.then_some(body)).map_err(internal)
}

fn health(cfg: &EdgeConfig, location: &Location) -> std::result::Result<Response, EdgeError> {
    // The region's origins in rank order (a user's order within a rank is their own).
    let ranked: Vec<Origin> = cfg
        .ranks_for(&location.region)
        .into_iter()
        .flatten()
        .collect();
    let tiers: Vec<&str> = chain_for(cfg, &ranked)
        .into_iter()
        .map(Tier::name)
        .collect();
    let origins: Vec<serde_json::Value> = ranked
        .into_iter()
        .map(|o| serde_json::json!({ "name": o.name, "url": o.url, "rank": o.rank }))
        .collect();
    let breakers: Vec<serde_json::Value> = state::breaker_snapshot()
        .into_iter()
        .map(|(url, s, skipped, opened)| serde_json::json!({ "url": url, "state": s, "skipped": skipped, "opened": opened }))
        .collect();
    let geo_db = state::GEO.with(|g| match &*g.borrow() {
        state::GeoState::NotLoaded => serde_json::json!({ "state": "not-loaded" }),
        state::GeoState::Loaded { db, load_ms } => {
            serde_json::json!({ "state": "loaded", "type": db.database_type(), "load_ms": load_ms })
        }
        state::GeoState::Missing { reason, .. } => {
            serde_json::json!({ "state": "missing", "reason": reason })
        }
    });
    let counters = COUNTERS.with(|c| {
        serde_json::json!({
            "origin_fetches": c.origin_fetches.get(),
            "coalesced": c.coalesced.get(),
            "breaker_skips": c.breaker_skips.get(),
            "background_refreshes": c.background_refreshes.get(),
            "stale_served": c.stale_served.get(),
            "popular_served": c.popular_served.get(),
        })
    });
    let impressions = state::IMPRESSIONS.with(|b| {
        let b = b.borrow();
        serde_json::json!({ "waiting": b.waiting(), "dropped": b.dropped })
    });
    let body = serde_json::json!({
        "status": "ok",
        "version": crate::VERSION,
        "region": location.region.as_str(),
        "country": location.country,
        "geo_source": location.source.as_str(),
        "tiers": tiers,
        "origins": origins,
        "breakers": breakers,
        "impressions": impressions,
        "geo_db": geo_db,
        "counters": counters,
        "time": now_s(),
    });
    let mut headers = respond::error_headers(cfg, Some(&location.region));
    headers.push(("X-Served-By", "edge".into()));
    json_response(200, &headers, &body).map_err(internal)
}

async fn read_admin_body(
    req: &mut Request,
    cfg: &EdgeConfig,
    max: usize,
) -> std::result::Result<Vec<u8>, EdgeError> {
    let auth = req.headers().get("Authorization").ok().flatten();
    admin::authorize(auth.as_deref(), cfg.admin_token.as_deref())?;
    convert::read_body(req, max).await
}

async fn admin_publish(
    mut req: Request,
    env: &Env,
    cfg: &EdgeConfig,
) -> std::result::Result<Response, EdgeError> {
    let bytes = read_admin_body(&mut req, cfg, contract::admin::MAX_ADMIN_BODY_BYTES).await?;
    let body: contract::admin::PublishRequest = admin::parse_body(&bytes)?;
    let kv = env.kv(KV_BINDING).map_err(internal)?;
    let tenant =
        contract::Tenant::parse(body.tenant.as_deref().unwrap_or(contract::DEFAULT_TENANT))?;
    // Documents without a generation go into the current one (a delta's, not its base).
    let current = tiers::read_generation_pointer(&kv, &tenant)
        .await
        .map_err(|f| EdgeError::Internal(format!("{f:?}")))?
        .map(|p| p.generation);
    let plan = admin::publish_plan(body, current, now_s())?;
    let written = tiers::write_kv(&kv, &plan.writes).await?;
    if plan.activate {
        tiers::activate_generation(&kv, &plan).await?;
    }
    let resp = PublishResponse {
        tenant: plan.tenant.to_string(),
        generation: plan.generation.as_str().to_string(),
        written,
        activated: plan.activate,
    };
    json_response(200, &respond::error_headers(cfg, None), &resp).map_err(internal)
}

/// `POST /admin/purge`: drops each user's (and item list's) entries of every region
/// (keys never depend on the `Host` a request came in on, so one delete per region
/// reaches every copy). `purged` counts those that had at least one entry.
async fn admin_purge(
    mut req: Request,
    cfg: &EdgeConfig,
) -> std::result::Result<Response, EdgeError> {
    let bytes = read_admin_body(&mut req, cfg, contract::admin::MAX_ADMIN_BODY_BYTES).await?;
    let (tenant, subjects) = admin::purge_plan(admin::parse_body(&bytes)?)?;
    let cache = Cache::default();
    let mut purged = 0;
    for subject in &subjects {
        let mut found = false;
        let keys = cache_key::doc_keys(&cfg.cache_host, &tenant, cfg.region_map.regions(), subject);
        for key in keys {
            state::with_hot(cfg.hot_cache_items, cfg.hot_cache_s, |h| h.remove(&key));
            if let Ok(worker::CacheDeletionOutcome::Success) =
                cache.delete(key.as_str(), true).await
            {
                found = true;
            }
        }
        purged += usize::from(found);
    }
    let resp = PurgeResponse {
        tenant: tenant.to_string(),
        purged,
    };
    json_response(200, &respond::error_headers(cfg, None), &resp).map_err(internal)
}

/// The request's tenant once `TENANT_HOST` is read (see [`crate::tenant_host`]).
fn host_tenant(
    req: &Request,
    cfg: &EdgeConfig,
    r: &crate::route::RecRequest,
) -> std::result::Result<contract::Tenant, EdgeError> {
    tenant_of_request(req, cfg, r.tenant_in_query.then(|| r.tenant.clone()))
}

/// The request's tenant: `asked` (from `?tenant=`) and the host's (`TENANT_HOST`), which
/// must agree when both are given; else the default tenant.
fn tenant_of_request(
    req: &Request,
    cfg: &EdgeConfig,
    asked: Option<contract::Tenant>,
) -> std::result::Result<contract::Tenant, EdgeError> {
    let Some(pattern) = &cfg.tenant_host else {
        return Ok(asked.unwrap_or_else(contract::Tenant::default_tenant));
    };
    let host = req.headers().get("host").ok().flatten().unwrap_or_default();
    Ok(crate::tenant_host::resolve(
        pattern.tenant_of(&host),
        asked,
        contract::Tenant::default_tenant(),
    )?)
}

/// `POST /admin/delete-tenant`: deletes the tenant's KV generation pointer (the edge
/// then finds no KV document of it; cached copies expire with `EDGE_CACHE_TTL_S`).
async fn admin_delete_tenant(
    mut req: Request,
    env: &Env,
    cfg: &EdgeConfig,
) -> std::result::Result<Response, EdgeError> {
    let bytes = read_admin_body(&mut req, cfg, contract::admin::MAX_ADMIN_BODY_BYTES).await?;
    let tenant = admin::delete_tenant_plan(&bytes)?;
    let kv = env.kv(KV_BINDING).map_err(internal)?;
    let key = contract::keys::kv_generation_pointer(&tenant);
    let existed = kv.get(&key).text().await.map_err(internal)?.is_some();
    if existed {
        kv.delete(&key).await.map_err(internal)?;
    }
    let resp = contract::admin::DeleteTenantResponse {
        tenant: tenant.to_string(),
        pointer_deleted: existed,
    };
    json_response(200, &respond::error_headers(cfg, None), &resp).map_err(internal)
}

async fn admin_geo_db(
    mut req: Request,
    env: &Env,
    cfg: &EdgeConfig,
) -> std::result::Result<Response, EdgeError> {
    let bytes = read_admin_body(&mut req, cfg, MAX_GEO_DB_BYTES).await?;
    let size = bytes.len();
    let kv = env.kv(KV_BINDING).map_err(internal)?;
    let database_type = tiers::put_geo_db(&kv, cfg, bytes).await?;
    let body =
        serde_json::json!({ "key": cfg.geo_db_key, "bytes": size, "database_type": database_type });
    json_response(200, &respond::error_headers(cfg, None), &body).map_err(internal)
}
