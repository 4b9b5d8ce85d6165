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

use thiserror::Error;

use crate::{IdError, ItemId, RecItem, Tenant, MAX_N};

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
    if !exclude.is_empty() {
        items.retain(|i| !exclude.iter().any(|x| x.as_str() == i.item_id));
    }
    items.truncate(n);
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
        fn an_accepted_n_is_always_within_bounds(s in "\\PC{0,6}") {
            if let Ok(n) = parse_n(Some(&s), 10) {
                prop_assert!((1..=MAX_N).contains(&n));
                prop_assert_eq!(n.to_string(), s.trim_start_matches('+').trim_start_matches('0').to_string());
            }
        }
    }
}
