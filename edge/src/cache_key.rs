//! Edge-cache keys.
//!
//! A key names one user's document of one tenant, and nothing else: not `n` (the
//! whole document is cached and cut to `n` when served), not the order of query
//! parameters, not headers. The Cache API wants a URL, so keys live under the
//! worker's own origin (which keeps them purgeable by URL in production) in a path
//! no route serves.

use contract::{Tenant, UserId};

/// Path prefix of cache keys; no route answers under it.
pub const CACHE_KEY_PREFIX: &str = "/__edge-cache/v1";

/// The cache key of a user's document, under the worker's origin
/// (`scheme://host[:port]`, without a trailing slash).
pub fn user_doc_key(worker_origin: &str, tenant: &Tenant, user: &UserId) -> String {
    format!(
        "{}{CACHE_KEY_PREFIX}/t/{tenant}/u/{user}",
        worker_origin.trim_end_matches('/')
    )
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use crate::route::{route, Route};
    use proptest::prelude::*;

    fn key_of(path_and_query: (&str, Option<&str>)) -> String {
        let Route::Recommendations(r) =
            route("GET", path_and_query.0, path_and_query.1, 10).unwrap()
        else {
            panic!()
        };
        user_doc_key("https://edge.example", &r.tenant, &r.user)
    }

    #[test]
    fn key_names_tenant_and_user_under_the_worker_origin() {
        let t = Tenant::parse("shop").unwrap();
        let u = UserId::parse("u1").unwrap();
        assert_eq!(
            user_doc_key("http://127.0.0.1:8787/", &t, &u),
            "http://127.0.0.1:8787/__edge-cache/v1/t/shop/u/u1"
        );
    }

    #[test]
    fn tenants_never_share_a_key() {
        let u = UserId::parse("u1").unwrap();
        let a = user_doc_key("https://e", &Tenant::parse("a").unwrap(), &u);
        let b = user_doc_key("https://e", &Tenant::parse("b").unwrap(), &u);
        assert_ne!(a, b);
    }

    proptest! {
        #[test]
        fn cache_keys_ignore_n_and_query_order(n1 in 1usize..=100, n2 in 1usize..=100, swap: bool) {
            let q1 = format!("n={n1}&tenant=shop");
            let q2 = if swap { format!("tenant=shop&n={n2}") } else { format!("n={n2}&tenant=shop") };
            prop_assert_eq!(key_of(("/v1/recommendations/u7", Some(&q1))), key_of(("/v1/recommendations/u7", Some(&q2))));
        }
    }
}
