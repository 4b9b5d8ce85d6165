//! The source chain and the walk through it.
//!
//! A recommendation request tries tiers in a fixed order — edge cache, KV, secondary
//! CDN, then the origins of the user's region in the user's failover order
//! ([`crate::origins`]) — skipping the ones that are not configured. [`Walk`] is the state machine the glue drives: it says
//! which tier to try next, takes each tier's result and decides whether to serve, to
//! serve a stale copy at once while the rest of the chain refreshes it in the
//! background (stale-while-revalidate), to go on, or — when the chain is exhausted —
//! to serve the best stale copy seen (stale-if-error) or fall back to popular lists
//! ([`popular_answer`]). Reasons are data ([`MissReason`], [`TierFailure`]).

use contract::{RecommendationDoc, Source, Subject, Tenant};

use crate::config::EdgeConfig;
use crate::freshness::{edge_cache_ttl, Freshness};
use crate::origins::Origin;

/// A place the edge may find a document, in chain order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tier {
    EdgeCache,
    Kv,
    SecondaryCdn,
    /// The n-th origin of the request's failover order ([`EdgeConfig::origins_for`]).
    Origin(u8),
}

impl Tier {
    pub fn name(self) -> &'static str {
        self.source().as_str()
    }

    /// The `source` a document served from this tier carries.
    pub fn source(self) -> Source {
        match self {
            Tier::EdgeCache => Source::EdgeCache,
            Tier::Kv => Source::Kv,
            Tier::SecondaryCdn => Source::SecondaryCdn,
            Tier::Origin(_) => Source::Origin,
        }
    }

    /// Whether a stale copy found here is served at once while the rest of the chain
    /// refreshes it (the fast tiers), rather than kept for last.
    pub fn revalidates_in_background(self) -> bool {
        matches!(self, Tier::EdgeCache | Tier::Kv)
    }
}

/// Most origins one request may try.
pub const MAX_ORIGINS: usize = 8;

/// The tiers to try for a request, in order: the edge cache and KV always, the
/// secondary CDN when configured, then `origins`, the request's origins in its failover
/// order ([`EdgeConfig::origins_for`]; at most [`MAX_ORIGINS`] of them).
pub fn chain_for(cfg: &EdgeConfig, origins: &[Origin]) -> Vec<Tier> {
    let mut chain = vec![Tier::EdgeCache, Tier::Kv];
    if cfg.secondary_cdn_url.is_some() {
        chain.push(Tier::SecondaryCdn);
    }
    let origins = origins.len().min(MAX_ORIGINS);
    chain.extend((0..origins).map(|i| Tier::Origin(i as u8)));
    chain
}

/// Why a tier that answered had nothing usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissReason {
    NotFound,
    /// Found, past freshness, kept as a stale candidate.
    Stale,
    /// Found, past its stale window too.
    Expired,
}

/// Why a tier could not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TierFailure {
    /// Skipped: the origin's circuit breaker is open.
    CircuitOpen,
    Timeout,
    Network(String),
    Status(u16),
    BadDocument(String),
    Storage(String),
}

impl TierFailure {
    /// Whether this failure counts against an origin's circuit breaker (it did not
    /// answer properly); a skip by an open breaker does not count again.
    pub fn counts_against_breaker(&self) -> bool {
        !matches!(self, TierFailure::CircuitOpen)
    }

    /// Whether trying the same tier again soon might help.
    pub fn is_retryable(&self) -> bool {
        match self {
            TierFailure::Timeout
            | TierFailure::Network(_)
            | TierFailure::Storage(_)
            | TierFailure::CircuitOpen => true,
            TierFailure::Status(s) => *s >= 500 || *s == 429,
            TierFailure::BadDocument(_) => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Miss(MissReason),
    Failed(TierFailure),
}

impl Outcome {
    pub fn describe(&self) -> String {
        match self {
            Outcome::Miss(MissReason::NotFound) => "had no document".into(),
            Outcome::Miss(MissReason::Stale) => "had only a stale document".into(),
            Outcome::Miss(MissReason::Expired) => "had only an expired document".into(),
            Outcome::Failed(TierFailure::CircuitOpen) => "skipped (circuit open)".into(),
            Outcome::Failed(TierFailure::Timeout) => "timed out".into(),
            Outcome::Failed(TierFailure::Network(m)) => format!("failed ({m})"),
            Outcome::Failed(TierFailure::Status(s)) => format!("answered HTTP {s}"),
            Outcome::Failed(TierFailure::BadDocument(m)) => format!("sent a bad document ({m})"),
            Outcome::Failed(TierFailure::Storage(m)) => format!("storage error ({m})"),
        }
    }
}

/// One tier tried and what came of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub tier: Tier,
    pub outcome: Outcome,
}

/// What a tier gave back.
#[derive(Debug, Clone, PartialEq)]
pub enum TierResult {
    Found(RecommendationDoc),
    NotFound,
    /// The tier (the origin, which holds the registry) says the tenant does not exist.
    UnknownTenant,
    Failed(TierFailure),
}

/// What to do after a tier's result.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Serve this document as fresh; put it in the edge cache for `cache_ttl_s` when set.
    Serve {
        doc: RecommendationDoc,
        source: Source,
        cache_ttl_s: Option<u64>,
    },
    /// Serve this stale copy now (marked stale) and refresh it in the background by
    /// walking `refresh_with`, the tiers after this one.
    ServeStaleAndRefresh {
        doc: RecommendationDoc,
        refresh_with: Vec<Tier>,
    },
    /// Try the next tier.
    Continue,
    /// The tenant does not exist: answer `404 unknown_tenant`, no fallback.
    UnknownTenant,
}

/// How a walk ends when no tier served a fresh document.
#[derive(Debug, Clone, PartialEq)]
pub enum Final {
    /// Serve the newest stale copy seen (stale-if-error), marked stale.
    ServeStale { doc: RecommendationDoc, from: Tier },
    /// No copy of the user's list could be had: fall back to popular lists
    /// ([`popular_answer`]); `attempts` explain why, for the 503 if even that fails.
    Popular { attempts: Vec<Attempt> },
}

/// The walk through a chain for one request.
#[derive(Debug, Clone)]
pub struct Walk {
    chain: Vec<Tier>,
    next: usize,
    attempts: Vec<Attempt>,
    stale: Option<(RecommendationDoc, Tier)>,
    cache_ttl_max_s: u64,
}

impl Walk {
    pub fn new(chain: Vec<Tier>, cache_ttl_max_s: u64) -> Self {
        Walk {
            chain,
            next: 0,
            attempts: Vec::new(),
            stale: None,
            cache_ttl_max_s,
        }
    }

    /// The next tier to try, or `None` when the chain is exhausted.
    pub fn next_tier(&mut self) -> Option<Tier> {
        let t = self.chain.get(self.next).copied();
        self.next += 1;
        t
    }

    /// Takes a tier's result at `now_s` and decides the next step.
    pub fn record(&mut self, tier: Tier, result: TierResult, now_s: u64) -> Step {
        let outcome = match result {
            TierResult::Found(doc) => match Freshness::of(&doc, now_s) {
                Freshness::Fresh { .. } => {
                    let cache_ttl_s = if tier == Tier::EdgeCache {
                        None
                    } else {
                        edge_cache_ttl(&doc, now_s, self.cache_ttl_max_s)
                    };
                    return Step::Serve {
                        doc,
                        source: tier.source(),
                        cache_ttl_s,
                    };
                }
                Freshness::Stale { .. } if tier.revalidates_in_background() => {
                    let refresh_with = self.chain[self.next.min(self.chain.len())..].to_vec();
                    self.next = self.chain.len();
                    return Step::ServeStaleAndRefresh { doc, refresh_with };
                }
                Freshness::Stale { .. } => {
                    let newer = self
                        .stale
                        .as_ref()
                        .is_none_or(|(s, _)| doc.generated_at > s.generated_at);
                    if newer {
                        self.stale = Some((doc, tier));
                    }
                    Outcome::Miss(MissReason::Stale)
                }
                Freshness::Expired => Outcome::Miss(MissReason::Expired),
            },
            TierResult::NotFound => Outcome::Miss(MissReason::NotFound),
            TierResult::UnknownTenant => return Step::UnknownTenant,
            TierResult::Failed(f) => Outcome::Failed(f),
        };
        self.attempts.push(Attempt { tier, outcome });
        Step::Continue
    }

    /// What was tried so far.
    pub fn attempts(&self) -> &[Attempt] {
        &self.attempts
    }

    /// The end of a walk in which nothing fresh was found.
    pub fn finish(self) -> Final {
        match self.stale {
            Some((doc, from)) => Final::ServeStale { doc, from },
            None => Final::Popular {
                attempts: self.attempts,
            },
        }
    }
}

/// Parses a document fetched from a tier with the contract's rules ([`contract::parse_doc`]:
/// at most [`contract::MAX_DOC_BYTES`], no duplicate keys, valid ids, finite scores) and
/// checks it is the one asked for, so a mix-up in a store can never serve one tenant's
/// or user's list to another. A refused document is a failure of its tier: the walk
/// goes on to the next one and it is never served.
pub fn accept_doc(
    body: &str,
    tenant: &Tenant,
    subject: &Subject,
) -> Result<RecommendationDoc, TierFailure> {
    let doc = contract::parse_doc(body.as_bytes())
        .map_err(|e| TierFailure::BadDocument(e.to_string()))?;
    let of = Subject::of(&doc).map_err(|e| TierFailure::BadDocument(e.to_string()))?;
    if doc.tenant != tenant.as_str() || of != *subject {
        return Err(TierFailure::BadDocument(format!(
            "document is for tenant {:?} {}, not {tenant} {}",
            doc.tenant,
            of.describe(),
            subject.describe()
        )));
    }
    Ok(doc)
}

/// Addresses a popular list to the subject it is served for: the user, or the item's list.
pub fn readdress(doc: &mut RecommendationDoc, subject: &Subject) {
    match subject {
        Subject::User(user) => {
            doc.user_id = user.to_string();
            doc.list = None;
            doc.item_id = None;
        }
        Subject::Item(list, item) => {
            doc.user_id = contract::doc::POPULAR_USER_ID.to_owned();
            doc.list = Some(*list);
            doc.item_id = Some(item.to_string());
            // The popular list may hold the item itself.
            doc.items.retain(|i| i.item_id != item.as_str());
        }
    }
}

/// Where a popular list came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PopularFrom {
    /// The region's list in KV.
    Kv,
    /// The global list baked into the worker at build time.
    Baked,
}

/// The last resort for a user (or an item's list) no tier knows: the region's popular
/// list from KV when usable (same tenant, not expired), else the baked global list
/// (tenant `default` only), re-addressed to the subject. `None` means not even a list
/// exists.
pub fn popular_answer(
    from_kv: Option<RecommendationDoc>,
    baked: Option<&RecommendationDoc>,
    tenant: &Tenant,
    subject: &Subject,
    now_s: u64,
) -> Option<(RecommendationDoc, PopularFrom)> {
    let usable_kv = from_kv
        .filter(|d| d.tenant == tenant.as_str() && Freshness::of(d, now_s) != Freshness::Expired);
    let (mut doc, from) = match usable_kv {
        Some(d) => (d, PopularFrom::Kv),
        None => {
            let b = baked
                .filter(|b| b.tenant == tenant.as_str() && !b.items.is_empty())?
                .clone();
            // A baked list has no meaningful age: it is valid as a fallback while served.
            let fresh_for_s = b.fresh_for_s.max(1);
            (
                RecommendationDoc {
                    generated_at: now_s,
                    fresh_for_s,
                    stale_for_s: 0,
                    ..b
                },
                PopularFrom::Baked,
            )
        }
    };
    readdress(&mut doc, subject);
    Some((doc, from))
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use contract::UserId;
    use proptest::prelude::*;

    const ALL: [Tier; 5] = [
        Tier::EdgeCache,
        Tier::Kv,
        Tier::SecondaryCdn,
        Tier::Origin(0),
        Tier::Origin(1),
    ];

    fn doc(generated_at: u64, fresh: u64) -> RecommendationDoc {
        crate::test_support::doc(generated_at, fresh, 1000)
    }

    fn full_cfg() -> EdgeConfig {
        EdgeConfig::from_lookup(|k| match k {
            "ORIGINS" => Some(r#"{"us-east":"http://us","europe":"http://eu"}"#.into()),
            "SECONDARY_CDN_URL" => Some("http://c".into()),
            _ => None,
        })
        .unwrap()
    }

    /// The origins of region `r` for user u1.
    fn origins(cfg: &EdgeConfig, r: &str) -> Vec<Origin> {
        let key = crate::origins::AffinityKey::User {
            tenant: "default".into(),
            user: "u1".into(),
        };
        cfg.origins_for(&contract::Region::parse(r).unwrap(), &key)
    }

    #[test]
    fn the_chain_is_cache_kv_cdn_then_the_regions_origins_and_skips_unconfigured_tiers() {
        assert_eq!(
            chain_for(&full_cfg(), &origins(&full_cfg(), "europe")),
            ALL.to_vec()
        );
        let none = EdgeConfig::default();
        assert_eq!(
            chain_for(&none, &origins(&none, "europe")),
            vec![Tier::EdgeCache, Tier::Kv]
        );
    }

    #[test]
    fn a_fresh_kv_document_is_served_and_cached_while_it_stays_usable() {
        let cfg = full_cfg();
        let mut w = Walk::new(chain_for(&cfg, &origins(&cfg, "us-east")), 300);
        assert_eq!(w.next_tier(), Some(Tier::EdgeCache));
        assert_eq!(
            w.record(Tier::EdgeCache, TierResult::NotFound, 100),
            Step::Continue
        );
        assert_eq!(w.next_tier(), Some(Tier::Kv));
        let step = w.record(Tier::Kv, TierResult::Found(doc(90, 60)), 100);
        assert_eq!(
            step,
            Step::Serve {
                doc: doc(90, 60),
                source: Source::Kv,
                cache_ttl_s: Some(300)
            }
        );
    }

    #[test]
    fn an_edge_cache_hit_is_not_put_back_into_the_cache() {
        let mut w = Walk::new(vec![Tier::EdgeCache], 300);
        w.next_tier();
        let step = w.record(Tier::EdgeCache, TierResult::Found(doc(90, 60)), 100);
        assert!(matches!(
            step,
            Step::Serve {
                cache_ttl_s: None,
                ..
            }
        ));
    }

    #[test]
    fn a_stale_kv_document_is_served_at_once_and_refreshed_by_the_rest_of_the_chain() {
        let mut w = Walk::new(
            vec![
                Tier::EdgeCache,
                Tier::Kv,
                Tier::SecondaryCdn,
                Tier::Origin(0),
            ],
            300,
        );
        w.next_tier();
        w.record(Tier::EdgeCache, TierResult::NotFound, 100);
        w.next_tier();
        let step = w.record(Tier::Kv, TierResult::Found(doc(10, 5)), 100);
        let refresh_with = vec![Tier::SecondaryCdn, Tier::Origin(0)];
        assert_eq!(
            step,
            Step::ServeStaleAndRefresh {
                doc: doc(10, 5),
                refresh_with
            }
        );
        assert_eq!(w.next_tier(), None);
    }

    #[test]
    fn a_stale_origin_document_is_not_served_as_fresh_but_kept_for_last() {
        let mut w = Walk::new(vec![Tier::Origin(0), Tier::Origin(1)], 300);
        w.next_tier();
        assert_eq!(
            w.record(Tier::Origin(0), TierResult::Found(doc(10, 5)), 100),
            Step::Continue
        );
        w.next_tier();
        let step = w.record(
            Tier::Origin(1),
            TierResult::Failed(TierFailure::Timeout),
            100,
        );
        assert_eq!(step, Step::Continue);
        assert_eq!(w.next_tier(), None);
        assert_eq!(
            w.finish(),
            Final::ServeStale {
                doc: doc(10, 5),
                from: Tier::Origin(0)
            }
        );
    }

    #[test]
    fn an_origin_saying_the_tenant_does_not_exist_ends_the_walk_without_fallback() {
        let mut w = Walk::new(vec![Tier::Kv, Tier::Origin(0), Tier::Origin(1)], 300);
        assert_eq!(w.next_tier(), Some(Tier::Kv));
        assert_eq!(w.record(Tier::Kv, TierResult::NotFound, 0), Step::Continue);
        assert_eq!(w.next_tier(), Some(Tier::Origin(0)));
        assert_eq!(
            w.record(Tier::Origin(0), TierResult::UnknownTenant, 0),
            Step::UnknownTenant
        );
    }

    #[test]
    fn nothing_anywhere_ends_in_the_popular_fallback_with_every_attempt() {
        let mut w = Walk::new(vec![Tier::Kv, Tier::Origin(0)], 300);
        w.next_tier();
        w.record(Tier::Kv, TierResult::NotFound, 0);
        w.next_tier();
        w.record(
            Tier::Origin(0),
            TierResult::Failed(TierFailure::Status(502)),
            0,
        );
        let Final::Popular { attempts } = w.finish() else {
            panic!()
        };
        assert_eq!(attempts.len(), 2);
        assert_eq!(
            attempts[1].outcome,
            Outcome::Failed(TierFailure::Status(502))
        );
    }

    #[test]
    fn documents_for_another_user_or_tenant_are_refused() {
        let t = Tenant::parse("default").unwrap();
        let u1 = Subject::User(UserId::parse("u1").unwrap());
        let body = serde_json::to_string(&doc(1, 1)).unwrap();
        assert!(accept_doc(&body, &t, &u1).is_ok());
        let u2 = Subject::User(UserId::parse("u2").unwrap());
        assert!(matches!(
            accept_doc(&body, &t, &u2),
            Err(TierFailure::BadDocument(_))
        ));
        let other = Tenant::parse("other").unwrap();
        assert!(matches!(
            accept_doc(&body, &other, &u1),
            Err(TierFailure::BadDocument(_))
        ));
        assert!(matches!(
            accept_doc("<html>", &t, &u1),
            Err(TierFailure::BadDocument(_))
        ));
    }

    #[test]
    fn an_oversize_or_invalid_document_is_a_failed_tier_and_the_walk_goes_on() {
        let t = Tenant::parse("default").unwrap();
        let u1 = Subject::User(UserId::parse("u1").unwrap());
        let mut d = doc(1, 1);
        d.items.push(contract::RecItem {
            item_id: "../../x".into(),
            score: 1.0,
            reason: None,
            categories: Vec::new(),
        });
        let invalid = serde_json::to_string(&d).unwrap();
        let body = serde_json::to_string(&doc(1, 1)).unwrap();
        let oversize = format!(
            "{},\"pad\":\"{}\"}}",
            &body[..body.len() - 1],
            "x".repeat(contract::MAX_DOC_BYTES)
        );
        for bad in [invalid, oversize] {
            let f = accept_doc(&bad, &t, &u1).unwrap_err();
            let mut w = Walk::new(vec![Tier::SecondaryCdn, Tier::Origin(0)], 300);
            w.next_tier();
            assert_eq!(
                w.record(Tier::SecondaryCdn, TierResult::Failed(f), 1),
                Step::Continue
            );
            assert_eq!(w.next_tier(), Some(Tier::Origin(0)));
        }
    }

    fn popular(tenant: &str, generated_at: u64) -> RecommendationDoc {
        let items = vec![contract::RecItem {
            item_id: "i1".into(),
            score: 1.0,
            reason: None,
            categories: Vec::new(),
        }];
        RecommendationDoc {
            tenant: tenant.into(),
            user_id: "*".into(),
            items,
            ..doc(generated_at, 60)
        }
    }

    #[test]
    fn the_popular_fallback_prefers_the_regional_kv_list_then_the_baked_one() {
        let (t, u) = (
            Tenant::parse("default").unwrap(),
            Subject::User(UserId::parse("u9").unwrap()),
        );
        let baked = popular("default", 0);
        let (d, from) =
            popular_answer(Some(popular("default", 100)), Some(&baked), &t, &u, 120).unwrap();
        assert_eq!(
            (from, d.user_id.as_str(), d.generated_at),
            (PopularFrom::Kv, "u9", 100)
        );
        let (d, from) = popular_answer(None, Some(&baked), &t, &u, 5000).unwrap();
        assert_eq!(
            (from, d.user_id.as_str(), d.generated_at),
            (PopularFrom::Baked, "u9", 5000)
        );
        // An expired KV list is passed over.
        let (_, from) =
            popular_answer(Some(popular("default", 0)), Some(&baked), &t, &u, 100_000).unwrap();
        assert_eq!(from, PopularFrom::Baked);
    }

    #[test]
    fn an_items_list_is_refused_for_a_user_and_the_popular_fallback_is_addressed_to_the_item() {
        let t = Tenant::parse("default").unwrap();
        let similar = Subject::Item(
            contract::ItemList::Similar,
            contract::ItemId::parse("i1").unwrap(),
        );
        let item_doc = RecommendationDoc {
            user_id: "*".into(),
            list: Some(contract::ItemList::Similar),
            item_id: Some("i1".into()),
            ..doc(1, 1)
        };
        let body = serde_json::to_string(&item_doc).unwrap();
        assert!(accept_doc(&body, &t, &similar).is_ok());
        let together = Subject::Item(
            contract::ItemList::BoughtTogether,
            contract::ItemId::parse("i1").unwrap(),
        );
        assert!(accept_doc(&body, &t, &together).is_err());
        let user_body = serde_json::to_string(&doc(1, 1)).unwrap();
        assert!(accept_doc(&user_body, &t, &similar).is_err());
        // The popular list holds i1: served for i1's list, i1 leaves it.
        let (d, _) =
            popular_answer(Some(popular("default", 100)), None, &t, &similar, 120).unwrap();
        assert_eq!(
            (d.user_id.as_str(), d.item_id.as_deref(), d.list),
            ("*", Some("i1"), Some(contract::ItemList::Similar))
        );
        assert!(d.items.is_empty());
        d.validate().unwrap();
    }

    #[test]
    fn other_tenants_never_get_the_baked_list() {
        let (t, u) = (
            Tenant::parse("shop").unwrap(),
            Subject::User(UserId::parse("u9").unwrap()),
        );
        assert_eq!(
            popular_answer(None, Some(&popular("default", 0)), &t, &u, 1),
            None
        );
        assert_eq!(
            popular_answer(Some(popular("default", 0)), None, &t, &u, 1),
            None
        );
    }

    fn arb_result() -> impl Strategy<Value = TierResult> {
        prop_oneof![
            Just(TierResult::NotFound),
            Just(TierResult::Failed(TierFailure::Timeout)),
            (0u64..200, 0u64..100).prop_map(|(g, f)| TierResult::Found(doc(g, f))),
        ]
    }

    proptest! {
        #[test]
        fn the_chain_never_repeats_a_tier_and_keeps_its_order(
            cdn: bool,
            names in proptest::collection::btree_set("[a-z]{1,3}", 0..12),
            r in 0usize..4,
        ) {
            let bound = names.into_iter().map(|n| (n.clone(), format!("http://{n}"))).collect();
            let cfg = EdgeConfig { origins: bound, secondary_cdn_url: cdn.then(|| "http://c".into()), ..EdgeConfig::default() };
            let regions = ["us-east", "us-west", "europe", "asia"];
            let chain = chain_for(&cfg, &origins(&cfg, regions[r]));
            prop_assert!(chain.windows(2).all(|w| w[0] < w[1]));
            prop_assert_eq!(chain[0], Tier::EdgeCache);
            prop_assert!(chain.len() <= 3 + MAX_ORIGINS);
        }

        #[test]
        fn every_walk_ends_in_a_serve_or_a_terminal_fallback(
            results in proptest::collection::vec(arb_result(), 5),
            now in 0u64..300,
        ) {
            let mut w = Walk::new(ALL.to_vec(), 300);
            let mut tried = Vec::new();
            let mut served = false;
            while let Some(tier) = w.next_tier() {
                prop_assert!(!tried.contains(&tier));
                tried.push(tier);
                match w.record(tier, results[tried.len() - 1].clone(), now) {
                    Step::Serve { doc, .. } => {
                        prop_assert!(Freshness::of(&doc, now).is_fresh());
                        served = true;
                        break;
                    }
                    Step::ServeStaleAndRefresh { doc, refresh_with } => {
                        let is_stale = matches!(Freshness::of(&doc, now), Freshness::Stale { .. });
                        prop_assert!(is_stale);
                        prop_assert!(refresh_with.iter().all(|t| !tried.contains(t)));
                        served = true;
                        break;
                    }
                    Step::UnknownTenant => prop_assert!(false, "no generated tier says that"),
                    Step::Continue => {}
                }
            }
            if !served {
                prop_assert_eq!(tried.len(), 5);
                match w.finish() {
                    Final::ServeStale { doc, .. } => {
                        let is_stale = matches!(Freshness::of(&doc, now), Freshness::Stale { .. });
                        prop_assert!(is_stale);
                    }
                    Final::Popular { attempts } => prop_assert_eq!(attempts.len(), 5),
                }
            }
        }
    }
}
