//! The bearer-token check both sides apply (edge admin routes, the origin's admin and
//! edge-facing routes), written once so the two cannot drift.
//!
//! `Authorization: <scheme> <token>`: the scheme is matched case-insensitively
//! (RFC 7235 §2.1, so `bearer` and `BEARER` count), spaces around the token are
//! ignored, and the token is compared with the configured one in constant time
//! (`subtle`): only its length can leak, never how much of a guess was right. An empty
//! configured token means none is configured.

use subtle::ConstantTimeEq;
use thiserror::Error;

/// Why a request with an `Authorization` header (or without one) is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum AuthError {
    /// No token is configured: the routes it guards are off (503).
    #[error("no admin token is configured")]
    Disabled,
    /// Missing, malformed or wrong bearer token (401).
    #[error("missing or wrong bearer token")]
    Unauthorized,
}

/// The token of an `Authorization: Bearer <token>` header value, any case of `Bearer`.
pub fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Checks an `Authorization` header value against the configured token.
pub fn check_bearer(header: Option<&str>, expected: Option<&str>) -> Result<(), AuthError> {
    let expected = expected
        .filter(|t| !t.is_empty())
        .ok_or(AuthError::Disabled)?;
    let given = header
        .and_then(bearer_token)
        .ok_or(AuthError::Unauthorized)?;
    if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(AuthError::Unauthorized)
    }
}

/// The header value that [`check_bearer`] accepts for `token`.
pub fn bearer_header(token: &str) -> String {
    format!("Bearer {token}")
}

/// Header carrying a tenant's API key (`pk_…` client key or `sk_…` server key) on
/// the routes that take one: sent by browsers to the edge, forwarded by the edge to the
/// origin, which verifies it against the tenant registry.
pub const TENANT_KEY_HEADER: &str = "X-Tenant-Key";

/// Hex digits after a tenant key's prefix (256 bits).
pub const TENANT_KEY_HEX_LEN: usize = 64;

/// Whether `key` has a tenant key's shape: `pk_` or `sk_` and 64 lowercase hex digits.
/// A key of another shape is refused (401) without a lookup, at the edge and the origin.
pub fn is_tenant_key_shaped(key: &str) -> bool {
    let Some(digits) = key.strip_prefix("pk_").or_else(|| key.strip_prefix("sk_")) else {
        return false;
    };
    digits.len() == TENANT_KEY_HEX_LEN
        && digits
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_right_token_is_accepted_in_any_case_of_the_scheme() {
        for ok in [
            "Bearer s3cret",
            "bearer s3cret",
            "BEARER  s3cret ",
            " Bearer s3cret",
        ] {
            assert_eq!(check_bearer(Some(ok), Some("s3cret")), Ok(()), "{ok:?}");
        }
        assert_eq!(check_bearer(Some(&bearer_header("t")), Some("t")), Ok(()));
    }

    #[test]
    fn wrong_missing_or_malformed_tokens_are_unauthorized() {
        for bad in [
            None,
            Some(""),
            Some("s3cret"),
            Some("Bearer"),
            Some("Bearer "),
            Some("Bearer s3cre"),
            Some("Bearer s3cret2"),
            Some("Basic s3cret"),
            Some("Bearers s3cret"),
        ] {
            assert_eq!(
                check_bearer(bad, Some("s3cret")),
                Err(AuthError::Unauthorized),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn without_a_configured_token_the_routes_are_disabled() {
        assert_eq!(
            check_bearer(Some("Bearer x"), None),
            Err(AuthError::Disabled)
        );
        assert_eq!(
            check_bearer(Some("Bearer "), Some("")),
            Err(AuthError::Disabled)
        );
    }

    #[test]
    fn tenant_keys_have_a_prefix_and_64_lowercase_hex_digits() {
        let digits = "0123456789abcdef".repeat(4);
        assert!(is_tenant_key_shaped(&format!("pk_{digits}")));
        assert!(is_tenant_key_shaped(&format!("sk_{digits}")));
        for bad in [
            format!("xk_{digits}"),
            format!("pk_{}", &digits[1..]),
            format!("pk_{digits}0"),
            format!("pk_{}", digits.to_uppercase()),
            "pk_".to_string(),
            String::new(),
        ] {
            assert!(!is_tenant_key_shaped(&bad), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn only_the_exact_token_passes(token in "[!-~]{1,40}", guess in "[!-~]{0,40}") {
            let header = format!("Bearer {guess}");
            let ok = check_bearer(Some(&header), Some(&token)).is_ok();
            prop_assert_eq!(ok, guess == token);
        }
    }
}
