//! Storage keys and CDN paths, all namespaced by tenant.
//!
//! A publish writes a whole *generation* of documents and then flips a per-tenant
//! pointer, so readers never see two generations mixed:
//!
//! | store | document | pointer |
//! |---|---|---|
//! | Workers KV | `t/{tenant}/g/{generation}/u/{user}`, `t/{tenant}/g/{generation}/popular/{region}` | `t/{tenant}/generation` |
//! | secondary CDN | `{tenant}/users/{user}.json`, `{tenant}/popular/{region}.json` | the served folder (`current` symlink) |
//!
//! On the CDN side the origin writes `generations/{generation}/…` and atomically
//! points `current` at it, and the static server serves `current/`.

use crate::ids::{IdError, Tenant, UserId};
use crate::region::Region;

/// A generation name: `g` followed by 1 to 40 of `0-9 a-z T Z -`, as made by
/// [`generation_name`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Generation(String);

impl Generation {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let kind = "generation";
        let ok = s.len() >= 2
            && s.len() <= 41
            && s.starts_with('g')
            && s.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'T' || b == b'Z'
            });
        if ok {
            Ok(Generation(s.to_owned()))
        } else if s.is_empty() {
            Err(IdError::Empty { kind })
        } else {
            Err(IdError::BadChar {
                kind,
                found: s.chars().next().unwrap_or('?'),
                at: 0,
                allowed: "g then 0-9 a-z T Z -",
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A generation name for a publish started at `unix_s` with a distinguishing suffix
/// (for example a counter): `g{unix_s}-{suffix}`.
pub fn generation_name(unix_s: u64, suffix: u32) -> Generation {
    Generation(format!("g{unix_s}-{suffix}"))
}

/// KV key of the pointer to a tenant's current generation.
pub fn kv_generation_pointer(tenant: &Tenant) -> String {
    format!("t/{tenant}/generation")
}

/// KV key of a user's document in a generation.
pub fn kv_user(tenant: &Tenant, generation: &Generation, user: &UserId) -> String {
    format!("t/{tenant}/g/{}/u/{user}", generation.as_str())
}

/// KV key of a region's popular list in a generation.
pub fn kv_popular(tenant: &Tenant, generation: &Generation, region: &Region) -> String {
    format!(
        "t/{tenant}/g/{}/popular/{}",
        generation.as_str(),
        region.as_str()
    )
}

/// Path of a user's document below the secondary CDN's root.
pub fn cdn_user(tenant: &Tenant, user: &UserId) -> String {
    format!("{tenant}/users/{user}.json")
}

/// Path of a region's popular list below the secondary CDN's root.
pub fn cdn_popular(tenant: &Tenant, region: &Region) -> String {
    format!("{tenant}/popular/{}.json", region.as_str())
}

/// Name of the pointer object of a secondary CDN on object storage (below its root):
/// it holds the current generation's name.
pub const CDN_POINTER: &str = "current";

/// Directory of a generation below the secondary CDN's root (object storage layout:
/// `generations/{gen}/` holds what the folder layout's `current/` view shows).
pub fn cdn_generation_dir(generation: &Generation) -> String {
    format!("generations/{}", generation.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_namespaced_by_tenant_and_generation() {
        let t = Tenant::parse("shop").unwrap();
        let g = generation_name(1_764_237_600, 3);
        let u = UserId::parse("u1").unwrap();
        let r = Region::parse("europe").unwrap();
        assert_eq!(kv_user(&t, &g, &u), "t/shop/g/g1764237600-3/u/u1");
        assert_eq!(
            kv_popular(&t, &g, &r),
            "t/shop/g/g1764237600-3/popular/europe"
        );
        assert_eq!(kv_generation_pointer(&t), "t/shop/generation");
        assert_eq!(cdn_generation_dir(&g), "generations/g1764237600-3");
        assert_eq!(cdn_user(&t, &u), "shop/users/u1.json");
        assert_eq!(cdn_popular(&t, &r), "shop/popular/europe.json");
    }

    #[test]
    fn generation_names_round_trip_and_reject_paths() {
        let g = generation_name(42, 0);
        assert_eq!(Generation::parse(g.as_str()).unwrap(), g);
        for bad in ["", "x1", "g/..", "g1/2", "G1"] {
            assert!(Generation::parse(bad).is_err(), "{bad}");
        }
    }
}
