//! The projections of a group of logged events on PostgreSQL, in a few round trips
//! whatever the group's size.
//!
//! SQLite's `project` (`store/sqlite/event_log.rs`) runs its statements per event, which
//! costs nothing in-process; over a network each statement is a round trip. Here the
//! group's rows are read once (the history rows of its (user, item) pairs, each user's
//! [`COOCCURRENCE_RECENT`] most recent items, the popularity and trending rows of its
//! items, its users' clients), the events are applied in order in memory with exactly
//! SQLite's arithmetic (each float added in the same order, the same trending decay),
//! and the results are written back with one statement per table (`UNNEST` arrays,
//! `INSERT … ON CONFLICT … DO UPDATE`). The float columns are written as values rather
//! than increments, so a replay, whose groups differ from the live ones, gives the same
//! bits; the integer counts of co-occurrence and clients are written as increments.
//!
//! This is exact only while no other writer changes the same rows in between: the
//! caller holds the tenant's writer lock (`event_log::lock_writers`) for the whole
//! transaction.
//!
//! Why the recent items stay exact: an item enters a user's most recent ones only by an
//! event for it, which gives it the newest seq. So the user's recent items after an
//! event are the newest [`COOCCURRENCE_RECENT`] of (the ones before, the event's item).

use std::collections::{BTreeMap, HashMap, HashSet};

use deadpool_postgres::Transaction;

use crate::events::Event;
use crate::store::{StoreError, COOCCURRENCE_RECENT, TRENDING_HALF_LIFE_S, UNKNOWN_REGION};

/// One stored event to project: its seq, the event, the client that sent it.
#[derive(Clone, Copy)]
pub struct Logged<'a> {
    pub seq: i64,
    pub event: &'a Event,
    pub client: Option<&'a str>,
}

fn decay(dt_s: i64) -> f64 {
    0.5f64.powf(dt_s as f64 / TRENDING_HALF_LIFE_S)
}

/// A `proj_user_history` row's values.
#[derive(Clone, Copy)]
struct History {
    weight: f64,
    events: i64,
    last_ts: i64,
    last_seq: i64,
}

/// A user's row: whether it exists and its client.
#[derive(Clone, Default)]
struct UserState {
    exists: bool,
    client: Option<String>,
    /// Written back: created or claimed by a client in this group.
    dirty: bool,
}

/// Applies `events` (in seq order) to every projection, inside the caller's
/// transaction (which holds the tenant's writer lock).
pub async fn project_all(
    tx: &Transaction<'_>,
    tenant: &str,
    events: &[Logged<'_>],
) -> Result<(), StoreError> {
    // Impressions are not interactions: they change no projection.
    let weighted: Vec<(Logged<'_>, f64)> = events
        .iter()
        .filter_map(|l| l.event.weight().map(|w| (*l, f64::from(w))))
        .collect();
    if weighted.is_empty() {
        return Ok(());
    }
    let user = |l: &Logged<'_>| l.event.user_id.as_str().to_owned();
    let item = |l: &Logged<'_>| l.event.item_id.as_str().to_owned();
    let region = |l: &Logged<'_>| {
        l.event
            .region
            .as_ref()
            .map_or(UNKNOWN_REGION, |r| r.as_str())
            .to_owned()
    };
    let users: Vec<String> = weighted
        .iter()
        .map(|(l, _)| user(l))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let items: Vec<String> = weighted
        .iter()
        .map(|(l, _)| item(l))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let pairs: HashSet<(String, String)> =
        weighted.iter().map(|(l, _)| (user(l), item(l))).collect();
    let (pair_users, pair_items): (Vec<String>, Vec<String>) = pairs.into_iter().unzip();
    let regional: HashSet<(String, String)> =
        weighted.iter().map(|(l, _)| (region(l), item(l))).collect();
    let (pop_regions, pop_items): (Vec<String>, Vec<String>) = regional.into_iter().unzip();

    // Read what the group touches.
    let mut history: HashMap<(String, String), History> = HashMap::new();
    for r in tx
        .query(
            "SELECT h.user_id, h.item_id, h.weight, h.events, h.last_ts, h.last_seq
             FROM UNNEST($2::text[], $3::text[]) AS p(u, i)
             JOIN proj_user_history h ON h.tenant = $1 AND h.user_id = p.u AND h.item_id = p.i",
            &[&tenant, &pair_users, &pair_items],
        )
        .await?
    {
        history.insert(
            (r.get(0), r.get(1)),
            History {
                weight: r.get(2),
                events: r.get(3),
                last_ts: r.get(4),
                last_seq: r.get(5),
            },
        );
    }
    // Each user's most recent items, newest first, as (last_seq, item).
    let mut recent: HashMap<String, Vec<(i64, String)>> = HashMap::new();
    for r in tx
        .query(
            "SELECT p.u, h.item_id, h.last_seq FROM UNNEST($2::text[]) AS p(u)
             CROSS JOIN LATERAL (SELECT item_id, last_seq FROM proj_user_history
                 WHERE tenant = $1 AND user_id = p.u ORDER BY last_seq DESC LIMIT $3) h",
            &[&tenant, &users, &(COOCCURRENCE_RECENT as i64)],
        )
        .await?
    {
        recent
            .entry(r.get(0))
            .or_default()
            .push((r.get(2), r.get(1)));
    }
    for list in recent.values_mut() {
        list.sort_by_key(|r| std::cmp::Reverse(r.0));
    }
    let mut popularity: HashMap<(String, String), (i64, f64)> = HashMap::new();
    for r in tx
        .query(
            "SELECT p.r, p.i, x.events, x.weight FROM UNNEST($2::text[], $3::text[]) AS p(r, i)
             JOIN proj_item_popularity x ON x.tenant = $1 AND x.region = p.r AND x.item_id = p.i",
            &[&tenant, &pop_regions, &pop_items],
        )
        .await?
    {
        popularity.insert((r.get(0), r.get(1)), (r.get(2), r.get(3)));
    }
    let mut trending: HashMap<String, (f64, i64)> = HashMap::new();
    for r in tx
        .query(
            "SELECT item_id, score, as_of FROM proj_trending
             WHERE tenant = $1 AND item_id = ANY($2)",
            &[&tenant, &items],
        )
        .await?
    {
        trending.insert(r.get(0), (r.get(1), r.get(2)));
    }
    let mut user_state: HashMap<String, UserState> = HashMap::new();
    for r in tx
        .query(
            "SELECT user_id, client FROM users WHERE tenant = $1 AND user_id = ANY($2)",
            &[&tenant, &users],
        )
        .await?
    {
        user_state.insert(
            r.get(0),
            UserState {
                exists: true,
                client: r.get(1),
                dirty: false,
            },
        );
    }

    // Apply the events in order, as SQLite's `project` does one by one.
    let mut touched_history: Vec<(String, String)> = Vec::new();
    let mut cooccurrence: BTreeMap<(String, String), i64> = BTreeMap::new();
    let mut touched_popularity: Vec<(String, String)> = Vec::new();
    let mut touched_trending: Vec<String> = Vec::new();
    let mut client_users: BTreeMap<String, i64> = BTreeMap::new();
    let mut training: Vec<(i64, String, String, f64, i64)> = Vec::with_capacity(weighted.len());
    for (l, w) in &weighted {
        let (u, i, ts) = (user(l), item(l), l.event.timestamp);
        let key = (u.clone(), i.clone());
        let mine = recent.entry(u.clone()).or_default();
        match history.get_mut(&key) {
            None => {
                for (_, other) in mine.iter() {
                    *cooccurrence.entry((i.clone(), other.clone())).or_default() += 1;
                    *cooccurrence.entry((other.clone(), i.clone())).or_default() += 1;
                }
                history.insert(
                    key.clone(),
                    History {
                        weight: *w,
                        events: 1,
                        last_ts: ts,
                        last_seq: l.seq,
                    },
                );
            }
            Some(h) => {
                h.weight += *w;
                h.events += 1;
                h.last_ts = h.last_ts.max(ts);
                h.last_seq = l.seq;
            }
        }
        touched_history.push(key);
        mine.retain(|(_, other)| *other != i);
        mine.insert(0, (l.seq, i.clone()));
        mine.truncate(COOCCURRENCE_RECENT);

        let pop_key = (region(l), i.clone());
        let p = popularity.entry(pop_key.clone()).or_insert((0, 0.0));
        if p.0 == 0 {
            *p = (1, *w);
        } else {
            p.0 += 1;
            p.1 += *w;
        }
        touched_popularity.push(pop_key);

        let next = match trending.get(&i) {
            None => (*w, ts),
            Some(&(s, t)) if ts >= t => (s * decay(ts - t) + *w, ts),
            Some(&(s, t)) => (s + *w * decay(t - ts), t),
        };
        trending.insert(i.clone(), next);
        touched_trending.push(i.clone());

        let state = user_state.entry(u.clone()).or_default();
        if !state.exists {
            state.exists = true;
            state.dirty = true;
        }
        if let Some(client) = l.client {
            // A user belongs to the first client that sent events for them.
            if state.client.is_none() {
                state.client = Some(client.to_owned());
                state.dirty = true;
                *client_users.entry(client.to_owned()).or_default() += 1;
            }
        }
        training.push((l.seq, u, i, *w, ts));
    }

    // Write back, one statement per table.
    let dedup = |keys: Vec<(String, String)>| -> Vec<(String, String)> {
        let mut seen = HashSet::new();
        keys.into_iter()
            .filter(|k| seen.insert(k.clone()))
            .collect()
    };
    {
        let keys = dedup(touched_history);
        let rows: Vec<History> = keys.iter().map(|k| history[k]).collect();
        let users: Vec<&str> = keys.iter().map(|k| k.0.as_str()).collect();
        let items: Vec<&str> = keys.iter().map(|k| k.1.as_str()).collect();
        let weight: Vec<f64> = rows.iter().map(|h| h.weight).collect();
        let events: Vec<i64> = rows.iter().map(|h| h.events).collect();
        let last_ts: Vec<i64> = rows.iter().map(|h| h.last_ts).collect();
        let last_seq: Vec<i64> = rows.iter().map(|h| h.last_seq).collect();
        tx.execute(
            "INSERT INTO proj_user_history(tenant, user_id, item_id, weight, events, last_ts,
                 last_seq)
             SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::float8[], $5::bigint[],
                 $6::bigint[], $7::bigint[])
             ON CONFLICT (tenant, user_id, item_id) DO UPDATE SET weight = EXCLUDED.weight,
                 events = EXCLUDED.events, last_ts = EXCLUDED.last_ts,
                 last_seq = EXCLUDED.last_seq",
            &[
                &tenant, &users, &items, &weight, &events, &last_ts, &last_seq,
            ],
        )
        .await?;
    }
    if !cooccurrence.is_empty() {
        let mut cols: (Vec<&str>, Vec<&str>, Vec<i64>) = Default::default();
        for ((a, b), n) in &cooccurrence {
            cols.0.push(a);
            cols.1.push(b);
            cols.2.push(*n);
        }
        tx.execute(
            "INSERT INTO proj_cooccurrence(tenant, item_a, item_b, users)
             SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::bigint[])
             ON CONFLICT (tenant, item_a, item_b) DO UPDATE SET
                 users = proj_cooccurrence.users + EXCLUDED.users",
            &[&tenant, &cols.0, &cols.1, &cols.2],
        )
        .await?;
    }
    {
        let keys = dedup(touched_popularity);
        let mut cols: (Vec<&str>, Vec<&str>, Vec<i64>, Vec<f64>) = Default::default();
        for k in &keys {
            let (n, w) = popularity[k];
            cols.0.push(&k.0);
            cols.1.push(&k.1);
            cols.2.push(n);
            cols.3.push(w);
        }
        tx.execute(
            "INSERT INTO proj_item_popularity(tenant, region, item_id, events, weight)
             SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::bigint[], $5::float8[])
             ON CONFLICT (tenant, region, item_id) DO UPDATE SET events = EXCLUDED.events,
                 weight = EXCLUDED.weight",
            &[&tenant, &cols.0, &cols.1, &cols.2, &cols.3],
        )
        .await?;
    }
    {
        let mut seen = HashSet::new();
        let mut cols: (Vec<&str>, Vec<f64>, Vec<i64>) = Default::default();
        for i in touched_trending.iter().filter(|i| seen.insert(*i)) {
            let (score, as_of) = trending[i];
            cols.0.push(i);
            cols.1.push(score);
            cols.2.push(as_of);
        }
        tx.execute(
            "INSERT INTO proj_trending(tenant, item_id, score, as_of)
             SELECT $1, * FROM UNNEST($2::text[], $3::float8[], $4::bigint[])
             ON CONFLICT (tenant, item_id) DO UPDATE SET score = EXCLUDED.score,
                 as_of = EXCLUDED.as_of",
            &[&tenant, &cols.0, &cols.1, &cols.2],
        )
        .await?;
    }
    {
        let mut cols: (Vec<&str>, Vec<Option<&str>>) = Default::default();
        for (u, s) in user_state.iter().filter(|(_, s)| s.dirty) {
            cols.0.push(u);
            cols.1.push(s.client.as_deref());
        }
        if !cols.0.is_empty() {
            tx.execute(
                "INSERT INTO users(tenant, user_id, client)
                 SELECT $1, * FROM UNNEST($2::text[], $3::text[])
                 ON CONFLICT (tenant, user_id) DO UPDATE SET client = EXCLUDED.client",
                &[&tenant, &cols.0, &cols.1],
            )
            .await?;
        }
    }
    if !client_users.is_empty() {
        let (clients, counts): (Vec<&str>, Vec<i64>) =
            client_users.iter().map(|(c, n)| (c.as_str(), *n)).unzip();
        tx.execute(
            "INSERT INTO client_users(tenant, client, users)
             SELECT $1, * FROM UNNEST($2::text[], $3::bigint[])
             ON CONFLICT (tenant, client) DO UPDATE SET
                 users = client_users.users + EXCLUDED.users",
            &[&tenant, &clients, &counts],
        )
        .await?;
    }
    // Items first seen in events are marked: they must earn their place in the model.
    tx.execute(
        "INSERT INTO items(tenant, item_id, from_events)
         SELECT $1, i, true FROM UNNEST($2::text[]) AS x(i)
         ON CONFLICT (tenant, item_id) DO NOTHING",
        &[&tenant, &items],
    )
    .await?;
    {
        let seq: Vec<i64> = training.iter().map(|r| r.0).collect();
        let users: Vec<&str> = training.iter().map(|r| r.1.as_str()).collect();
        let items: Vec<&str> = training.iter().map(|r| r.2.as_str()).collect();
        let weight: Vec<f64> = training.iter().map(|r| r.3).collect();
        let ts: Vec<i64> = training.iter().map(|r| r.4).collect();
        tx.execute(
            "INSERT INTO interactions(tenant, event_seq, user_id, item_id, weight, ts)
             SELECT $1, * FROM UNNEST($2::bigint[], $3::text[], $4::text[], $5::float8[],
                 $6::bigint[])",
            &[&tenant, &seq, &users, &items, &weight, &ts],
        )
        .await?;
    }
    Ok(())
}
