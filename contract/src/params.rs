//! Query parameters both sides read with the same rules.
//!
//! - `n`: absent means the caller's default; otherwise a whole number from 1 to
//!   [`crate::MAX_N`] (`n=`, `n=0`, `n=1.5`, `n=-1` are refused).
//! - `tenant`: absent means [`crate::DEFAULT_TENANT`]; present it must be a valid tenant,
//!   so an empty `?tenant=` is refused (`invalid_tenant`), not read as the default: a
//!   client that meant a tenant and sent none should hear so, on the edge and the origin
//!   alike.
//! - `exclude`: item ids left out of the answer, comma-separated (at most
//!   [`MAX_EXCLUDE`], each a valid item id); the answer is cut to `n` after they are
//!   left out, so it holds fewer than `n` items when the stored list runs short.
//! - `category`: one category; only items listed in it are kept (exact, case-sensitive
//!   match against the item's `categories`). Absent or empty means no category filter;
//!   present it must follow the catalogue's rule for a category ([`Category::parse`]:
//!   1 to [`MAX_CATEGORY_CHARS`] characters once trimmed, no control character, no `,`
//!   or `|`).
//!
//! [`Filters`] holds both and applies them to a list the same way on both sides: the
//! edge to its stored list (50 items by default), the origin to what its model ranked.

use thiserror::Error;

use crate::{IdError, ItemId, RecItem, Tenant, MAX_N};

/// Longest category, in characters (the catalogue's bound on a category or tag).
pub const MAX_CATEGORY_CHARS: usize = 64;
/// Most categories one item of a document may list (the catalogue's bound).
pub const MAX_ITEM_CATEGORIES: usize = 20;

/// A category that breaks the rule of [`Category::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InvalidCategory {
    #[error("category is empty")]
    Empty,
    #[error("category is {0} characters long; at most {MAX_CATEGORY_CHARS} are allowed")]
    TooLong(usize),
    #[error(
        "category has a character that is not allowed ({0:?}): no control characters, ',' or '|'"
    )]
    BadChar(char),
}

impl InvalidCategory {
    pub fn code(&self) -> &'static str {
        "invalid_category"
    }
}

/// One category of the catalogue, as a filter names it and a document lists it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Category(String);

impl Category {
    /// The catalogue's rule: trimmed, 1 to [`MAX_CATEGORY_CHARS`] characters, no control
    /// character, no `,` (the stored lists' separator) and no `|` (the CSV files').
    pub fn parse(raw: &str) -> Result<Self, InvalidCategory> {
        let s = raw.trim();
        check_category(s)?;
        Ok(Category(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Category {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a category as stored (already trimmed): what [`Category::parse`] accepts and
/// what a document's `categories` may hold.
pub fn check_category(s: &str) -> Result<(), InvalidCategory> {
    if s.is_empty() {
        return Err(InvalidCategory::Empty);
    }
    let chars = s.chars().count();
    if chars > MAX_CATEGORY_CHARS {
        return Err(InvalidCategory::TooLong(chars));
    }
    if let Some(c) = s.chars().find(|c| c.is_control() || matches!(c, ',' | '|')) {
        return Err(InvalidCategory::BadChar(c));
    }
    if s.trim() != s {
        return Err(InvalidCategory::BadChar(' '));
    }
    Ok(())
}

/// The `category` rule: absent or empty → no filter; else [`Category::parse`].
pub fn parse_category(raw: Option<&str>) -> Result<Option<Category>, InvalidCategory> {
    match raw.filter(|r| !r.is_empty()) {
        None => Ok(None),
        Some(r) => Category::parse(r).map(Some),
    }
}

/// The request filters of a recommendations answer: `exclude` and `category`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    /// Items left out.
    pub exclude: Vec<ItemId>,
    /// Only items of this category are kept.
    pub category: Option<Category>,
}

impl Filters {
    /// No filter at all: the answer is the list cut to `n`.
    pub fn is_empty(&self) -> bool {
        self.exclude.is_empty() && self.category.is_none()
    }

    /// Whether `item` passes every filter.
    pub fn keeps(&self, item: &RecItem) -> bool {
        if self.exclude.iter().any(|x| x.as_str() == item.item_id) {
            return false;
        }
        match &self.category {
            None => true,
            Some(c) => item.categories.iter().any(|k| k == c.as_str()),
        }
    }

    /// Keeps the items that pass, then the first `n`; returns how many are left (fewer
    /// than `n` when the list runs short).
    pub fn apply(&self, items: &mut Vec<RecItem>, n: usize) -> usize {
        if !self.is_empty() {
            items.retain(|i| self.keeps(i));
        }
        items.truncate(n);
        items.len()
    }

    /// With filters given and fewer than `n` items left, how many are left: the value of
    /// the `X-Filter-Short` header both sides send. `None` when nothing was filtered or
    /// the answer is full.
    pub fn short(&self, kept: usize, n: usize) -> Option<usize> {
        (!self.is_empty() && kept < n).then_some(kept)
    }
}

/// The `X-Filter-Short` header: present when a filter left fewer than `n` items; its
/// value is how many were served.
pub const FILTER_SHORT_HEADER: &str = "X-Filter-Short";

/// Most item ids one `exclude=` may list.
pub const MAX_EXCLUDE: usize = 100;

/// An `exclude=` that is not a list of up to [`MAX_EXCLUDE`] valid item ids.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InvalidExclude {
    #[error("exclude lists {0} item ids; at most {MAX_EXCLUDE}")]
    TooMany(usize),
    #[error("exclude: {0}")]
    Id(IdError),
}

impl InvalidExclude {
    pub fn code(&self) -> &'static str {
        "invalid_exclude"
    }
}

/// The `exclude` rule: absent or empty → none; else comma-separated item ids.
pub fn parse_exclude(raw: Option<&str>) -> Result<Vec<ItemId>, InvalidExclude> {
    let Some(raw) = raw.filter(|r| !r.is_empty()) else {
        return Ok(Vec::new());
    };
    let ids: Vec<&str> = raw.split(',').collect();
    if ids.len() > MAX_EXCLUDE {
        return Err(InvalidExclude::TooMany(ids.len()));
    }
    ids.into_iter()
        .map(|id| ItemId::parse(id).map_err(InvalidExclude::Id))
        .collect()
}

/// Leaves `exclude`'s items out of `items`, then keeps the first `n`.
pub fn filter_items(items: &mut Vec<RecItem>, exclude: &[ItemId], n: usize) {
    Filters {
        exclude: exclude.to_vec(),
        category: None,
    }
    .apply(items, n);
}

/// `n` outside 1 to [`MAX_N`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("n must be a whole number from 1 to {max}; got {got:?}", max = MAX_N)]
pub struct InvalidN {
    /// What was sent (at most 40 characters of it).
    pub got: String,
}

impl InvalidN {
    pub fn code(&self) -> &'static str {
        "invalid_n"
    }
}

/// The `n` rule: `None` → `default`, else 1 to [`MAX_N`].
pub fn parse_n(raw: Option<&str>, default: usize) -> Result<usize, InvalidN> {
    match raw {
        None => Ok(default),
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_N).contains(n))
            .ok_or_else(|| InvalidN {
                got: s.chars().take(40).collect(),
            }),
    }
}

/// The `tenant` rule: `None` → the default tenant, else [`Tenant::parse`] (empty refused).
pub fn parse_tenant(raw: Option<&str>) -> Result<Tenant, IdError> {
    match raw {
        None => Ok(Tenant::default_tenant()),
        Some(t) => Tenant::parse(t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn exclude_lists_item_ids_and_the_answer_is_cut_after_it() {
        assert_eq!(parse_exclude(None), Ok(vec![]));
        assert_eq!(parse_exclude(Some("")), Ok(vec![]));
        let ids = parse_exclude(Some("i1,i3")).unwrap();
        assert_eq!(ids.len(), 2);
        for bad in ["i1,,i2", "a/b", ",", "i1,.."] {
            let e = parse_exclude(Some(bad)).unwrap_err();
            assert_eq!(e.code(), "invalid_exclude", "{bad}");
        }
        let many = vec!["i"; MAX_EXCLUDE + 1].join(",");
        assert_eq!(
            parse_exclude(Some(&many)),
            Err(InvalidExclude::TooMany(MAX_EXCLUDE + 1))
        );
        let item = |id: &str| RecItem {
            item_id: id.into(),
            score: 1.0,
            reason: None,
            categories: Vec::new(),
        };
        let mut items = vec![item("i1"), item("i2"), item("i3"), item("i4")];
        filter_items(&mut items, &ids, 2);
        let kept: Vec<&str> = items.iter().map(|i| i.item_id.as_str()).collect();
        assert_eq!(kept, ["i2", "i4"]);
        let mut short = vec![item("i1"), item("i2")];
        filter_items(&mut short, &ids, 5);
        assert_eq!(short.len(), 1, "fewer than n when the list runs short");
    }

    #[test]
    fn a_category_follows_the_catalogues_rule_and_empty_means_none() {
        assert_eq!(parse_category(None), Ok(None));
        assert_eq!(parse_category(Some("")), Ok(None));
        let c = parse_category(Some(" Science Fiction ")).unwrap().unwrap();
        assert_eq!(
            c.as_str(),
            "Science Fiction",
            "trimmed, as the catalogue stores it"
        );
        assert!(parse_category(Some("Küche")).is_ok(), "any script");
        let long = "x".repeat(MAX_CATEGORY_CHARS + 1);
        for bad in ["   ", "a,b", "a|b", "a\u{0}b", "a\nb", long.as_str()] {
            let e = parse_category(Some(bad)).unwrap_err();
            assert_eq!(e.code(), "invalid_category", "{bad:?}");
        }
        assert!(parse_category(Some(&"é".repeat(MAX_CATEGORY_CHARS))).is_ok());
        assert!(
            check_category(" padded").is_err(),
            "stored categories are trimmed"
        );
    }

    #[test]
    fn filters_keep_items_of_the_category_and_say_when_the_list_ran_short() {
        let item = |id: &str, cats: &[&str]| RecItem {
            item_id: id.into(),
            score: 1.0,
            reason: None,
            categories: cats.iter().map(|c| c.to_string()).collect(),
        };
        let list = vec![
            item("i1", &["books"]),
            item("i2", &["garden", "books"]),
            item("i3", &[]),
            item("i4", &["Books"]),
            item("i5", &["books"]),
        ];
        let f = Filters {
            exclude: vec![ItemId::parse("i5").unwrap()],
            category: Some(Category::parse("books").unwrap()),
        };
        let mut items = list.clone();
        let kept = f.apply(&mut items, 10);
        let ids: Vec<&str> = items.iter().map(|i| i.item_id.as_str()).collect();
        assert_eq!(ids, ["i1", "i2"], "exact, case-sensitive; excluded too");
        assert_eq!(f.short(kept, 10), Some(2));
        assert_eq!(f.short(kept, 2), None, "a full answer is not short");
        let mut items = list.clone();
        assert_eq!(f.apply(&mut items, 1), 1);
        let none = Filters::default();
        let mut items = list;
        assert_eq!(none.apply(&mut items, 10), 5);
        assert_eq!(none.short(5, 10), None, "no filter, no header");
    }

    #[test]
    fn n_is_the_default_when_absent_and_1_to_max_when_given() {
        assert_eq!(parse_n(None, 10), Ok(10));
        assert_eq!(parse_n(Some("1"), 10), Ok(1));
        assert_eq!(parse_n(Some("100"), 10), Ok(100));
        for bad in [
            "",
            "0",
            "101",
            "1.5",
            "-1",
            "abc",
            "+5 ",
            "99999999999999999999999",
        ] {
            assert_eq!(
                parse_n(Some(bad), 10).unwrap_err().code(),
                "invalid_n",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn an_empty_tenant_is_refused_and_an_absent_one_is_the_default() {
        assert_eq!(parse_tenant(None).unwrap().as_str(), crate::DEFAULT_TENANT);
        assert_eq!(parse_tenant(Some("shop")).unwrap().as_str(), "shop");
        assert_eq!(parse_tenant(Some("")).unwrap_err().code(), "invalid_tenant");
    }

    proptest! {
        #[test]
        fn an_accepted_category_is_a_valid_stored_one(s in "\\PC{0,70}") {
            if let Ok(Some(c)) = parse_category(Some(&s)) {
                prop_assert!(check_category(c.as_str()).is_ok());
                prop_assert!(c.as_str().chars().count() <= MAX_CATEGORY_CHARS);
            }
        }

        #[test]
        fn filtering_never_grows_a_list_and_keeps_its_order(
            ids in proptest::collection::vec(0u8..20, 0..40), n in 1usize..=100, ex in 0u8..20,
        ) {
            let items: Vec<RecItem> = ids.iter().map(|i| RecItem {
                item_id: format!("i{i}"), score: 0.0, reason: None,
                categories: if i % 2 == 0 { vec!["even".into()] } else { Vec::new() },
            }).collect();
            let f = Filters {
                exclude: vec![ItemId::parse(&format!("i{ex}")).unwrap()],
                category: Some(Category::parse("even").unwrap()),
            };
            let mut kept = items.clone();
            let len = f.apply(&mut kept, n);
            prop_assert!(len <= n && len <= items.len());
            prop_assert!(kept.iter().all(|i| f.keeps(i)));
            let mut it = items.iter();
            prop_assert!(kept.iter().all(|k| it.any(|i| i == k)), "a subsequence");
        }

        #[test]
        fn an_accepted_n_is_always_within_bounds(s in "\\PC{0,6}") {
            if let Ok(n) = parse_n(Some(&s), 10) {
                prop_assert!((1..=MAX_N).contains(&n));
                prop_assert_eq!(n.to_string(), s.trim_start_matches('+').trim_start_matches('0').to_string());
            }
        }
    }
}
