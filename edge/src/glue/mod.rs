//! wasm glue: converts `Request`/`Env` into the core's facts, runs the core's plan
//! against the Cache API, Workers KV and `fetch`, and turns decisions into responses.
//! No decision is made here that the core could make.

mod convert;
mod tiers;

use contract::admin::{PublishResponse, PurgeResponse};
use contract::{Region, MAX_N};
use worker::{event, Cache, Context, Env, Request, Response, Result};

use crate::admin;
use crate::cache_key;
use crate::chain::{chain_for, Final, Step, Tier, Walk};
use crate::config::EdgeConfig;
use crate::error::EdgeError;
use crate::respond::{self, Timings};
use crate::route::{self, RecRequest, Route};
use convert::{json_response, now_ms, respond_with};

/// Name of the KV binding in `wrangler.toml`.
const KV_BINDING: &str = "KV";

fn lookup(env: &Env, name: &str) -> Option<String> {
    env.var(name)
        .ok()
        .map(|v| v.to_string())
        .or_else(|| env.secret(name).ok().map(|v| v.to_string()))
}

#[event(fetch)]
pub async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    console_error_panic_hook::set_once();
    let cfg = match EdgeConfig::from_lookup(|name| lookup(&env, name)) {
        Ok(cfg) => cfg,
        Err(e) => {
            let fallback = EdgeConfig::default();
            return error_response(&EdgeError::Misconfigured(e.to_string()), &fallback, None);
        }
    };
    let country = req.cf().and_then(|cf| cf.country());
    let region = cfg
        .region_map
        .region_for_country(country.as_deref())
        .clone();
    let url = req.url()?;
    let result = match route::route(
        &req.method().to_string(),
        url.path(),
        url.query(),
        cfg.default_n,
    ) {
        Ok(Route::Recommendations(r)) => {
            recommendations(
                &req,
                &env,
                &cfg,
                &region,
                &url.origin().ascii_serialization(),
                r,
            )
            .await
        }
        Ok(Route::Health) => health(&cfg, &region, country.as_deref()),
        Ok(Route::Preflight) => {
            respond_with(204, &respond::preflight_headers(&cfg), None).map_err(internal)
        }
        Ok(Route::AdminPublish) => admin_publish(req, &env, &cfg).await,
        Ok(Route::AdminPurge) => admin_purge(req, &cfg, &url.origin().ascii_serialization()).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(resp) => Ok(resp),
        Err(e) => error_response(&e, &cfg, Some(&region)),
    }
}

fn error_response(e: &EdgeError, cfg: &EdgeConfig, region: Option<&Region>) -> Result<Response> {
    let mut headers = respond::error_headers(cfg, region);
    headers.extend(e.extra_headers());
    json_response(e.status(), &headers, &e.body())
}

fn internal(e: impl std::fmt::Display) -> EdgeError {
    EdgeError::Internal(e.to_string())
}

async fn recommendations(
    req: &Request,
    env: &Env,
    cfg: &EdgeConfig,
    region: &Region,
    worker_origin: &str,
    r: RecRequest,
) -> std::result::Result<Response, EdgeError> {
    let cache = Cache::default();
    let kv = env.kv(KV_BINDING).map_err(internal)?;
    let cache_key = cache_key::user_doc_key(worker_origin, &r.tenant, &r.user);
    let mut walk = Walk::new(chain_for(cfg), cfg.edge_cache_ttl_s);
    let mut timings: Timings = Vec::new();

    let (doc, source, stale) = loop {
        let Some(tier) = walk.next_tier() else {
            match walk.finish() {
                Final::ServeStale { doc, .. } => break (doc, contract::Source::Stale, true),
                Final::Unavailable { attempts } => return Err(EdgeError::Unavailable { attempts }),
            }
        };
        let started = now_ms();
        let result = match tier {
            Tier::EdgeCache => tiers::from_edge_cache(&cache, &cache_key, &r).await,
            Tier::Kv => tiers::from_kv(&kv, cfg, &r, now_ms()).await,
            Tier::SecondaryCdn => tiers::from_secondary_cdn(cfg, &r).await,
            Tier::Origin => tiers::from_origin(cfg, &r, region).await,
        };
        timings.push((tier.name(), now_ms() - started));
        if let Step::Serve {
            doc,
            source,
            cache_ttl_s,
        } = walk.record(tier, result, now_s())
        {
            if let Some(ttl) = cache_ttl_s {
                tiers::put_in_edge_cache(&cache, &cache_key, &doc, ttl).await;
            }
            break (doc, source, false);
        }
    };

    let served = respond::served_doc(doc, source, stale, r.n.min(MAX_N));
    let etag = respond::etag(&served);
    let headers = respond::served_headers(&served, &etag, region, now_s(), cfg, &timings);
    let if_none_match = req.headers().get("If-None-Match").ok().flatten();
    if respond::if_none_match_matches(if_none_match.as_deref(), &etag) {
        return respond_with(304, &headers, None).map_err(internal);
    }
    let body = serde_json::to_vec(&served).map_err(internal)?;
    let body = (req.method() != worker::Method::Head).then_some(body);
    respond_with(200, &headers, body).map_err(internal)
}

fn now_s() -> u64 {
    (now_ms() / 1000.0) as u64
}

fn health(
    cfg: &EdgeConfig,
    region: &Region,
    country: Option<&str>,
) -> std::result::Result<Response, EdgeError> {
    let tiers: Vec<&str> = chain_for(cfg).into_iter().map(Tier::name).collect();
    let body = serde_json::json!({
        "status": "ok",
        "version": crate::VERSION,
        "region": region.as_str(),
        "country": country,
        "tiers": tiers,
        "time": now_s(),
    });
    let mut headers = respond::error_headers(cfg, Some(region));
    headers.push(("X-Served-By", "edge".into()));
    json_response(200, &headers, &body).map_err(internal)
}

async fn read_admin_body(
    req: &mut Request,
    cfg: &EdgeConfig,
) -> std::result::Result<Vec<u8>, EdgeError> {
    let auth = req.headers().get("Authorization").ok().flatten();
    admin::authorize(auth.as_deref(), cfg.admin_token.as_deref())?;
    let declared = req
        .headers()
        .get("Content-Length")
        .ok()
        .flatten()
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > contract::admin::MAX_ADMIN_BODY_BYTES) {
        return Err(EdgeError::PayloadTooLarge {
            max: contract::admin::MAX_ADMIN_BODY_BYTES,
        });
    }
    req.bytes()
        .await
        .map_err(|e| EdgeError::BadBody(e.to_string()))
}

async fn admin_publish(
    mut req: Request,
    env: &Env,
    cfg: &EdgeConfig,
) -> std::result::Result<Response, EdgeError> {
    let bytes = read_admin_body(&mut req, cfg).await?;
    let body: contract::admin::PublishRequest = admin::parse_body(&bytes)?;
    let kv = env.kv(KV_BINDING).map_err(internal)?;
    let tenant =
        contract::Tenant::parse(body.tenant.as_deref().unwrap_or(contract::DEFAULT_TENANT))?;
    let current = tiers::read_generation_pointer(&kv, &tenant)
        .await
        .map_err(|f| EdgeError::Internal(format!("{f:?}")))?;
    let plan = admin::publish_plan(body, current, now_s())?;
    let written = tiers::write_kv(&kv, &plan.writes).await?;
    if plan.activate {
        tiers::activate_generation(&kv, &plan, now_ms()).await?;
    }
    let resp = PublishResponse {
        tenant: plan.tenant.to_string(),
        generation: plan.generation.as_str().to_string(),
        written,
        activated: plan.activate,
    };
    json_response(200, &respond::error_headers(cfg, None), &resp).map_err(internal)
}

async fn admin_purge(
    mut req: Request,
    cfg: &EdgeConfig,
    worker_origin: &str,
) -> std::result::Result<Response, EdgeError> {
    let bytes = read_admin_body(&mut req, cfg).await?;
    let (tenant, users) = admin::purge_plan(admin::parse_body(&bytes)?)?;
    let cache = Cache::default();
    let mut purged = 0;
    for user in &users {
        let key = cache_key::user_doc_key(worker_origin, &tenant, user);
        if let Ok(worker::CacheDeletionOutcome::Success) = cache.delete(key.as_str(), true).await {
            purged += 1;
        }
    }
    let resp = PurgeResponse {
        tenant: tenant.to_string(),
        purged,
    };
    json_response(200, &respond::error_headers(cfg, None), &resp).map_err(internal)
}
