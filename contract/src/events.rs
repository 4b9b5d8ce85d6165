//! Live events, shared by the edge and the origin so both apply the same rules.
//!
//! - `POST /v1/events` (edge and origin): one [`RawEvent`] or an [`EventBatch`] of at most
//!   [`MAX_EVENTS_PER_BATCH`]; [`parse_body`] validates the whole body (one bad event
//!   refuses it, with its index); the origin answers `202` with [`EventsAccepted`] once the
//!   batch is committed.
//! - `POST /v1/impressions` (origin): the edge's impressions in compact form, a
//!   [`ShownBatch`] of whole answers ([`Shown`]: one user, source, region and time, the
//!   items in order); [`parse_impressions`] validates it all or nothing and expands each
//!   item into the `recommendation_viewed` [`Event`] `/v1/events` would have stored.
//! - `POST /v1/analytics/edge-report`: an [`EdgeReport`] of the edge's cache counters
//!   (`Authorization: Bearer <ADMIN_TOKEN>`), read with [`parse_edge_report`] (at most
//!   [`MAX_REPORT_REQUESTS`] requests, hits at most requests).
//! - Every body here is closed: unknown fields and duplicate keys are refused.
//! - [`weight`]: what an event counts for in a user's history.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::{EventId, IdError, ItemId, Region, RegionMap, UserId};

/// Most events one request may carry.
pub const MAX_EVENTS_PER_BATCH: usize = 500;
/// Largest `context` object, serialized, in bytes.
pub const MAX_CONTEXT_BYTES: usize = 2048;
/// Most answers one `POST /v1/impressions` may carry.
pub const MAX_SHOWN_PER_BATCH: usize = 1000;
/// Most impressions (items over all answers) one `POST /v1/impressions` may carry.
pub const MAX_IMPRESSIONS_PER_BATCH: usize = 10_000;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    View,
    Click,
    AddToCart,
    Purchase,
    /// `value` is the rating, 0 to 5.
    Rating,
    /// The user was shown a recommended item: an impression, not an interaction.
    /// `value`, when given, is the item's score.
    RecommendationViewed,
}

impl EventType {
    pub const ALL: [EventType; 6] = [
        EventType::View,
        EventType::Click,
        EventType::AddToCart,
        EventType::Purchase,
        EventType::Rating,
        EventType::RecommendationViewed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::View => "view",
            EventType::Click => "click",
            EventType::AddToCart => "add_to_cart",
            EventType::Purchase => "purchase",
            EventType::Rating => "rating",
            EventType::RecommendationViewed => "recommendation_viewed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// An event as sent (the origin validates every field).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawEvent {
    pub user_id: String,
    pub item_id: String,
    /// One of [`EventType`]'s names; a string so an unknown type gets a precise error.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Unix seconds; the receive time when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<serde_json::Map<String, serde_json::Value>>,
    /// Where the recommendation was served from (the edge fills it, e.g. `kv`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The edge region of the request (the edge fills it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Idempotency key (the id rules of [`EventId`]): an event whose id the tenant's log
    /// already holds is acknowledged again but not stored twice. The edge sets one when
    /// the client does not, so a failover to a second origin cannot double-count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
}

/// `{"events":[...]}`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EventBatch {
    pub events: Vec<RawEvent>,
}

/// One item of a [`Shown`] answer.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ShownItem {
    pub item_id: String,
    /// The item's score in the answer (stored as the impression's `value`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
}

/// One answer the edge served: `user_id` was shown `items` (1 to [`crate::MAX_N`]), from
/// `source`, in `region`, at `timestamp` (Unix seconds).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Shown {
    /// The answer's idempotency key: item `j` is stored with event id `{id}-{j}`, so a
    /// batch the edge sends again after a timeout is stored once. At most
    /// [`MAX_SHOWN_ID_LEN`] bytes of the id rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub user_id: String,
    pub source: String,
    pub region: String,
    pub timestamp: i64,
    pub items: Vec<ShownItem>,
}

/// `{"shown":[...]}`: the body of `POST /v1/impressions`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ShownBatch {
    pub shown: Vec<Shown>,
}

/// `202` answer of `POST /v1/events`: the batch is committed at `first_seq..=last_seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventsAccepted {
    pub accepted: usize,
    pub first_seq: i64,
    pub last_seq: i64,
    /// Of `accepted`, events whose `event_id` the log already held (stored once).
    #[serde(default)]
    pub duplicates: usize,
}

/// The edge's cache counters since its last report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeReport {
    pub requests: u64,
    pub hits: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// Most requests one edge report may count. An isolate reports at least every
/// `IMPRESSION_FLUSH_MS` (at most 10 minutes) while it has traffic, so ten million is
/// far above what one isolate serves between two reports; a bigger count is a forged or
/// corrupted report, not traffic.
pub const MAX_REPORT_REQUESTS: u64 = 10_000_000;

/// Why an edge report is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReportError {
    #[error("bad report body: {0}")]
    Body(String),
    #[error("requests {0} is more than the {MAX_REPORT_REQUESTS} one report may count")]
    TooManyRequests(u64),
    #[error("hits {hits} is more than requests {requests}")]
    HitsAboveRequests { hits: u64, requests: u64 },
    #[error("region: {0}")]
    Region(String),
}

impl ReportError {
    pub fn code(&self) -> &'static str {
        match self {
            ReportError::Body(_) => "invalid_body",
            ReportError::Region(_) => "invalid_region",
            ReportError::TooManyRequests(_) | ReportError::HitsAboveRequests { .. } => {
                "implausible_report"
            }
        }
    }
}

impl EdgeReport {
    /// Plausibility: hits ≤ requests ≤ [`MAX_REPORT_REQUESTS`], a region name if given.
    /// A report that passes can be added to `u64` totals for 1.8 × 10¹² reports without
    /// overflowing (callers still add with `saturating_add`).
    pub fn validate(&self) -> Result<(), ReportError> {
        if self.requests > MAX_REPORT_REQUESTS {
            return Err(ReportError::TooManyRequests(self.requests));
        }
        if self.hits > self.requests {
            return Err(ReportError::HitsAboveRequests {
                hits: self.hits,
                requests: self.requests,
            });
        }
        if let Some(r) = &self.region {
            Region::parse(r).map_err(|e| ReportError::Region(e.to_string()))?;
        }
        Ok(())
    }
}

/// Reads a `POST /v1/analytics/edge-report` body: strict JSON, then
/// [`EdgeReport::validate`].
pub fn parse_edge_report(bytes: &[u8]) -> Result<EdgeReport, ReportError> {
    let report: EdgeReport =
        crate::json::from_slice(bytes).map_err(|e| ReportError::Body(e.to_string()))?;
    report.validate()?;
    Ok(report)
}

/// Longest [`Shown::id`] (leaves room for the `-{j}` suffix within the id rules).
pub const MAX_SHOWN_ID_LEN: usize = 120;

/// Longest `source` label.
pub const MAX_SOURCE_LEN: usize = 64;
/// Earliest accepted timestamp (2000-01-01T00:00:00Z).
pub const MIN_TIMESTAMP: i64 = 946_684_800;
/// Largest accepted `value` of non-rating events (a price, a score, a dwell time).
pub const MAX_VALUE: f64 = 1e9;

/// The interaction weight of an event of type `kind` with `value`, or `None` for
/// impressions (counted by analytics, not part of a history): view 1, click 2,
/// add_to_cart 3, purchase 5, rating = its value.
pub fn weight(kind: EventType, value: Option<f64>) -> Option<f32> {
    match kind {
        EventType::View => Some(1.0),
        EventType::Click => Some(2.0),
        EventType::AddToCart => Some(3.0),
        EventType::Purchase => Some(5.0),
        EventType::Rating => Some(value.unwrap_or(0.0) as f32),
        EventType::RecommendationViewed => None,
    }
}

/// A validated event, as stored in the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub user_id: UserId,
    pub item_id: ItemId,
    pub kind: EventType,
    pub value: Option<f64>,
    /// Unix seconds.
    pub timestamp: i64,
    /// Serialized JSON object, at most [`MAX_CONTEXT_BYTES`].
    pub context: Option<String>,
    pub source: Option<String>,
    pub region: Option<Region>,
    /// The client's idempotency key, if it sent one.
    pub event_id: Option<EventId>,
}

impl Event {
    /// The interaction weight, `None` for impressions.
    pub fn weight(&self) -> Option<f32> {
        weight(self.kind, self.value)
    }
}

/// Why an event body was refused.
#[derive(Debug, Error, PartialEq)]
pub enum EventError {
    #[error("at most {MAX_EVENTS_PER_BATCH} events per request, not {0}")]
    TooMany(usize),
    #[error("a request must carry at least one event")]
    Empty,
    #[error("bad request body: {0}")]
    Body(String),
    #[error("events[{index}]: {source}")]
    Invalid { index: usize, source: FieldError },
    #[error("at most {MAX_SHOWN_PER_BATCH} answers and {MAX_IMPRESSIONS_PER_BATCH} impressions per request, not {answers} and {impressions}")]
    TooManyShown { answers: usize, impressions: usize },
    #[error("shown[{index}]{}: {source}", item.map(|i| format!(".items[{i}]")).unwrap_or_default())]
    InvalidShown {
        index: usize,
        item: Option<usize>,
        source: FieldError,
    },
}

impl EventError {
    pub fn code(&self) -> &'static str {
        match self {
            EventError::TooMany(_) => "too_many_events",
            EventError::Empty => "no_events",
            EventError::Body(_) => "invalid_body",
            EventError::Invalid { source, .. } | EventError::InvalidShown { source, .. } => {
                source.code()
            }
            EventError::TooManyShown { .. } => "too_many_events",
        }
    }
}

/// What is wrong with one event.
#[derive(Debug, Error, PartialEq)]
pub enum FieldError {
    #[error("{0}")]
    Json(String),
    #[error("{0}")]
    Id(#[from] IdError),
    #[error("type {0:?} is not one of view, click, add_to_cart, purchase, rating, recommendation_viewed")]
    Type(String),
    #[error("a rating needs a value from 0 to 5")]
    RatingValue,
    #[error("value must be a finite number from {min} to {max}, not {found}")]
    Value { min: f64, max: f64, found: f64 },
    #[error("timestamp {found} is not between {MIN_TIMESTAMP} and {latest} (now plus the allowed clock skew)")]
    Timestamp { found: i64, latest: i64 },
    #[error("context is {0} bytes serialized; at most {MAX_CONTEXT_BYTES}")]
    ContextTooLarge(usize),
    #[error("source must be 1 to {MAX_SOURCE_LEN} characters of a-z 0-9 . _ -")]
    Source,
    #[error("region {0:?} is not one of the known regions")]
    Region(String),
    #[error("an answer shows 1 to {max} items, not {0}", max = crate::MAX_N)]
    ShownItems(usize),
    #[error("an answer's id is {0} bytes long; at most {MAX_SHOWN_ID_LEN} are allowed")]
    ShownId(usize),
}

impl FieldError {
    pub fn code(&self) -> &'static str {
        match self {
            FieldError::Json(_) => "invalid_event",
            FieldError::Id(e) => e.code(),
            FieldError::Type(_) => "invalid_event_type",
            FieldError::RatingValue | FieldError::Value { .. } => "invalid_value",
            FieldError::Timestamp { .. } => "invalid_timestamp",
            FieldError::ContextTooLarge(_) => "context_too_large",
            FieldError::Source => "invalid_source",
            FieldError::Region(_) => "invalid_region",
            FieldError::ShownItems(_) => "invalid_items",
            FieldError::ShownId(_) => "invalid_event_id",
        }
    }
}

/// What validation needs to know about the world.
#[derive(Debug, Clone, Copy)]
pub struct Limits<'a> {
    /// Unix seconds now (the default timestamp).
    pub now: i64,
    /// How far in the future a timestamp may be (clock skew of senders).
    pub max_future_s: i64,
    pub regions: &'a RegionMap,
}

/// Checks every field of an event; the result is what the log stores.
pub fn validate(raw: RawEvent, limits: &Limits<'_>) -> Result<Event, FieldError> {
    let user_id = UserId::parse(&raw.user_id)?;
    let item_id = ItemId::parse(&raw.item_id)?;
    let event_id = raw.event_id.as_deref().map(EventId::parse).transpose()?;
    let kind = EventType::parse(&raw.kind)
        .ok_or_else(|| FieldError::Type(raw.kind.chars().take(40).collect()))?;
    match (kind, raw.value) {
        (EventType::Rating, Some(v)) if (0.0..=5.0).contains(&v) => {}
        (EventType::Rating, _) => return Err(FieldError::RatingValue),
        (EventType::RecommendationViewed, Some(v)) if !(v.is_finite() && v.abs() <= MAX_VALUE) => {
            return Err(FieldError::Value {
                min: -MAX_VALUE,
                max: MAX_VALUE,
                found: v,
            })
        }
        (_, Some(v)) if !(v.is_finite() && (0.0..=MAX_VALUE).contains(&v)) => {
            return Err(FieldError::Value {
                min: 0.0,
                max: MAX_VALUE,
                found: v,
            })
        }
        _ => {}
    }
    let latest = limits.now.saturating_add(limits.max_future_s);
    let timestamp = raw.timestamp.unwrap_or(limits.now);
    if !(MIN_TIMESTAMP..=latest).contains(&timestamp) {
        return Err(FieldError::Timestamp {
            found: timestamp,
            latest,
        });
    }
    let context = match raw.context {
        None => None,
        Some(map) => {
            let s = serde_json::Value::Object(map).to_string();
            if s.len() > MAX_CONTEXT_BYTES {
                return Err(FieldError::ContextTooLarge(s.len()));
            }
            Some(s)
        }
    };
    let source = match raw.source {
        None => None,
        Some(s) => {
            let ok = !s.is_empty()
                && s.len() <= MAX_SOURCE_LEN
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
            if !ok {
                return Err(FieldError::Source);
            }
            Some(s)
        }
    };
    let region = match raw.region {
        None => None,
        Some(r) => Some(
            Region::parse(&r)
                .ok()
                .filter(|r| limits.regions.knows(r))
                .ok_or_else(|| FieldError::Region(r.chars().take(40).collect()))?,
        ),
    };
    Ok(Event {
        user_id,
        item_id,
        kind,
        value: raw.value,
        timestamp,
        context,
        source,
        region,
        event_id,
    })
}

/// Parses a request body: one event, or `{"events":[...]}` with 1 to
/// [`MAX_EVENTS_PER_BATCH`] events. All or nothing.
pub fn parse_body(bytes: &[u8], limits: &Limits<'_>) -> Result<Vec<Event>, EventError> {
    let value: serde_json::Value =
        crate::json::from_slice(bytes).map_err(|e| EventError::Body(e.to_string()))?;
    let raw: Vec<serde_json::Value> = match value {
        serde_json::Value::Object(mut map) if map.contains_key("events") => {
            if map.len() != 1 {
                return Err(EventError::Body(
                    "a batch body has only the field \"events\"".into(),
                ));
            }
            match map.remove("events") {
                Some(serde_json::Value::Array(a)) => a,
                _ => return Err(EventError::Body("\"events\" must be an array".into())),
            }
        }
        v @ serde_json::Value::Object(_) => vec![v],
        _ => {
            return Err(EventError::Body(
                "the body must be an event object or {\"events\":[...]}".into(),
            ))
        }
    };
    if raw.len() > MAX_EVENTS_PER_BATCH {
        return Err(EventError::TooMany(raw.len()));
    }
    if raw.is_empty() {
        return Err(EventError::Empty);
    }
    raw.into_iter()
        .enumerate()
        .map(|(index, v)| {
            serde_json::from_value::<RawEvent>(v)
                .map_err(|e| FieldError::Json(e.to_string()))
                .and_then(|r| validate(r, limits))
                .map_err(|source| EventError::Invalid { index, source })
        })
        .collect()
}

/// Parses a `POST /v1/impressions` body (a [`ShownBatch`]) into one
/// `recommendation_viewed` event per item shown, each checked by [`validate`] like an event
/// sent to `/v1/events`. All or nothing; an error names the answer and the item.
pub fn parse_impressions(bytes: &[u8], limits: &Limits<'_>) -> Result<Vec<Event>, EventError> {
    let value: serde_json::Value =
        crate::json::from_slice(bytes).map_err(|e| EventError::Body(e.to_string()))?;
    let raw = match value {
        serde_json::Value::Object(mut map) if map.len() == 1 => map.remove("shown"),
        _ => None,
    };
    let Some(serde_json::Value::Array(raw)) = raw else {
        return Err(EventError::Body(
            "the body must be {\"shown\":[...]}".into(),
        ));
    };
    if raw.is_empty() {
        return Err(EventError::Empty);
    }
    let shown: Vec<Shown> = raw
        .into_iter()
        .enumerate()
        .map(|(index, v)| {
            serde_json::from_value(v).map_err(|e| EventError::InvalidShown {
                index,
                item: None,
                source: FieldError::Json(e.to_string()),
            })
        })
        .collect::<Result<_, _>>()?;
    let impressions: usize = shown.iter().map(|s| s.items.len()).sum();
    if shown.len() > MAX_SHOWN_PER_BATCH || impressions > MAX_IMPRESSIONS_PER_BATCH {
        return Err(EventError::TooManyShown {
            answers: shown.len(),
            impressions,
        });
    }
    let mut events = Vec::with_capacity(impressions);
    for (index, answer) in shown.into_iter().enumerate() {
        if answer.items.is_empty() || answer.items.len() > crate::MAX_N {
            return Err(EventError::InvalidShown {
                index,
                item: None,
                source: FieldError::ShownItems(answer.items.len()),
            });
        }
        if let Some(id) = &answer.id {
            let checked = match EventId::parse(id) {
                Err(e) => Err(FieldError::from(e)),
                Ok(_) if id.len() > MAX_SHOWN_ID_LEN => Err(FieldError::ShownId(id.len())),
                Ok(_) => Ok(()),
            };
            if let Err(source) = checked {
                return Err(EventError::InvalidShown {
                    index,
                    item: None,
                    source,
                });
            }
        }
        for (item, shown_item) in answer.items.into_iter().enumerate() {
            let raw = RawEvent {
                user_id: answer.user_id.clone(),
                item_id: shown_item.item_id,
                kind: EventType::RecommendationViewed.as_str().to_string(),
                value: shown_item.score,
                timestamp: Some(answer.timestamp),
                context: None,
                source: Some(answer.source.clone()),
                region: Some(answer.region.clone()),
                event_id: answer.id.as_ref().map(|id| format!("{id}-{item}")),
            };
            let event = validate(raw, limits).map_err(|source| EventError::InvalidShown {
                index,
                item: Some(item),
                source,
            })?;
            events.push(event);
        }
    }
    Ok(events)
}

impl Event {
    /// The event in its wire form again (what the edge forwards to the origin).
    pub fn to_raw(&self) -> RawEvent {
        RawEvent {
            user_id: self.user_id.to_string(),
            item_id: self.item_id.to_string(),
            kind: self.kind.as_str().to_string(),
            value: self.value,
            timestamp: Some(self.timestamp),
            context: self
                .context
                .as_deref()
                .and_then(|c| serde_json::from_str(c).ok()),
            source: self.source.clone(),
            region: self.region.as_ref().map(|r| r.to_string()),
            event_id: self.event_id.as_ref().map(|id| id.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_round_trip_through_their_wire_names() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, format!("\"{}\"", t.as_str()));
        }
        assert_eq!(EventType::parse("like"), None);
    }

    #[test]
    fn a_minimal_event_serializes_without_absent_fields() {
        let e = RawEvent {
            user_id: "u1".into(),
            item_id: "i1".into(),
            kind: "view".into(),
            value: None,
            timestamp: None,
            context: None,
            source: None,
            region: None,
            event_id: None,
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"user_id":"u1","item_id":"i1","type":"view"}"#
        );
    }
}

#[cfg(test)]
mod hardening_tests {
    use super::*;
    use proptest::prelude::*;

    fn limits(regions: &RegionMap) -> Limits<'_> {
        Limits {
            now: 1_764_237_600,
            max_future_s: 300,
            regions,
        }
    }

    #[test]
    fn a_duplicate_key_refuses_an_event_or_impressions_body() {
        let regions = RegionMap::builtin();
        for body in [
            r#"{"user_id":"u1","item_id":"i1","type":"view","user_id":"u2"}"#,
            r#"{"events":[{"user_id":"u1","item_id":"i1","type":"view"}],"events":[]}"#,
            r#"{"events":[{"user_id":"u1","item_id":"i1","item_id":"i2","type":"view"}]}"#,
        ] {
            let e = parse_body(body.as_bytes(), &limits(&regions)).unwrap_err();
            assert_eq!(e.code(), "invalid_body", "{body}");
            assert!(e.to_string().contains("duplicate key"), "{e}");
        }
        let shown = r#"{"shown":[{"user_id":"u1","user_id":"u2","source":"kv","region":"europe","timestamp":1764237000,"items":[{"item_id":"i1"}]}]}"#;
        let e = parse_impressions(shown.as_bytes(), &limits(&regions)).unwrap_err();
        assert_eq!(e.code(), "invalid_body");
    }

    #[test]
    fn an_edge_report_with_impossible_counts_is_refused() {
        let ok = parse_edge_report(br#"{"requests":10,"hits":7,"region":"europe"}"#).unwrap();
        assert_eq!((ok.requests, ok.hits), (10, 7));
        for (body, code) in [
            (
                format!(r#"{{"requests":{},"hits":0}}"#, u64::MAX),
                "implausible_report",
            ),
            (
                format!(r#"{{"requests":{},"hits":{}}}"#, u64::MAX, u64::MAX),
                "implausible_report",
            ),
            (
                r#"{"requests":5,"hits":6}"#.to_string(),
                "implausible_report",
            ),
            (
                r#"{"requests":5,"hits":1,"region":"../x"}"#.to_string(),
                "invalid_region",
            ),
            (
                r#"{"requests":5,"hits":1,"hits":5}"#.to_string(),
                "invalid_body",
            ),
            (
                r#"{"requests":5,"hits":1,"extra":1}"#.to_string(),
                "invalid_body",
            ),
            (r#"{"requests":-1,"hits":0}"#.to_string(), "invalid_body"),
        ] {
            assert_eq!(
                parse_edge_report(body.as_bytes()).unwrap_err().code(),
                code,
                "{body}"
            );
        }
    }

    proptest! {
        #[test]
        fn a_report_is_accepted_exactly_when_its_counts_are_plausible(
            requests in any::<u64>(), hits in any::<u64>(), small in 0u64..=MAX_REPORT_REQUESTS,
        ) {
            let r = EdgeReport { requests, hits, region: None };
            prop_assert_eq!(
                r.validate().is_ok(),
                hits <= requests && requests <= MAX_REPORT_REQUESTS
            );
            let within = EdgeReport { requests: small, hits: small / 2, region: None };
            prop_assert!(within.validate().is_ok());
        }
    }
}

#[cfg(test)]
mod validation_tests {
    use super::*;

    const NOW: i64 = 1_764_237_600;

    fn parse(body: &str) -> Result<Vec<Event>, EventError> {
        let regions = RegionMap::builtin();
        parse_body(
            body.as_bytes(),
            &Limits {
                now: NOW,
                max_future_s: 300,
                regions: &regions,
            },
        )
    }

    fn code(body: &str) -> &'static str {
        parse(body).unwrap_err().code()
    }

    #[test]
    fn a_single_event_gets_the_receive_time_when_it_has_no_timestamp() {
        let events = parse(r#"{"user_id":"u1","item_id":"i1","type":"view"}"#).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].timestamp, NOW);
        assert_eq!(events[0].kind, EventType::View);
        assert_eq!(events[0].weight(), Some(1.0));
    }

    #[test]
    fn a_batch_keeps_every_field_in_order() {
        let events = parse(
            r#"{"events":[
                {"user_id":"u1","item_id":"i1","type":"rating","value":4.5,"timestamp":1764237000},
                {"user_id":"u2","item_id":"i2","type":"recommendation_viewed","value":0.91,
                 "context":{"page":"home"},"source":"edge-cache","region":"europe"}]}"#,
        )
        .unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].weight(), Some(4.5));
        assert_eq!(events[0].timestamp, 1_764_237_000);
        assert_eq!(events[1].weight(), None, "impressions are not interactions");
        assert_eq!(events[1].context.as_deref(), Some(r#"{"page":"home"}"#));
        assert_eq!(events[1].source.as_deref(), Some("edge-cache"));
        assert_eq!(events[1].region.as_ref().unwrap().as_str(), "europe");
    }

    #[test]
    fn interaction_weights_follow_the_documented_table() {
        assert_eq!(weight(EventType::Click, None), Some(2.0));
        assert_eq!(weight(EventType::AddToCart, None), Some(3.0));
        assert_eq!(weight(EventType::Purchase, Some(99.0)), Some(5.0));
        assert_eq!(weight(EventType::Rating, Some(3.0)), Some(3.0));
    }

    #[test]
    fn more_than_500_events_are_refused_as_too_many() {
        let one = r#"{"user_id":"u1","item_id":"i1","type":"view"}"#;
        let body = format!(r#"{{"events":[{}]}}"#, vec![one; 501].join(","));
        assert_eq!(parse(&body).unwrap_err(), EventError::TooMany(501));
        assert_eq!(code(&body), "too_many_events");
        let body = format!(r#"{{"events":[{}]}}"#, vec![one; 500].join(","));
        assert_eq!(parse(&body).unwrap().len(), 500);
    }

    #[test]
    fn bad_fields_are_refused_with_their_index_and_code() {
        let cases = [
            (
                r#"{"user_id":"a/b","item_id":"i1","type":"view"}"#,
                "invalid_user_id",
            ),
            (
                r#"{"user_id":"u","item_id":"..","type":"view"}"#,
                "invalid_item_id",
            ),
            (
                r#"{"user_id":"u","item_id":"i","type":"like"}"#,
                "invalid_event_type",
            ),
            (
                r#"{"user_id":"u","item_id":"i","type":"rating"}"#,
                "invalid_value",
            ),
            (
                r#"{"user_id":"u","item_id":"i","type":"rating","value":5.5}"#,
                "invalid_value",
            ),
            (
                r#"{"user_id":"u","item_id":"i","type":"rating","value":-1}"#,
                "invalid_value",
            ),
            (
                r#"{"user_id":"u","item_id":"i","type":"purchase","value":-3}"#,
                "invalid_value",
            ),
            (
                r#"{"user_id":"u","item_id":"i","type":"view","timestamp":99999999999}"#,
                "invalid_timestamp",
            ),
            (
                r#"{"user_id":"u","item_id":"i","type":"view","timestamp":5}"#,
                "invalid_timestamp",
            ),
            (
                r#"{"user_id":"u","item_id":"i","type":"view","source":"Bad Source"}"#,
                "invalid_source",
            ),
            (
                r#"{"user_id":"u","item_id":"i","type":"view","region":"mars"}"#,
                "invalid_region",
            ),
            (
                r#"{"user_id":"u","item_id":"i","type":"view","extra":1}"#,
                "invalid_event",
            ),
            (r#"{"user_id":"u","type":"view"}"#, "invalid_event"),
        ];
        for (event, want) in cases {
            let body = format!(
                r#"{{"events":[{{"user_id":"ok","item_id":"ok","type":"view"}},{event}]}}"#
            );
            let err = parse(&body).unwrap_err();
            assert_eq!(err.code(), want, "{event}");
            assert!(err.to_string().starts_with("events[1]: "), "{err}");
        }
    }

    #[test]
    fn a_timestamp_slightly_ahead_is_accepted_as_clock_skew() {
        let body = format!(
            r#"{{"user_id":"u","item_id":"i","type":"view","timestamp":{}}}"#,
            NOW + 299
        );
        assert!(parse(&body).is_ok());
    }

    #[test]
    fn an_oversized_context_is_refused() {
        let big = "x".repeat(MAX_CONTEXT_BYTES);
        let body =
            format!(r#"{{"user_id":"u","item_id":"i","type":"view","context":{{"k":"{big}"}}}}"#);
        assert_eq!(code(&body), "context_too_large");
    }

    #[test]
    fn bodies_that_are_not_events_are_refused() {
        assert_eq!(code("[1,2]"), "invalid_body");
        assert_eq!(code("{not json"), "invalid_body");
        assert_eq!(code(r#"{"events":[]}"#), "no_events");
        assert_eq!(code(r#"{"events":{}}"#), "invalid_body");
        assert_eq!(code(r#"{"events":[],"x":1}"#), "invalid_body");
    }

    #[test]
    fn an_event_id_is_kept_and_a_bad_one_refuses_the_batch() {
        let events = parse(
            r#"{"events":[{"user_id":"u1","item_id":"i1","type":"view","event_id":"e-1"},
                          {"user_id":"u1","item_id":"i2","type":"view"}]}"#,
        )
        .unwrap();
        assert_eq!(events[0].event_id.as_ref().unwrap().as_str(), "e-1");
        assert_eq!(events[1].event_id, None);
        assert_eq!(events[0].to_raw().event_id.as_deref(), Some("e-1"));
        assert_eq!(
            code(r#"{"user_id":"u1","item_id":"i1","type":"view","event_id":"a/b"}"#),
            "invalid_event_id"
        );
        assert_eq!(
            code(r#"{"user_id":"u1","item_id":"i1","type":"view","event_id":""}"#),
            "invalid_event_id"
        );
    }

    #[test]
    fn an_answer_id_gives_each_impression_its_own_event_id() {
        let body = |id: &str| {
            format!(
                r#"{{"shown":[{{"id":"{id}","user_id":"u1","source":"kv","region":"europe",
                 "timestamp":1764237000,"items":[{{"item_id":"i1"}},{{"item_id":"i2"}}]}}]}}"#
            )
        };
        let events = impressions(&body("a7")).unwrap();
        let ids: Vec<_> = events
            .iter()
            .map(|e| e.event_id.as_ref().unwrap().as_str())
            .collect();
        assert_eq!(ids, ["a7-0", "a7-1"]);
        let e = impressions(&body(&"x".repeat(MAX_SHOWN_ID_LEN + 1))).unwrap_err();
        assert_eq!(e.code(), "invalid_event_id");
        assert!(e.to_string().starts_with("shown[0]: "), "{e}");
        assert_eq!(
            impressions(&body("a..b")).unwrap_err().code(),
            "invalid_event_id"
        );
    }

    fn impressions(body: &str) -> Result<Vec<Event>, EventError> {
        let regions = RegionMap::builtin();
        parse_impressions(
            body.as_bytes(),
            &Limits {
                now: NOW,
                max_future_s: 300,
                regions: &regions,
            },
        )
    }

    #[test]
    fn a_shown_answer_becomes_one_impression_per_item_in_order() {
        let events = impressions(
            r#"{"shown":[
                {"user_id":"u1","source":"kv","region":"europe","timestamp":1764237000,
                 "items":[{"item_id":"i1","score":0.9},{"item_id":"i2"}]},
                {"user_id":"u2","source":"edge-cache","region":"asia","timestamp":1764237001,
                 "items":[{"item_id":"i3","score":0.5}]}]}"#,
        )
        .unwrap();
        let seen: Vec<_> = events
            .iter()
            .map(|e| (e.user_id.as_str(), e.item_id.as_str(), e.value))
            .collect();
        assert_eq!(
            seen,
            [
                ("u1", "i1", Some(0.9)),
                ("u1", "i2", None),
                ("u2", "i3", Some(0.5))
            ]
        );
        assert!(events
            .iter()
            .all(|e| e.kind == EventType::RecommendationViewed && e.weight().is_none()));
        assert_eq!(events[0].source.as_deref(), Some("kv"));
        assert_eq!(events[2].region.as_ref().unwrap().as_str(), "asia");
        assert_eq!(events[2].timestamp, 1_764_237_001);
    }

    #[test]
    fn a_bad_impression_is_named_by_answer_and_item_and_nothing_is_kept() {
        let ok = r#"{"user_id":"u1","source":"kv","region":"europe","timestamp":1764237000,"items":[{"item_id":"i1"}]}"#;
        let bad_item = r#"{"user_id":"u1","source":"kv","region":"europe","timestamp":1764237000,"items":[{"item_id":"i1"},{"item_id":"no/slash"}]}"#;
        let e = impressions(&format!(r#"{{"shown":[{ok},{bad_item}]}}"#)).unwrap_err();
        assert!(e.to_string().starts_with("shown[1].items[1]: "), "{e}");
        let bad_region = ok.replace("europe", "mars");
        let e = impressions(&format!(r#"{{"shown":[{bad_region}]}}"#)).unwrap_err();
        assert_eq!(e.code(), "invalid_region");
        let empty = ok.replace(r#"{"item_id":"i1"}"#, "");
        let e = impressions(&format!(r#"{{"shown":[{empty}]}}"#)).unwrap_err();
        assert_eq!(
            (e.code(), e.to_string().as_str()),
            (
                "invalid_items",
                "shown[0]: an answer shows 1 to 100 items, not 0"
            )
        );
        let unknown = ok.replace(r#""source""#, r#""extra":1,"source""#);
        let e = impressions(&format!(r#"{{"shown":[{unknown}]}}"#)).unwrap_err();
        assert_eq!(e.code(), "invalid_event");
        let future = ok.replace("1764237000", "1864237000");
        assert_eq!(
            impressions(&format!(r#"{{"shown":[{future}]}}"#))
                .unwrap_err()
                .code(),
            "invalid_timestamp"
        );
        for body in [
            r#"{"shown":[]}"#,
            r#"{"events":[]}"#,
            "[]",
            r#"{"shown":{}}"#,
            "{",
        ] {
            assert!(impressions(body).is_err(), "{body} was accepted");
        }
    }

    #[test]
    fn impression_batches_are_bounded_in_answers_and_in_items() {
        let answer = |n: usize| {
            let items: Vec<String> = (0..n).map(|i| format!(r#"{{"item_id":"i{i}"}}"#)).collect();
            format!(
                r#"{{"user_id":"u1","source":"kv","region":"europe","timestamp":1764237000,"items":[{}]}}"#,
                items.join(",")
            )
        };
        let body = |answers: usize, items: usize| {
            format!(
                r#"{{"shown":[{}]}}"#,
                vec![answer(items); answers].join(",")
            )
        };
        assert_eq!(
            impressions(&body(100, 100)).unwrap().len(),
            MAX_IMPRESSIONS_PER_BATCH
        );
        assert_eq!(
            impressions(&body(101, 100)).unwrap_err().code(),
            "too_many_events"
        );
        assert_eq!(
            impressions(&body(MAX_SHOWN_PER_BATCH, 1)).unwrap().len(),
            MAX_SHOWN_PER_BATCH
        );
        assert_eq!(
            impressions(&body(MAX_SHOWN_PER_BATCH + 1, 1))
                .unwrap_err()
                .code(),
            "too_many_events"
        );
        assert_eq!(
            impressions(&body(1, 101)).unwrap_err().code(),
            "invalid_items"
        );
    }
}
