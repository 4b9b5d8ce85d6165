//! Bearer-token checks for the origin's admin routes (`/v1/admin/*`,
//! `/v1/analytics/edge-report`), against the `ADMIN_TOKEN` the edge also uses.
//!
//! The comparison is constant-time (`subtle`), so the answer time does not reveal how
//! much of a guessed token was right.

use axum::http::HeaderMap;
use subtle::ConstantTimeEq;

use crate::config::Secret;

/// Why an admin request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No admin token is configured: admin routes are off (503).
    Disabled,
    /// Missing or wrong `Authorization: Bearer` token (401).
    Unauthorized,
}

/// Checks `Authorization: Bearer <token>` against `expected`.
pub fn check_bearer(headers: &HeaderMap, expected: Option<&Secret>) -> Result<(), AuthFailure> {
    let expected = expected.ok_or(AuthFailure::Disabled)?;
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .ok_or(AuthFailure::Unauthorized)?;
    if bool::from(given.as_bytes().ct_eq(expected.expose().as_bytes())) {
        Ok(())
    } else {
        Err(AuthFailure::Unauthorized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert("authorization", a.parse().unwrap());
        }
        h
    }

    #[test]
    fn the_right_bearer_token_is_accepted_in_any_scheme_case() {
        let t = Secret::new("s3cret");
        assert_eq!(
            check_bearer(&headers(Some("Bearer s3cret")), Some(&t)),
            Ok(())
        );
        assert_eq!(
            check_bearer(&headers(Some("bearer s3cret")), Some(&t)),
            Ok(())
        );
    }

    #[test]
    fn a_wrong_missing_or_malformed_token_is_unauthorized() {
        let t = Secret::new("s3cret");
        for h in [
            None,
            Some("Bearer wrong"),
            Some("Bearer s3cre"),
            Some("Bearer s3cretx"),
            Some("Basic s3cret"),
            Some("s3cret"),
        ] {
            assert_eq!(
                check_bearer(&headers(h), Some(&t)),
                Err(AuthFailure::Unauthorized),
                "{h:?}"
            );
        }
    }

    #[test]
    fn without_a_configured_token_admin_is_disabled() {
        assert_eq!(
            check_bearer(&headers(Some("Bearer x")), None),
            Err(AuthFailure::Disabled)
        );
    }
}
