//! The recommendation document, as stored in KV and the secondary CDN and returned
//! by the origin, and the form in which the edge serves it.
//!
//! [`RecommendationDoc::validate`] is what a reader checks before it stores or serves a
//! document (the edge's admin publish and every tier it reads), and [`parse_doc`] reads
//! one from bytes: at most [`MAX_DOC_BYTES`], no duplicate keys, then validated.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::{IdError, ItemId, Region, Tenant, UserId, MAX_N};

/// Longest `variant` name of an A/B experiment.
pub const MAX_VARIANT_LEN: usize = 64;

/// Largest stored document accepted, in bytes: 100 items with 128-byte ids and
/// 200-byte reasons are about 40 KB.
pub const MAX_DOC_BYTES: usize = 64 * 1024;
/// Longest `model_version`.
pub const MAX_MODEL_VERSION_LEN: usize = 200;
/// Longest `reason` of an item.
pub const MAX_REASON_LEN: usize = 200;
/// `user_id` of a stored popular list (re-addressed to the caller when served).
pub const POPULAR_USER_ID: &str = "*";

/// Why a document is refused.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum DocError {
    #[error("document is {0} bytes; at most {MAX_DOC_BYTES} are allowed")]
    TooLarge(usize),
    #[error("not a recommendation document: {0}")]
    Json(String),
    #[error("{0}")]
    Id(#[from] IdError),
    #[error("region: {0}")]
    Region(String),
    #[error("{0} items; at most {MAX_N} are allowed")]
    TooManyItems(usize),
    #[error("items[{index}] has a score that is not a finite number")]
    Score { index: usize },
    #[error("items[{index}]: {source}")]
    Item { index: usize, source: IdError },
    #[error("items[{index}] has a reason longer than {MAX_REASON_LEN} bytes")]
    Reason { index: usize },
    #[error("items[{index}].categories: {message}")]
    Categories { index: usize, message: String },
    #[error(
        "model_version is longer than {MAX_MODEL_VERSION_LEN} bytes or has control characters"
    )]
    ModelVersion,
    #[error("an item's list names both `list` and `item_id`, with `user_id` \"*\"")]
    ItemList,
    #[error("variant must be 1 to {MAX_VARIANT_LEN} of a-z A-Z 0-9 - _")]
    Variant,
}

/// Which list of an item a document holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ItemList {
    /// Items like this one (item-to-item neighbours of the model, or by content).
    Similar,
    /// Items bought (or put in a cart) together with this one.
    BoughtTogether,
}

impl ItemList {
    pub const ALL: [ItemList; 2] = [ItemList::Similar, ItemList::BoughtTogether];

    /// The name in the wire (`list`), in paths (`/v1/items/{id}/{name}`) and CDN folders.
    pub fn as_str(self) -> &'static str {
        match self {
            ItemList::Similar => "similar",
            ItemList::BoughtTogether => "bought-together",
        }
    }

    /// The list a path segment names.
    pub fn from_segment(s: &str) -> Option<ItemList> {
        ItemList::ALL.into_iter().find(|l| l.as_str() == s)
    }

    /// The KV key segment of the list (`s`, `b`; a user's documents are under `u`).
    pub fn kv_segment(self) -> &'static str {
        match self {
            ItemList::Similar => "s",
            ItemList::BoughtTogether => "b",
        }
    }
}

/// Whose list a document is: a user's, or one list of an item. Every store keys
/// documents by it, and a reader checks a document it fetched is the subject's.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    User(UserId),
    Item(ItemList, ItemId),
}

impl Subject {
    /// The subject of a (validated) document.
    pub fn of(doc: &RecommendationDoc) -> Result<Subject, DocError> {
        match (&doc.list, &doc.item_id) {
            (None, None) => Ok(Subject::User(UserId::parse(&doc.user_id)?)),
            (Some(list), Some(item)) if doc.user_id == POPULAR_USER_ID => {
                Ok(Subject::Item(*list, ItemId::parse(item)?))
            }
            _ => Err(DocError::ItemList),
        }
    }

    /// `u1`, or `similar to i1`, for messages.
    pub fn describe(&self) -> String {
        match self {
            Subject::User(u) => format!("user {u}"),
            Subject::Item(list, item) => format!("{} of item {item}", list.as_str()),
        }
    }

    /// The origin's route that computes the subject's list (without query).
    pub fn origin_path(&self) -> String {
        match self {
            Subject::User(u) => format!("/v1/recommendations/{u}"),
            Subject::Item(list, item) => format!("/v1/items/{item}/{}", list.as_str()),
        }
    }

    /// The item of an item's list.
    pub fn item(&self) -> Option<&ItemId> {
        match self {
            Subject::User(_) => None,
            Subject::Item(_, i) => Some(i),
        }
    }
}

/// One recommended item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecItem {
    pub item_id: String,
    pub score: f64,
    /// Human-readable explanation ("similar to i7", "popular in europe").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The item's catalogue categories (at most
    /// [`crate::params::MAX_ITEM_CATEGORIES`], each by [`crate::params::check_category`]),
    /// so a reader can filter a stored list by `category=` without asking the origin;
    /// absent when the item has none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<String>,
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
    /// For an item's list ([`Subject::Item`]): which list; `user_id` is then `"*"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list: Option<ItemList>,
    /// For an item's list: the item it is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_id: Option<String>,
    /// The A/B experiment variant whose model made this user's list, if the user is in
    /// a running experiment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// Whether `s` is a valid variant name: 1 to [`MAX_VARIANT_LEN`] of `a-z A-Z 0-9 - _`.
pub fn is_variant_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_VARIANT_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
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

    /// Checks what a reader relies on: tenant, user (or [`POPULAR_USER_ID`]) and item ids
    /// by the id rules, a region name, at most [`MAX_N`] items with finite scores, and
    /// bounded free text.
    pub fn validate(&self) -> Result<(), DocError> {
        Tenant::parse(&self.tenant)?;
        if self.list.is_some() || self.item_id.is_some() {
            Subject::of(self)?;
        } else if self.user_id != POPULAR_USER_ID {
            UserId::parse(&self.user_id)?;
        }
        if self.variant.as_deref().is_some_and(|v| !is_variant_name(v)) {
            return Err(DocError::Variant);
        }
        Region::parse(&self.region).map_err(|e| DocError::Region(e.to_string()))?;
        if self.items.len() > MAX_N {
            return Err(DocError::TooManyItems(self.items.len()));
        }
        for (index, item) in self.items.iter().enumerate() {
            ItemId::parse(&item.item_id).map_err(|source| DocError::Item { index, source })?;
            if !item.score.is_finite() {
                return Err(DocError::Score { index });
            }
            if item
                .reason
                .as_ref()
                .is_some_and(|r| r.len() > MAX_REASON_LEN)
            {
                return Err(DocError::Reason { index });
            }
            if item.categories.len() > crate::params::MAX_ITEM_CATEGORIES {
                return Err(DocError::Categories {
                    index,
                    message: format!(
                        "{} categories; at most {} are allowed",
                        item.categories.len(),
                        crate::params::MAX_ITEM_CATEGORIES
                    ),
                });
            }
            for c in &item.categories {
                crate::params::check_category(c).map_err(|e| DocError::Categories {
                    index,
                    message: e.to_string(),
                })?;
            }
        }
        if self.model_version.len() > MAX_MODEL_VERSION_LEN
            || self.model_version.chars().any(char::is_control)
        {
            return Err(DocError::ModelVersion);
        }
        Ok(())
    }
}

/// Reads a stored document: at most [`MAX_DOC_BYTES`], strict JSON (no duplicate keys),
/// then [`RecommendationDoc::validate`].
pub fn parse_doc(bytes: &[u8]) -> Result<RecommendationDoc, DocError> {
    if bytes.len() > MAX_DOC_BYTES {
        return Err(DocError::TooLarge(bytes.len()));
    }
    let doc: RecommendationDoc =
        crate::json::from_slice(bytes).map_err(|e| DocError::Json(e.to_string()))?;
    doc.validate()?;
    Ok(doc)
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
                categories: Vec::new(),
            }],
            model_version: "2026-11-27T10:00:00Z#ease-l500".into(),
            generated_at: 1_764_237_600,
            fresh_for_s: 300,
            stale_for_s: 86_400,
            list: None,
            item_id: None,
            variant: None,
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
    fn a_valid_document_passes_and_each_broken_field_is_named() {
        assert_eq!(sample().validate(), Ok(()));
        let popular = RecommendationDoc {
            user_id: POPULAR_USER_ID.into(),
            ..sample()
        };
        assert_eq!(popular.validate(), Ok(()));
        type Breaks = fn(&mut RecommendationDoc);
        let broken: [(Breaks, &str); 11] = [
            (
                |d| d.items[0].categories = vec!["a,b".into()],
                "items[0].categories",
            ),
            (
                |d| d.items[0].categories = vec![String::new()],
                "items[0].categories",
            ),
            (
                |d| d.items[0].categories = vec!["c".into(); 21],
                "21 categories",
            ),
            (|d| d.items[0].item_id = "../../x".into(), "items[0]"),
            (|d| d.items[0].score = f64::NAN, "finite"),
            (|d| d.items[0].score = f64::INFINITY, "finite"),
            (|d| d.user_id = "a/b".into(), "user id"),
            (|d| d.tenant = "Shop".into(), "tenant"),
            (|d| d.region = "../eu".into(), "region"),
            (
                |d| d.items = vec![d.items[0].clone(); MAX_N + 1],
                "101 items",
            ),
            (|d| d.model_version = "m\u{7}".into(), "model_version"),
        ];
        for (break_it, says) in broken {
            let mut d = sample();
            break_it(&mut d);
            let e = d.validate().unwrap_err();
            assert!(e.to_string().contains(says), "{e} should mention {says}");
        }
    }

    #[test]
    fn parse_doc_refuses_oversize_duplicate_keys_and_invalid_documents() {
        let text = serde_json::to_vec(&sample()).unwrap();
        assert_eq!(parse_doc(&text).unwrap(), sample());
        let mut big = text.clone();
        big.truncate(big.len() - 1);
        big.extend(format!(r#","pad":"{}"}}"#, "x".repeat(MAX_DOC_BYTES)).bytes());
        assert!(matches!(parse_doc(&big), Err(DocError::TooLarge(_))));
        let dup =
            String::from_utf8(text.clone())
                .unwrap()
                .replacen("{", r#"{"tenant":"other","#, 1);
        assert!(matches!(parse_doc(dup.as_bytes()), Err(DocError::Json(_))));
        let bad = String::from_utf8(text).unwrap().replace("i42", "../../x");
        assert!(matches!(
            parse_doc(bad.as_bytes()),
            Err(DocError::Item { .. })
        ));
    }

    #[test]
    fn categories_are_optional_on_the_wire_and_skipped_when_empty() {
        let mut d = sample();
        let text = serde_json::to_string(&d).unwrap();
        assert!(!text.contains("categories"), "{text}");
        d.items[0].categories = vec!["books".into(), "Science Fiction".into()];
        let text = serde_json::to_string(&d).unwrap();
        assert!(text.contains(r#""categories":["books","Science Fiction"]"#));
        assert_eq!(parse_doc(text.as_bytes()).unwrap(), d);
    }

    #[test]
    fn an_items_list_names_its_list_and_item_and_no_user() {
        let similar = RecommendationDoc {
            user_id: POPULAR_USER_ID.into(),
            list: Some(ItemList::Similar),
            item_id: Some("i7".into()),
            ..sample()
        };
        assert_eq!(similar.validate(), Ok(()));
        assert_eq!(
            Subject::of(&similar).unwrap(),
            Subject::Item(ItemList::Similar, ItemId::parse("i7").unwrap())
        );
        let text = serde_json::to_string(&similar).unwrap();
        assert!(
            text.contains(r#""list":"similar","item_id":"i7""#),
            "{text}"
        );
        assert_eq!(parse_doc(text.as_bytes()).unwrap(), similar);
        assert_eq!(
            Subject::of(&sample()).unwrap(),
            Subject::User(UserId::parse("u123").unwrap())
        );
        for broken in [
            RecommendationDoc {
                list: None,
                ..similar.clone()
            },
            RecommendationDoc {
                item_id: None,
                ..similar.clone()
            },
            RecommendationDoc {
                user_id: "u1".into(),
                ..similar.clone()
            },
        ] {
            assert_eq!(broken.validate(), Err(DocError::ItemList));
        }
        let bad_item = RecommendationDoc {
            item_id: Some("../x".into()),
            ..similar
        };
        assert!(matches!(bad_item.validate(), Err(DocError::Id(_))));
        assert_eq!(
            ItemList::from_segment("bought-together"),
            Some(ItemList::BoughtTogether)
        );
        assert_eq!(ItemList::from_segment("other"), None);
    }

    #[test]
    fn a_variant_is_a_short_name() {
        let ok = RecommendationDoc {
            variant: Some("ease-B_2".into()),
            ..sample()
        };
        assert_eq!(ok.validate(), Ok(()));
        for bad in ["", "a b", "x/y", &"v".repeat(MAX_VARIANT_LEN + 1)] {
            let d = RecommendationDoc {
                variant: Some(bad.to_string()),
                ..sample()
            };
            assert_eq!(d.validate(), Err(DocError::Variant), "{bad:?}");
        }
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
