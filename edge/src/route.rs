//! Method + path + query → a validated [`Route`].
//!
//! Ids are percent-decoded and then checked by the contract's rules, so `a%2Fb`
//! is refused for its `/` just like a raw `a/b` path segment. `n`, `tenant`, `exclude`
//! and `category` follow the contract's rules ([`contract::params`]), the same the
//! origin applies.
//!
//! A dot segment never reaches the worker as such: the URL parser (workerd's, and
//! Cloudflare's URL normalisation in front of it) resolves `/v1/recommendations/..`
//! and `/v1/recommendations/%2e%2e` to `/v1/` before the worker sees the request. So
//! `/v1/` and `/v1` answer what the id rules say of `..`: 400 `invalid_user_id`.

use contract::params::Filters;
use contract::{IdError, ItemId, ItemList, Subject, Tenant, UserId};

use crate::error::EdgeError;

/// Longest query string accepted.
pub const MAX_QUERY_LEN: usize = 1024;
/// Most bytes of request headers (names, values and separators) the edge reads;
/// more is answered 431 JSON. workerd itself cuts off at 128 KiB with a plain-text 431
/// the worker never sees, so this limit sits well below it.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// Refuses a request whose headers add up to more than [`MAX_HEADER_BYTES`].
pub fn check_header_size<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<(), EdgeError> {
    let size: usize = headers
        .into_iter()
        .map(|(name, value)| name.len() + value.len() + 4)
        .sum();
    if size > MAX_HEADER_BYTES {
        return Err(EdgeError::HeadersTooLarge {
            size,
            max: MAX_HEADER_BYTES,
        });
    }
    Ok(())
}

/// A request the edge knows how to answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    Recommendations(RecRequest),
    Health,
    /// CORS preflight for a known route.
    Preflight,
    AdminPublish,
    AdminPurge,
    /// `POST /admin/delete-tenant`: a deleted tenant's KV pointer removed.
    AdminDeleteTenant,
    /// `PUT /admin/geo-db`: upload the MaxMind DB used for GeoIP lookups.
    AdminGeoDb,
    /// `POST /v1/events`: events to validate and forward to the user's regional origin,
    /// with the tenant `?tenant=` names, if any (else the host's, else the default).
    Events(Option<Tenant>),
    /// `GET /`: the demo page.
    DemoPage,
}

/// `GET /v1/recommendations/{user_id}?n=&tenant=` (a user's list) or
/// `GET /v1/items/{item_id}/similar|bought-together?n=&tenant=` (an item's list), validated.
#[derive(Debug, Clone, PartialEq)]
pub struct RecRequest {
    pub tenant: Tenant,
    /// Whose list: the user's, or one of the item's.
    pub subject: Subject,
    pub n: usize,
    /// `exclude=` and `category=`, applied to the stored list before it is cut to `n`.
    pub filters: Filters,
    /// Whether `tenant` came from `?tenant=` (else it is the default; a host name
    /// mapping may still name one: [`crate::tenant_host`]).
    pub tenant_in_query: bool,
}

const RECS_PREFIX: &str = "/v1/recommendations";
const ITEMS_PREFIX: &str = "/v1/items/";

impl RecRequest {
    /// The request with its subject and query read (`n`, `tenant`, `exclude`, `category`).
    fn read(subject: Subject, query: Option<&str>, default_n: usize) -> Result<Self, EdgeError> {
        let q = Query::parse(query.unwrap_or(""))?;
        Ok(RecRequest {
            tenant: q.tenant()?,
            tenant_in_query: q.tenant.is_some(),
            subject,
            n: q.n(default_n)?,
            filters: Filters {
                exclude: contract::params::parse_exclude(q.exclude.as_deref())
                    .map_err(|e| EdgeError::InvalidExclude(e.to_string()))?,
                category: contract::params::parse_category(q.category.as_deref())
                    .map_err(|e| EdgeError::InvalidCategory(e.to_string()))?,
            },
        })
    }
}

/// Decides what a request is, or why it is refused.
pub fn route(
    method: &str,
    path: &str,
    query: Option<&str>,
    default_n: usize,
) -> Result<Route, EdgeError> {
    let method = method.to_ascii_uppercase();
    let not_allowed = |allowed: &'static str| EdgeError::MethodNotAllowed {
        method: method.clone(),
        allowed,
    };
    let is_read = method == "GET" || method == "HEAD";

    if path == RECS_PREFIX || path.starts_with("/v1/recommendations/") {
        return match method.as_str() {
            "OPTIONS" => Ok(Route::Preflight),
            _ if is_read => {
                let raw_id = path
                    .strip_prefix(RECS_PREFIX)
                    .unwrap_or("")
                    .strip_prefix('/')
                    .unwrap_or("");
                let user =
                    UserId::parse(&percent_decode(raw_id).map_err(EdgeError::InvalidQuery)?)?;
                Ok(Route::Recommendations(RecRequest::read(
                    Subject::User(user),
                    query,
                    default_n,
                )?))
            }
            _ => Err(not_allowed("GET, HEAD, OPTIONS")),
        };
    }
    // `/v1/items/{id}/similar`, `/v1/items/{id}/bought-together`; other `/v1/items/…`
    // paths (the catalogue) are the origin's, not the edge's: 404 here.
    if let Some((raw_id, list)) = path
        .strip_prefix(ITEMS_PREFIX)
        .and_then(|rest| rest.rsplit_once('/'))
        .and_then(|(id, list)| Some((id, ItemList::from_segment(list)?)))
    {
        return match method.as_str() {
            "OPTIONS" => Ok(Route::Preflight),
            _ if is_read => {
                let item =
                    ItemId::parse(&percent_decode(raw_id).map_err(EdgeError::InvalidQuery)?)?;
                Ok(Route::Recommendations(RecRequest::read(
                    Subject::Item(list, item),
                    query,
                    default_n,
                )?))
            }
            _ => Err(not_allowed("GET, HEAD, OPTIONS")),
        };
    }
    match (path, method.as_str()) {
        // `/v1/recommendations/..` (or `%2e%2e`), resolved by the URL parser.
        ("/v1/" | "/v1", _) if is_read => Err(EdgeError::InvalidId(IdError::DotSegment {
            kind: "user id",
        })),
        ("/", _) if is_read => Ok(Route::DemoPage),
        ("/", _) => Err(not_allowed("GET, HEAD")),
        ("/v1/events", "POST") => {
            let q = Query::parse(query.unwrap_or_default())?;
            Ok(Route::Events(match q.tenant.is_some() {
                true => Some(q.tenant()?),
                false => None,
            }))
        }
        ("/v1/events", "OPTIONS") => Ok(Route::Preflight),
        ("/v1/events", _) => Err(not_allowed("POST, OPTIONS")),
        ("/health", "OPTIONS") => Ok(Route::Preflight),
        ("/health", _) if is_read => Ok(Route::Health),
        ("/health", _) => Err(not_allowed("GET, HEAD, OPTIONS")),
        ("/admin/publish", "POST") => Ok(Route::AdminPublish),
        ("/admin/purge", "POST") => Ok(Route::AdminPurge),
        ("/admin/delete-tenant", "POST") => Ok(Route::AdminDeleteTenant),
        ("/admin/publish" | "/admin/purge" | "/admin/delete-tenant", _) => Err(not_allowed("POST")),
        ("/admin/geo-db", "PUT") => Ok(Route::AdminGeoDb),
        ("/admin/geo-db", _) => Err(not_allowed("PUT")),
        _ => Err(EdgeError::NotFound {
            method,
            path: path.chars().take(200).collect(),
        }),
    }
}

/// The query parameters the edge reads.
#[derive(Debug, Default)]
struct Query {
    n: Option<String>,
    tenant: Option<String>,
    exclude: Option<String>,
    category: Option<String>,
}

impl Query {
    fn parse(raw: &str) -> Result<Self, EdgeError> {
        if raw.len() > MAX_QUERY_LEN {
            return Err(EdgeError::InvalidQuery(format!(
                "query string is longer than {MAX_QUERY_LEN} bytes"
            )));
        }
        let mut q = Query::default();
        for pair in raw.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let slot = match k {
                "n" => &mut q.n,
                "tenant" => &mut q.tenant,
                "exclude" => &mut q.exclude,
                "category" => &mut q.category,
                _ => continue,
            };
            if slot.is_some() {
                return Err(EdgeError::InvalidQuery(format!(
                    "parameter {k} is given more than once"
                )));
            }
            *slot = Some(percent_decode(v).map_err(EdgeError::InvalidQuery)?);
        }
        Ok(q)
    }

    fn n(&self, default_n: usize) -> Result<usize, EdgeError> {
        contract::params::parse_n(self.n.as_deref(), default_n).map_err(|e| EdgeError::InvalidN {
            got: e.got,
            max: contract::MAX_N,
        })
    }

    fn tenant(&self) -> Result<Tenant, EdgeError> {
        Ok(contract::params::parse_tenant(self.tenant.as_deref())?)
    }
}

/// Decodes `%XX` escapes and `+`; refuses malformed escapes and invalid UTF-8.
pub fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok());
                let byte = hex
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or("malformed %-escape")?;
                out.push(byte);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| "escapes do not decode to UTF-8".to_string())
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    fn get(path: &str, q: Option<&str>) -> Result<Route, EdgeError> {
        route("GET", path, q, 10)
    }

    #[test]
    fn a_plain_request_gets_default_tenant_and_n() {
        let r = get("/v1/recommendations/u1", None).unwrap();
        let Route::Recommendations(r) = r else {
            panic!("{r:?}")
        };
        assert_eq!(
            (r.tenant.as_str(), &r.subject, r.n),
            ("default", &Subject::User(UserId::parse("u1").unwrap()), 10)
        );
    }

    #[test]
    fn an_items_lists_are_routed_with_the_same_query_rules() {
        let Route::Recommendations(r) = get(
            "/v1/items/sku%2D1/bought-together",
            Some("n=3&tenant=shop&category=books&exclude=i2"),
        )
        .unwrap() else {
            panic!()
        };
        let item = ItemId::parse("sku-1").unwrap();
        assert_eq!(r.subject, Subject::Item(ItemList::BoughtTogether, item));
        assert_eq!((r.tenant.as_str(), r.n), ("shop", 3));
        assert_eq!(r.filters.exclude.len(), 1);
        assert!(matches!(
            get("/v1/items/i1/similar", None),
            Ok(Route::Recommendations(_))
        ));
        assert!(matches!(
            route("OPTIONS", "/v1/items/i1/similar", None, 10),
            Ok(Route::Preflight)
        ));
        assert!(matches!(
            route("POST", "/v1/items/i1/similar", None, 10),
            Err(EdgeError::MethodNotAllowed { .. })
        ));
        for bad in [
            "/v1/items/a%2Fb/similar",
            "/v1/items/a/b/similar",
            "/v1/items//similar",
        ] {
            assert!(
                matches!(get(bad, None), Err(EdgeError::InvalidId(_))),
                "{bad}"
            );
        }
        for other in ["/v1/items/i1", "/v1/items/i1/cheapest", "/v1/items"] {
            assert!(
                matches!(get(other, None), Err(EdgeError::NotFound { .. })),
                "{other}"
            );
        }
        assert!(matches!(
            get("/v1/items/i1/similar", Some("n=0")),
            Err(EdgeError::InvalidN { .. })
        ));
    }

    #[test]
    fn n_and_tenant_are_read_from_the_query() {
        let Route::Recommendations(r) =
            get("/v1/recommendations/u1", Some("tenant=shop&n=25&x=1")).unwrap()
        else {
            panic!()
        };
        assert_eq!((r.tenant.as_str(), r.n), ("shop", 25));
    }

    #[test]
    fn bad_ids_are_400_with_an_id_code() {
        let long = format!("/v1/recommendations/{}", "a".repeat(1000));
        for p in [
            "/v1/recommendations/a/b",
            "/v1/recommendations/a%2Fb",
            "/v1/recommendations/..",
            "/v1/recommendations/x..y",
            "/v1/recommendations/a%0Ab",
            "/v1/recommendations/a%00",
            "/v1/recommendations/",
            "/v1/recommendations",
            &long,
            "/v1/recommendations/%zz",
        ] {
            let e = get(p, None).unwrap_err();
            assert_eq!(e.status(), 400, "{p}: {e:?}");
        }
    }

    #[test]
    fn n_outside_1_to_100_is_400_invalid_n() {
        for q in ["n=0", "n=100000", "n=abc", "n=-1", "n=", "n=1.5"] {
            let e = get("/v1/recommendations/u1", Some(q)).unwrap_err();
            assert_eq!(e.code(), "invalid_n", "{q}");
        }
        assert!(get("/v1/recommendations/u1", Some("n=100")).is_ok());
    }

    #[test]
    fn repeated_or_oversized_queries_are_refused() {
        assert_eq!(
            get("/v1/recommendations/u1", Some("n=1&n=2"))
                .unwrap_err()
                .code(),
            "invalid_query"
        );
        let big = "x=".to_string() + &"a".repeat(MAX_QUERY_LEN);
        assert_eq!(
            get("/v1/recommendations/u1", Some(&big))
                .unwrap_err()
                .code(),
            "invalid_query"
        );
        assert_eq!(
            get("/v1/recommendations/u1", Some("tenant=../x"))
                .unwrap_err()
                .code(),
            "invalid_tenant"
        );
    }

    #[test]
    fn unknown_routes_are_404_and_wrong_methods_405() {
        assert_eq!(get("/nope", None).unwrap_err().status(), 404);
        assert_eq!(
            route("POST", "/v1/recommendations/u1", None, 10)
                .unwrap_err()
                .status(),
            405
        );
        assert_eq!(
            route("GET", "/admin/publish", None, 10)
                .unwrap_err()
                .status(),
            405
        );
        assert_eq!(
            route("OPTIONS", "/v1/recommendations/u1", None, 10).unwrap(),
            Route::Preflight
        );
        assert_eq!(
            route("POST", "/admin/purge", None, 10).unwrap(),
            Route::AdminPurge
        );
        assert_eq!(route("head", "/health", None, 10).unwrap(), Route::Health);
        assert_eq!(
            route("POST", "/admin/delete-tenant", None, 10).unwrap(),
            Route::AdminDeleteTenant
        );
        assert_eq!(
            route("GET", "/admin/delete-tenant", None, 10)
                .unwrap_err()
                .status(),
            405
        );
    }

    #[test]
    fn the_paths_dot_segments_resolve_to_are_400_invalid_user_id() {
        for p in ["/v1/", "/v1"] {
            let e = get(p, None).unwrap_err();
            assert_eq!((e.status(), e.code()), (400, "invalid_user_id"), "{p}");
        }
        assert_eq!(route("POST", "/v1/", None, 10).unwrap_err().status(), 404);
    }

    #[test]
    fn exclude_is_read_from_the_query_and_checked() {
        let Route::Recommendations(r) = route(
            "GET",
            "/v1/recommendations/u1",
            Some("exclude=i1%2Ci2&n=3"),
            10,
        )
        .unwrap() else {
            panic!("not a recommendation route")
        };
        let ids: Vec<&str> = r.filters.exclude.iter().map(|i| i.as_str()).collect();
        assert_eq!(ids, ["i1", "i2"]);
        let e = route("GET", "/v1/recommendations/u1", Some("exclude=i1,,i2"), 10).unwrap_err();
        assert_eq!((e.status(), e.code()), (400, "invalid_exclude"));
    }

    #[test]
    fn category_is_read_from_the_query_and_checked() {
        let Route::Recommendations(r) = route(
            "GET",
            "/v1/recommendations/u1",
            Some("category=Science+Fiction&n=3"),
            10,
        )
        .unwrap() else {
            panic!("not a recommendation route")
        };
        assert_eq!(
            r.filters.category.as_ref().map(|c| c.as_str()),
            Some("Science Fiction")
        );
        let Route::Recommendations(r) =
            route("GET", "/v1/recommendations/u1", Some("category="), 10).unwrap()
        else {
            panic!("not a recommendation route")
        };
        assert!(r.filters.is_empty(), "an empty category is no filter");
        for bad in [
            "category=a%2Cb",
            "category=a%7Cb",
            "category=a%0Ab",
            "category=%20",
        ] {
            let e = route("GET", "/v1/recommendations/u1", Some(bad), 10).unwrap_err();
            assert_eq!((e.status(), e.code()), (400, "invalid_category"), "{bad}");
        }
        let long = format!("category={}", "x".repeat(65));
        let e = route("GET", "/v1/recommendations/u1", Some(&long), 10).unwrap_err();
        assert_eq!(e.code(), "invalid_category");
        let twice = route(
            "GET",
            "/v1/recommendations/u1",
            Some("category=a&category=b"),
            10,
        );
        assert_eq!(twice.unwrap_err().code(), "invalid_query");
    }

    #[test]
    fn an_empty_tenant_is_refused_like_at_the_origin() {
        let e = get("/v1/recommendations/u1", Some("tenant=")).unwrap_err();
        assert_eq!((e.status(), e.code()), (400, "invalid_tenant"));
    }

    #[test]
    fn headers_past_the_limit_are_431() {
        let big = "x".repeat(MAX_HEADER_BYTES);
        assert!(check_header_size([("host", "e"), ("accept", "*/*")]).is_ok());
        let e = check_header_size([("host", "e"), ("x-big", big.as_str())]).unwrap_err();
        assert_eq!((e.status(), e.code()), (431, "headers_too_large"));
    }

    #[test]
    fn percent_decoding_handles_escapes_and_refuses_garbage() {
        assert_eq!(percent_decode("a%2Fb+c").unwrap(), "a/b c");
        assert!(percent_decode("%").is_err());
        assert!(percent_decode("%ff").is_err());
    }
}
