//! Live events as clients send them to `POST /v1/events`: the wire shape, the rules
//! an event must follow, and how an event type counts as an interaction.
//!
//! Parsing is all or nothing: a body is one event or `{"events":[...]}` with at most
//! [`MAX_EVENTS_PER_BATCH`]; one bad event refuses the whole body with its index, so a
//! client never has to guess which part was stored.
//!
//! # Layout
//! - [`EventType`], [`RawEvent`] (from `contract::events`): an event as sent.
//! - [`weight`]: what an event counts for in a user's history.
//! - [`validate`], [`Event`]: an event after validation.
//! - [`parse_body`]: body bytes to validated events, or an [`EventError`].

use contract::{IdError, ItemId, Region, RegionMap, UserId};
use thiserror::Error;

pub use contract::events::{
    EventBatch, EventType, EventsAccepted, RawEvent, MAX_CONTEXT_BYTES, MAX_EVENTS_PER_BATCH,
};

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
}

impl EventError {
    pub fn code(&self) -> &'static str {
        match self {
            EventError::TooMany(_) => "too_many_events",
            EventError::Empty => "no_events",
            EventError::Body(_) => "invalid_body",
            EventError::Invalid { source, .. } => source.code(),
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
    })
}

/// Parses a request body: one event, or `{"events":[...]}` with 1 to
/// [`MAX_EVENTS_PER_BATCH`] events. All or nothing.
pub fn parse_body(bytes: &[u8], limits: &Limits<'_>) -> Result<Vec<Event>, EventError> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| EventError::Body(e.to_string()))?;
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

#[cfg(test)]
mod tests {
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
}
