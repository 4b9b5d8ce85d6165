//! Every error the edge answers with, its HTTP status and its JSON body.

use contract::{ErrorBody, IdError};
use thiserror::Error;

use crate::chain::{Attempt, Tier};

#[derive(Debug, Clone, PartialEq, Error)]
pub enum EdgeError {
    #[error("{0}")]
    InvalidId(IdError),
    #[error("n must be a whole number from 1 to {max}; got {got:?}")]
    InvalidN { got: String, max: usize },
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    #[error("{0}")]
    InvalidExclude(String),
    #[error("{0}")]
    InvalidCategory(String),
    #[error("{0}")]
    HostTenant(crate::tenant_host::HostTenantError),
    #[error("no route for {method} {path}")]
    NotFound { method: String, path: String },
    /// The origin said this tenant does not exist (now, or within the last minute:
    /// `crate::unknown_tenants`).
    #[error("no tenant {0:?} is registered")]
    UnknownTenant(String),
    #[error("{method} is not allowed here; allowed: {allowed}")]
    MethodNotAllowed {
        method: String,
        allowed: &'static str,
    },
    #[error("missing or wrong bearer token")]
    Unauthorized,
    /// An `X-Tenant-Key` that is no tenant key's shape: refused without the origin.
    #[error(
        "the X-Tenant-Key header is not a tenant key (pk_ or sk_ and 64 lowercase hex digits)"
    )]
    InvalidTenantKey,
    #[error("admin routes are disabled: no ADMIN_TOKEN secret is set")]
    AdminDisabled,
    #[error("invalid request body: {0}")]
    BadBody(String),
    /// An events body the shared validation refused; `code` is its stable code.
    #[error("{message}")]
    InvalidEvents { code: &'static str, message: String },
    #[error("request body is larger than {max} bytes")]
    PayloadTooLarge { max: usize },
    #[error("request headers are {size} bytes; at most {max} are read")]
    HeadersTooLarge { size: usize, max: usize },
    #[error("too many requests from this client; retry after {retry_after_s} s")]
    RateLimited { retry_after_s: u64 },
    #[error("no source could answer: {}", describe_attempts(.attempts))]
    Unavailable { attempts: Vec<Attempt> },
    #[error("edge misconfigured: {0}")]
    Misconfigured(String),
    #[error("internal error: {0}")]
    Internal(String),
}

fn describe_attempts(attempts: &[Attempt]) -> String {
    if attempts.is_empty() {
        return "no source is configured".into();
    }
    attempts
        .iter()
        .map(|a| format!("{} {}", Tier::name(a.tier), a.outcome.describe()))
        .collect::<Vec<_>>()
        .join(", ")
}

impl EdgeError {
    pub fn status(&self) -> u16 {
        match self {
            EdgeError::InvalidId(_)
            | EdgeError::InvalidN { .. }
            | EdgeError::InvalidQuery(_)
            | EdgeError::InvalidExclude(_)
            | EdgeError::InvalidCategory(_)
            | EdgeError::HostTenant(_)
            | EdgeError::BadBody(_)
            | EdgeError::InvalidEvents { .. } => 400,
            EdgeError::Unauthorized | EdgeError::InvalidTenantKey => 401,
            EdgeError::NotFound { .. } | EdgeError::UnknownTenant(_) => 404,
            EdgeError::MethodNotAllowed { .. } => 405,
            EdgeError::PayloadTooLarge { .. } => 413,
            EdgeError::RateLimited { .. } => 429,
            EdgeError::HeadersTooLarge { .. } => 431,
            EdgeError::Misconfigured(_) | EdgeError::Internal(_) => 500,
            EdgeError::AdminDisabled | EdgeError::Unavailable { .. } => 503,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            EdgeError::InvalidId(e) => e.code(),
            EdgeError::InvalidN { .. } => "invalid_n",
            EdgeError::InvalidQuery(_) => "invalid_query",
            EdgeError::InvalidExclude(_) => "invalid_exclude",
            EdgeError::InvalidCategory(_) => "invalid_category",
            EdgeError::HostTenant(e) => match e {
                crate::tenant_host::HostTenantError::Label(id) => id.code(),
                crate::tenant_host::HostTenantError::TwoLabels(_) => "invalid_query",
                crate::tenant_host::HostTenantError::Mismatch { .. } => "tenant_mismatch",
            },
            EdgeError::NotFound { .. } => "not_found",
            EdgeError::UnknownTenant(_) => "unknown_tenant",
            EdgeError::MethodNotAllowed { .. } => "method_not_allowed",
            EdgeError::Unauthorized => "unauthorized",
            EdgeError::InvalidTenantKey => "invalid_key",
            EdgeError::AdminDisabled => "admin_disabled",
            EdgeError::BadBody(_) => "invalid_body",
            EdgeError::InvalidEvents { code, .. } => code,
            EdgeError::PayloadTooLarge { .. } => "payload_too_large",
            EdgeError::HeadersTooLarge { .. } => "headers_too_large",
            EdgeError::RateLimited { .. } => "rate_limited",
            EdgeError::Unavailable { .. } => "unavailable",
            EdgeError::Misconfigured(_) => "misconfigured",
            EdgeError::Internal(_) => "internal",
        }
    }

    /// The JSON body: `{"error":{"code":…,"message":…}}`.
    pub fn body(&self) -> ErrorBody {
        ErrorBody::new(self.code(), self.to_string())
    }

    /// Extra headers the error needs (`Allow` on 405, `WWW-Authenticate` on 401).
    pub fn extra_headers(&self) -> Vec<(&'static str, String)> {
        match self {
            EdgeError::MethodNotAllowed { allowed, .. } => vec![("Allow", (*allowed).to_string())],
            EdgeError::Unauthorized => vec![("WWW-Authenticate", "Bearer".to_string())],
            EdgeError::Unavailable { .. } => vec![("Retry-After", "5".to_string())],
            EdgeError::RateLimited { retry_after_s } => {
                vec![("Retry-After", retry_after_s.to_string())]
            }
            _ => vec![],
        }
    }
}

impl From<crate::tenant_host::HostTenantError> for EdgeError {
    fn from(e: crate::tenant_host::HostTenantError) -> Self {
        EdgeError::HostTenant(e)
    }
}

impl From<IdError> for EdgeError {
    fn from(e: IdError) -> Self {
        EdgeError::InvalidId(e)
    }
}

impl From<contract::auth::AuthError> for EdgeError {
    fn from(e: contract::auth::AuthError) -> Self {
        match e {
            contract::auth::AuthError::Disabled => EdgeError::AdminDisabled,
            contract::auth::AuthError::Unauthorized => EdgeError::Unauthorized,
        }
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_the_host_cannot_name_is_a_400_saying_why() {
        use crate::tenant_host::{HostTenantError, TenantHost};
        let h = TenantHost::parse("{tenant}.recs.example.com").unwrap();
        for bad in [
            "a.b.recs.example.com",
            "_x.recs.example.com",
            "%2e%2e.recs.example.com",
        ] {
            let e = EdgeError::from(h.tenant_of(bad).unwrap().unwrap_err());
            assert_eq!(e.status(), 400, "{bad}");
        }
        let e = EdgeError::from(HostTenantError::Mismatch {
            host: "h".into(),
            query: "q".into(),
        });
        assert_eq!((e.status(), e.code()), (400, "tenant_mismatch"));
    }

    #[test]
    fn every_error_maps_to_a_json_body_with_its_code() {
        let e = EdgeError::InvalidN {
            got: "abc".into(),
            max: 100,
        };
        assert_eq!(e.status(), 400);
        let body = serde_json::to_value(e.body()).unwrap();
        assert_eq!(body["error"]["code"], "invalid_n");
        assert!(body["error"]["message"].as_str().unwrap().contains("abc"));
    }

    #[test]
    fn unavailable_lists_what_was_tried() {
        use crate::chain::{Outcome, TierFailure};
        let e = EdgeError::Unavailable {
            attempts: vec![Attempt {
                tier: Tier::Origin(0),
                outcome: Outcome::Failed(TierFailure::Timeout),
            }],
        };
        assert_eq!(e.status(), 503);
        assert!(e.to_string().contains("origin timed out"), "{e}");
    }
}
