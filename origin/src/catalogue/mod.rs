//! The item catalogue and the users' attributes: what a shop tells the recommender
//! about its items (title, description, categories, tags, price, availability, a small
//! JSON object) and its users (country, segment), as the API and `origin import-items`
//! take them, and the rules every one of them must pass before it is stored.
//!
//! Ids follow the contract's rules ([`contract::ItemId`], [`contract::UserId`]). The
//! bounds ([`MAX_TITLE_CHARS`] and the rest) keep a document small and every value
//! storable on both backends (PostgreSQL refuses NUL characters in text and JSON).
//! Validation is pure: it turns an [`ItemInput`] into an [`ItemRow`] or says which
//! field is wrong ([`FieldError`]); callers add where (`items[3]`, `FILE:LINE`).
//!
//! # Layout
//! - [`ItemInput`], [`UserInput`]: what a request or a file line says (every field but
//!   the id optional); [`validate_item`], [`validate_user`] check and complete them.
//! - [`ItemDoc`], [`UserDoc`]: what `GET` answers.
//! - [`merge_patch`]: JSON merge patch (RFC 7396), for `PATCH`.
//! - [`CatalogueError`]: every way a catalogue request fails, with status and code.
//! - `import`: `origin import-items` (CSV or JSON Lines).

pub mod import;

use contract::{IdError, ItemId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use thiserror::Error;

use crate::store::{ItemRow, UserRow};

/// Longest title, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// Longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 5_000;
/// Most categories, and most tags, of one item.
pub const MAX_LABELS: usize = 20;
/// Longest category or tag, in characters.
pub const MAX_LABEL_CHARS: usize = 64;
/// Largest `attributes` object, serialized, in bytes.
pub const MAX_ATTRIBUTES_BYTES: usize = 4 * 1024;
/// Most items (or users) in one bulk request.
pub const MAX_BULK: usize = 1_000;
/// Longest user segment, in bytes.
pub const MAX_SEGMENT_LEN: usize = 64;
/// Latest `created_at` accepted (the year 3000), as `origin import` has it.
pub const MAX_CREATED_AT: i64 = 32_503_680_000;

/// An item as a request body or a line of a file gives it. Unknown fields are refused
/// (a typo never passes silently). Absent fields take their defaults: empty text and
/// lists, no price, available, created now, no attributes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemInput {
    /// Required in bulk bodies and files; in `PUT /v1/items/{id}`, optional but equal to
    /// the path's id when given.
    #[serde(default)]
    pub item_id: Option<String>,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub categories: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub price: Option<f64>,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub available: Option<bool>,
    #[serde(default)]
    pub created_at: Option<i64>,
    #[serde(default)]
    pub attributes: Option<Map<String, Value>>,
}

/// A user as a request body or a file gives them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserInput {
    /// As [`ItemInput::item_id`].
    #[serde(default)]
    pub user_id: Option<String>,
    /// ISO 3166-1 alpha-2, upper-case (`DE`).
    #[serde(default)]
    pub country: Option<String>,
    /// A short id-like label (`vip`, `b2b`): 1 to [`MAX_SEGMENT_LEN`] bytes of
    /// `A-Z a-z 0-9 . _ @ -`.
    #[serde(default)]
    pub segment: Option<String>,
}

/// An item as `GET /v1/items/{id}` answers it (every field present).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemDoc {
    pub item_id: String,
    pub title: String,
    pub description: String,
    pub categories: Vec<String>,
    pub tags: Vec<String>,
    pub price: Option<f64>,
    pub currency: Option<String>,
    pub available: bool,
    pub created_at: i64,
    pub attributes: Map<String, Value>,
}

impl From<ItemRow> for ItemDoc {
    fn from(r: ItemRow) -> Self {
        ItemDoc {
            item_id: r.item_id,
            title: r.title,
            description: r.description,
            categories: r.categories,
            tags: r.tags,
            price: r.price,
            currency: r.currency,
            available: r.available,
            created_at: r.created_at,
            attributes: r.attributes,
        }
    }
}

/// A user as `GET /v1/users/{id}` answers them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserDoc {
    pub user_id: String,
    pub country: Option<String>,
    pub segment: Option<String>,
}

impl From<UserRow> for UserDoc {
    fn from(r: UserRow) -> Self {
        UserDoc {
            user_id: r.user_id,
            country: r.country,
            segment: r.segment,
        }
    }
}

/// One field that breaks a rule: which (`title`, `categories[2]`, `item_id`) and why.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{}{message}", field_prefix(.field))]
pub struct FieldError {
    /// The field's path in the document; empty when the document as a whole is wrong.
    pub field: String,
    pub message: String,
    /// The stable error code (`invalid_item`, `invalid_item_id`, …).
    pub code: &'static str,
}

fn field_prefix(field: &str) -> String {
    match field {
        "" => String::new(),
        f => format!("{f}: "),
    }
}

impl FieldError {
    pub(crate) fn new(
        code: &'static str,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
            code,
        }
    }

    /// The error of a document that serde could not read, at the path it stopped.
    pub fn from_serde(
        code: &'static str,
        e: serde_path_to_error::Error<serde_json::Error>,
    ) -> Self {
        let path = e.path().to_string();
        let field = if path == "." { String::new() } else { path };
        FieldError::new(code, field, e.into_inner().to_string())
    }
}

/// Reads one document (an item or a user) from JSON: it must be an object (serde would
/// also take an array for a struct), and an error names the field serde stopped at.
pub fn read_document<T: serde::de::DeserializeOwned>(
    value: Value,
    code: &'static str,
) -> Result<T, FieldError> {
    if !value.is_object() {
        return Err(FieldError::new(code, "", "is not a JSON object"));
    }
    serde_path_to_error::deserialize(value).map_err(|e| FieldError::from_serde(code, e))
}

/// Why a catalogue request failed.
#[derive(Debug, Error)]
pub enum CatalogueError {
    /// One item of a request breaks a rule; `index` is its place in a bulk body.
    #[error("{}{error}", at(*.index, "items"))]
    InvalidItem {
        index: Option<usize>,
        error: FieldError,
    },
    /// One user of a request breaks a rule.
    #[error("{}{error}", at(*.index, "users"))]
    InvalidUser {
        index: Option<usize>,
        error: FieldError,
    },
    #[error("at most {max} {what} per request, not {count}", max = MAX_BULK)]
    TooMany { what: &'static str, count: usize },
    #[error("no item {0:?} in the catalogue")]
    UnknownItem(String),
    #[error("no user {0:?}")]
    UnknownUser(String),
}

fn at(index: Option<usize>, list: &str) -> String {
    match index {
        Some(i) => format!("{list}[{i}]."),
        None => String::new(),
    }
}

impl CatalogueError {
    /// The HTTP status: 400 invalid input, 404 unknown item or user, 413 too many.
    pub fn status(&self) -> u16 {
        match self {
            CatalogueError::InvalidItem { .. } | CatalogueError::InvalidUser { .. } => 400,
            CatalogueError::TooMany { .. } => 413,
            CatalogueError::UnknownItem(_) | CatalogueError::UnknownUser(_) => 404,
        }
    }

    /// The stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            CatalogueError::InvalidItem { error, .. }
            | CatalogueError::InvalidUser { error, .. } => error.code,
            CatalogueError::TooMany { what: "users", .. } => "too_many_users",
            CatalogueError::TooMany { .. } => "too_many_items",
            CatalogueError::UnknownItem(_) => "unknown_item",
            CatalogueError::UnknownUser(_) => "unknown_user",
        }
    }
}

const INVALID_ITEM: &str = "invalid_item";
const INVALID_USER: &str = "invalid_user";

/// The id of a document: the path's (`path`), which a given `item_id` must equal, or
/// the document's own, which must then be there.
fn resolve_id<T>(
    given: Option<&str>,
    path: Option<&T>,
    parse: fn(&str) -> Result<T, IdError>,
    as_str: fn(&T) -> &str,
    field: &str,
    invalid: &'static str,
) -> Result<T, FieldError>
where
    T: Clone,
{
    let id_error = |e: IdError| FieldError::new(e.code(), field, e.to_string());
    match (given, path) {
        (Some(g), Some(p)) if g != as_str(p) => Err(FieldError::new(
            invalid,
            field,
            format!("{g:?} is not the id of the path ({:?})", as_str(p)),
        )),
        (_, Some(p)) => Ok(p.clone()),
        (Some(g), None) => parse(g).map_err(id_error),
        (None, None) => Err(FieldError::new(invalid, field, "is required")),
    }
}

/// A text of at most `max` characters, with no control character but those `allowed`.
fn check_text(field: &str, text: &str, max: usize, allowed: &[char]) -> Result<(), FieldError> {
    let n = text.chars().count();
    if n > max {
        return Err(FieldError::new(
            INVALID_ITEM,
            field,
            format!("is {n} characters long; at most {max} are allowed"),
        ));
    }
    if let Some((at, c)) = text
        .char_indices()
        .find(|(_, c)| c.is_control() && !allowed.contains(c))
    {
        return Err(FieldError::new(
            INVALID_ITEM,
            field,
            format!("has a control character ({c:?} at byte {at})"),
        ));
    }
    Ok(())
}

/// Categories or tags: at most [`MAX_LABELS`], each trimmed, 1 to [`MAX_LABEL_CHARS`]
/// characters, no control character, no `,` (the stored lists' separator) and no `|`
/// (the CSV files' list separator).
fn check_labels(field: &str, labels: Vec<String>) -> Result<Vec<String>, FieldError> {
    if labels.len() > MAX_LABELS {
        return Err(FieldError::new(
            INVALID_ITEM,
            field,
            format!(
                "has {} entries; at most {MAX_LABELS} are allowed",
                labels.len()
            ),
        ));
    }
    labels
        .into_iter()
        .enumerate()
        .map(|(k, label)| {
            let at = format!("{field}[{k}]");
            let label = label.trim().to_owned();
            if label.is_empty() {
                return Err(FieldError::new(INVALID_ITEM, at, "is empty"));
            }
            check_text(&at, &label, MAX_LABEL_CHARS, &[])?;
            if let Some(c) = label.chars().find(|c| matches!(c, ',' | '|')) {
                return Err(FieldError::new(
                    INVALID_ITEM,
                    at,
                    format!("may not contain {c:?} (a list separator)"),
                ));
            }
            Ok(label)
        })
        .collect()
}

/// Whether a JSON value holds a NUL character in any key or string (PostgreSQL's
/// `jsonb` cannot store one).
fn has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(has_nul),
        Value::Object(m) => m.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// Checks an item and completes it with its defaults; `path_id` is the id of the
/// request's path (`PUT /v1/items/{id}`), `now` the time `created_at` defaults to.
pub fn validate_item(
    input: ItemInput,
    path_id: Option<&ItemId>,
    now: i64,
) -> Result<ItemRow, FieldError> {
    let id = resolve_id(
        input.item_id.as_deref(),
        path_id,
        ItemId::parse,
        ItemId::as_str,
        "item_id",
        INVALID_ITEM,
    )?;
    check_text("title", &input.title, MAX_TITLE_CHARS, &[])?;
    check_text(
        "description",
        &input.description,
        MAX_DESCRIPTION_CHARS,
        &['\n', '\r', '\t'],
    )?;
    let categories = check_labels("categories", input.categories)?;
    let tags = check_labels("tags", input.tags)?;
    if let Some(p) = input.price {
        if !p.is_finite() || p < 0.0 {
            return Err(FieldError::new(
                INVALID_ITEM,
                "price",
                format!("{p} is not a finite number of at least 0"),
            ));
        }
    }
    if let Some(c) = &input.currency {
        if c.len() != 3 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
            let shown: String = c.chars().take(10).collect();
            return Err(FieldError::new(
                INVALID_ITEM,
                "currency",
                format!("{shown:?} is not an ISO 4217 code of three upper-case letters (EUR)"),
            ));
        }
        if input.price.is_none() {
            return Err(FieldError::new(
                INVALID_ITEM,
                "currency",
                "is given without a price",
            ));
        }
    }
    let created_at = input.created_at.unwrap_or(now);
    if !(0..=MAX_CREATED_AT).contains(&created_at) {
        return Err(FieldError::new(
            INVALID_ITEM,
            "created_at",
            format!("{created_at} is not a unix time in seconds between 1970 and 3000"),
        ));
    }
    let attributes = input.attributes.unwrap_or_default();
    // Serializing a map of JSON values cannot fail; were it to, the map is refused.
    let size = serde_json::to_string(&attributes).map_or(usize::MAX, |s| s.len());
    if size > MAX_ATTRIBUTES_BYTES {
        return Err(FieldError::new(
            INVALID_ITEM,
            "attributes",
            format!("is {size} bytes as JSON; at most {MAX_ATTRIBUTES_BYTES} are allowed"),
        ));
    }
    if attributes
        .iter()
        .any(|(k, v)| k.contains('\0') || has_nul(v))
    {
        return Err(FieldError::new(
            INVALID_ITEM,
            "attributes",
            "has a NUL character in a key or a string",
        ));
    }
    Ok(ItemRow {
        item_id: id.as_str().to_owned(),
        title: input.title,
        description: input.description,
        categories,
        tags,
        price: input.price,
        currency: input.currency,
        available: input.available.unwrap_or(true),
        created_at,
        attributes,
    })
}

/// Checks a user; `path_id` as in [`validate_item`].
pub fn validate_user(input: UserInput, path_id: Option<&UserId>) -> Result<UserRow, FieldError> {
    let id = resolve_id(
        input.user_id.as_deref(),
        path_id,
        UserId::parse,
        UserId::as_str,
        "user_id",
        INVALID_USER,
    )?;
    if let Some(c) = &input.country {
        if c.len() != 2 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
            let shown: String = c.chars().take(10).collect();
            return Err(FieldError::new(
                INVALID_USER,
                "country",
                format!("{shown:?} is not an ISO 3166-1 code of two upper-case letters (DE)"),
            ));
        }
    }
    if let Some(s) = &input.segment {
        let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-');
        if s.is_empty() || s.len() > MAX_SEGMENT_LEN || !s.chars().all(ok_char) {
            let shown: String = s.chars().take(MAX_SEGMENT_LEN + 1).collect();
            return Err(FieldError::new(
                INVALID_USER,
                "segment",
                format!("{shown:?} is not 1 to {MAX_SEGMENT_LEN} bytes of A-Z a-z 0-9 . _ @ -"),
            ));
        }
    }
    Ok(UserRow {
        user_id: id.as_str().to_owned(),
        country: input.country,
        segment: input.segment,
    })
}

/// Applies a JSON merge patch (RFC 7396) to `target`: members of an object patch are
/// merged recursively, `null` removes a member, anything else replaces the target.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(map) = target {
        for (key, value) in patch {
            if value.is_null() {
                map.remove(key);
            } else {
                merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_764_000_000;

    fn item(v: Value) -> Result<ItemRow, FieldError> {
        let input: ItemInput = serde_json::from_value(v).map_err(|e| FieldError {
            field: String::new(),
            message: e.to_string(),
            code: "serde",
        })?;
        validate_item(input, None, NOW)
    }

    #[test]
    fn a_full_item_is_kept_as_given_and_a_bare_one_gets_its_defaults() {
        let row = item(json!({
            "item_id": "sku-1", "title": "Blue Lantern", "description": "Brass.\nFor camping.",
            "categories": [" outdoor ", "lights"], "tags": ["brass"], "price": 19.5,
            "currency": "EUR", "available": false, "created_at": 5,
            "attributes": {"colour": "blue", "sizes": [1, 2]}
        }))
        .unwrap();
        assert_eq!(row.categories, ["outdoor", "lights"], "labels are trimmed");
        assert_eq!(row.price, Some(19.5));
        assert!(!row.available);
        assert_eq!(row.attributes["colour"], "blue");
        let bare = item(json!({"item_id": "sku-2"})).unwrap();
        assert!(bare.available);
        assert_eq!(bare.created_at, NOW);
        assert!(bare.attributes.is_empty() && bare.price.is_none());
    }

    #[test]
    fn every_rule_names_its_field() {
        let long = |n: usize| "x".repeat(n);
        let attrs = json!({ "k": long(MAX_ATTRIBUTES_BYTES) });
        let cases = [
            (json!({"title": "t"}), "item_id", "invalid_item"),
            (json!({"item_id": "a/b"}), "item_id", "invalid_item_id"),
            (
                json!({"item_id": "i", "title": long(201)}),
                "title",
                "invalid_item",
            ),
            (
                json!({"item_id": "i", "title": "a\u{7}b"}),
                "title",
                "invalid_item",
            ),
            (
                json!({"item_id": "i", "description": long(5001)}),
                "description",
                "invalid_item",
            ),
            (
                json!({"item_id": "i", "categories": vec!["c"; 21]}),
                "categories",
                "invalid_item",
            ),
            (
                json!({"item_id": "i", "tags": ["ok", long(65)]}),
                "tags[1]",
                "invalid_item",
            ),
            (
                json!({"item_id": "i", "tags": ["a,b"]}),
                "tags[0]",
                "invalid_item",
            ),
            (
                json!({"item_id": "i", "tags": ["a|b"]}),
                "tags[0]",
                "invalid_item",
            ),
            (
                json!({"item_id": "i", "categories": ["  "]}),
                "categories[0]",
                "invalid_item",
            ),
            (
                json!({"item_id": "i", "price": -1.0}),
                "price",
                "invalid_item",
            ),
            (
                json!({"item_id": "i", "price": 1, "currency": "eur"}),
                "currency",
                "invalid_item",
            ),
            (
                json!({"item_id": "i", "currency": "EUR"}),
                "currency",
                "invalid_item",
            ),
            (
                json!({"item_id": "i", "created_at": -5}),
                "created_at",
                "invalid_item",
            ),
            (
                json!({"item_id": "i", "attributes": attrs}),
                "attributes",
                "invalid_item",
            ),
            (
                json!({"item_id": "i", "attributes": {"a": ["\u{0}"]}}),
                "attributes",
                "invalid_item",
            ),
        ];
        for (doc, field, code) in cases {
            let e = item(doc.clone()).expect_err(&doc.to_string());
            assert_eq!((e.field.as_str(), e.code), (field, code), "{doc}: {e}");
        }
    }

    #[test]
    fn the_id_of_the_path_wins_and_a_different_one_in_the_body_is_refused() {
        let path = ItemId::parse("p1").unwrap();
        let row = validate_item(ItemInput::default(), Some(&path), NOW).unwrap();
        assert_eq!(row.item_id, "p1");
        let other = ItemInput {
            item_id: Some("p2".into()),
            ..Default::default()
        };
        let e = validate_item(other, Some(&path), NOW).unwrap_err();
        assert_eq!(e.field, "item_id");
    }

    #[test]
    fn users_take_an_upper_case_country_and_an_id_like_segment() {
        let ok = UserInput {
            user_id: Some("u1".into()),
            country: Some("DE".into()),
            segment: Some("vip".into()),
        };
        assert_eq!(
            validate_user(ok, None).unwrap().segment.as_deref(),
            Some("vip")
        );
        for (country, segment, field) in [
            (Some("de"), None, "country"),
            (Some("DEU"), None, "country"),
            (None, Some(""), "segment"),
            (None, Some("a b"), "segment"),
        ] {
            let input = UserInput {
                user_id: Some("u1".into()),
                country: country.map(Into::into),
                segment: segment.map(Into::into),
            };
            assert_eq!(validate_user(input, None).unwrap_err().field, field);
        }
    }

    #[test]
    fn a_merge_patch_replaces_removes_and_merges_nested_objects() {
        let mut doc = json!({"title": "a", "price": 3, "attributes": {"x": 1, "y": 2}});
        merge_patch(
            &mut doc,
            &json!({"title": "b", "price": null, "attributes": {"y": null, "z": 3}}),
        );
        assert_eq!(doc, json!({"title": "b", "attributes": {"x": 1, "z": 3}}));
    }

    #[test]
    fn errors_say_where_in_a_bulk_body() {
        let e = CatalogueError::InvalidItem {
            index: Some(3),
            error: FieldError::new(INVALID_ITEM, "price", "is negative"),
        };
        assert_eq!(e.to_string(), "items[3].price: is negative");
        assert_eq!((e.status(), e.code()), (400, "invalid_item"));
    }
}
