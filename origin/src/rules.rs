//! Per-tenant business rules: what a shop decides about its lists on top of the
//! model: hide items or categories, pin items at a position, boost items or
//! categories, at most M items per category in a list (diversity), and fatigue (an
//! item the user was shown K times in the last D days without interacting with it is
//! not shown again).
//!
//! Rules are data: a JSON document ([`Rules`], strict: unknown fields and duplicate
//! keys refused), validated into a [`RuleSet`] (ids and categories by the contract's
//! rules, bounded counts and ranges) before it is stored or applied. The tenant's
//! current rules live in a [`LiveRules`] cell that every snapshot of the tenant shares
//! (handed on at each retrain, as the live catalogue writes are), so a change applies
//! to the next answer without retraining.
//!
//! **Where they apply.** Every document a snapshot builds (an origin answer, a batch,
//! publish on miss, the republisher, `origin publish`, the scheduled full publish,
//! popular lists) goes through them, so a published document and an origin answer
//! agree:
//! 1. hidden items and categories are masked before the model ranks (as unavailable
//!    items are), so the list still holds `n` items; so are the user's fatigued
//!    items ([`Fatigued`], read from the impression log);
//! 2. the model is asked for more candidates than `n` ([`RuleSet::candidates`]);
//! 3. [`RuleSet::arrange`] (pure) boosts, re-sorts, places the pins and keeps at most M
//!    items per category, then cuts to `n`.
//!
//! **Semantics.**
//! - Hiding wins over everything: a hidden item is never served, pinned or not.
//! - A boost factor multiplies a positive score and divides a negative one (so a
//!   factor above 1 always raises an item, below 1 always lowers it); an item's factor
//!   and the factors of each of its categories multiply. Boosts reorder the candidates
//!   the model ranked; they do not bring in items from beyond them.
//! - A pin puts an item at a position (1 is the first) in every list it may be in:
//!   known to the model, served (available, not hidden, of the asked category, not
//!   fatigued) and not already in the user's history. A pin past the end of a short
//!   list lands at its end. A pinned item takes the score of the item it displaced, so
//!   scores stay in order; its reason is `pinned`.
//! - Diversity counts every category of an item (an item of `a` and `b` needs room in
//!   both) and counts pins first; pins are kept even when they alone exceed M. A list
//!   may then hold fewer than `n` items. With `category=`, every item shares that
//!   category, so the answer holds at most M items (the edge filters the stored list
//!   and gets the same).
//! - Fatigue counts a user's impressions (`recommendation_viewed`) of an item in the
//!   last D days after their last interaction with it (a click, or any other weighted
//!   event); K of them keep the item out of their lists until the impressions age out
//!   or they interact with it. Under a fatigue rule, reported impressions touch their
//!   users in the republisher, so the published document follows within seconds.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};

use contract::params::check_category;
use contract::{ItemId, RecItem};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Most ids in `hide_items`, categories in `hide_categories`, and entries in each of
/// `boost.items` and `boost.categories`.
pub const MAX_RULE_IDS: usize = 1000;
/// Most pinned items.
pub const MAX_PINS: usize = 100;
/// Smallest boost factor (a factor below 1 lowers an item).
pub const MIN_BOOST: f64 = 0.01;
/// Largest boost factor.
pub const MAX_BOOST: f64 = 100.0;
/// Longest fatigue window, in days.
pub const MAX_FATIGUE_DAYS: u32 = 90;
/// Most impressions a fatigue rule may count.
pub const MAX_FATIGUE_IMPRESSIONS: u32 = 1000;
/// Most candidates the model is asked for when rules reorder a list.
pub const MAX_CANDIDATES: usize = 500;
/// Largest rules body, in bytes (every list at its bound with long ids fits).
pub const MAX_RULES_BODY_BYTES: usize = 1024 * 1024;
/// Most fatigued items kept per user (the first in id order).
pub const MAX_FATIGUED_PER_USER: usize = 1000;
/// Most (user, item) pairs one read of every user's fatigued items keeps.
pub const MAX_FATIGUED_PAIRS: usize = 1_000_000;

/// The rules document, as `PUT /v1/admin/rules` takes it and `GET` answers it.
/// Every field is optional; an empty document is no rules.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    /// Items never served.
    #[serde(default)]
    pub hide_items: Vec<String>,
    /// Items of any of these categories are never served.
    #[serde(default)]
    pub hide_categories: Vec<String>,
    /// Item → position in the list (1 is the first).
    #[serde(default)]
    pub pin: BTreeMap<String, u64>,
    #[serde(default)]
    pub boost: Boost,
    /// At most this many items of one category in a list.
    #[serde(default)]
    pub max_per_category: Option<u64>,
    #[serde(default)]
    pub fatigue: Option<Fatigue>,
}

/// Score factors of items and of categories.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Boost {
    #[serde(default)]
    pub items: BTreeMap<String, f64>,
    #[serde(default)]
    pub categories: BTreeMap<String, f64>,
}

/// Not shown again: an item shown `impressions` times in the last `days` days
/// without an interaction since.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fatigue {
    pub impressions: u32,
    pub days: u32,
}

impl Fatigue {
    /// The first unix second of the window ending at `now`.
    pub fn since(&self, now: i64) -> i64 {
        now.saturating_sub(i64::from(self.days) * 86_400)
    }
}

/// Why a rules document was refused.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum RulesError {
    /// Not JSON, a duplicate key, an unknown field, a wrong type.
    #[error("rules: {0}")]
    Body(String),
    /// A field breaks its rule.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// More entries than a field may hold.
    #[error("{field} has {count} entries; at most {max} are allowed")]
    TooMany {
        field: &'static str,
        count: usize,
        max: usize,
    },
}

impl RulesError {
    /// 413 for too many entries, else 400.
    pub fn status(&self) -> u16 {
        match self {
            RulesError::TooMany { .. } => 413,
            _ => 400,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            RulesError::TooMany { .. } => "too_many_rules",
            _ => "invalid_rules",
        }
    }
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> RulesError {
    RulesError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

fn bounded(field: &'static str, count: usize, max: usize) -> Result<(), RulesError> {
    match count > max {
        true => Err(RulesError::TooMany { field, count, max }),
        false => Ok(()),
    }
}

fn check_item(field: String, id: &str) -> Result<(), RulesError> {
    ItemId::parse(id)
        .map(|_| ())
        .map_err(|e| invalid(field, e.to_string()))
}

fn check_cat(field: String, c: &str) -> Result<(), RulesError> {
    check_category(c).map_err(|e| invalid(field, e.to_string()))
}

fn check_factor(field: String, f: f64) -> Result<(), RulesError> {
    match f.is_finite() && (MIN_BOOST..=MAX_BOOST).contains(&f) {
        true => Ok(()),
        false => Err(invalid(
            field,
            format!("a boost factor is a number from {MIN_BOOST} to {MAX_BOOST}, not {f}"),
        )),
    }
}

impl Rules {
    /// Parses and validates a body: strict JSON ([`contract::json`]), then
    /// [`RuleSet::new`].
    pub fn parse(bytes: &[u8]) -> Result<RuleSet, RulesError> {
        let body = |e: serde_json::Error| RulesError::Body(e.to_string());
        let value: serde_json::Value = contract::json::from_slice(bytes).map_err(body)?;
        if !value.is_object() {
            return Err(RulesError::Body("the rules are one JSON object".into()));
        }
        RuleSet::new(serde_json::from_value(value).map_err(body)?)
    }

    /// Whether the document sets no rule.
    pub fn is_empty(&self) -> bool {
        *self == Rules::default()
    }
}

/// Validated rules, with lookups ready for applying them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuleSet {
    doc: Rules,
    hidden_items: HashSet<String>,
    hidden_categories: HashSet<String>,
    boost_items: HashMap<String, f64>,
    boost_categories: HashMap<String, f64>,
    /// (0-based position, item), by position.
    pins: Vec<(usize, String)>,
    max_per_category: Option<usize>,
}

impl RuleSet {
    /// Checks `doc`: ids by [`ItemId`]'s rule and categories by
    /// [`check_category`], no repeated id, at most [`MAX_RULE_IDS`] of each list and
    /// [`MAX_PINS`] pins, positions 1 to [`contract::MAX_N`] and no two pins at one,
    /// factors [`MIN_BOOST`] to [`MAX_BOOST`], `max_per_category` 1 to
    /// [`contract::MAX_N`], fatigue 1 to [`MAX_FATIGUE_IMPRESSIONS`] impressions in 1
    /// to [`MAX_FATIGUE_DAYS`] days.
    pub fn new(doc: Rules) -> Result<Self, RulesError> {
        bounded("hide_items", doc.hide_items.len(), MAX_RULE_IDS)?;
        bounded("hide_categories", doc.hide_categories.len(), MAX_RULE_IDS)?;
        bounded("pin", doc.pin.len(), MAX_PINS)?;
        bounded("boost.items", doc.boost.items.len(), MAX_RULE_IDS)?;
        bounded("boost.categories", doc.boost.categories.len(), MAX_RULE_IDS)?;
        let mut hidden_items = HashSet::with_capacity(doc.hide_items.len());
        for (i, id) in doc.hide_items.iter().enumerate() {
            check_item(format!("hide_items[{i}]"), id)?;
            if !hidden_items.insert(id.clone()) {
                return Err(invalid(
                    format!("hide_items[{i}]"),
                    format!("{id:?} is listed twice"),
                ));
            }
        }
        let mut hidden_categories = HashSet::with_capacity(doc.hide_categories.len());
        for (i, c) in doc.hide_categories.iter().enumerate() {
            check_cat(format!("hide_categories[{i}]"), c)?;
            if !hidden_categories.insert(c.clone()) {
                return Err(invalid(
                    format!("hide_categories[{i}]"),
                    format!("{c:?} is listed twice"),
                ));
            }
        }
        let mut pins: Vec<(usize, String)> = Vec::with_capacity(doc.pin.len());
        let mut at: HashMap<u64, &str> = HashMap::new();
        for (id, &position) in &doc.pin {
            check_item(format!("pin.{id}"), id)?;
            if !(1..=contract::MAX_N as u64).contains(&position) {
                return Err(invalid(
                    format!("pin.{id}"),
                    format!(
                        "a position is 1 to {} (1 is the first), not {position}",
                        contract::MAX_N
                    ),
                ));
            }
            if let Some(other) = at.insert(position, id) {
                return Err(invalid(
                    format!("pin.{id}"),
                    format!("position {position} is also {other:?}'s"),
                ));
            }
            pins.push((position as usize - 1, id.clone()));
        }
        pins.sort();
        for (id, &f) in &doc.boost.items {
            check_item(format!("boost.items.{id}"), id)?;
            check_factor(format!("boost.items.{id}"), f)?;
        }
        for (c, &f) in &doc.boost.categories {
            check_cat(format!("boost.categories.{c}"), c)?;
            check_factor(format!("boost.categories.{c}"), f)?;
        }
        let max_per_category = match doc.max_per_category {
            None => None,
            Some(m) if (1..=contract::MAX_N as u64).contains(&m) => Some(m as usize),
            Some(m) => {
                return Err(invalid(
                    "max_per_category",
                    format!("is 1 to {}, not {m}", contract::MAX_N),
                ))
            }
        };
        if let Some(f) = &doc.fatigue {
            if !(1..=MAX_FATIGUE_IMPRESSIONS).contains(&f.impressions) {
                return Err(invalid(
                    "fatigue.impressions",
                    format!("is 1 to {MAX_FATIGUE_IMPRESSIONS}, not {}", f.impressions),
                ));
            }
            if !(1..=MAX_FATIGUE_DAYS).contains(&f.days) {
                return Err(invalid(
                    "fatigue.days",
                    format!("is 1 to {MAX_FATIGUE_DAYS}, not {}", f.days),
                ));
            }
        }
        Ok(RuleSet {
            boost_items: doc.boost.items.clone().into_iter().collect(),
            boost_categories: doc.boost.categories.clone().into_iter().collect(),
            hidden_items,
            hidden_categories,
            pins,
            max_per_category,
            doc,
        })
    }

    /// The document these rules came from.
    pub fn doc(&self) -> &Rules {
        &self.doc
    }

    /// Whether no rule is set.
    pub fn is_empty(&self) -> bool {
        self.doc.is_empty()
    }

    /// The fatigue rule, when set.
    pub fn fatigue(&self) -> Option<Fatigue> {
        self.doc.fatigue
    }

    /// Whether some item or category is hidden.
    pub fn hides_any(&self) -> bool {
        !self.hidden_items.is_empty() || !self.hidden_categories.is_empty()
    }

    /// Whether an item of these categories is hidden.
    pub fn hides(&self, item: &str, categories: &[String]) -> bool {
        self.hidden_items.contains(item) || self.hides_category(categories)
    }

    /// Whether one of these categories is hidden.
    pub fn hides_category(&self, categories: &[String]) -> bool {
        !self.hidden_categories.is_empty()
            && categories
                .iter()
                .any(|c| self.hidden_categories.contains(c))
    }

    /// The hidden items (by id).
    pub fn hidden_items(&self) -> impl Iterator<Item = &str> {
        self.hidden_items.iter().map(String::as_str)
    }

    /// Whether categories are hidden (every item's categories must be looked at).
    pub fn hides_categories(&self) -> bool {
        !self.hidden_categories.is_empty()
    }

    /// The pinned items, (0-based position, id), by position.
    pub fn pins(&self) -> &[(usize, String)] {
        &self.pins
    }

    /// Whether the rules reorder or thin a ranked list (boost, pins, diversity).
    pub fn rearranges(&self) -> bool {
        !self.boost_items.is_empty()
            || !self.boost_categories.is_empty()
            || !self.pins.is_empty()
            || self.max_per_category.is_some()
    }

    /// How many candidates to ask the model for, for a list of `n`: `n` when nothing
    /// reorders it, else three times `n` and at least `n + 50` (at most
    /// [`MAX_CANDIDATES`]), so boosted items from lower down and items past a full
    /// category can still come in.
    pub fn candidates(&self, n: usize) -> usize {
        match self.rearranges() {
            false => n,
            true => (n * 3).max(n + 50).min(MAX_CANDIDATES).max(n),
        }
    }

    /// The factor of an item with these categories (1: no boost).
    fn factor(&self, item: &RecItem) -> f64 {
        let mut f = self.boost_items.get(&item.item_id).copied().unwrap_or(1.0);
        if !self.boost_categories.is_empty() {
            for c in &item.categories {
                if let Some(g) = self.boost_categories.get(c) {
                    f *= g;
                }
            }
        }
        f
    }

    /// Applies boosts, pins and diversity to the model's `candidates` (best first,
    /// already without hidden, unavailable, seen and fatigued items) and cuts the list
    /// to `n`. `pinned` holds the pinned items that may be in this list, each with its
    /// 0-based position (see the module docs for what "may" means); a candidate that
    /// is pinned leaves its place for its pin.
    pub fn arrange(
        &self,
        mut candidates: Vec<RecItem>,
        pinned: Vec<(usize, RecItem)>,
        n: usize,
    ) -> Vec<RecItem> {
        if !self.boost_items.is_empty() || !self.boost_categories.is_empty() {
            for c in &mut candidates {
                let f = self.factor(c);
                if f != 1.0 {
                    c.score = if c.score >= 0.0 {
                        c.score * f
                    } else {
                        c.score / f
                    };
                }
            }
            // Stable: equal scores keep the model's order.
            candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
        }
        let mut pinned = pinned;
        pinned.sort_by_key(|(at, _)| *at);
        let pinned_ids: HashSet<String> = pinned.iter().map(|(_, i)| i.item_id.clone()).collect();
        let mut per_category: HashMap<String, usize> = HashMap::new();
        if self.max_per_category.is_some() {
            for (_, p) in &pinned {
                for c in &p.categories {
                    *per_category.entry(c.clone()).or_default() += 1;
                }
            }
        }
        let room = |item: &RecItem, counts: &HashMap<String, usize>| match self.max_per_category {
            None => true,
            Some(m) => item
                .categories
                .iter()
                .all(|c| counts.get(c).copied().unwrap_or(0) < m),
        };
        let mut out: Vec<RecItem> = Vec::with_capacity(n);
        let mut is_pin: Vec<bool> = Vec::with_capacity(n);
        let mut pins = pinned.into_iter().peekable();
        let mut rest = candidates
            .into_iter()
            .filter(|c| !pinned_ids.contains(&c.item_id));
        while out.len() < n {
            if let Some((_, item)) = pins.next_if(|(at, _)| *at <= out.len()) {
                out.push(item);
                is_pin.push(true);
                continue;
            }
            let Some(next) = rest.by_ref().find(|c| room(c, &per_category)) else {
                break;
            };
            if self.max_per_category.is_some() {
                for c in &next.categories {
                    *per_category.entry(c.clone()).or_default() += 1;
                }
            }
            out.push(next);
            is_pin.push(false);
        }
        // Pins past the end of a short list land at its end.
        for (_, item) in pins {
            if out.len() >= n {
                break;
            }
            out.push(item);
            is_pin.push(true);
        }
        // A pin takes the score of the item it displaced (the one after it), or of the
        // one before it at the end, so scores stay in order.
        let mut after: Option<f64> = None;
        for i in (0..out.len()).rev() {
            if is_pin[i] {
                if let Some(s) = after {
                    out[i].score = s;
                }
            }
            after = Some(out[i].score);
        }
        for i in 1..out.len() {
            if is_pin[i] && out[i].score > out[i - 1].score {
                out[i].score = out[i - 1].score;
            }
        }
        out
    }
}

/// The rules as the store holds them: the document's JSON text and its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRules {
    /// JSON of a validated [`Rules`] document.
    pub json: String,
    /// 1 for the first stored, one more at each change (a `DELETE` stores the empty
    /// document, so versions never go back).
    pub version: i64,
    /// Unix seconds of the change.
    pub updated_at: i64,
}

/// A tenant's current rules and their version (0: none were ever stored).
#[derive(Debug, Clone, Default)]
pub struct Current {
    pub version: i64,
    pub updated_at: i64,
    pub rules: Arc<RuleSet>,
}

impl Current {
    /// The rules a store row holds; a row that no longer validates (a bound made
    /// stricter since) is an error, never half-applied.
    pub fn from_stored(stored: &StoredRules) -> Result<Current, RulesError> {
        Ok(Current {
            version: stored.version,
            updated_at: stored.updated_at,
            rules: Arc::new(Rules::parse(stored.json.as_bytes())?),
        })
    }
}

/// The tenant's current rules, shared by every snapshot of the tenant (handed on at
/// each retrain) and replaced at once by a change.
#[derive(Debug, Default)]
pub struct LiveRules {
    current: RwLock<Current>,
}

impl LiveRules {
    /// The rules now (cheap: a clone of an `Arc`).
    pub fn get(&self) -> Current {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The rule set now.
    pub fn rules(&self) -> Arc<RuleSet> {
        self.get().rules
    }

    /// Replaces the rules when `next` is newer than the ones held (a read that began
    /// before a change never undoes it); gives whether it did.
    pub fn replace_if_newer(&self, next: Current) -> bool {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        if next.version <= current.version {
            return false;
        }
        *current = next;
        true
    }
}

/// Per user, the items fatigue keeps out of their lists (read from the impression log
/// by the store's `fatigued` read), bounded by [`MAX_FATIGUED_PER_USER`] per user
/// and [`MAX_FATIGUED_PAIRS`] in all.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fatigued {
    by_user: HashMap<String, Vec<String>>,
    pairs: usize,
    /// Whether a bound cut the read short.
    pub truncated: bool,
}

impl Fatigued {
    /// Adds one (user, item) pair; gives false when a bound refused it.
    pub fn insert(&mut self, user: &str, item: String) -> bool {
        if self.pairs >= MAX_FATIGUED_PAIRS {
            self.truncated = true;
            return false;
        }
        let items = self.by_user.entry(user.to_owned()).or_default();
        if items.len() >= MAX_FATIGUED_PER_USER {
            self.truncated = true;
            return false;
        }
        items.push(item);
        self.pairs += 1;
        true
    }

    /// The user's fatigued items (none when they have none).
    pub fn of(&self, user: &str) -> &[String] {
        self.by_user.get(user).map_or(&[], Vec::as_slice)
    }

    /// Users with at least one fatigued item.
    pub fn users(&self) -> usize {
        self.by_user.len()
    }

    /// (user, item) pairs held.
    pub fn pairs(&self) -> usize {
        self.pairs
    }

    pub fn is_empty(&self) -> bool {
        self.pairs == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, score: f64, cats: &[&str]) -> RecItem {
        RecItem {
            item_id: id.into(),
            score,
            reason: Some("model".into()),
            categories: cats.iter().map(|c| c.to_string()).collect(),
        }
    }

    fn ids(items: &[RecItem]) -> Vec<&str> {
        items.iter().map(|i| i.item_id.as_str()).collect()
    }

    fn set(json: &str) -> RuleSet {
        Rules::parse(json.as_bytes()).unwrap()
    }

    fn ranked() -> Vec<RecItem> {
        vec![
            item("a", 0.9, &["books"]),
            item("b", 0.8, &["books"]),
            item("c", 0.7, &["books"]),
            item("d", 0.6, &["music"]),
            item("e", 0.5, &["music"]),
            item("f", 0.4, &[]),
        ]
    }

    #[test]
    fn no_rules_keep_the_models_order_and_cut_to_n() {
        let rules = RuleSet::default();
        assert!(rules.is_empty());
        assert_eq!(rules.candidates(10), 10);
        assert_eq!(
            ids(&rules.arrange(ranked(), Vec::new(), 4)),
            ["a", "b", "c", "d"]
        );
    }

    #[test]
    fn hidden_items_and_categories_are_hidden() {
        let rules = set(r#"{"hide_items":["x"],"hide_categories":["adult"]}"#);
        assert!(rules.hides_any());
        assert!(rules.hides("x", &[]));
        assert!(rules.hides("y", &["toys".into(), "adult".into()]));
        assert!(!rules.hides("y", &["toys".into()]));
        assert!(!RuleSet::default().hides("x", &["adult".into()]));
    }

    #[test]
    fn a_boost_raises_an_item_above_better_scored_ones() {
        let rules = set(r#"{"boost":{"items":{"e":3.0}}}"#);
        assert!(rules.candidates(4) > 4);
        let out = rules.arrange(ranked(), Vec::new(), 3);
        assert_eq!(
            ids(&out),
            ["e", "a", "b"],
            "0.5 * 3 = 1.5 is the best score"
        );
    }

    #[test]
    fn a_category_boost_multiplies_and_a_factor_below_one_lowers() {
        let rules = set(r#"{"boost":{"categories":{"music":2.0,"books":0.5}}}"#);
        let out = rules.arrange(ranked(), Vec::new(), 3);
        assert_eq!(ids(&out), ["d", "e", "a"]);
        // A negative score is divided, so a factor above one still raises it.
        let rules = set(r#"{"boost":{"items":{"n":4.0}}}"#);
        let out = rules.arrange(
            vec![item("m", -0.5, &[]), item("n", -1.0, &[])],
            Vec::new(),
            2,
        );
        assert_eq!(ids(&out), ["n", "m"]);
    }

    #[test]
    fn a_pin_lands_at_its_position_and_takes_the_displaced_score() {
        let rules = set(r#"{"pin":{"z":2}}"#);
        assert_eq!(rules.pins(), [(1, "z".to_string())]);
        let pin = item("z", 0.01, &[]);
        let out = rules.arrange(ranked(), vec![(1, pin)], 4);
        assert_eq!(ids(&out), ["a", "z", "b", "c"]);
        assert_eq!(out[1].score, 0.8);
        assert!(out.windows(2).all(|w| w[0].score >= w[1].score));
        // A pinned candidate moves to its pin's place, not twice in the list.
        let pin = item("d", 0.6, &["music"]);
        let out = rules.arrange(ranked(), vec![(0, pin)], 4);
        assert_eq!(ids(&out), ["d", "a", "b", "c"]);
        // Past the end of a short list: at its end.
        let pin = item("z", 0.01, &[]);
        let out = rules.arrange(ranked()[..2].to_vec(), vec![(9, pin)], 5);
        assert_eq!(ids(&out), ["a", "b", "z"]);
        assert!(out.windows(2).all(|w| w[0].score >= w[1].score));
    }

    #[test]
    fn at_most_m_items_of_a_category_stay_in_a_list() {
        let rules = set(r#"{"max_per_category":2}"#);
        let out = rules.arrange(ranked(), Vec::new(), 5);
        assert_eq!(ids(&out), ["a", "b", "d", "e", "f"]);
        // Pins count first.
        let pin = item("p", 0.1, &["books"]);
        let out = rules.arrange(ranked(), vec![(0, pin)], 3);
        assert_eq!(ids(&out), ["p", "a", "d"]);
        // When too few items are left, the list is short.
        let out = rules.arrange(ranked()[..3].to_vec(), Vec::new(), 3);
        assert_eq!(ids(&out), ["a", "b"]);
    }

    #[test]
    fn a_fatigue_window_counts_back_d_days() {
        let rules = set(r#"{"fatigue":{"impressions":3,"days":7}}"#);
        let f = rules.fatigue().unwrap();
        assert_eq!((f.impressions, f.days), (3, 7));
        assert_eq!(f.since(1_000_000), 1_000_000 - 7 * 86_400);
    }

    #[test]
    fn bad_documents_are_refused_with_the_field() {
        for (json, field) in [
            (r#"{"hide_items":["a/b"]}"#, "hide_items[0]"),
            (r#"{"hide_items":["a","a"]}"#, "hide_items[1]"),
            (r#"{"hide_categories":["a,b"]}"#, "hide_categories[0]"),
            (r#"{"hide_categories":[""]}"#, "hide_categories[0]"),
            (r#"{"pin":{"a":0}}"#, "pin.a"),
            (r#"{"pin":{"a":101}}"#, "pin.a"),
            (r#"{"pin":{"a":1,"b":1}}"#, "pin.b"),
            (r#"{"boost":{"items":{"a":0}}}"#, "boost.items.a"),
            (r#"{"boost":{"items":{"a":1000}}}"#, "boost.items.a"),
            (r#"{"boost":{"categories":{"x":-1}}}"#, "boost.categories.x"),
            (r#"{"max_per_category":0}"#, "max_per_category"),
            (
                r#"{"fatigue":{"impressions":0,"days":7}}"#,
                "fatigue.impressions",
            ),
            (r#"{"fatigue":{"impressions":3,"days":91}}"#, "fatigue.days"),
        ] {
            let e = Rules::parse(json.as_bytes()).unwrap_err();
            assert_eq!(e.code(), "invalid_rules", "{json}");
            assert!(e.to_string().starts_with(field), "{json}: {e}");
        }
        for json in [
            "not json",
            r#"{"hide_items":["a"],"hide_items":["b"]}"#,
            r#"{"hide":["a"]}"#,
            r#"{"boost":{"items":{},"shops":{}}}"#,
            r#"{"fatigue":{"impressions":3}}"#,
            r#"{"max_per_category":-1}"#,
            r#"{"boost":{"items":{"a":"2"}}}"#,
            "[]",
        ] {
            let e = Rules::parse(json.as_bytes()).unwrap_err();
            assert!(matches!(e, RulesError::Body(_)), "{json}: {e:?}");
            assert_eq!(e.status(), 400);
        }
        let many: Vec<String> = (0..=MAX_RULE_IDS).map(|i| format!("i{i}")).collect();
        let json = serde_json::json!({ "hide_items": many }).to_string();
        let e = Rules::parse(json.as_bytes()).unwrap_err();
        assert_eq!((e.status(), e.code()), (413, "too_many_rules"));
    }

    #[test]
    fn a_document_reads_back_as_it_was_written() {
        let json = r#"{"hide_items":["x"],"hide_categories":["adult"],"pin":{"i7":1},
            "boost":{"items":{"i9":2.0},"categories":{"sale":1.5}},"max_per_category":3,
            "fatigue":{"impressions":3,"days":7}}"#;
        let rules = set(json);
        let text = serde_json::to_string(rules.doc()).unwrap();
        assert_eq!(set(&text), rules);
        assert!(set("{}").is_empty());
    }

    #[test]
    fn the_cell_takes_only_newer_versions() {
        let cell = LiveRules::default();
        assert_eq!(cell.get().version, 0);
        let v = |version, json: &str| Current {
            version,
            updated_at: 0,
            rules: Arc::new(set(json)),
        };
        assert!(cell.replace_if_newer(v(2, r#"{"hide_items":["a"]}"#)));
        assert!(!cell.replace_if_newer(v(1, "{}")), "an older read");
        assert!(cell.rules().hides("a", &[]));
    }

    #[test]
    fn fatigued_items_are_bounded_per_user() {
        let mut f = Fatigued::default();
        for i in 0..=MAX_FATIGUED_PER_USER {
            f.insert("u1", format!("i{i}"));
        }
        assert_eq!(f.of("u1").len(), MAX_FATIGUED_PER_USER);
        assert!(f.truncated);
        assert!(f.of("u2").is_empty());
        assert_eq!(f.users(), 1);
    }
}
