//! Storage keys and CDN paths, all namespaced by tenant.
//!
//! A publish writes a whole *generation* of documents and then flips a per-tenant
//! pointer, so readers never see two generations mixed:
//!
//! | store | document | pointer |
//! |---|---|---|
//! | Workers KV | `t/{tenant}/g/{generation}/u/{user}`, `t/{tenant}/g/{generation}/popular/{region}`, item lists `t/{tenant}/g/{generation}/s/{item}` (similar) and `…/b/{item}` (bought together) | `t/{tenant}/generation` |
//! | secondary CDN | `{tenant}/users/{user}.json`, `{tenant}/popular/{region}.json`, `{tenant}/similar/{item}.json`, `{tenant}/bought-together/{item}.json` | the served folder (`current` symlink) |
//!
//! On the CDN side the origin writes `generations/{generation}/…` and atomically
//! points `current` at it, and the static server serves `current/`.
//!
//! **Delta generations.** A pointer ([`GenerationPointer`]) may name a *base* besides its
//! generation: the generation then holds only the documents that changed since the base
//! was published, and a reader that finds no document in the generation reads the base's,
//! which was unchanged when the generation was published at `published_at` (so the
//! reader counts its freshness from then: [`GenerationPointer::confirm`]). A pointer
//! without a base is written as the bare generation name, as before.

use crate::doc::{ItemList, Subject};
use crate::ids::{IdError, ItemId, Tenant, UserId};
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

    /// (unix seconds, counter) of a name made by [`generation_name`], which orders
    /// generations by age; `None` for any other name.
    pub fn age(name: &str) -> Option<(u64, u32)> {
        let (secs, counter) = name.strip_prefix('g')?.split_once('-')?;
        Some((secs.parse().ok()?, counter.parse().ok()?))
    }
}

/// A generation name for a publish started at `unix_s` with a distinguishing suffix
/// (for example a counter): `g{unix_s}-{suffix}`.
pub fn generation_name(unix_s: u64, suffix: u32) -> Generation {
    Generation(format!("g{unix_s}-{suffix}"))
}

/// What a generation pointer holds: the current generation, and for a delta generation
/// its base and when it was published.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GenerationPointer {
    pub generation: Generation,
    pub base: Option<Generation>,
    /// Unix seconds the generation was published (0 when not recorded).
    pub published_at: u64,
}

impl GenerationPointer {
    /// A pointer to a whole generation.
    pub fn whole(generation: Generation) -> Self {
        GenerationPointer {
            generation,
            base: None,
            published_at: 0,
        }
    }

    /// Parses a pointer value: a bare generation name, or
    /// `{generation};base={base};at={unix seconds}`.
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        let raw = raw.trim();
        let mut parts = raw.split(';');
        let generation = Generation::parse(parts.next().unwrap_or(""))?;
        let mut pointer = GenerationPointer::whole(generation);
        let bad = |found: char| IdError::BadChar {
            kind: "generation pointer",
            found,
            at: 0,
            allowed: "{generation};base={generation};at={unix seconds}",
        };
        for part in parts {
            match part.split_once('=') {
                Some(("base", g)) if pointer.base.is_none() => {
                    pointer.base = Some(Generation::parse(g)?)
                }
                Some(("at", t)) if pointer.published_at == 0 => {
                    pointer.published_at = t
                        .parse()
                        .ok()
                        .filter(|&t| t > 0)
                        .ok_or_else(|| bad(t.chars().next().unwrap_or('?')))?
                }
                _ => return Err(bad(part.chars().next().unwrap_or(';'))),
            }
        }
        if pointer.base.is_some() != (pointer.published_at > 0) {
            return Err(bad(';'));
        }
        Ok(pointer)
    }

    /// The value to store: [`GenerationPointer::parse`] reads it back.
    pub fn encode(&self) -> String {
        match &self.base {
            None => self.generation.as_str().to_owned(),
            Some(base) => format!(
                "{};base={};at={}",
                self.generation.as_str(),
                base.as_str(),
                self.published_at
            ),
        }
    }

    /// A document read from the base through this pointer: its items were unchanged when
    /// the generation was published, so it is as fresh as if generated then.
    pub fn confirm(&self, mut doc: crate::RecommendationDoc) -> crate::RecommendationDoc {
        doc.generated_at = doc.generated_at.max(self.published_at);
        doc
    }
}

/// KV key of the pointer to a tenant's current generation.
pub fn kv_generation_pointer(tenant: &Tenant) -> String {
    format!("t/{tenant}/generation")
}

/// KV key of a user's document in a generation.
pub fn kv_user(tenant: &Tenant, generation: &Generation, user: &UserId) -> String {
    format!("t/{tenant}/g/{}/u/{user}", generation.as_str())
}

/// KV key of an item's list in a generation.
pub fn kv_item_list(
    tenant: &Tenant,
    generation: &Generation,
    list: ItemList,
    item: &ItemId,
) -> String {
    format!(
        "t/{tenant}/g/{}/{}/{item}",
        generation.as_str(),
        list.kv_segment()
    )
}

/// KV key of a subject's document in a generation.
pub fn kv_subject(tenant: &Tenant, generation: &Generation, subject: &Subject) -> String {
    match subject {
        Subject::User(u) => kv_user(tenant, generation, u),
        Subject::Item(list, item) => kv_item_list(tenant, generation, *list, item),
    }
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

/// Path of an item's list below the secondary CDN's root.
pub fn cdn_item_list(tenant: &Tenant, list: ItemList, item: &ItemId) -> String {
    format!("{tenant}/{}/{item}.json", list.as_str())
}

/// Path of a subject's document below the secondary CDN's root.
pub fn cdn_subject(tenant: &Tenant, subject: &Subject) -> String {
    match subject {
        Subject::User(u) => cdn_user(tenant, u),
        Subject::Item(list, item) => cdn_item_list(tenant, *list, item),
    }
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
        let i = ItemId::parse("i9").unwrap();
        let similar = Subject::Item(ItemList::Similar, i.clone());
        let together = Subject::Item(ItemList::BoughtTogether, i);
        assert_eq!(kv_subject(&t, &g, &similar), "t/shop/g/g1764237600-3/s/i9");
        assert_eq!(kv_subject(&t, &g, &together), "t/shop/g/g1764237600-3/b/i9");
        assert_eq!(
            kv_subject(&t, &g, &Subject::User(u.clone())),
            kv_user(&t, &g, &u)
        );
        assert_eq!(cdn_subject(&t, &similar), "shop/similar/i9.json");
        assert_eq!(cdn_subject(&t, &together), "shop/bought-together/i9.json");
    }

    #[test]
    fn generation_names_round_trip_and_reject_paths() {
        let g = generation_name(42, 0);
        assert_eq!(Generation::parse(g.as_str()).unwrap(), g);
        for bad in ["", "x1", "g/..", "g1/2", "G1"] {
            assert!(Generation::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pointers_round_trip_bare_or_with_a_base() {
        let whole = GenerationPointer::whole(generation_name(5, 0));
        assert_eq!(whole.encode(), "g5-0");
        assert_eq!(GenerationPointer::parse("g5-0\n").unwrap(), whole);
        let delta = GenerationPointer {
            generation: generation_name(9, 1),
            base: Some(generation_name(5, 0)),
            published_at: 1_764_000_000,
        };
        assert_eq!(delta.encode(), "g9-1;base=g5-0;at=1764000000");
        assert_eq!(GenerationPointer::parse(&delta.encode()).unwrap(), delta);
        for bad in [
            "",
            "g9-1;base=g5-0",
            "g9-1;at=5",
            "g9-1;base=../x;at=5",
            "g9-1;base=g5-0;at=0",
            "g9-1;base=g5-0;at=5;base=g4-0",
            "g9-1;other=1",
        ] {
            assert!(GenerationPointer::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_document_from_the_base_counts_its_freshness_from_the_delta() {
        let pointer = GenerationPointer {
            generation: generation_name(9, 1),
            base: Some(generation_name(5, 0)),
            published_at: 1_000,
        };
        let doc = crate::RecommendationDoc {
            tenant: "t".into(),
            user_id: "u".into(),
            region: "europe".into(),
            items: Vec::new(),
            model_version: "m".into(),
            generated_at: 400,
            fresh_for_s: 300,
            stale_for_s: 600,
            list: None,
            item_id: None,
            variant: None,
        };
        assert_eq!(pointer.confirm(doc.clone()).generated_at, 1_000);
        let newer = crate::RecommendationDoc {
            generated_at: 2_000,
            ..doc
        };
        assert_eq!(pointer.confirm(newer).generated_at, 2_000);
    }
}
