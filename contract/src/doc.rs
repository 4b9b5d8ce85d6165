//! The recommendation document, as stored in KV and the secondary CDN and returned
//! by the origin, and the form in which the edge serves it.

use serde::{Deserialize, Serialize};

/// One recommended item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecItem {
    pub item_id: String,
    pub score: f64,
    /// Human-readable explanation ("similar to i7", "popular in europe").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A precomputed list of recommendations for one user of one tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecommendationDoc {
    pub tenant: String,
    pub user_id: String,
    pub region: String,
    pub items: Vec<RecItem>,
    /// `<trained-at>#<model>`, e.g. `2026-11-27T10:00:00Z#ease-l500`.
    pub model_version: String,
    /// Unix seconds when the list was computed.
    pub generated_at: u64,
    /// Seconds after `generated_at` during which the list may be served as fresh.
    pub fresh_for_s: u64,
    /// Seconds after freshness ends during which the list may still be served as stale.
    pub stale_for_s: u64,
}

impl RecommendationDoc {
    /// Unix second at which the document stops being fresh.
    pub fn fresh_until(&self) -> u64 {
        self.generated_at.saturating_add(self.fresh_for_s)
    }

    /// Unix second after which the document may not be served at all, not even as stale.
    pub fn stale_until(&self) -> u64 {
        self.fresh_until().saturating_add(self.stale_for_s)
    }
}

/// Where the edge found the answer it served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    EdgeCache,
    Kv,
    SecondaryCdn,
    Origin,
    Stale,
    Popular,
}

impl Source {
    /// The value used in the `source` field and the `X-Served-By` header.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::EdgeCache => "edge-cache",
            Source::Kv => "kv",
            Source::SecondaryCdn => "secondary-cdn",
            Source::Origin => "origin",
            Source::Stale => "stale",
            Source::Popular => "popular",
        }
    }
}

/// A document as the edge serves it: the stored fields plus `source` and `stale`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServedDoc {
    #[serde(flatten)]
    pub doc: RecommendationDoc,
    pub source: Source,
    pub stale: bool,
}

/// The body of every error answer, edge and origin alike:
/// `{ "error": { "code": "...", "message": "..." } }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `invalid_user_id`.
    pub code: String,
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        ErrorBody {
            error: ErrorDetail {
                code: code.into(),
                message: message.into(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RecommendationDoc {
        RecommendationDoc {
            tenant: "default".into(),
            user_id: "u123".into(),
            region: "europe".into(),
            items: vec![RecItem {
                item_id: "i42".into(),
                score: 0.913,
                reason: Some("similar to i7".into()),
            }],
            model_version: "2026-11-27T10:00:00Z#ease-l500".into(),
            generated_at: 1_764_237_600,
            fresh_for_s: 300,
            stale_for_s: 86_400,
        }
    }

    #[test]
    fn design_example_parses() {
        let text = r#"{ "tenant": "default", "user_id": "u123", "region": "europe",
          "items": [ { "item_id": "i42", "score": 0.913, "reason": "similar to i7" } ],
          "model_version": "2026-11-27T10:00:00Z#ease-l500", "generated_at": 1764237600,
          "fresh_for_s": 300, "stale_for_s": 86400 }"#;
        let doc: RecommendationDoc = serde_json::from_str(text).unwrap();
        assert_eq!(doc, sample());
    }

    #[test]
    fn served_doc_flattens_and_adds_source_and_stale() {
        let served = ServedDoc {
            doc: sample(),
            source: Source::SecondaryCdn,
            stale: false,
        };
        let v: serde_json::Value = serde_json::to_value(&served).unwrap();
        assert_eq!(v["source"], "secondary-cdn");
        assert_eq!(v["stale"], false);
        assert_eq!(v["user_id"], "u123");
        let back: ServedDoc = serde_json::from_value(v).unwrap();
        assert_eq!(back, served);
    }

    #[test]
    fn freshness_bounds_add_up() {
        let d = sample();
        assert_eq!(d.fresh_until(), 1_764_237_900);
        assert_eq!(d.stale_until(), 1_764_237_900 + 86_400);
    }

    #[test]
    fn source_names_match_serde() {
        for s in [
            Source::EdgeCache,
            Source::Kv,
            Source::SecondaryCdn,
            Source::Origin,
            Source::Stale,
            Source::Popular,
        ] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }
}
