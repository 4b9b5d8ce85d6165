//! Event retention (`--event-retention-months N`, N above 0; PostgreSQL only): one task
//! per `origin serve` that, while this origin leads (the caller says; `crate::leader`),
//! runs [`Store::apply_event_retention`] once after taking the lead and then every
//! [`RETENTION_EVERY`]: the monthly event partitions before the last N months (the
//! current one counted) are detached and dropped. Projections and interactions keep what
//! they counted from dropped events until `origin replay`. A failed run is logged and
//! tried again at the next period.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::store::Store;

/// How often the leader applies retention.
pub const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// Starts retention on `store`, keeping `keep_months`: every `poll` it asks
/// `is_leader`, and a leader applies retention when it has not for `every` (at once
/// after taking the lead). Ends when the store is dropped everywhere else.
pub fn spawn(
    store: &Arc<dyn Store>,
    keep_months: u32,
    every: Duration,
    poll: Duration,
    is_leader: impl Fn() -> bool + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let store: Weak<dyn Store> = Arc::downgrade(store);
    tokio::spawn(async move {
        let mut last: Option<Instant> = None;
        loop {
            if !is_leader() {
                last = None;
            } else if last.is_none_or(|t| t.elapsed() >= every) {
                let Some(store) = store.upgrade() else { return };
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64);
                match store.apply_event_retention(now, keep_months).await {
                    Ok(dropped) if !dropped.is_empty() => tracing::info!(
                        ?dropped,
                        keep_months,
                        "event retention dropped months of the event log"
                    ),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "event retention failed; trying again later")
                    }
                }
                last = Some(Instant::now());
            }
            if store.strong_count() == 0 {
                return;
            }
            tokio::time::sleep(poll).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Event, EventType};
    use crate::store::postgres::test_server;
    use crate::store::PostgresStore;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn view(ts: i64) -> Event {
        Event {
            user_id: contract::UserId::parse("u1").unwrap(),
            item_id: contract::ItemId::parse("i1").unwrap(),
            kind: EventType::View,
            value: None,
            timestamp: ts,
            context: None,
            source: None,
            region: None,
            event_id: None,
        }
    }

    async fn tables(db: &tokio_postgres::Client) -> Vec<String> {
        db.query(
            "SELECT relname::text FROM pg_class WHERE relkind = 'r' AND relname LIKE 'events_y%'
             ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
    }

    /// Months before the kept ones are detached and dropped, by the leader only: a
    /// follower's task leaves them; once it leads, they go, the months kept stay.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_leader_drops_the_months_past_retention_and_a_follower_does_not() {
        let Some(server) = test_server::shared() else {
            return;
        };
        let url = server.database().await;
        let pg = PostgresStore::connect(&url, "default", 10).await.unwrap();
        let (db, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        db.batch_execute(
            "CREATE TABLE events_y2020m01 PARTITION OF events
                 FOR VALUES FROM (1577836800) TO (1580515200);
             CREATE TABLE events_y2020m02 PARTITION OF events
                 FOR VALUES FROM (1580515200) TO (1583020800);",
        )
        .await
        .unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let store: Arc<dyn Store> = Arc::new(pg);
        store
            .append(
                vec![view(1_578_000_000), view(1_581_000_000), view(now)],
                None,
            )
            .await
            .unwrap();
        let before = tables(&db).await;
        assert!(before.contains(&"events_y2020m01".to_owned()), "{before:?}");

        let leads = Arc::new(AtomicBool::new(false));
        let flag = leads.clone();
        let task = spawn(
            &store,
            3,
            Duration::from_secs(3600),
            Duration::from_millis(50),
            move || flag.load(Ordering::SeqCst),
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(tables(&db).await, before, "a follower drops nothing");

        leads.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(10);
        while tables(&db)
            .await
            .iter()
            .any(|t| t.starts_with("events_y2020"))
        {
            assert!(Instant::now() < deadline, "{:?}", tables(&db).await);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let after = tables(&db).await;
        assert_eq!(after.len(), before.len() - 2, "{after:?}");
        let left: i64 = db
            .query_one("SELECT COUNT(*) FROM events", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(left, 1, "this month's event stays");
        drop(store);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the task ends with its store")
            .unwrap();
    }
}
