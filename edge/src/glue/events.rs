//! The edge's side of live events: `POST /v1/events` (validated with the contract's
//! rules, then forwarded to the user's regional origin, failing over like reads), and
//! the impressions and cache-hit counts it reports in the background.

use contract::events::{self, Limits, RawEvent, Shown};
use contract::{Region, ServedDoc, Source};
use worker::{Context, Method, Request, Response};

use super::convert::{now_ms, respond_with};
use super::state::{self, IMPRESSIONS};
use super::tiers::send_with_timeout;
use crate::breaker::Permit;
use crate::chain::{Attempt, Outcome, Tier, TierFailure};
use crate::config::EdgeConfig;
use crate::error::EdgeError;
use crate::geo::Location;
use crate::impressions::{impressions_of, Flush};
use crate::respond;

/// Largest events body the edge reads (500 events with their context).
pub const MAX_EVENTS_BODY_BYTES: usize = 1024 * 1024;
/// How far ahead of the edge's clock an event's timestamp may be.
pub const MAX_FUTURE_S: i64 = 300;

/// POSTs `body` to `path` on the region's origins in failover order (each behind its
/// breaker) until one answers below 500; that answer, or every attempt.
async fn post_to_origins(
    cfg: &EdgeConfig,
    region: &Region,
    path: &str,
    body: String,
    mut headers: Vec<(&'static str, String)>,
) -> Result<(u16, String), Vec<Attempt>> {
    headers.push(("Content-Type", "application/json".into()));
    let mut attempts = Vec::new();
    for (i, origin) in cfg.origins_for(region).into_iter().enumerate() {
        let tier = Tier::Origin(i as u8);
        if state::breaker_permit(&origin.url, cfg.breaker, now_ms()) == Permit::Deny {
            attempts.push(Attempt {
                tier,
                outcome: Outcome::Failed(TierFailure::CircuitOpen),
            });
            continue;
        }
        let url = format!("{}{path}", origin.url);
        let result = send_with_timeout(
            Method::Post,
            url,
            Some(body.clone()),
            headers.clone(),
            cfg.subrequest_timeout_ms,
        )
        .await;
        let answered = matches!(&result, Ok((s, _)) if *s < 500);
        state::breaker_report(&origin.url, cfg.breaker, answered, now_ms());
        match result {
            Ok((status, text)) if status < 500 => return Ok((status, text)),
            Ok((status, _)) => attempts.push(Attempt {
                tier,
                outcome: Outcome::Failed(TierFailure::Status(status)),
            }),
            Err(f) => attempts.push(Attempt {
                tier,
                outcome: Outcome::Failed(f),
            }),
        }
    }
    Err(attempts)
}

/// `POST /v1/events`: validates the whole body (one bad event refuses it, with its
/// index), fills in the caller's region where an event has none, and forwards the batch
/// to the regional origin; the origin's answer (202 once stored durably) is passed on.
pub async fn accept(
    mut req: Request,
    cfg: &EdgeConfig,
    location: &Location,
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
    let raw: Vec<RawEvent> = parsed
        .iter()
        .map(|e| {
            let mut r = e.to_raw();
            r.region.get_or_insert_with(|| location.region.to_string());
            r
        })
        .collect();
    let body = serde_json::json!({ "events": raw }).to_string();
    let headers = vec![("traceparent", traceparent)];
    match post_to_origins(cfg, &location.region, "/v1/events", body, headers).await {
        Ok((status, text)) => {
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
                impressions_of(&s.doc, source, (now / 1000.0) as u64),
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
    match post_to_origins(&cfg, &region, "/v1/impressions", body, Vec::new()).await {
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
        let auth = vec![("Authorization", format!("Bearer {token}"))];
        if let Err(attempts) =
            post_to_origins(&cfg, &region, "/v1/analytics/edge-report", body, auth).await
        {
            worker::console_warn!("edge report not delivered: {attempts:?}");
        }
    }
}
