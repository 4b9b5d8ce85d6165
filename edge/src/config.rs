//! `EdgeConfig`: every setting of the worker in one documented struct.
//!
//! Built once per request from a lookup function over `[vars]` and secrets, so tests
//! pass a map. Unset vars get the defaults below; set but invalid vars are errors
//! (a typo should not silently fall back to a default).
//!
//! | var | default | meaning |
//! |---|---|---|
//! | `ORIGIN_URL` | unset (tier skipped) | base URL of the origin, e.g. `http://127.0.0.1:8080` |
//! | `SECONDARY_CDN_URL` | unset (tier skipped) | base URL of the static secondary CDN |
//! | `EDGE_CACHE_TTL_S` | 300 | longest time a document stays in the edge cache (capped by its freshness) |
//! | `SUBREQUEST_TIMEOUT_MS` | 2000 | timeout of each fetch to the secondary CDN or the origin |
//! | `BROWSER_MAX_AGE_S` | 30 | `max-age` for browsers (capped by freshness) |
//! | `DEFAULT_N` | 10 | items returned when the request has no `n` |
//! | `GENERATION_CACHE_S` | 5 | how long an isolate remembers a tenant's current KV generation |
//! | `CORS_ALLOW_ORIGIN` | `*` | value of `Access-Control-Allow-Origin` |
//! | `COUNTRY_REGIONS` | `geo-data/country-regions.json` | JSON override of the country → region map |
//! | `ADMIN_TOKEN` (secret) | unset (admin routes answer 503) | bearer token for `/admin/*` |

use contract::{RegionMap, MAX_N};
use thiserror::Error;

#[derive(Debug, Clone, PartialEq)]
pub struct EdgeConfig {
    pub origin_url: Option<String>,
    pub secondary_cdn_url: Option<String>,
    pub edge_cache_ttl_s: u64,
    pub subrequest_timeout_ms: u64,
    pub browser_max_age_s: u64,
    pub default_n: usize,
    pub generation_cache_s: u64,
    pub cors_allow_origin: String,
    pub region_map: RegionMap,
    pub admin_token: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    #[error("{var} must be {expected}; got {got:?}")]
    Invalid {
        var: &'static str,
        expected: &'static str,
        got: String,
    },
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            origin_url: None,
            secondary_cdn_url: None,
            edge_cache_ttl_s: 300,
            subrequest_timeout_ms: 2000,
            browser_max_age_s: 30,
            default_n: 10,
            generation_cache_s: 5,
            cors_allow_origin: "*".into(),
            region_map: RegionMap::builtin(),
            admin_token: None,
        }
    }
}

fn number<T: std::str::FromStr + PartialOrd>(
    var: &'static str,
    raw: Option<String>,
    default: T,
    range: std::ops::RangeInclusive<T>,
    expected: &'static str,
) -> Result<T, ConfigError> {
    match raw {
        None => Ok(default),
        Some(s) => match s.trim().parse::<T>() {
            Ok(v) if range.contains(&v) => Ok(v),
            _ => Err(ConfigError::Invalid {
                var,
                expected,
                got: s,
            }),
        },
    }
}

fn base_url(var: &'static str, raw: Option<String>) -> Result<Option<String>, ConfigError> {
    match raw.map(|s| s.trim().to_string()).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s)
            if (s.starts_with("http://") || s.starts_with("https://"))
                && !s.contains(char::is_whitespace) =>
        {
            Ok(Some(s.trim_end_matches('/').to_string()))
        }
        Some(s) => Err(ConfigError::Invalid {
            var,
            expected: "an http:// or https:// URL",
            got: s,
        }),
    }
}

impl EdgeConfig {
    /// Reads every setting through `lookup` (var or secret name → value).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let d = EdgeConfig::default();
        let region_map = match lookup("COUNTRY_REGIONS").filter(|s| !s.trim().is_empty()) {
            None => d.region_map,
            Some(json) => RegionMap::from_json(&json).map_err(|e| ConfigError::Invalid {
                var: "COUNTRY_REGIONS",
                expected: "a region map like geo-data/country-regions.json",
                got: e.to_string(),
            })?,
        };
        Ok(EdgeConfig {
            origin_url: base_url("ORIGIN_URL", lookup("ORIGIN_URL"))?,
            secondary_cdn_url: base_url("SECONDARY_CDN_URL", lookup("SECONDARY_CDN_URL"))?,
            edge_cache_ttl_s: number(
                "EDGE_CACHE_TTL_S",
                lookup("EDGE_CACHE_TTL_S"),
                d.edge_cache_ttl_s,
                0..=31_536_000,
                "seconds from 0 to 31536000",
            )?,
            subrequest_timeout_ms: number(
                "SUBREQUEST_TIMEOUT_MS",
                lookup("SUBREQUEST_TIMEOUT_MS"),
                d.subrequest_timeout_ms,
                1..=60_000,
                "milliseconds from 1 to 60000",
            )?,
            browser_max_age_s: number(
                "BROWSER_MAX_AGE_S",
                lookup("BROWSER_MAX_AGE_S"),
                d.browser_max_age_s,
                0..=86_400,
                "seconds from 0 to 86400",
            )?,
            default_n: number(
                "DEFAULT_N",
                lookup("DEFAULT_N"),
                d.default_n,
                1..=MAX_N,
                "a number from 1 to 100",
            )?,
            generation_cache_s: number(
                "GENERATION_CACHE_S",
                lookup("GENERATION_CACHE_S"),
                d.generation_cache_s,
                0..=3600,
                "seconds from 0 to 3600",
            )?,
            cors_allow_origin: lookup("CORS_ALLOW_ORIGIN")
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .unwrap_or(d.cors_allow_origin),
            region_map,
            admin_token: lookup("ADMIN_TOKEN").filter(|s| !s.is_empty()),
        })
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(pairs: &[(&str, &str)]) -> Result<EdgeConfig, ConfigError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        EdgeConfig::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn unset_vars_get_the_documented_defaults() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c, EdgeConfig::default());
        assert_eq!(c.edge_cache_ttl_s, 300);
        assert_eq!(c.subrequest_timeout_ms, 2000);
    }

    #[test]
    fn set_vars_override_and_urls_lose_trailing_slashes() {
        let c = cfg(&[
            ("ORIGIN_URL", "http://127.0.0.1:8080/"),
            ("EDGE_CACHE_TTL_S", "60"),
            ("ADMIN_TOKEN", "s3"),
        ])
        .unwrap();
        assert_eq!(c.origin_url.as_deref(), Some("http://127.0.0.1:8080"));
        assert_eq!(c.edge_cache_ttl_s, 60);
        assert_eq!(c.admin_token.as_deref(), Some("s3"));
    }

    #[test]
    fn invalid_values_are_errors_not_silent_defaults() {
        assert!(cfg(&[("SUBREQUEST_TIMEOUT_MS", "fast")]).is_err());
        assert!(cfg(&[("SUBREQUEST_TIMEOUT_MS", "0")]).is_err());
        assert!(cfg(&[("ORIGIN_URL", "ftp://x")]).is_err());
        assert!(cfg(&[("COUNTRY_REGIONS", "{}")]).is_err());
    }
}
