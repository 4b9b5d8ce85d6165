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
use tokio_postgres::types::ToSql;

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

    // Read what the group touches: five independent queries, sent together (the
    // client pipelines them on the connection), one round trip.
    let recent_limit = COOCCURRENCE_RECENT as i64;
    let history_params: [&(dyn ToSql + Sync); 3] = [&tenant, &pair_users, &pair_items];
    let history_rows = tx.query(
        "SELECT h.user_id, h.item_id, h.weight, h.events, h.last_ts, h.last_seq
             FROM UNNEST($2::text[], $3::text[]) AS p(u, i)
             JOIN proj_user_history h ON h.tenant = $1 AND h.user_id = p.u AND h.item_id = p.i",
        &history_params,
    );
    let recent_params: [&(dyn ToSql + Sync); 3] = [&tenant, &users, &recent_limit];
    let recent_rows = tx.query(
        "SELECT p.u, h.item_id, h.last_seq FROM UNNEST($2::text[]) AS p(u)
             CROSS JOIN LATERAL (SELECT item_id, last_seq FROM proj_user_history
                 WHERE tenant = $1 AND user_id = p.u ORDER BY last_seq DESC LIMIT $3) h",
        &recent_params,
    );
    let popularity_params: [&(dyn ToSql + Sync); 3] = [&tenant, &pop_regions, &pop_items];
    let popularity_rows = tx.query(
        "SELECT p.r, p.i, x.events, x.weight FROM UNNEST($2::text[], $3::text[]) AS p(r, i)
             JOIN proj_item_popularity x ON x.tenant = $1 AND x.region = p.r AND x.item_id = p.i",
        &popularity_params,
    );
    let trending_params: [&(dyn ToSql + Sync); 2] = [&tenant, &items];
    let trending_rows = tx.query(
        "SELECT item_id, score, as_of FROM proj_trending
             WHERE tenant = $1 AND item_id = ANY($2)",
        &trending_params,
    );
    let user_params: [&(dyn ToSql + Sync); 2] = [&tenant, &users];
    let user_rows = tx.query(
        "SELECT user_id, client FROM users WHERE tenant = $1 AND user_id = ANY($2)",
        &user_params,
    );
    let (history_rows, recent_rows, popularity_rows, trending_rows, user_rows) = futures_util::try_join!(
        history_rows,
        recent_rows,
        popularity_rows,
        trending_rows,
        user_rows
    )?;
    let mut history: HashMap<(String, String), History> = HashMap::new();
    for r in &history_rows {
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
    for r in &recent_rows {
        recent
            .entry(r.get(0))
            .or_default()
            .push((r.get(2), r.get(1)));
    }
    for list in recent.values_mut() {
        list.sort_by_key(|r| std::cmp::Reverse(r.0));
    }
    let mut popularity: HashMap<(String, String), (i64, f64)> = HashMap::new();
    for r in &popularity_rows {
        popularity.insert((r.get(0), r.get(1)), (r.get(2), r.get(3)));
    }
    let mut trending: HashMap<String, (f64, i64)> = HashMap::new();
    for r in &trending_rows {
        trending.insert(r.get(0), (r.get(1), r.get(2)));
    }
    let mut user_state: HashMap<String, UserState> = HashMap::new();
    for r in &user_rows {
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

    // Write back, one statement per table, all sent together (one round trip).
    let dedup = |keys: Vec<(String, String)>| -> Vec<(String, String)> {
        let mut seen = HashSet::new();
        keys.into_iter()
            .filter(|k| seen.insert(k.clone()))
            .collect()
    };
    let history_keys = dedup(touched_history);
    let history_rows: Vec<History> = history_keys.iter().map(|k| history[k]).collect();
    let h_users: Vec<&str> = history_keys.iter().map(|k| k.0.as_str()).collect();
    let h_items: Vec<&str> = history_keys.iter().map(|k| k.1.as_str()).collect();
    let h_weight: Vec<f64> = history_rows.iter().map(|h| h.weight).collect();
    let h_events: Vec<i64> = history_rows.iter().map(|h| h.events).collect();
    let h_last_ts: Vec<i64> = history_rows.iter().map(|h| h.last_ts).collect();
    let h_last_seq: Vec<i64> = history_rows.iter().map(|h| h.last_seq).collect();

    let co_a: Vec<&str> = cooccurrence.keys().map(|k| k.0.as_str()).collect();
    let co_b: Vec<&str> = cooccurrence.keys().map(|k| k.1.as_str()).collect();
    let co_n: Vec<i64> = cooccurrence.values().copied().collect();

    let pop_keys = dedup(touched_popularity);
    let p_regions: Vec<&str> = pop_keys.iter().map(|k| k.0.as_str()).collect();
    let p_items: Vec<&str> = pop_keys.iter().map(|k| k.1.as_str()).collect();
    let p_events: Vec<i64> = pop_keys.iter().map(|k| popularity[k].0).collect();
    let p_weight: Vec<f64> = pop_keys.iter().map(|k| popularity[k].1).collect();

    let mut seen = HashSet::new();
    let t_items: Vec<&str> = touched_trending
        .iter()
        .filter(|i| seen.insert(*i))
        .map(String::as_str)
        .collect();
    let t_score: Vec<f64> = t_items.iter().map(|i| trending[*i].0).collect();
    let t_as_of: Vec<i64> = t_items.iter().map(|i| trending[*i].1).collect();

    let dirty: Vec<(&String, &UserState)> = user_state.iter().filter(|(_, s)| s.dirty).collect();
    let u_ids: Vec<&str> = dirty.iter().map(|(u, _)| u.as_str()).collect();
    let u_clients: Vec<Option<&str>> = dirty.iter().map(|(_, s)| s.client.as_deref()).collect();

    let c_clients: Vec<&str> = client_users.keys().map(String::as_str).collect();
    let c_counts: Vec<i64> = client_users.values().copied().collect();

    let i_seq: Vec<i64> = training.iter().map(|r| r.0).collect();
    let i_users: Vec<&str> = training.iter().map(|r| r.1.as_str()).collect();
    let i_items: Vec<&str> = training.iter().map(|r| r.2.as_str()).collect();
    let i_weight: Vec<f64> = training.iter().map(|r| r.3).collect();
    let i_ts: Vec<i64> = training.iter().map(|r| r.4).collect();

    type Params<'p> = Vec<&'p (dyn ToSql + Sync)>;
    let mut writes: Vec<(&str, Params<'_>)> = vec![
        (
            "INSERT INTO proj_user_history(tenant, user_id, item_id, weight, events, last_ts,
                 last_seq)
             SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::float8[], $5::bigint[],
                 $6::bigint[], $7::bigint[])
             ON CONFLICT (tenant, user_id, item_id) DO UPDATE SET weight = EXCLUDED.weight,
                 events = EXCLUDED.events, last_ts = EXCLUDED.last_ts,
                 last_seq = EXCLUDED.last_seq",
            vec![
                &tenant,
                &h_users,
                &h_items,
                &h_weight,
                &h_events,
                &h_last_ts,
                &h_last_seq,
            ],
        ),
        (
            "INSERT INTO proj_item_popularity(tenant, region, item_id, events, weight)
             SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::bigint[], $5::float8[])
             ON CONFLICT (tenant, region, item_id) DO UPDATE SET events = EXCLUDED.events,
                 weight = EXCLUDED.weight",
            vec![&tenant, &p_regions, &p_items, &p_events, &p_weight],
        ),
        (
            "INSERT INTO proj_trending(tenant, item_id, score, as_of)
             SELECT $1, * FROM UNNEST($2::text[], $3::float8[], $4::bigint[])
             ON CONFLICT (tenant, item_id) DO UPDATE SET score = EXCLUDED.score,
                 as_of = EXCLUDED.as_of",
            vec![&tenant, &t_items, &t_score, &t_as_of],
        ),
        // Items first seen in events are marked: they must earn their place in the model.
        (
            "INSERT INTO items(tenant, item_id, from_events)
             SELECT $1, i, true FROM UNNEST($2::text[]) AS x(i)
             ON CONFLICT (tenant, item_id) DO NOTHING",
            vec![&tenant, &items],
        ),
        (
            "INSERT INTO interactions(tenant, event_seq, user_id, item_id, weight, ts)
             SELECT $1, * FROM UNNEST($2::bigint[], $3::text[], $4::text[], $5::float8[],
                 $6::bigint[])",
            vec![&tenant, &i_seq, &i_users, &i_items, &i_weight, &i_ts],
        ),
    ];
    if !co_a.is_empty() {
        writes.push((
            "INSERT INTO proj_cooccurrence(tenant, item_a, item_b, users)
             SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::bigint[])
             ON CONFLICT (tenant, item_a, item_b) DO UPDATE SET
                 users = proj_cooccurrence.users + EXCLUDED.users",
            vec![&tenant, &co_a, &co_b, &co_n],
        ));
    }
    if !u_ids.is_empty() {
        writes.push((
            "INSERT INTO users(tenant, user_id, client)
             SELECT $1, * FROM UNNEST($2::text[], $3::text[])
             ON CONFLICT (tenant, user_id) DO UPDATE SET client = EXCLUDED.client",
            vec![&tenant, &u_ids, &u_clients],
        ));
    }
    if !c_clients.is_empty() {
        writes.push((
            "INSERT INTO client_users(tenant, client, users)
             SELECT $1, * FROM UNNEST($2::text[], $3::bigint[])
             ON CONFLICT (tenant, client) DO UPDATE SET
                 users = client_users.users + EXCLUDED.users",
            vec![&tenant, &c_clients, &c_counts],
        ));
    }
    futures_util::future::try_join_all(writes.iter().map(|(sql, params)| tx.execute(*sql, params)))
        .await?;
    Ok(())
}
