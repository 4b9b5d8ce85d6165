//! Which of several `origin serve` processes on one database runs the schedule (the
//! periodic retrain): the **leader**, chosen with a PostgreSQL session advisory lock.
//!
//! Every origin on a PostgreSQL store keeps one dedicated connection (outside the
//! pool) to the primary and, every `--leader-retry-ms` (default 2000), either tries
//! `pg_try_advisory_lock(LEADER_LOCK, hashtext(tenant))` (not the leader) or checks
//! with a `SELECT` that its session, and so its lock, is still alive (the leader). The
//! lock belongs to the session: when the leader dies, its connection closes, PostgreSQL
//! ends the session and releases the lock, and the next attempt of another origin
//! takes it.
//!
//! **The bound.** After the leader process dies, another origin leads within
//! `--leader-retry-ms` plus one round trip (2 s by default). When the leader's host
//! vanishes without closing its connection (power loss, a network partition), the
//! server cannot see it at once: the session sets `idle_session_timeout` (PostgreSQL
//! 14 and later; older servers rely on TCP keepalive) to three
//! retry periods, so the server ends it (and frees the lock) after 3 × retry without
//! a check, and another origin leads within 4 × `--leader-retry-ms` (8 s by default).
//! A leader that loses its session learns it at its next check (within one retry
//! period) and stops leading; until then two origins may both believe they lead, which
//! costs at most one extra retrain, never a wrong answer.
//!
//! With SQLite there is one process per file: it always leads ([`Leadership::always`]).
//! The state is in `/health` (`leader`) and the gauge `origin_leader` (1 or 0).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Advisory lock key (first half) of the leader lock ("RECL"); the second half is
/// the tenant's hash, so each tenant of a database has its own leader.
pub const LEADER_LOCK: i32 = 0x5245_434C;

/// Whether this process leads (runs the schedule).
#[derive(Debug, Default)]
pub struct Leadership {
    leader: AtomicBool,
}

impl Leadership {
    /// A process that always leads (SQLite: one process per database).
    pub fn always() -> Arc<Self> {
        let l = Arc::new(Leadership::default());
        l.set(true);
        l
    }

    /// Whether this process leads now.
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::SeqCst)
    }

    fn set(&self, leader: bool) {
        let was = self.leader.swap(leader, Ordering::SeqCst);
        metrics::gauge!("origin_leader").set(if leader { 1.0 } else { 0.0 });
        if was != leader {
            if leader {
                tracing::info!("took the leader lock: this origin runs the schedule");
            } else {
                tracing::warn!("not the leader any more");
            }
        }
    }

    /// Starts the election on the PostgreSQL database at `url` for `tenant` (see the
    /// module docs); the task ends when the returned handle is dropped everywhere.
    pub fn elect(url: &str, tenant: &str, retry: Duration) -> Arc<Self> {
        let leadership = Arc::new(Leadership::default());
        leadership.set(false);
        let weak = Arc::downgrade(&leadership);
        let (url, tenant) = (url.to_owned(), tenant.to_owned());
        let location = crate::store::postgres::redact(&url);
        tokio::spawn(async move {
            while let Some(me) = weak.upgrade() {
                if let Err(e) = campaign(&me, &url, &tenant, retry).await {
                    tracing::warn!(db = %location, error = %e, "leader election connection lost; retrying");
                }
                me.set(false);
                drop(me);
                tokio::time::sleep(retry).await;
            }
        });
        leadership
    }
}

/// One session: connect, then every `retry` try the lock (or check that the session
/// holding it lives). Returns on the first error (the session, and any lock, is gone).
async fn campaign(
    me: &Arc<Leadership>,
    url: &str,
    tenant: &str,
    retry: Duration,
) -> Result<(), String> {
    let err = |e: tokio_postgres::Error| crate::store::StoreError::from(e).to_string();
    let (config, tls) =
        crate::store::postgres::tls::config_and_connector(url).map_err(|e| e.to_string())?;
    let (client, conn) = tokio::time::timeout(retry.max(Duration::from_secs(1)), async {
        config.connect(tls).await
    })
    .await
    .map_err(|_| "connecting timed out".to_string())?
    .map_err(err)?;
    let conn = tokio::spawn(conn);
    let idle_ms = (retry.as_millis() * 3).clamp(1_000, i32::MAX as u128);
    client
        .batch_execute("SET application_name = 'origin leader election'")
        .await
        .map_err(err)?;
    // PostgreSQL 14 and later; on older servers only a closed connection frees the lock.
    if let Err(e) = client
        .batch_execute(&format!("SET idle_session_timeout = {idle_ms}"))
        .await
    {
        tracing::warn!(error = %err(e), "idle_session_timeout not set (PostgreSQL < 14?): a vanished leader host is noticed only by TCP keepalive");
    }
    let result = async {
        loop {
            let check = async {
                if me.is_leader() {
                    client.query_one("SELECT 1", &[]).await.map(|_| true)
                } else {
                    client
                        .query_one(
                            "SELECT pg_try_advisory_lock($1, hashtext($2))",
                            &[&LEADER_LOCK, &tenant],
                        )
                        .await
                        .map(|r| r.get::<_, bool>(0))
                }
            };
            let leads = tokio::time::timeout(retry.max(Duration::from_secs(1)), check)
                .await
                .map_err(|_| "leader check timed out".to_string())?
                .map_err(err)?;
            me.set(leads);
            if Arc::strong_count(me) <= 1 {
                return Ok(());
            }
            tokio::time::sleep(retry).await;
        }
    }
    .await;
    drop(client);
    conn.abort();
    result
}

/// Runs `job` every `every` (the first time after one period) while `leader` leads; a
/// tick while not leading does nothing. The schedule of the retrain and of the full
/// publish.
pub fn spawn_while_leading<F, Fut>(
    leader: Arc<Leadership>,
    every: Duration,
    mut job: F,
) -> tokio::task::JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if leader.is_leader() {
                job().await;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::postgres::test_server;

    async fn until(what: &str, ok: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !ok() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[test]
    fn a_lone_sqlite_origin_always_leads() {
        assert!(Leadership::always().is_leader());
    }

    /// Two candidates: exactly one leads; when the leader's session ends, the other
    /// takes over within the retry period; the old one, back, does not lead.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exactly_one_leads_and_another_takes_over_when_its_session_ends() {
        let Some(server) = test_server::shared() else {
            return;
        };
        let url = server.database().await;
        let retry = Duration::from_millis(200);
        let a = Leadership::elect(&url, "default", retry);
        until("a leads", || a.is_leader()).await;
        let b = Leadership::elect(&url, "default", retry);
        let other_tenant = Leadership::elect(&url, "other", retry);
        until("the other tenant has its own leader", || {
            other_tenant.is_leader()
        })
        .await;
        tokio::time::sleep(retry * 3).await;
        assert!(a.is_leader() && !b.is_leader(), "exactly one leads");

        // The leader's session ends (as when its process dies).
        let (db, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let started = std::time::Instant::now();
        db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_locks
             WHERE locktype = 'advisory' AND classid = $1::int::oid AND granted
               AND objid = hashtext('default')::oid",
            &[&LEADER_LOCK],
        )
        .await
        .unwrap();
        until("b takes over", || b.is_leader()).await;
        assert!(
            started.elapsed() < retry * 2 + Duration::from_secs(1),
            "took {:?}",
            started.elapsed()
        );
        until("a learns it lost", || !a.is_leader()).await;
        tokio::time::sleep(retry * 3).await;
        assert!(b.is_leader() && !a.is_leader(), "a does not lead again");
    }
}
