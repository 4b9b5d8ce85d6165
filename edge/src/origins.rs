//! A region's origins and the order one request tries them in.
//!
//! Each region lists its origins in ranks, in failover order (`REGION_ORIGINS`, default
//! `geo-data/region-origins.json`): an entry is an origin name, or an array of names of
//! equal rank — several instances of one origin service, e.g.
//! `"europe": [["europe-a", "europe-b"], "us-east", "asia"]`. A file of plain names (one
//! origin per rank) is read as before. [`parse_region_origins`] checks the file: a region
//! lists at least one origin, no group is empty, no name is empty or listed twice in a
//! region; every error names the region.
//!
//! The order for a request ([`order`]): the ranks in turn, and within a rank the
//! members by rendezvous (highest-random-weight) hashing of the request's
//! [`AffinityKey`] with each origin's name. So:
//!
//! - one user's misses always go to the same instance first (and fail over to the same
//!   second one), at every edge and in every isolate: the weight is SipHash-1-3 with
//!   fixed keys, nothing per isolate or per deployment secret;
//! - users spread evenly over the instances of a rank;
//! - removing an instance (or its breaker opening) moves only the users it had first;
//!   everyone else keeps their order, and its users come back when it does;
//! - the order does not depend on how the group is spelled (its members' order in the
//!   file).
//!
//! Reads are keyed by `(tenant, user)` ([`AffinityKey::user`]). Writes use the same
//! order: `POST /v1/events` by the first event's user in the default tenant (a client
//! sends its own user's events, so they reach the instance that serves that user's
//! misses; [`AffinityKey::events`]); impressions batches, which hold many users' answers,
//! by the id of their first answer ([`AffinityKey::impressions`]), which is random, so
//! batches spread evenly, and stays first when a batch the origins did not take is put
//! back, so a resend goes to the same instance first; the hit-rate report that follows
//! a batch goes where the batch went. Every write carries idempotency keys, so a write
//! that fails over is stored once whichever instance takes it.

use std::collections::BTreeMap;
use std::hash::Hasher;

use contract::events::{Event, Shown};
use contract::{Region, Tenant, UserId, DEFAULT_TENANT};
use siphasher::sip::SipHasher13;
use thiserror::Error;

/// One region's origins: ranks in failover order, each a group of names of equal rank.
pub type Ranks = Vec<Vec<String>>;

/// A named origin bound to its URL, with its rank in the region's list (0 = first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub name: String,
    pub url: String,
    pub rank: usize,
}

/// Why a region → origins map was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RegionOriginsError {
    #[error("not a JSON object of region to a list of origins: {0}")]
    Json(String),
    #[error("{0:?} is not a region name (lowercase letters, digits, '-')")]
    Region(String),
    #[error("region {0:?}: the origins must be a non-empty list")]
    NotAList(String),
    #[error(
        "region {region:?}: entry {position} must be an origin name or an array of names of equal rank"
    )]
    Entry { region: String, position: usize },
    #[error("region {region:?}: entry {position} is an empty group")]
    EmptyGroup { region: String, position: usize },
    #[error("region {region:?}: entry {position} has an empty origin name")]
    EmptyName { region: String, position: usize },
    #[error("region {region:?}: origin {name:?} is listed twice")]
    Duplicate { region: String, name: String },
}

/// Parses and checks a region → origins map (keys starting with `_` are comments).
pub fn parse_region_origins(json: &str) -> Result<BTreeMap<String, Ranks>, RegionOriginsError> {
    let raw: BTreeMap<String, serde_json::Value> =
        serde_json::from_str(json).map_err(|e| RegionOriginsError::Json(e.to_string()))?;
    raw.into_iter()
        .filter(|(k, _)| !k.starts_with('_'))
        .map(|(region, list)| {
            let ranks = ranks_of(&region, list)?;
            Ok((region, ranks))
        })
        .collect()
}

/// One region's list: each entry a name or a group of names.
fn ranks_of(region: &str, list: serde_json::Value) -> Result<Ranks, RegionOriginsError> {
    use serde_json::Value;
    if Region::parse(region).is_err() {
        return Err(RegionOriginsError::Region(
            region.chars().take(40).collect(),
        ));
    }
    let entries = match list {
        Value::Array(entries) if !entries.is_empty() => entries,
        _ => return Err(RegionOriginsError::NotAList(region.into())),
    };
    // A list holds a few names: a linear look-up keeps the worker small.
    let mut seen: Vec<String> = Vec::new();
    let mut ranks = Vec::with_capacity(entries.len());
    for (position, entry) in entries.into_iter().enumerate() {
        let names = match entry {
            Value::String(name) => vec![Value::String(name)],
            Value::Array(group) if group.is_empty() => {
                return Err(RegionOriginsError::EmptyGroup {
                    region: region.into(),
                    position,
                })
            }
            Value::Array(group) => group,
            _ => {
                return Err(RegionOriginsError::Entry {
                    region: region.into(),
                    position,
                })
            }
        };
        let mut group = Vec::with_capacity(names.len());
        for name in names {
            let Value::String(name) = name else {
                return Err(RegionOriginsError::Entry {
                    region: region.into(),
                    position,
                });
            };
            if name.is_empty() {
                return Err(RegionOriginsError::EmptyName {
                    region: region.into(),
                    position,
                });
            }
            if seen.contains(&name) {
                return Err(RegionOriginsError::Duplicate {
                    region: region.into(),
                    name,
                });
            }
            seen.push(name.clone());
            group.push(name);
        }
        ranks.push(group);
    }
    Ok(ranks)
}

/// What keeps a request's order stable: the same key, the same order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AffinityKey {
    /// A user's reads and events.
    User { tenant: String, user: String },
    /// A write of many users' data, by a stable id of its own.
    Batch(String),
    /// An item's list (similar items, bought together): `list` and `item`.
    Item {
        tenant: String,
        list: &'static str,
        item: String,
    },
}

impl AffinityKey {
    pub fn user(tenant: &Tenant, user: &UserId) -> Self {
        AffinityKey::User {
            tenant: tenant.to_string(),
            user: user.to_string(),
        }
    }

    /// A read of a user's list ([`AffinityKey::user`]) or of an item's list (the same
    /// instance of a rank for every miss of that item's list).
    pub fn subject(tenant: &Tenant, subject: &contract::Subject) -> Self {
        match subject {
            contract::Subject::User(u) => AffinityKey::user(tenant, u),
            contract::Subject::Item(list, item) => AffinityKey::Item {
                tenant: tenant.to_string(),
                list: list.as_str(),
                item: item.to_string(),
            },
        }
    }

    /// An events body: its first event's user, in the default tenant (events are the
    /// default tenant's), so the user's events reach the instance serving their misses.
    pub fn events(events: &[Event]) -> Self {
        match events.first() {
            Some(e) => AffinityKey::User {
                tenant: DEFAULT_TENANT.into(),
                user: e.user_id.to_string(),
            },
            None => AffinityKey::Batch(String::new()),
        }
    }

    /// An impressions batch: the id of its first answer (random, and kept first when
    /// an unsent batch is put back), else its first user.
    pub fn impressions(shown: &[Shown]) -> Self {
        let first = shown.first();
        let id = first.and_then(|s| s.id.clone());
        AffinityKey::Batch(
            id.or_else(|| first.map(|s| s.user_id.clone()))
                .unwrap_or_default(),
        )
    }

    /// The rendezvous weight of `origin` for this key: SipHash-1-3 with fixed keys of the
    /// key's fields and the origin's name, each length-prefixed (no two inputs collide
    /// by concatenation).
    pub fn weight(&self, origin: &str) -> u64 {
        let mut h = SipHasher13::new_with_keys(WEIGHT_KEYS.0, WEIGHT_KEYS.1);
        let mut field = |bytes: &[u8]| {
            h.write(&(bytes.len() as u64).to_le_bytes());
            h.write(bytes);
        };
        match self {
            AffinityKey::User { tenant, user } => {
                field(b"user");
                field(tenant.as_bytes());
                field(user.as_bytes());
            }
            AffinityKey::Batch(id) => {
                field(b"batch");
                field(id.as_bytes());
            }
            AffinityKey::Item { tenant, list, item } => {
                field(b"item");
                field(tenant.as_bytes());
                field(list.as_bytes());
                field(item.as_bytes());
            }
        }
        field(origin.as_bytes());
        h.finish()
    }
}

/// Fixed SipHash keys of the rendezvous weights ("edge-rendezvous!"): the same at every
/// edge and in every isolate, and never derived from a secret, so rotating one does not
/// move users between instances.
const WEIGHT_KEYS: (u64, u64) = (0x6564_6765_2d72_656e, 0x6465_7a76_6f75_7321);

/// The order to try `ranks` in for `key`: rank after rank, each rank's members by
/// descending rendezvous weight (ties, which need a 64-bit collision, by name).
pub fn order(ranks: Vec<Vec<Origin>>, key: &AffinityKey) -> Vec<Origin> {
    let mut out = Vec::with_capacity(ranks.iter().map(Vec::len).sum());
    for group in ranks {
        let mut weighed: Vec<(u64, Origin)> = group
            .into_iter()
            .map(|o| (key.weight(&o.name), o))
            .collect();
        // An insertion sort: a rank holds a few instances, and the worker stays smaller
        // than with another instance of the standard library's sort.
        for i in 1..weighed.len() {
            let mut j = i;
            while j > 0 && ahead(&weighed[j], &weighed[j - 1]) {
                weighed.swap(j, j - 1);
                j -= 1;
            }
        }
        out.extend(weighed.into_iter().map(|(_, o)| o));
    }
    out
}

/// Whether `a` goes before `b`: the higher weight, or on a tie the smaller name.
fn ahead(a: &(u64, Origin), b: &(u64, Origin)) -> bool {
    a.0 > b.0 || (a.0 == b.0 && a.1.name < b.1.name)
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn origin(name: &str, rank: usize) -> Origin {
        Origin {
            name: name.into(),
            url: format!("http://{name}"),
            rank,
        }
    }

    fn ranks(spec: &[&[&str]]) -> Vec<Vec<Origin>> {
        spec.iter()
            .enumerate()
            .map(|(rank, names)| names.iter().map(|n| origin(n, rank)).collect())
            .collect()
    }

    fn user(u: &str) -> AffinityKey {
        AffinityKey::User {
            tenant: "default".into(),
            user: u.into(),
        }
    }

    fn names(order: &[Origin]) -> Vec<&str> {
        order.iter().map(|o| o.name.as_str()).collect()
    }

    /// For each origin of one rank, the share of `users` users that get it first.
    fn shares(group: &[&str], users: usize) -> Vec<f64> {
        let mut first = vec![0usize; group.len()];
        for u in 0..users {
            let o = order(ranks(&[group]), &user(&format!("u{u}")));
            first[group.iter().position(|n| *n == o[0].name).unwrap()] += 1;
        }
        first.iter().map(|&c| c as f64 / users as f64).collect()
    }

    #[test]
    fn plain_names_are_ranks_of_one_as_before() {
        let r = parse_region_origins(r#"{"_c": "x", "europe": ["europe", "us-east"]}"#).unwrap();
        assert_eq!(r["europe"], vec![vec!["europe"], vec!["us-east"]]);
        assert_eq!(r.len(), 1, "comment keys are skipped");
    }

    #[test]
    fn an_array_entry_is_a_group_of_equal_rank() {
        let r =
            parse_region_origins(r#"{"europe": [["europe-a", "europe-b"], "us-east", ["asia"]]}"#)
                .unwrap();
        assert_eq!(
            r["europe"],
            vec![vec!["europe-a", "europe-b"], vec!["us-east"], vec!["asia"]]
        );
    }

    #[test]
    fn bad_lists_are_refused_with_the_region_named() {
        let err = |json: &str| parse_region_origins(json).unwrap_err().to_string();
        assert_eq!(
            err(r#"{"europe": [["a", "b"], "c", "b"]}"#),
            r#"region "europe": origin "b" is listed twice"#
        );
        assert_eq!(
            err(r#"{"europe": ["a", []]}"#),
            r#"region "europe": entry 1 is an empty group"#
        );
        assert_eq!(
            err(r#"{"asia": ["a", ["b", ""]]}"#),
            r#"region "asia": entry 1 has an empty origin name"#
        );
        assert_eq!(
            err(r#"{"asia": []}"#),
            r#"region "asia": the origins must be a non-empty list"#
        );
        assert_eq!(
            err(r#"{"asia": "a"}"#),
            r#"region "asia": the origins must be a non-empty list"#
        );
        assert!(err(r#"{"asia": [["a", ["b"]]]}"#).starts_with(r#"region "asia": entry 0 must be"#));
        assert!(err(r#"{"asia": [1]}"#).starts_with(r#"region "asia": entry 0 must be"#));
        assert!(err(r#"{"Mars!": ["a"]}"#).contains("\"Mars!\" is not a region name"));
        assert!(err("[]").starts_with("not a JSON object"));
    }

    #[test]
    fn one_users_order_is_fixed_and_ranks_stay_in_turn() {
        let r = ranks(&[
            &["europe-a", "europe-b"],
            &["us-east"],
            &["asia-a", "asia-b"],
        ]);
        let o = order(r.clone(), &user("u42"));
        assert_eq!(o, order(r, &user("u42")));
        assert_eq!(
            o.iter().map(|o| o.rank).collect::<Vec<_>>(),
            [0, 0, 1, 2, 2]
        );
        assert!(names(&o[..2]).contains(&"europe-a") && names(&o[..2]).contains(&"europe-b"));
    }

    #[test]
    fn the_weights_are_fixed_across_builds_and_isolates() {
        // Pinned: a change here moves users to other instances on the next deploy.
        assert_ne!(user("u1").weight("europe-a"), user("u1").weight("europe-b"));
        let firsts: String = (1..=16)
            .map(|u| {
                let o = order(ranks(&[&["europe-a", "europe-b"]]), &user(&format!("u{u}")));
                if o[0].name == "europe-a" {
                    'a'
                } else {
                    'b'
                }
            })
            .collect();
        assert_eq!(firsts, PINNED_FIRSTS);
    }

    /// Whether europe-a or europe-b comes first for users u1..u16 of the default tenant.
    const PINNED_FIRSTS: &str = "bababbabaabaaaab";

    #[test]
    fn ten_thousand_users_spread_evenly_over_two_and_three_instances() {
        for group in [&["europe-a", "europe-b"][..], &["o1", "o2", "o3"][..]] {
            let s = shares(group, 10_000);
            let even = 1.0 / group.len() as f64;
            eprintln!("{group:?}: {s:?}");
            assert!(
                s.iter().all(|x| (x - even).abs() < 0.02),
                "{group:?}: {s:?}"
            );
        }
    }

    #[test]
    fn write_keys_follow_the_user_or_the_batch() {
        use contract::events::{parse_body, Limits};
        let regions = contract::RegionMap::builtin();
        let limits = Limits {
            now: 1_764_237_600,
            max_future_s: 300,
            regions: &regions,
        };
        let events = parse_body(
            br#"{"events":[{"user_id":"u7","item_id":"i1","type":"view"},
                           {"user_id":"u8","item_id":"i2","type":"view"}]}"#,
            &limits,
        )
        .unwrap();
        assert_eq!(AffinityKey::events(&events), user("u7"));
        let shown = |id: Option<&str>, u: &str| Shown {
            id: id.map(str::to_string),
            user_id: u.into(),
            source: "kv".into(),
            region: "europe".into(),
            timestamp: 0,
            items: vec![],
        };
        assert_eq!(
            AffinityKey::impressions(&[shown(Some("s1"), "u1"), shown(Some("s2"), "u2")]),
            AffinityKey::Batch("s1".into())
        );
        assert_eq!(
            AffinityKey::impressions(&[shown(None, "u1")]),
            AffinityKey::Batch("u1".into())
        );
        assert_ne!(
            AffinityKey::Batch("u1".into()).weight("o"),
            user("u1").weight("o"),
            "a batch key is not a user key"
        );
    }

    /// Ranks of distinct names (1–3 ranks of 1–4 names).
    fn arb_ranks() -> impl Strategy<Value = Vec<Vec<Origin>>> {
        proptest::collection::btree_set("[a-z]{1,6}", 1..10)
            .prop_flat_map(|names| {
                let names: Vec<String> = names.into_iter().collect();
                let n = names.len();
                (Just(names), proptest::collection::vec(0usize..3, n))
            })
            .prop_map(|(names, cuts)| {
                let mut ranks: Vec<Vec<Origin>> = vec![Vec::new(); 3];
                for (name, r) in names.iter().zip(cuts) {
                    ranks[r].push(origin(name, r));
                }
                ranks.retain(|g| !g.is_empty());
                for (r, g) in ranks.iter_mut().enumerate() {
                    g.iter_mut().for_each(|o| o.rank = r);
                }
                ranks
            })
    }

    /// A file's spelling of `ranks`: a group of one as a plain name or an array.
    fn spelled(ranks: &[Vec<String>], plain: &[bool]) -> serde_json::Value {
        serde_json::Value::Array(
            ranks
                .iter()
                .zip(plain.iter().cycle())
                .map(|(g, &p)| {
                    if g.len() == 1 && p {
                        serde_json::json!(g[0])
                    } else {
                        serde_json::json!(g)
                    }
                })
                .collect(),
        )
    }

    proptest! {
        #[test]
        fn the_order_is_a_permutation_with_ranks_in_turn_and_fixed_per_user(
            r in arb_ranks(),
            u in "[a-zA-Z0-9._@-]{1,20}",
            t in "[a-z]{1,8}",
        ) {
            let key = AffinityKey::User { tenant: t, user: u };
            let o = order(r.clone(), &key);
            let mut got = names(&o);
            got.sort();
            let mut want: Vec<&str> = r.iter().flatten().map(|o| o.name.as_str()).collect();
            want.sort();
            prop_assert_eq!(got, want);
            prop_assert!(o.windows(2).all(|w| w[0].rank <= w[1].rank));
            prop_assert_eq!(&o, &order(r.clone(), &key));
            // The spelling of a group (its members' order) does not matter.
            let reversed: Vec<Vec<Origin>> =
                r.iter().map(|g| g.iter().rev().cloned().collect()).collect();
            prop_assert_eq!(&o, &order(reversed, &key));
        }

        #[test]
        fn removing_an_instance_moves_only_its_users(
            r in arb_ranks(),
            pick in any::<prop::sample::Index>(),
        ) {
            let all: Vec<String> = r.iter().flatten().map(|o| o.name.clone()).collect();
            let gone = pick.get(&all).clone();
            let without: Vec<Vec<Origin>> = r
                .iter()
                .map(|g| g.iter().filter(|o| o.name != gone).cloned().collect())
                .collect();
            for u in 0..200 {
                let key = user(&format!("user-{u}"));
                let before: Vec<Origin> =
                    order(r.clone(), &key).into_iter().filter(|o| o.name != gone).collect();
                // Everyone's order of the others is what it was: a user moves only when
                // the removed instance was ahead of their next one.
                prop_assert_eq!(order(without.clone(), &key), before);
            }
        }

        #[test]
        fn files_of_names_and_groups_read_back_as_written(
            r in arb_ranks(),
            plain in proptest::collection::vec(any::<bool>(), 1..4),
        ) {
            let names: Vec<Vec<String>> =
                r.iter().map(|g| g.iter().map(|o| o.name.clone()).collect()).collect();
            let json = serde_json::json!({ "europe": spelled(&names, &plain) }).to_string();
            prop_assert_eq!(&parse_region_origins(&json).unwrap()["europe"], &names);
            // A name listed twice is refused, naming the region and the name.
            let mut twice = names.clone();
            let dup = twice[0][0].clone();
            twice.push(vec![dup.clone()]);
            let json = serde_json::json!({ "asia": spelled(&twice, &plain) }).to_string();
            prop_assert_eq!(
                parse_region_origins(&json),
                Err(RegionOriginsError::Duplicate { region: "asia".into(), name: dup })
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        #[test]
        fn users_spread_within_three_points_of_even_for_any_names(
            names in proptest::collection::btree_set("[a-z]{1,8}", 2..=3),
        ) {
            let group: Vec<&str> = names.iter().map(String::as_str).collect();
            let even = 1.0 / group.len() as f64;
            let s = shares(&group, 10_000);
            prop_assert!(s.iter().all(|x| (x - even).abs() < 0.03), "{:?}: {:?}", group, s);
        }
    }
}
