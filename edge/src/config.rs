//! `EdgeConfig`: every setting of the worker in one documented struct.
//!
//! Built once per request from a lookup function over `[vars]` and secrets, so tests
//! pass a map. Unset vars get the defaults below; set but invalid vars are errors
//! (a typo should not silently fall back to a default).
//!
//! | var | default | meaning |
//! |---|---|---|
//! | `ORIGIN_URL` | unset | the origin's base URL when there is one origin for every region |
//! | `ORIGINS` | unset | JSON `{"name": "url", …}`: named origins, tried per region in `REGION_ORIGINS` order |
//! | `REGION_ORIGINS` | `geo-data/region-origins.json` | JSON `{"region": ["name" or ["name", …], …]}`: each region's origins in failover order; an array is a group of equal rank, spread by user ([`crate::origins`]) |
//! | `BREAKER_FAILURES` | 5 | consecutive failures that open an origin's circuit breaker |
//! | `BREAKER_OPEN_S` | 60 | seconds a breaker stays open before one probe is let through |
//! | `TRUST_X_FORWARDED_FOR` | false | use the first `X-Forwarded-For` address as the client IP (only behind a proxy of yours) |
//! | `GEO_DB_KEY` | `geo/country.mmdb` | KV key of the MaxMind DB used when Cloudflare gives no country |
//! | `SECONDARY_CDN_URL` | unset (tier skipped) | base URL of the static secondary CDN |
//! | `SECONDARY_CDN_LAYOUT` | `current` | `current`: the base URL shows the current generation (`origin cdn` over the CDN folder); `pointer`: object storage (R2/S3), where the base holds a `current` pointer object and `generations/{gen}/…` (read through the pointer, remembered for `GENERATION_CACHE_S`) |
//! | `EDGE_CACHE_TTL_S` | 300 | longest time a document stays in the edge cache (capped by its freshness) |
//! | `HOT_CACHE_S` | 5 | seconds a document stays in an isolate's memory in front of the Cache API (0 = off) |
//! | `HOT_CACHE_ITEMS` | 1000 | documents an isolate keeps in memory at most |
//! | `IMPRESSIONS` | true | report served items to the origin (stored as `recommendation_viewed` events) |
//! | `IMPRESSION_BATCH` | 2000 | impressions (items shown) waiting that make a background batch due (1–10000) |
//! | `IMPRESSION_FLUSH_MS` | 2000 | longest an impression waits in an isolate before it is sent |
//! | `SUBREQUEST_TIMEOUT_MS` | 2000 | timeout of each fetch to the secondary CDN or the origin |
//! | `BROWSER_MAX_AGE_S` | 30 | `max-age` for browsers (capped by freshness) |
//! | `DEFAULT_N` | 10 | items returned when the request has no `n` |
//! | `GENERATION_CACHE_S` | 5 | how long an isolate remembers a tenant's current KV generation (and the secondary CDN's pointer) |
//! | `CORS_ALLOW_ORIGIN` | `*` | value of `Access-Control-Allow-Origin` |
//! | `COUNTRY_REGIONS` | `geo-data/country-regions.json` | JSON override of the country → region map |
//! | `CACHE_HOST` | `edge-recs.invalid` | host of every edge-cache key (set it to your zone's host in production); the client's `Host` never enters a key |
//! | `RATE_LIMIT_PERIOD_S` | 60 | the `simple.period` of the `EVENTS_LIMITER` rate limiting binding (10 or 60): a refused client gets `Retry-After` up to the end of the window |
//! | `ADMIN_TOKEN` (secret) | unset (admin routes answer 503) | bearer token for `/admin/*`, sent to the origin on its writes and reports, and the key of the client hash |
//!
//! The rate limit itself is the binding's: `[[ratelimits]] name = "EVENTS_LIMITER"`,
//! `simple = { limit = 100, period = 60 }` in `wrangler.toml` (100 `POST /v1/events`
//! per client and minute); without the binding the route is not limited.

use std::collections::BTreeMap;

use contract::{Region, RegionMap, MAX_N};
use thiserror::Error;

use crate::breaker::BreakerConfig;
use crate::impressions::ImpressionConfig;
pub use crate::origins::{parse_region_origins, AffinityKey, Origin, Ranks};

/// The region → origin names map shipped in `geo-data/region-origins.json`.
pub const BUILTIN_REGION_ORIGINS_JSON: &str = include_str!("../../geo-data/region-origins.json");

#[derive(Debug, Clone, PartialEq)]
pub struct EdgeConfig {
    /// Named origins (`ORIGINS`, or `ORIGIN_URL` as the one origin named `default`).
    pub origins: BTreeMap<String, String>,
    /// Region → origin names in failover order, in ranks of equal rank.
    pub region_origins: BTreeMap<String, Ranks>,
    pub breaker: BreakerConfig,
    pub impressions: ImpressionConfig,
    pub trust_x_forwarded_for: bool,
    pub geo_db_key: String,
    pub secondary_cdn_url: Option<String>,
    /// How documents are laid out below `secondary_cdn_url` (`SECONDARY_CDN_LAYOUT`).
    pub secondary_cdn_layout: CdnLayout,
    pub edge_cache_ttl_s: u64,
    pub hot_cache_s: u64,
    pub hot_cache_items: usize,
    pub subrequest_timeout_ms: u64,
    pub browser_max_age_s: u64,
    pub default_n: usize,
    pub generation_cache_s: u64,
    pub cors_allow_origin: String,
    pub region_map: RegionMap,
    pub admin_token: Option<String>,
    /// Host of every edge-cache key (`CACHE_HOST`).
    pub cache_host: String,
    /// Host names that name the tenant (`TENANT_HOST`, e.g. `{tenant}.recs.example.com`).
    pub tenant_host: Option<crate::tenant_host::TenantHost>,
    /// The rate limiting binding's window (`RATE_LIMIT_PERIOD_S`).
    pub rate_limit_period_s: u64,
    /// SipHash keys of the client key, derived from `ADMIN_TOKEN`.
    pub client_hash_keys: (u64, u64),
}

/// How the secondary CDN lays documents out below its base URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CdnLayout {
    /// The base URL shows the current generation: `{base}/{tenant}/users/{user}.json`
    /// (the CDN folder served by `origin cdn`, whose `current` is a symlink).
    #[default]
    Current,
    /// Object storage: `{base}/current` names the generation, documents are at
    /// `{base}/generations/{gen}/{tenant}/users/{user}.json`.
    Pointer,
}

impl CdnLayout {
    /// The URL of a document at `path` (below a generation's root) under `base`, when the
    /// current generation (needed by [`CdnLayout::Pointer`]) is `generation`.
    pub fn document_url(
        self,
        base: &str,
        generation: Option<&contract::keys::Generation>,
        path: &str,
    ) -> Option<String> {
        match (self, generation) {
            (CdnLayout::Current, _) => Some(format!("{base}/{path}")),
            (CdnLayout::Pointer, Some(g)) => Some(format!(
                "{base}/{}/{path}",
                contract::keys::cdn_generation_dir(g)
            )),
            (CdnLayout::Pointer, None) => None,
        }
    }

    /// The URL of the pointer object, in the layouts that have one.
    pub fn pointer_url(self, base: &str) -> Option<String> {
        match self {
            CdnLayout::Current => None,
            CdnLayout::Pointer => Some(format!("{base}/{}", contract::keys::CDN_POINTER)),
        }
    }
}

/// Default [`EdgeConfig::cache_host`]: a reserved name that is nobody's host.
pub const DEFAULT_CACHE_HOST: &str = "edge-recs.invalid";

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    #[error("{var} must be {expected}; got {got:?}")]
    Invalid {
        var: &'static str,
        expected: &'static str,
        got: String,
    },
    /// `REGION_ORIGINS` is not a valid region → origins map (the error names the region).
    #[error("REGION_ORIGINS: {0}")]
    RegionOrigins(#[from] crate::origins::RegionOriginsError),
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            origins: BTreeMap::new(),
            region_origins: parse_region_origins(BUILTIN_REGION_ORIGINS_JSON)
                .expect("geo-data/region-origins.json is validated by a unit test"),
            breaker: BreakerConfig::default(),
            impressions: ImpressionConfig::default(),
            trust_x_forwarded_for: false,
            geo_db_key: "geo/country.mmdb".into(),
            secondary_cdn_url: None,
            secondary_cdn_layout: CdnLayout::Current,
            edge_cache_ttl_s: 300,
            hot_cache_s: 5,
            hot_cache_items: 1000,
            subrequest_timeout_ms: 2000,
            browser_max_age_s: 30,
            default_n: 10,
            generation_cache_s: 5,
            cors_allow_origin: "*".into(),
            region_map: RegionMap::builtin(),
            admin_token: None,
            cache_host: DEFAULT_CACHE_HOST.into(),
            tenant_host: None,
            rate_limit_period_s: 60,
            client_hash_keys: crate::client::hash_keys(None),
        }
    }
}

fn cache_host(raw: Option<String>) -> Result<String, ConfigError> {
    match raw
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
    {
        None => Ok(DEFAULT_CACHE_HOST.into()),
        Some(h)
            if h.len() <= 253
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b':') =>
        {
            Ok(h)
        }
        Some(h) => Err(ConfigError::Invalid {
            var: "CACHE_HOST",
            expected: "a host name (letters, digits, '.', '-', optional :port)",
            got: h,
        }),
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

fn flag(var: &'static str, raw: Option<String>, default: bool) -> Result<bool, ConfigError> {
    match raw.as_deref().map(str::trim) {
        None | Some("") => Ok(default),
        Some("true") | Some("1") => Ok(true),
        Some("false") | Some("0") => Ok(false),
        Some(other) => Err(ConfigError::Invalid {
            var,
            expected: "true or false",
            got: other.into(),
        }),
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

fn parse_origins(json: &str) -> Result<BTreeMap<String, String>, String> {
    let raw: BTreeMap<String, String> = serde_json::from_str(json).map_err(|e| e.to_string())?;
    raw.into_iter()
        .map(|(name, url)| match base_url("ORIGINS", Some(url)) {
            Ok(Some(u)) => Ok((name, u)),
            Ok(None) => Err(format!("origin {name} has an empty URL")),
            Err(e) => Err(format!("origin {name}: {e}")),
        })
        .collect()
}

impl EdgeConfig {
    /// A region's origins bound to a URL, in ranks: the region's configured names that
    /// are bound (a rank with none bound is dropped); when none is, every origin, each a
    /// rank of its own, by name (as before ranks existed).
    pub fn ranks_for(&self, region: &Region) -> Vec<Vec<Origin>> {
        let bound = |name: &String, rank: usize| {
            self.origins.get(name).map(|url| Origin {
                name: name.clone(),
                url: url.clone(),
                rank,
            })
        };
        let listed: Vec<Vec<Origin>> = self
            .region_origins
            .get(region.as_str())
            .into_iter()
            .flatten()
            .map(|group| group.iter().filter_map(|n| bound(n, 0)).collect::<Vec<_>>())
            .filter(|group| !group.is_empty())
            .enumerate()
            .map(|(rank, group)| group.into_iter().map(|o| Origin { rank, ..o }).collect())
            .collect();
        if !listed.is_empty() {
            return listed;
        }
        self.origins
            .keys()
            .enumerate()
            .filter_map(|(rank, name)| bound(name, rank).map(|o| vec![o]))
            .collect()
    }

    /// The origins to try for a region, in order, for a request keyed by `key`: rank
    /// after rank, each rank's instances by rendezvous hashing of `key`
    /// ([`crate::origins::order`]).
    pub fn origins_for(&self, region: &Region, key: &AffinityKey) -> Vec<Origin> {
        crate::origins::order(self.ranks_for(region), key)
    }

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
        let invalid = |var: &'static str, expected: &'static str| {
            move |got: String| ConfigError::Invalid { var, expected, got }
        };
        let mut origins = match lookup("ORIGINS").filter(|s| !s.trim().is_empty()) {
            Some(json) => parse_origins(&json).map_err(invalid(
                "ORIGINS",
                "a JSON object of origin name to http(s) URL",
            ))?,
            None => BTreeMap::new(),
        };
        if let Some(url) = base_url("ORIGIN_URL", lookup("ORIGIN_URL"))? {
            origins.entry("default".to_string()).or_insert(url);
        }
        let region_origins = match lookup("REGION_ORIGINS").filter(|s| !s.trim().is_empty()) {
            Some(json) => parse_region_origins(&json)?,
            None => d.region_origins,
        };
        let admin_token = lookup("ADMIN_TOKEN").filter(|s| !s.is_empty());
        let trust_x_forwarded_for = flag(
            "TRUST_X_FORWARDED_FOR",
            lookup("TRUST_X_FORWARDED_FOR"),
            false,
        )?;
        let impressions = ImpressionConfig {
            enabled: flag("IMPRESSIONS", lookup("IMPRESSIONS"), true)?,
            batch: number(
                "IMPRESSION_BATCH",
                lookup("IMPRESSION_BATCH"),
                ImpressionConfig::default().batch,
                1..=contract::events::MAX_IMPRESSIONS_PER_BATCH,
                "a number from 1 to 10000",
            )?,
            flush_ms: number(
                "IMPRESSION_FLUSH_MS",
                lookup("IMPRESSION_FLUSH_MS"),
                2000u64,
                100..=600_000,
                "milliseconds from 100 to 600000",
            )? as f64,
            capacity: ImpressionConfig::default().capacity,
        };
        Ok(EdgeConfig {
            origins,
            region_origins,
            breaker: BreakerConfig {
                failure_threshold: number(
                    "BREAKER_FAILURES",
                    lookup("BREAKER_FAILURES"),
                    5u32,
                    1..=1000,
                    "a number from 1 to 1000",
                )?,
                open_for_ms: number(
                    "BREAKER_OPEN_S",
                    lookup("BREAKER_OPEN_S"),
                    60u64,
                    1..=86_400,
                    "seconds from 1 to 86400",
                )? as f64
                    * 1000.0,
            },
            impressions,
            trust_x_forwarded_for,
            geo_db_key: lookup("GEO_DB_KEY")
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .unwrap_or(d.geo_db_key),
            secondary_cdn_url: base_url("SECONDARY_CDN_URL", lookup("SECONDARY_CDN_URL"))?,
            secondary_cdn_layout: match lookup("SECONDARY_CDN_LAYOUT").as_deref().map(str::trim) {
                None | Some("") | Some("current") => CdnLayout::Current,
                Some("pointer") => CdnLayout::Pointer,
                Some(other) => {
                    return Err(ConfigError::Invalid {
                        var: "SECONDARY_CDN_LAYOUT",
                        expected: "current or pointer",
                        got: other.to_string(),
                    })
                }
            },
            edge_cache_ttl_s: number(
                "EDGE_CACHE_TTL_S",
                lookup("EDGE_CACHE_TTL_S"),
                d.edge_cache_ttl_s,
                0..=31_536_000,
                "seconds from 0 to 31536000",
            )?,
            hot_cache_s: number(
                "HOT_CACHE_S",
                lookup("HOT_CACHE_S"),
                d.hot_cache_s,
                0..=3600,
                "seconds from 0 to 3600",
            )?,
            hot_cache_items: number(
                "HOT_CACHE_ITEMS",
                lookup("HOT_CACHE_ITEMS"),
                d.hot_cache_items,
                0..=100_000,
                "a number from 0 to 100000",
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
            cache_host: cache_host(lookup("CACHE_HOST"))?,
            tenant_host: match lookup("TENANT_HOST").filter(|s| !s.trim().is_empty()) {
                None => None,
                Some(p) => Some(crate::tenant_host::TenantHost::parse(&p).map_err(|e| {
                    ConfigError::Invalid {
                        var: "TENANT_HOST",
                        expected:
                            "{tenant}. followed by a host name, e.g. {tenant}.recs.example.com",
                        got: e,
                    }
                })?),
            },
            rate_limit_period_s: match lookup("RATE_LIMIT_PERIOD_S").as_deref().map(str::trim) {
                None | Some("") | Some("60") => 60,
                Some("10") => 10,
                Some(other) => {
                    return Err(ConfigError::Invalid {
                        var: "RATE_LIMIT_PERIOD_S",
                        expected: "10 or 60 (the periods Cloudflare's rate limiter has)",
                        got: other.into(),
                    })
                }
            },
            client_hash_keys: crate::client::hash_keys(admin_token.as_deref()),
            admin_token,
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
    fn the_secondary_cdn_layout_picks_where_documents_are_read() {
        let g = contract::keys::generation_name(7, 1);
        let base = "https://cdn.example.com/recs";
        let current = cfg(&[]).unwrap().secondary_cdn_layout;
        assert_eq!(current, CdnLayout::Current);
        assert_eq!(current.pointer_url(base), None);
        assert_eq!(
            current
                .document_url(base, None, "t/users/u.json")
                .as_deref(),
            Some("https://cdn.example.com/recs/t/users/u.json")
        );
        let pointer = cfg(&[("SECONDARY_CDN_LAYOUT", "pointer")])
            .unwrap()
            .secondary_cdn_layout;
        assert_eq!(
            pointer.pointer_url(base).as_deref(),
            Some("https://cdn.example.com/recs/current")
        );
        assert_eq!(
            pointer
                .document_url(base, Some(&g), "t/users/u.json")
                .as_deref(),
            Some("https://cdn.example.com/recs/generations/g7-1/t/users/u.json")
        );
        assert_eq!(pointer.document_url(base, None, "t/users/u.json"), None);
        let err = cfg(&[("SECONDARY_CDN_LAYOUT", "symlink")]).unwrap_err();
        assert!(err.to_string().contains("SECONDARY_CDN_LAYOUT"), "{err}");
    }

    #[test]
    fn set_vars_override_and_urls_lose_trailing_slashes() {
        let c = cfg(&[
            ("ORIGIN_URL", "http://127.0.0.1:8080/"),
            ("EDGE_CACHE_TTL_S", "60"),
            ("ADMIN_TOKEN", "s3"),
        ])
        .unwrap();
        assert_eq!(
            c.origins.get("default").map(String::as_str),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(c.edge_cache_ttl_s, 60);
        assert_eq!(c.admin_token.as_deref(), Some("s3"));
    }

    #[test]
    fn invalid_values_are_errors_not_silent_defaults() {
        assert!(cfg(&[("SUBREQUEST_TIMEOUT_MS", "fast")]).is_err());
        assert!(cfg(&[("SUBREQUEST_TIMEOUT_MS", "0")]).is_err());
        assert!(cfg(&[("ORIGIN_URL", "ftp://x")]).is_err());
        assert!(cfg(&[("COUNTRY_REGIONS", "{}")]).is_err());
        assert!(cfg(&[("ORIGINS", r#"{"a":"ftp://x"}"#)]).is_err());
        assert!(cfg(&[("REGION_ORIGINS", r#"{"europe":["a","a"]}"#)]).is_err());
        assert!(cfg(&[("TRUST_X_FORWARDED_FOR", "yes")]).is_err());
        assert!(cfg(&[("BREAKER_FAILURES", "0")]).is_err());
        assert!(cfg(&[("CACHE_HOST", "a/b")]).is_err());
        assert!(cfg(&[("RATE_LIMIT_PERIOD_S", "30")]).is_err());
        assert!(cfg(&[("TENANT_HOST", "recs.example.com")]).is_err());
        assert!(cfg(&[("TENANT_HOST", "{tenant}.recs.example.com")])
            .unwrap()
            .tenant_host
            .is_some());
        assert!(cfg(&[]).unwrap().tenant_host.is_none());
    }

    #[test]
    fn the_cache_host_and_rate_limit_window_are_read() {
        let c = cfg(&[
            ("CACHE_HOST", " Recs.Example.com "),
            ("RATE_LIMIT_PERIOD_S", "10"),
        ])
        .unwrap();
        assert_eq!(
            (c.cache_host.as_str(), c.rate_limit_period_s),
            ("recs.example.com", 10)
        );
        assert_eq!(cfg(&[]).unwrap().cache_host, DEFAULT_CACHE_HOST);
        let keyed = cfg(&[("ADMIN_TOKEN", "t")]).unwrap();
        assert_ne!(
            keyed.client_hash_keys,
            EdgeConfig::default().client_hash_keys
        );
    }

    #[test]
    fn shipped_region_origins_cover_every_region_of_the_region_map() {
        let ro = parse_region_origins(BUILTIN_REGION_ORIGINS_JSON).unwrap();
        for region in RegionMap::builtin().regions() {
            let names = ro
                .get(region.as_str())
                .unwrap_or_else(|| panic!("{region} has no origins"));
            assert!(
                names[0].iter().all(|n| n.starts_with(region.as_str())),
                "a region's own origins come first: {region}: {names:?}"
            );
        }
    }

    fn key(user: &str) -> AffinityKey {
        AffinityKey::User {
            tenant: "default".into(),
            user: user.into(),
        }
    }

    #[test]
    fn each_region_tries_its_own_origin_first_then_the_others_in_order() {
        let c = cfg(&[("ORIGINS", r#"{"us-east":"http://us","europe":"http://eu"}"#)]).unwrap();
        let names = |r: &str| {
            c.origins_for(&Region::parse(r).unwrap(), &key("u1"))
                .into_iter()
                .map(|o| o.name)
                .collect::<Vec<_>>()
        };
        assert_eq!(names("europe"), ["europe", "us-east"]);
        assert_eq!(names("us-east"), ["us-east", "europe"]);
        assert_eq!(names("asia"), ["us-east", "europe"]);
    }

    #[test]
    fn a_single_origin_url_serves_every_region() {
        let c = cfg(&[("ORIGIN_URL", "http://o")]).unwrap();
        let o = c.origins_for(&Region::parse("asia").unwrap(), &key("u1"));
        assert_eq!(
            o,
            vec![Origin {
                name: "default".into(),
                url: "http://o".into(),
                rank: 0,
            }]
        );
    }

    #[test]
    fn equal_rank_instances_come_first_in_each_users_own_order_then_the_next_ranks() {
        let c = cfg(&[
            (
                "ORIGINS",
                r#"{"eu-a":"http://a","eu-b":"http://b","us-east":"http://us"}"#,
            ),
            (
                "REGION_ORIGINS",
                r#"{"europe":[["eu-a","eu-b","eu-c"],"unbound","us-east"]}"#,
            ),
        ])
        .unwrap();
        let europe = Region::parse("europe").unwrap();
        let ranks = c.ranks_for(&europe);
        let spelled: Vec<Vec<(&str, usize)>> = ranks
            .iter()
            .map(|g| g.iter().map(|o| (o.name.as_str(), o.rank)).collect())
            .collect();
        assert_eq!(
            spelled,
            vec![vec![("eu-a", 0), ("eu-b", 0)], vec![("us-east", 1)]],
            "unbound names and ranks are dropped, the rest renumbered"
        );
        let mut firsts = std::collections::BTreeSet::new();
        for u in 0..50 {
            let o = c.origins_for(&europe, &key(&format!("u{u}")));
            let names: Vec<&str> = o.iter().map(|o| o.name.as_str()).collect();
            assert_eq!(names.len(), 3);
            assert_eq!(names[2], "us-east");
            assert_eq!(o, c.origins_for(&europe, &key(&format!("u{u}"))));
            firsts.insert(names[0].to_string());
        }
        assert_eq!(firsts.len(), 2, "both instances get users: {firsts:?}");
    }

    #[test]
    fn a_bad_region_origins_var_names_the_region() {
        let e = cfg(&[("REGION_ORIGINS", r#"{"europe":[["a"],[]]}"#)])
            .unwrap_err()
            .to_string();
        assert!(
            e == r#"REGION_ORIGINS: region "europe": entry 1 is an empty group"#,
            "{e}"
        );
    }
}
