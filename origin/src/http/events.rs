//! `POST /v1/events` (one event or a batch; `202` after the commit) and
//! `POST /v1/impressions` (the edge's impressions, admin token): validated all or nothing by
//! the contract, stored idempotently by `event_id`, then the touched users republished.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};

use crate::auth::check_bearer;
use crate::clients::{client_of, Client};
use crate::events::{parse_body, parse_impressions, Event, EventError, Limits};
use crate::observability::TraceContext;
use crate::snapshot::now_unix;

use super::access::KeyNeed;
use super::*;

/// Largest `POST /v1/events` body: 500 events with some context each.
pub const EVENTS_MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// Answer of `POST /v1/events`.
pub use contract::events::EventsAccepted as Accepted;

/// The peer address the server loop recorded, when it did (not in `oneshot` tests).
pub(crate) type Peer = Option<Extension<ConnectInfo<SocketAddr>>>;

/// `POST /v1/events`: one event or a batch, from browsers (through the edge) or backends.
pub(crate) async fn post_events(
    State(state): State<AppState>,
    trace: Option<Extension<TraceContext>>,
    peer: Peer,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let live = live(&state)?.clone();
    let client = client_of(
        &headers,
        peer.map(|Extension(ConnectInfo(a))| a.ip()),
        live.admin_token.as_ref(),
    );
    super::access::check_tenant_key(&state, &headers, &client, KeyNeed::Any).await?;
    ingest(state, live, trace, client, body, parse_body).await
}

/// `POST /v1/impressions`: the edge's impressions as whole answers, stored as the same
/// `recommendation_viewed` events `/v1/events` would store, one per item. Only the
/// edge sends them: the admin token is required, so nobody else can inflate CTR.
pub(crate) async fn post_impressions(
    State(state): State<AppState>,
    trace: Option<Extension<TraceContext>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let live = live(&state)?.clone();
    check_bearer(&headers, live.admin_token.as_ref())?;
    let client = client_of(&headers, None, live.admin_token.as_ref());
    ingest(state, live, trace, client, body, parse_impressions).await
}

/// Validates a body with `parse` (all or nothing), commits its events to the log, and
/// republishes the users whose history they changed.
pub(crate) async fn ingest(
    state: AppState,
    live: Arc<Live>,
    trace: Option<Extension<TraceContext>>,
    client: Client,
    body: Result<Bytes, BytesRejection>,
    parse: fn(&[u8], &Limits<'_>) -> Result<Vec<Event>, EventError>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let body = body.map_err(body_error)?;
    let snapshot = state.snapshot();
    let mut events = parse(
        &body,
        &Limits {
            now: now_unix() as i64,
            max_future_s: live.max_future_s,
            regions: &snapshot.regions,
        },
    )?;
    // The log records the region each event counts for, so a replay needs nothing else.
    for e in &mut events {
        if e.region.is_none() {
            e.region = Some(
                snapshot
                    .known_user_region(&e.user_id)
                    .unwrap_or(&state.region)
                    .clone(),
            );
        }
    }
    // Under a fatigue rule an impression may take an item out of the user's list, so
    // impressions touch their users too (see `crate::rules`).
    let fatigue = snapshot.rules.rules().fatigue().is_some();
    let touched: Vec<_> = {
        let mut seen = HashSet::new();
        events
            .iter()
            .filter(|e| (fatigue || e.weight().is_some()) && seen.insert(e.user_id.clone()))
            .map(|e| e.user_id.clone())
            .collect()
    };
    let mut per_type: BTreeMap<&'static str, u64> = BTreeMap::new();
    for e in &events {
        *per_type.entry(e.kind.as_str()).or_default() += 1;
    }
    let n = events.len();
    // The day's quota counts the batch whole before it is stored (impressions aside).
    let counted = events
        .iter()
        .filter(|e| e.kind != crate::events::EventType::RecommendationViewed)
        .count() as u64;
    if let Some(guard) = &state.quota {
        admit_new_ids(guard, &live, &events).await?;
        guard.admit_events(counted).map_err(|e| {
            metrics::counter!("origin_quota_exceeded_total", "quota" => e.quota()).increment(1);
            ApiError::Quota(e)
        })?;
    }
    let appended = match live.store.append(events, client.key).await {
        Ok(a) => a,
        Err(e) => {
            if let Some(guard) = &state.quota {
                guard.refund_events(counted);
            }
            return Err(e.into());
        }
    };
    let committed_at = tokio::time::Instant::now();
    for (kind, count) in per_type {
        metrics::counter!("origin_events_ingested_total", "type" => kind).increment(count);
    }
    if let Some(r) = &live.republisher {
        let trace = trace.map(|Extension(t)| t);
        for user in touched {
            r.touch(user, committed_at, trace.clone());
        }
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            accepted: n,
            first_seq: appended.first_seq,
            last_seq: appended.last_seq,
            duplicates: appended.duplicates,
        }),
    ))
}

/// `max_users` and `max_items`: the batch's distinct users and items, and when they
/// might not fit, those of them the store does not hold yet, against the room left.
async fn admit_new_ids(
    guard: &super::quota::QuotaGuard,
    live: &Live,
    events: &[Event],
) -> Result<(), ApiError> {
    let users: Vec<String> = events
        .iter()
        .map(|e| e.user_id.to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let items: Vec<String> = events
        .iter()
        .map(|e| e.item_id.to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let (n_users, n_items) = (users.len() as u64, items.len() as u64);
    let (new_users, new_items) = if guard.room_for(n_users, n_items) {
        (0, 0)
    } else {
        let (known_users, known_items) = live.store.known(&users, &items).await?;
        (
            n_users - known_users.min(n_users),
            n_items - known_items.min(n_items),
        )
    };
    guard.admit_stored(new_users, new_items).map_err(|e| {
        metrics::counter!("origin_quota_exceeded_total", "quota" => e.quota()).increment(1);
        ApiError::Quota(e)
    })
}
