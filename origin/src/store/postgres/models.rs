//! The record of trained models (`trained_models`, migration 3): each retrain writes
//! what it trained ([`TrainedModel`]); every origin on the database reads the newest
//! and, when it serves another, trains the same data and adopts its version (see
//! `crate::retrain`).

use deadpool_postgres::Pool;

use crate::store::{Counts, StoreError, TrainedModel};

/// Records `model` (once: the same version recorded again is ignored).
pub async fn record(pool: &Pool, tenant: &str, model: &TrainedModel) -> Result<(), StoreError> {
    let conn = pool.get().await?;
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    conn.execute(
        "INSERT INTO trained_models(tenant, trained_at, model_version, upto_seq, users, items,
             interactions, recorded_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (tenant, trained_at, model_version) DO NOTHING",
        &[
            &tenant,
            &n(model.trained_at),
            &model.model_version,
            &model.upto_seq,
            &n(model.counts.users),
            &n(model.counts.items),
            &n(model.counts.interactions),
            &(super::event_log::now_ms() / 1000),
        ],
    )
    .await?;
    Ok(())
}

/// The newest recorded model (latest `trained_at`, then latest recorded).
pub async fn latest(pool: &Pool, tenant: &str) -> Result<Option<TrainedModel>, StoreError> {
    let conn = pool.get().await?;
    let row = conn
        .query_opt(
            "SELECT model_version, trained_at, upto_seq, users, items, interactions
             FROM trained_models WHERE tenant = $1
             ORDER BY trained_at DESC, recorded_at DESC, model_version DESC LIMIT 1",
            &[&tenant],
        )
        .await?;
    let u = |v: i64| v.max(0) as u64;
    Ok(row.map(|r| TrainedModel {
        model_version: r.get(0),
        trained_at: u(r.get(1)),
        upto_seq: r.get(2),
        counts: Counts {
            users: u(r.get(3)),
            items: u(r.get(4)),
            interactions: u(r.get(5)),
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::super::{test_server, PostgresStore};
    use crate::events::{Event, EventType};
    use crate::store::{Counts, Store, TrainedModel};
    use contract::{ItemId, Region, UserId};

    fn event(user: &str, item: &str) -> Event {
        Event {
            user_id: UserId::parse(user).unwrap(),
            item_id: ItemId::parse(item).unwrap(),
            kind: EventType::Purchase,
            value: None,
            timestamp: 1_764_000_000,
            context: None,
            source: None,
            region: Some(Region::parse("europe").unwrap()),
            event_id: None,
        }
    }

    /// The training set knows its watermark, gives the same interactions and users up
    /// to it after later events, and the newest recorded model is read back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_training_set_up_to_a_watermark_leaves_later_events_out() {
        let Some(server) = test_server::shared() else {
            return;
        };
        let url = server.database().await;
        let store = PostgresStore::connect(&url, "default", 10).await.unwrap();
        assert_eq!(store.latest_model().await.unwrap(), None);
        let first = store
            .append(vec![event("u1", "i1"), event("u2", "i1")], None)
            .await
            .unwrap();
        let set = store.training_set().await.unwrap();
        assert_eq!(set.upto_seq, Some(first.last_seq));
        store
            .append(vec![event("u1", "i2"), event("u3", "i3")], None)
            .await
            .unwrap();
        let upto = store.training_set_upto(set.upto_seq).await.unwrap();
        assert_eq!(upto.upto_seq, set.upto_seq);
        assert_eq!(upto.counts.interactions, 2);
        let rows = |s: &crate::store::TrainingSet| {
            let mut v: Vec<(String, String)> = s
                .data
                .interactions
                .iter()
                .map(|i| {
                    (
                        s.maps.user_ids[i.user as usize].clone(),
                        s.maps.item_ids[i.item as usize].clone(),
                    )
                })
                .collect();
            v.sort();
            v
        };
        assert_eq!(rows(&upto), rows(&set));
        // u3, first seen after the watermark, is not a user of that training set.
        assert_eq!(upto.maps.user_ids, set.maps.user_ids);
        assert_eq!(upto.counts.users, 2);
        assert_eq!(store.training_set().await.unwrap().counts.interactions, 4);
        assert_eq!(store.training_set().await.unwrap().counts.users, 3);

        let model = |at: u64, v: &str| TrainedModel {
            model_version: v.into(),
            trained_at: at,
            upto_seq: set.upto_seq,
            counts: Counts {
                users: 2,
                items: 1,
                interactions: 2,
            },
        };
        store.record_model(&model(10, "a")).await.unwrap();
        store.record_model(&model(12, "b")).await.unwrap();
        store.record_model(&model(11, "c")).await.unwrap();
        store.record_model(&model(12, "b")).await.unwrap();
        assert_eq!(store.latest_model().await.unwrap(), Some(model(12, "b")));
        let replica = PostgresStore::connect_replica(&url, "default").unwrap();
        assert!(replica.record_model(&model(13, "d")).await.is_err());
    }
}
