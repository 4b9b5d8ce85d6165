//! The edge's side of live events: `POST /v1/events` (limited per client by the
//! rate limiting binding, validated with the contract's rules, given event ids, then
//! forwarded to the user's regional origin with the bearer token and the client key,
//! failing over like reads), and the impressions and cache-hit counts it reports in the
//! background. Writes take the same origin order as reads, keyed as
//! [`crate::origins::AffinityKey`] says (events by user, impressions by batch).

use contract::events::{self, Limits, Shown};
use contract::{Region, ServedDoc, Source};
use worker::{Context, Env, Method, Request, Response};

use super::convert::{now_ms, random_bytes, respond_with};
use super::state::{self, IMPRESSIONS};
use super::tiers::send_with_timeout;
use crate::breaker::Permit;
use crate::chain::{Attempt, Outcome, Tier, TierFailure};
use crate::client::{retry_after_s, EVENTS_LIMITER_BINDING, TENANT_EVENTS_LIMITER_BINDING};
use crate::config::EdgeConfig;
use crate::error::EdgeError;
use crate::forward::{event_id_base, events_to_forward, write_headers};
use crate::geo::Location;
use crate::impressions::{impressions_of, Flush};
use crate::origins::AffinityKey;
use crate::respond;

/// Largest events body the edge reads (500 events with their context).
pub const MAX_EVENTS_BODY_BYTES: usize = 1024 * 1024;
/// Largest origin answer to a write the edge reads (they are small JSON objects).
const MAX_ORIGIN_ANSWER_BYTES: usize = 64 * 1024;
/// How far ahead of the edge's clock an event's timestamp may be.
pub const MAX_FUTURE_S: i64 = 300;

/// Asks the rate limits whether a write may go now: the client's (`EVENTS_LIMITER`),
/// then, when the request carries a tenant key, that key's (`TENANT_EVENTS_LIMITER`);
/// without a binding its limit does not apply.
pub async fn rate_limit(
    env: &Env,
    cfg: &EdgeConfig,
    client: &str,
    tenant_key: Option<&str>,
) -> Result<(), EdgeError> {
    limit_by(env, cfg, EVENTS_LIMITER_BINDING, client).await?;
    if let Some(k) = tenant_key {
        let key = crate::client::tenant_limit_key(k, cfg.client_hash_keys);
        limit_by(env, cfg, TENANT_EVENTS_LIMITER_BINDING, &key).await?;
    }
    Ok(())
}

async fn limit_by(env: &Env, cfg: &EdgeConfig, binding: &str, key: &str) -> Result<(), EdgeError> {
    let Ok(limiter) = env.rate_limiter(binding) else {
        return Ok(());
    };
    match limiter.limit(key.to_string()).await {
        Ok(outcome) if !outcome.success => Err(EdgeError::RateLimited {
            retry_after_s: retry_after_s((now_ms() / 1000.0) as u64, cfg.rate_limit_period_s),
        }),
        Ok(_) => Ok(()),
        // A limiter that cannot answer does not stop writes.
        Err(e) => {
            worker::console_warn!("rate limiter failed, write let through: {e}");
            Ok(())
        }
    }
}

/// POSTs `body` to one origin and reports the outcome to its breaker.
async fn post_to_origin(
    cfg: &EdgeConfig,
    origin_url: &str,
    path: &str,
    body: &str,
    headers: &[(&'static str, String)],
) -> Result<(u16, String), TierFailure> {
    let result = send_with_timeout(
        Method::Post,
        format!("{origin_url}{path}"),
        Some(body.to_string()),
        headers.to_vec(),
        cfg.subrequest_timeout_ms,
        MAX_ORIGIN_ANSWER_BYTES,
    )
    .await;
    let answered = matches!(&result, Ok((s, _)) if *s < 500);
    state::breaker_report(origin_url, cfg.breaker, answered, now_ms());
    match result {
        Ok((status, _)) if status >= 500 => Err(TierFailure::Status(status)),
        other => other,
    }
}

/// POSTs `body` to `path` on the region's origins in failover order for `key` (each
/// behind its breaker) until one answers below 500; that answer, or every attempt. When
/// every breaker refused, the origin refusing longest is tried anyway
/// ([`crate::breaker::last_resort`]): a write has no other place to go.
async fn post_to_origins(
    cfg: &EdgeConfig,
    region: &Region,
    key: &AffinityKey,
    path: &str,
    body: String,
    mut headers: Vec<(&'static str, String)>,
) -> Result<(u16, String), Vec<Attempt>> {
    headers.push(("Content-Type", "application/json".into()));
    let mut attempts = Vec::new();
    let origins = cfg.origins_for(region, key);
    for (i, origin) in origins.iter().enumerate() {
        let tier = Tier::Origin(i as u8);
        let outcome = if state::breaker_permit(&origin.url, cfg.breaker, now_ms()) == Permit::Deny {
            TierFailure::CircuitOpen
        } else {
            match post_to_origin(cfg, &origin.url, path, &body, &headers).await {
                Ok(answer) => return Ok(answer),
                Err(f) => f,
            }
        };
        attempts.push(Attempt {
            tier,
            outcome: Outcome::Failed(outcome),
        });
    }
    let all_refused = attempts
        .iter()
        .all(|a| a.outcome == Outcome::Failed(TierFailure::CircuitOpen));
    if all_refused {
        if let Some(i) = state::force_last_resort(origins.iter().map(|o| o.url.as_str()), now_ms())
        {
            match post_to_origin(cfg, &origins[i].url, path, &body, &headers).await {
                Ok(answer) => return Ok(answer),
                Err(f) => attempts[i].outcome = Outcome::Failed(f),
            }
        }
    }
    Err(attempts)
}

/// Who sent a batch of events: for which tenant, the client's hash, its tenant key.
pub struct Sender {
    pub tenant: contract::Tenant,
    pub client: String,
    pub tenant_key: Option<String>,
}

/// `POST /v1/events`: validates the whole body (one bad event refuses it, with its
/// index), fills in the caller's region where an event has none, and forwards the batch
/// to the regional origin for the sender's tenant (`?tenant=`); the origin's answer
/// (202 once stored durably) is passed on.
pub async fn accept(
    mut req: Request,
    cfg: &EdgeConfig,
    location: &Location,
    sender: &Sender,
    traceparent: String,
) -> Result<Response, EdgeError> {
    let bytes = super::convert::read_body(&mut req, MAX_EVENTS_BODY_BYTES).await?;
    let limits = Limits {
        now: (now_ms() / 1000.0) as i64,
        max_future_s: MAX_FUTURE_S,
        regions: &cfg.region_map,
    };
    let parsed = events::parse_body(&bytes, &limits).map_err(|e| EdgeError::InvalidEvents {
        code: e.code(),
        message: e.to_string(),
    })?;
    let raw = events_to_forward(&parsed, &location.region, &event_id_base(random_bytes()));
    let body = serde_json::json!({ "events": raw }).to_string();
    let mut headers = write_headers(
        cfg.admin_token.as_deref(),
        Some(&sender.client),
        Some(traceparent),
    );
    if let Some(k) = &sender.tenant_key {
        headers.push((contract::auth::TENANT_KEY_HEADER, k.clone()));
    }
    let key = AffinityKey::events(&parsed);
    // The tenant id's characters need no escaping in a query.
    let path = format!("/v1/events?tenant={}", sender.tenant);
    match post_to_origins(cfg, &location.region, &key, &path, body, headers).await {
        Ok((status, text)) => {
            if crate::unknown_tenants::says_unknown_tenant(status, &text) {
                state::UNKNOWN_TENANTS
                    .with(|u| u.borrow_mut().remember(sender.tenant.as_str(), now_ms()));
            }
            let mut h = respond::error_headers(cfg, Some(&location.region));
            h.push(("X-Served-By", "origin".into()));
            respond_with(status, &h, Some(text.into_bytes()))
                .map_err(|e| EdgeError::Internal(e.to_string()))
        }
        Err(attempts) => Err(EdgeError::Unavailable { attempts }),
    }
}

/// Counts a served answer and keeps its impressions; when a batch is due, sends it in
/// the background.
pub fn record_served(
    ctx: &Context,
    cfg: &EdgeConfig,
    location: &Location,
    served: Option<&ServedDoc>,
    hit: bool,
    answer_id: String,
) {
    let now = now_ms();
    let due = IMPRESSIONS.with(|b| {
        let mut b = b.borrow_mut();
        b.count_request(location.region.as_str(), hit);
        if let Some(s) = served {
            let source = if s.source == Source::EdgeCache {
                "edge-cache"
            } else {
                s.source.as_str()
            };
            b.push(
                impressions_of(&s.doc, source, (now / 1000.0) as u64, answer_id),
                now,
                &cfg.impressions,
            );
        }
        b.take_due(now, &cfg.impressions)
    });
    if let Some(flush) = due {
        ctx.wait_until(send(flush, cfg.clone(), location.region.clone()));
    }
}

/// `{"shown":[...]}` (the contract's `ShownBatch`), serialized from the buffer's batch
/// without moving it, so a failed send can put it back.
#[derive(serde::Serialize)]
struct ShownBatchBody<'a> {
    shown: &'a [Shown],
}

/// Sends a batch of impressions (`POST /v1/impressions`), then the hit counts when a
/// report is due; a batch the origins did not answer goes back into the buffer.
async fn send(flush: Flush, cfg: EdgeConfig, region: Region) {
    let body = match serde_json::to_string(&ShownBatchBody {
        shown: &flush.shown,
    }) {
        Ok(body) => body,
        Err(e) => {
            worker::console_error!("impressions not serializable, dropped: {e}");
            return;
        }
    };
    let headers = write_headers(cfg.admin_token.as_deref(), None, None);
    // The batch's key also sends its hit-rate report where the batch went.
    let key = AffinityKey::impressions(&flush.shown);
    match post_to_origins(&cfg, &region, &key, "/v1/impressions", body, headers).await {
        Ok((status, _)) if status < 300 => {}
        // Refused: the same batch would be refused again.
        Ok((status, text)) => {
            worker::console_warn!("impressions refused by the origin ({status}): {text}")
        }
        Err(_) => {
            IMPRESSIONS.with(|b| b.borrow_mut().put_back(flush, now_ms(), &cfg.impressions));
            return;
        }
    }
    if flush.hits.is_empty() {
        return;
    }
    let Some(token) = cfg.admin_token.clone() else {
        return;
    };
    for (report_region, (requests, hits)) in flush.hits {
        let body =
            serde_json::json!({ "requests": requests, "hits": hits, "region": report_region })
                .to_string();
        let auth = vec![("Authorization", contract::auth::bearer_header(&token))];
        if let Err(attempts) =
            post_to_origins(&cfg, &region, &key, "/v1/analytics/edge-report", body, auth).await
        {
            worker::console_warn!("edge report not delivered: {attempts:?}");
        }
    }
}
