//! The tenant of a request from its host name (`TENANT_HOST = "{tenant}.recs.example.com"`):
//! a shop on `books.recs.example.com` needs no `?tenant=`. The label is checked with the
//! contract's tenant rules before it forms any key; a request on another host (or
//! without the setting) takes `?tenant=` or the default as before. A `?tenant=` that
//! names another tenant than the host is refused (400 `tenant_mismatch`), never chosen
//! silently.

use contract::{IdError, Tenant};
use thiserror::Error;

/// Why a request's tenant cannot be taken (a 400 each: the edge's error type wraps
/// it). Defined here so that this module needs nothing else of the edge.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum HostTenantError {
    /// The host's label is no valid tenant.
    #[error("{0}")]
    Label(IdError),
    #[error("the host names no single tenant: {0:?}")]
    TwoLabels(String),
    #[error("the host names tenant {host:?} but ?tenant= says {query:?}")]
    Mismatch { host: String, query: String },
}

/// The pattern's fixed part: the host names below which the first label is the tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantHost {
    /// `.recs.example.com` (lowercase, with its leading dot).
    suffix: String,
}

impl TenantHost {
    /// Parses `{tenant}.` followed by a host name.
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let pattern = pattern.trim().to_ascii_lowercase();
        let rest = pattern
            .strip_prefix("{tenant}.")
            .ok_or_else(|| format!("{pattern:?} does not start with \"{{tenant}}.\""))?;
        let ok = !rest.is_empty()
            && rest.len() <= 253
            && rest.split('.').all(|l| {
                !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !ok {
            return Err(format!("{rest:?} is not a host name"));
        }
        Ok(TenantHost {
            suffix: format!(".{rest}"),
        })
    }

    /// The tenant named by `host` (a `Host` header, any case, with or without a port):
    /// `None` when the host is not below the pattern, an error when its label is no
    /// valid tenant.
    pub fn tenant_of(&self, host: &str) -> Option<Result<Tenant, HostTenantError>> {
        let host = host.trim().to_ascii_lowercase();
        let name = match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host.as_str(),
        };
        let label = name.strip_suffix(self.suffix.as_str())?;
        if label.contains('.') {
            return Some(Err(HostTenantError::TwoLabels(label.to_owned())));
        }
        Some(Tenant::parse(label).map_err(HostTenantError::Label))
    }
}

/// The request's tenant: the host's when it names one, checked against a `?tenant=`
/// the query gave (`query`: `Some` only when the parameter was present).
pub fn resolve(
    host_tenant: Option<Result<Tenant, HostTenantError>>,
    query: Option<Tenant>,
    default: Tenant,
) -> Result<Tenant, HostTenantError> {
    match (host_tenant.transpose()?, query) {
        (Some(h), Some(q)) if h != q => Err(HostTenantError::Mismatch {
            host: h.to_string(),
            query: q.to_string(),
        }),
        (Some(h), _) => Ok(h),
        (None, Some(q)) => Ok(q),
        (None, None) => Ok(default),
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    fn t(s: &str) -> Tenant {
        Tenant::parse(s).unwrap()
    }

    #[test]
    fn the_first_label_below_the_pattern_is_the_tenant() {
        let h = TenantHost::parse("{tenant}.Recs.Example.com").unwrap();
        assert_eq!(
            h.tenant_of("books.recs.example.com").unwrap().unwrap(),
            t("books")
        );
        assert_eq!(
            h.tenant_of("BOOKS.recs.example.com:8787").unwrap().unwrap(),
            t("books")
        );
        assert!(h.tenant_of("recs.example.com").is_none());
        assert!(h.tenant_of("books.other.com").is_none());
        assert!(h.tenant_of("evil.recs.example.com.attacker.net").is_none());
        for bad in [
            "a.b.recs.example.com",
            "_x.recs.example.com",
            "%2e%2e.recs.example.com",
        ] {
            // Each is a 400 at the edge (see `error.rs`).
            assert!(h.tenant_of(bad).unwrap().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_bad_pattern_is_refused() {
        for bad in [
            "recs.example.com",
            "{tenant}.",
            "{tenant}..com",
            "{tenant}.a/b",
            "x.{tenant}.com",
        ] {
            assert!(TenantHost::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_host_wins_and_a_different_query_tenant_is_refused() {
        let d = Tenant::default_tenant();
        assert_eq!(resolve(None, None, d.clone()).unwrap(), d);
        assert_eq!(resolve(None, Some(t("q")), d.clone()).unwrap(), t("q"));
        assert_eq!(resolve(Some(Ok(t("h"))), None, d.clone()).unwrap(), t("h"));
        assert_eq!(
            resolve(Some(Ok(t("h"))), Some(t("h")), d.clone()).unwrap(),
            t("h")
        );
        assert_eq!(
            resolve(Some(Ok(t("h"))), Some(t("q")), d).unwrap_err(),
            HostTenantError::Mismatch {
                host: "h".into(),
                query: "q".into()
            }
        );
    }
}
