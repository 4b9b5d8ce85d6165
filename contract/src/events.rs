//! Bodies of the origin's live-event routes, which the edge forwards to (filling
//! `source` and `region`) and reports to.
//!
//! - `POST /v1/events`: one [`RawEvent`] or [`EventBatch`] (at most
//!   [`MAX_EVENTS_PER_BATCH`]); answered `202` with [`EventsAccepted`] after commit.
//! - `POST /v1/analytics/edge-report`: an [`EdgeReport`] of the edge's cache counters
//!   (`Authorization: Bearer <ADMIN_TOKEN>`).
//!
//! The origin validates events (ids, value ranges, timestamps, context size); this
//! module only fixes their shape.

use serde::{Deserialize, Serialize};

/// Most events one request may carry.
pub const MAX_EVENTS_PER_BATCH: usize = 500;
/// Largest `context` object, serialized, in bytes.
pub const MAX_CONTEXT_BYTES: usize = 2048;

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
}

/// `{"events":[...]}`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EventBatch {
    pub events: Vec<RawEvent>,
}

/// `202` answer of `POST /v1/events`: the batch is committed at `first_seq..=last_seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventsAccepted {
    pub accepted: usize,
    pub first_seq: i64,
    pub last_seq: i64,
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
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"user_id":"u1","item_id":"i1","type":"view"}"#
        );
    }
}
