//! The source chain and the walk through it.
//!
//! A recommendation request tries tiers in a fixed order — edge cache, KV, secondary
//! CDN, origin — skipping the ones that are not configured. [`Walk`] is the state
//! machine the glue drives: it says which tier to try next, takes each tier's result
//! and decides whether to serve, to go on, or — when the chain is exhausted — to
//! serve the best stale copy seen or give up with the list of [`Attempt`]s.
//! Reasons are data ([`MissReason`], [`TierFailure`]), not strings.

use contract::{RecommendationDoc, Source, Tenant, UserId};

use crate::config::EdgeConfig;
use crate::freshness::{edge_cache_ttl, Freshness};

/// A place the edge may find a document, in chain order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tier {
    EdgeCache,
    Kv,
    SecondaryCdn,
    Origin,
}

impl Tier {
    pub const ALL: [Tier; 4] = [Tier::EdgeCache, Tier::Kv, Tier::SecondaryCdn, Tier::Origin];

    pub fn name(self) -> &'static str {
        self.source().as_str()
    }

    /// The `source` a document served from this tier carries.
    pub fn source(self) -> Source {
        match self {
            Tier::EdgeCache => Source::EdgeCache,
            Tier::Kv => Source::Kv,
            Tier::SecondaryCdn => Source::SecondaryCdn,
            Tier::Origin => Source::Origin,
        }
    }
}

/// The tiers to try for a request, in order: the edge cache and KV always, the
/// secondary CDN and the origin when their URLs are configured.
pub fn chain_for(cfg: &EdgeConfig) -> Vec<Tier> {
    Tier::ALL
        .into_iter()
        .filter(|t| match t {
            Tier::SecondaryCdn => cfg.secondary_cdn_url.is_some(),
            Tier::Origin => cfg.origin_url.is_some(),
            Tier::EdgeCache | Tier::Kv => true,
        })
        .collect()
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
    Timeout,
    Network(String),
    Status(u16),
    BadDocument(String),
    Storage(String),
}

impl TierFailure {
    /// Whether trying the same tier again soon might help.
    pub fn is_retryable(&self) -> bool {
        match self {
            TierFailure::Timeout | TierFailure::Network(_) | TierFailure::Storage(_) => true,
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
    /// Try the next tier.
    Continue,
}

/// How a walk ends when no tier served a fresh document.
#[derive(Debug, Clone, PartialEq)]
pub enum Final {
    /// Serve the newest stale copy seen (stale-if-error), marked stale.
    ServeStale { doc: RecommendationDoc, from: Tier },
    /// Nothing can answer.
    Unavailable { attempts: Vec<Attempt> },
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
            None => Final::Unavailable {
                attempts: self.attempts,
            },
        }
    }
}

/// Parses a document fetched from a tier and checks it is the one asked for, so a
/// mix-up in a store can never serve one tenant's or user's list to another.
pub fn accept_doc(
    body: &str,
    tenant: &Tenant,
    user: &UserId,
) -> Result<RecommendationDoc, TierFailure> {
    let doc: RecommendationDoc = serde_json::from_str(body)
        .map_err(|e| TierFailure::BadDocument(format!("not a recommendation document: {e}")))?;
    if doc.tenant != tenant.as_str() || doc.user_id != user.as_str() {
        return Err(TierFailure::BadDocument(format!(
            "document is for tenant {:?} user {:?}, not {tenant}/{user}",
            doc.tenant, doc.user_id
        )));
    }
    Ok(doc)
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn doc(generated_at: u64, fresh: u64) -> RecommendationDoc {
        RecommendationDoc {
            tenant: "default".into(),
            user_id: "u1".into(),
            region: "us-east".into(),
            items: vec![],
            model_version: "m".into(),
            generated_at,
            fresh_for_s: fresh,
            stale_for_s: 1000,
        }
    }

    fn full_cfg() -> EdgeConfig {
        EdgeConfig {
            origin_url: Some("http://o".into()),
            secondary_cdn_url: Some("http://c".into()),
            ..EdgeConfig::default()
        }
    }

    #[test]
    fn the_chain_is_cache_kv_cdn_origin_and_skips_unconfigured_tiers() {
        assert_eq!(chain_for(&full_cfg()), Tier::ALL.to_vec());
        assert_eq!(
            chain_for(&EdgeConfig::default()),
            vec![Tier::EdgeCache, Tier::Kv]
        );
    }

    #[test]
    fn a_fresh_kv_document_is_served_and_cached_with_its_remaining_freshness() {
        let mut w = Walk::new(chain_for(&full_cfg()), 300);
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
                cache_ttl_s: Some(50)
            }
        );
    }

    #[test]
    fn an_edge_cache_hit_is_not_put_back_into_the_cache() {
        let mut w = Walk::new(vec![Tier::EdgeCache], 300);
        w.next_tier();
        assert!(matches!(
            w.record(Tier::EdgeCache, TierResult::Found(doc(90, 60)), 100),
            Step::Serve {
                cache_ttl_s: None,
                ..
            }
        ));
    }

    #[test]
    fn a_stale_document_is_not_served_as_fresh_but_kept_for_last() {
        let mut w = Walk::new(vec![Tier::Kv, Tier::Origin], 300);
        w.next_tier();
        assert_eq!(
            w.record(Tier::Kv, TierResult::Found(doc(10, 5)), 100),
            Step::Continue
        );
        w.next_tier();
        assert_eq!(
            w.record(Tier::Origin, TierResult::Failed(TierFailure::Timeout), 100),
            Step::Continue
        );
        assert_eq!(w.next_tier(), None);
        assert_eq!(
            w.finish(),
            Final::ServeStale {
                doc: doc(10, 5),
                from: Tier::Kv
            }
        );
    }

    #[test]
    fn nothing_anywhere_ends_unavailable_with_every_attempt() {
        let mut w = Walk::new(vec![Tier::Kv, Tier::Origin], 300);
        w.next_tier();
        w.record(Tier::Kv, TierResult::NotFound, 0);
        w.next_tier();
        w.record(
            Tier::Origin,
            TierResult::Failed(TierFailure::Status(502)),
            0,
        );
        let Final::Unavailable { attempts } = w.finish() else {
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
        let body = serde_json::to_string(&doc(1, 1)).unwrap();
        assert!(accept_doc(&body, &t, &UserId::parse("u1").unwrap()).is_ok());
        assert!(matches!(
            accept_doc(&body, &t, &UserId::parse("u2").unwrap()),
            Err(TierFailure::BadDocument(_))
        ));
        assert!(matches!(
            accept_doc(
                &body,
                &Tenant::parse("other").unwrap(),
                &UserId::parse("u1").unwrap()
            ),
            Err(TierFailure::BadDocument(_))
        ));
        assert!(matches!(
            accept_doc("<html>", &t, &UserId::parse("u1").unwrap()),
            Err(TierFailure::BadDocument(_))
        ));
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
        fn the_chain_never_repeats_a_tier_and_keeps_its_order(cdn: bool, origin: bool) {
            let cfg = EdgeConfig {
                origin_url: origin.then(|| "http://o".into()),
                secondary_cdn_url: cdn.then(|| "http://c".into()),
                ..EdgeConfig::default()
            };
            let chain = chain_for(&cfg);
            prop_assert!(chain.windows(2).all(|w| w[0] < w[1]));
            prop_assert_eq!(chain[0], Tier::EdgeCache);
        }

        #[test]
        fn every_walk_ends_in_a_serve_or_a_terminal_fallback(results in proptest::collection::vec(arb_result(), 4), now in 0u64..300) {
            let mut w = Walk::new(Tier::ALL.to_vec(), 300);
            let mut tried = Vec::new();
            let mut served = false;
            while let Some(tier) = w.next_tier() {
                prop_assert!(!tried.contains(&tier));
                tried.push(tier);
                if let Step::Serve { doc, .. } = w.record(tier, results[tried.len() - 1].clone(), now) {
                    prop_assert!(Freshness::of(&doc, now).is_fresh());
                    served = true;
                    break;
                }
            }
            if !served {
                prop_assert_eq!(tried.len(), 4);
                match w.finish() {
                    Final::ServeStale { doc, .. } => {
                        let is_stale = matches!(Freshness::of(&doc, now), Freshness::Stale { .. });
                        prop_assert!(is_stale);
                    }
                    Final::Unavailable { attempts } => prop_assert_eq!(attempts.len(), 4),
                }
            }
        }
    }
}
