//! Bearer-token checks for the origin's admin routes (`/v1/admin/*`,
//! `/v1/analytics/edge-report`), against the `ADMIN_TOKEN` the edge also uses.
//!
//! The check is the contract's ([`contract::auth::check_bearer`], the edge's too): any
//! case of `Bearer`, a constant-time comparison (`subtle`).

use axum::http::HeaderMap;

/// Environment variable holding the bearer token for the edge's admin routes.
pub const ADMIN_TOKEN_ENV: &str = "ADMIN_TOKEN";

/// A secret string whose `Debug` output is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// The admin token from `ADMIN_TOKEN`, when set and not empty.
    pub fn admin_token_from_env() -> Option<Self> {
        std::env::var(ADMIN_TOKEN_ENV)
            .ok()
            .filter(|t| !t.trim().is_empty())
            .map(Secret)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

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
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    contract::auth::check_bearer(given, expected.map(Secret::expose)).map_err(|e| match e {
        contract::auth::AuthError::Disabled => AuthFailure::Disabled,
        contract::auth::AuthError::Unauthorized => AuthFailure::Unauthorized,
    })
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
