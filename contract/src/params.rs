//! Query parameters both sides read with the same rules.
//!
//! - `n`: absent means the caller's default; otherwise a whole number from 1 to
//!   [`crate::MAX_N`] (`n=`, `n=0`, `n=1.5`, `n=-1` are refused).
//! - `tenant`: absent means [`crate::DEFAULT_TENANT`]; present it must be a valid tenant,
//!   so an empty `?tenant=` is refused (`invalid_tenant`), not read as the default: a
//!   client that meant a tenant and sent none should hear so, on the edge and the origin
//!   alike.

use thiserror::Error;

use crate::{IdError, Tenant, MAX_N};

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
