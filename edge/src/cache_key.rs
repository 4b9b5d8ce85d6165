//! Edge-cache keys.
//!
//! A key names what the answer depends on, and nothing else: the tenant, the user and
//! the caller's region (the origin answers a user it does not know with the region's
//! popular list, so a copy fetched for Europe must not be served to Asia). Not `n`
//! (the whole document is cached and cut to `n` when served), not the request filters
//! (`exclude=`, `category=`): an entry holds the user's whole stored list, never a
//! filtered answer, and every answer is filtered from it when served, so one entry
//! serves every filter, a filter cannot multiply entries (each `category=` value would
//! be a key of its own otherwise) and a purge of the user reaches every filtered
//! answer at once. What *is* keyed by the filter is the served answer: its `ETag`
//! depends on the filtered items and a browser caches by the whole URL. Not the order of query
//! parameters, and never a header: keys live under the configured canonical host
//! (`CACHE_HOST`), not the `Host` the client sent, so random hosts cannot multiply
//! entries and a purge reaches every copy. The Cache API wants a URL; keys sit in a
//! path no route serves.

use contract::{Region, Subject, Tenant, UserId};

/// Path prefix of cache keys; no route answers under it.
pub const CACHE_KEY_PREFIX: &str = "/__edge-cache/v2";

/// The cache key of a user's document for callers of `region`, under `cache_host`.
pub fn user_doc_key(cache_host: &str, tenant: &Tenant, region: &Region, user: &UserId) -> String {
    format!(
        "https://{cache_host}{CACHE_KEY_PREFIX}/t/{tenant}/r/{}/u/{user}",
        region.as_str()
    )
}

/// The cache key of a subject's document (a user's, or an item's list) for callers of
/// `region`: a user's is [`user_doc_key`]; an item's list is `…/s/{item}` (similar) or
/// `…/b/{item}` (bought together) in place of `…/u/{user}`.
pub fn doc_key(cache_host: &str, tenant: &Tenant, region: &Region, subject: &Subject) -> String {
    match subject {
        Subject::User(user) => user_doc_key(cache_host, tenant, region, user),
        Subject::Item(list, item) => format!(
            "https://{cache_host}{CACHE_KEY_PREFIX}/t/{tenant}/r/{}/{}/{item}",
            region.as_str(),
            list.kv_segment()
        ),
    }
}

/// Every key a subject's document (a user's, or an item's list) may be cached under
/// (one per region), for a purge.
pub fn doc_keys<'a>(
    cache_host: &'a str,
    tenant: &'a Tenant,
    regions: impl IntoIterator<Item = &'a Region> + 'a,
    subject: &'a Subject,
) -> impl Iterator<Item = String> + 'a {
    regions
        .into_iter()
        .map(move |r| doc_key(cache_host, tenant, r, subject))
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use crate::route::{route, Route};
    use proptest::prelude::*;

    fn europe() -> Region {
        Region::parse("europe").unwrap()
    }

    fn key_of(path_and_query: (&str, Option<&str>)) -> String {
        let Route::Recommendations(r) =
            route("GET", path_and_query.0, path_and_query.1, 10).unwrap()
        else {
            panic!()
        };
        doc_key("edge.example", &r.tenant, &europe(), &r.subject)
    }

    #[test]
    fn key_names_tenant_region_and_user_under_the_canonical_host() {
        let t = Tenant::parse("shop").unwrap();
        let u = UserId::parse("u1").unwrap();
        assert_eq!(
            user_doc_key("recs.example", &t, &europe(), &u),
            "https://recs.example/__edge-cache/v2/t/shop/r/europe/u/u1"
        );
    }

    #[test]
    fn tenants_and_regions_never_share_a_key() {
        let u = UserId::parse("u1").unwrap();
        let a = user_doc_key("e", &Tenant::parse("a").unwrap(), &europe(), &u);
        let b = user_doc_key("e", &Tenant::parse("b").unwrap(), &europe(), &u);
        assert_ne!(a, b);
        let asia = Region::parse("asia").unwrap();
        let c = user_doc_key("e", &Tenant::parse("a").unwrap(), &asia, &u);
        assert_ne!(a, c);
    }

    #[test]
    fn an_items_lists_have_keys_of_their_own() {
        let t = Tenant::parse("shop").unwrap();
        let similar = key_of(("/v1/items/i1/similar", Some("tenant=shop")));
        assert_eq!(
            similar,
            "https://edge.example/__edge-cache/v2/t/shop/r/europe/s/i1"
        );
        let together = key_of(("/v1/items/i1/bought-together", Some("tenant=shop")));
        assert!(together.ends_with("/b/i1"), "{together}");
        let user = user_doc_key("edge.example", &t, &europe(), &UserId::parse("i1").unwrap());
        assert!(similar != together && similar != user && together != user);
    }

    #[test]
    fn a_purge_names_the_key_of_every_region() {
        let (t, u) = (Tenant::parse("a").unwrap(), UserId::parse("u1").unwrap());
        let map = contract::RegionMap::builtin();
        let regions = map.regions();
        let subject = Subject::User(u.clone());
        let keys: Vec<String> = doc_keys("e", &t, regions.iter(), &subject).collect();
        assert_eq!(keys.len(), regions.len());
        for r in regions {
            assert!(keys.contains(&user_doc_key("e", &t, r, &u)), "{r}");
        }
    }

    proptest! {
        #[test]
        fn cache_keys_ignore_n_and_query_order(n1 in 1usize..=100, n2 in 1usize..=100, swap: bool) {
            let q1 = format!("n={n1}&tenant=shop");
            let q2 = if swap { format!("tenant=shop&n={n2}") } else { format!("n={n2}&tenant=shop") };
            prop_assert_eq!(key_of(("/v1/recommendations/u7", Some(&q1))), key_of(("/v1/recommendations/u7", Some(&q2))));
        }

        #[test]
        fn one_entry_serves_every_filter(category in "[a-z]{1,10}", exclude in "i[0-9]{1,3}") {
            let filtered = format!("category={category}&exclude={exclude}");
            prop_assert_eq!(
                key_of(("/v1/recommendations/u7", Some(&filtered))),
                key_of(("/v1/recommendations/u7", None))
            );
        }
    }
}
