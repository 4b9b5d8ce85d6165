//! Freshness: after events for a user are committed, rescore that user with the
//! current model and their new history, republish their document (edge KV and the
//! CDN folder's current generation) and purge their edge-cache entry.
//!
//! Touches are debounced per user: the republish runs once no new event for the user
//! arrived for the debounce time (capped at [`MAX_DEBOUNCE_FACTOR`] debounces after the
//! first), so a burst of events causes one republish. Impressions
//! (`recommendation_viewed`) do not touch. The time from the first touching commit to
//! the republish being done is the publish lag metric.
//!
//! # Layout
//! - [`Republisher`]: the handle requests use to touch users.
//! - [`Targets`]: where and with what a user is republished.
//! - [`PublishHealth`]: last success and failure of each publish target.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use contract::admin::PurgeRequest;
use contract::{Region, UserId};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::event_log::EventLog;
use crate::observability::TraceContext;
use crate::publish::{CdnFolder, EdgeClient};
use crate::retrain::SharedSnapshot;
use crate::snapshot::{now_unix, DocRequest};

/// A user's republish waits at most this many debounce periods after the first touch.
pub const MAX_DEBOUNCE_FACTOR: u32 = 10;
/// Republishes running at once, at most.
pub const MAX_CONCURRENT_REPUBLISHES: usize = 16;

/// Health of one publish target.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TargetHealth {
    /// Unix seconds of the last success / failure.
    pub last_success_at: Option<u64>,
    pub last_failure_at: Option<u64>,
    pub last_error: Option<String>,
    pub successes: u64,
    pub failures: u64,
}

impl TargetHealth {
    fn record<E: std::fmt::Display>(&mut self, result: &Result<(), E>) {
        let now = now_unix();
        match result {
            Ok(()) => {
                self.last_success_at = Some(now);
                self.successes += 1;
            }
            Err(e) => {
                self.last_failure_at = Some(now);
                self.last_error = Some(e.to_string());
                self.failures += 1;
            }
        }
    }
}

/// Last success and failure of each publish target.
#[derive(Debug, Default)]
pub struct PublishHealth {
    inner: Mutex<HashMap<&'static str, TargetHealth>>,
}

impl PublishHealth {
    pub fn record<E: std::fmt::Display>(&self, target: &'static str, result: &Result<(), E>) {
        metrics::counter!(
            "origin_republish_total",
            "target" => target,
            "result" => if result.is_ok() { "ok" } else { "error" },
        )
        .increment(1);
        if let Ok(mut m) = self.inner.lock() {
            m.entry(target).or_default().record(result);
        }
    }

    /// Every target seen so far, by name.
    pub fn snapshot(&self) -> std::collections::BTreeMap<String, TargetHealth> {
        self.inner
            .lock()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| ((*k).to_owned(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Where and with what users are republished.
#[derive(Clone)]
pub struct Targets {
    pub log: EventLog,
    pub snapshot: SharedSnapshot,
    pub edge: Option<EdgeClient>,
    pub cdn: Option<CdnFolder>,
    /// Region of users the snapshot does not know.
    pub region: Region,
    /// Items per republished document.
    pub publish_n: usize,
    pub health: Arc<PublishHealth>,
}

struct Touch {
    user: UserId,
    committed_at: Instant,
    trace: Option<TraceContext>,
}

struct Pending {
    due: Instant,
    deadline: Instant,
    first_commit: Instant,
    trace: Option<TraceContext>,
}

/// The handle requests use to touch users; cheap to clone.
#[derive(Clone)]
pub struct Republisher {
    tx: mpsc::UnboundedSender<Touch>,
}

impl Republisher {
    /// Starts the debouncing worker.
    pub fn spawn(targets: Targets, debounce: Duration) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(targets, debounce, rx));
        Republisher { tx }
    }

    /// Marks `user` as changed by events committed at `committed_at`.
    pub fn touch(&self, user: UserId, committed_at: Instant, trace: Option<TraceContext>) {
        let _ = self.tx.send(Touch {
            user,
            committed_at,
            trace,
        });
    }
}

async fn run(targets: Targets, debounce: Duration, mut rx: mpsc::UnboundedReceiver<Touch>) {
    let mut pending: HashMap<UserId, Pending> = HashMap::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_REPUBLISHES));
    loop {
        let next = pending.values().map(|p| p.due.min(p.deadline)).min();
        tokio::select! {
            touch = rx.recv() => {
                let Some(t) = touch else { break };
                let now = Instant::now();
                pending
                    .entry(t.user)
                    .and_modify(|p| p.due = now + debounce)
                    .or_insert(Pending {
                        due: now + debounce,
                        deadline: now + debounce * MAX_DEBOUNCE_FACTOR,
                        first_commit: t.committed_at,
                        trace: t.trace,
                    });
            }
            _ = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {
                let now = Instant::now();
                let due: Vec<UserId> = pending
                    .iter()
                    .filter(|(_, p)| p.due.min(p.deadline) <= now)
                    .map(|(u, _)| u.clone())
                    .collect();
                for user in due {
                    let Some(p) = pending.remove(&user) else { continue };
                    let Ok(slot) = slots.clone().acquire_owned().await else { return };
                    let targets = targets.clone();
                    tokio::spawn(async move {
                        let _slot = slot;
                        republish(&targets, &user, p.trace.as_ref()).await;
                        metrics::histogram!("origin_publish_lag_seconds")
                            .record(p.first_commit.elapsed().as_secs_f64());
                    });
                }
            }
        }
    }
}

/// Rescores one user with their current history and publishes the document to every
/// target, then purges the user's edge-cache entry. Failures are recorded, not returned.
pub async fn republish(targets: &Targets, user: &UserId, trace: Option<&TraceContext>) {
    let history = match targets.log.user_history(user).await {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(user = %user, error = %e, "cannot read history for republish");
            targets.health.record("store", &Err::<(), _>(e));
            return;
        }
    };
    let snapshot = targets.snapshot.load_full();
    let doc = snapshot.user_doc_with_history(
        user,
        &history,
        &DocRequest {
            n: targets.publish_n,
            fallback_region: Some(&targets.region),
            ..Default::default()
        },
        now_unix(),
    );
    let tenant = snapshot.tenant.clone();
    // The same code as publish-on-miss: CDN folder's current generation, then KV.
    let outcome = crate::publish::publish_one_traced(
        targets.edge.as_ref(),
        targets.cdn.as_ref(),
        &tenant,
        doc,
        trace.map(|t| t.child().header_value()).as_deref(),
    )
    .await;
    if let Some(r) = &outcome.cdn {
        targets.health.record("cdn", r);
    }
    if let Some(r) = &outcome.kv {
        targets.health.record("kv", r);
    }
    if let Some(edge) = &targets.edge {
        let purge = PurgeRequest {
            tenant: Some(tenant.as_str().to_owned()),
            user_ids: vec![user.as_str().to_owned()],
        };
        let header = trace.map(|t| t.child().header_value());
        let purged = edge.purge(&purge, header.as_deref()).await.map(|_| ());
        if let Err(e) = &purged {
            tracing::warn!(user = %user, error = %e, "edge purge failed");
        }
        targets.health.record("purge", &purged);
    }
    tracing::debug!(user = %user, "republished after events");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Event, EventType};
    use arc_swap::ArcSwap;
    use axum::extract::State;
    use axum::http::HeaderMap;
    use axum::Json;
    use contract::admin::{PublishResponse, PurgeResponse};
    use contract::ItemId;

    /// (path, traceparent, body) of each request the fake edge received.
    type Seen = Arc<Mutex<Vec<(String, Option<String>, serde_json::Value)>>>;

    async fn fake_edge(seen: Seen) -> String {
        async fn publish(
            State(seen): State<Seen>,
            h: HeaderMap,
            Json(b): Json<serde_json::Value>,
        ) -> Json<PublishResponse> {
            let tp = h.get("traceparent").map(|v| v.to_str().unwrap().to_owned());
            seen.lock().unwrap().push(("publish".into(), tp, b));
            Json(PublishResponse {
                tenant: "default".into(),
                generation: "g".into(),
                written: 1,
                activated: false,
            })
        }
        async fn purge(
            State(seen): State<Seen>,
            h: HeaderMap,
            Json(b): Json<serde_json::Value>,
        ) -> Json<PurgeResponse> {
            let tp = h.get("traceparent").map(|v| v.to_str().unwrap().to_owned());
            seen.lock().unwrap().push(("purge".into(), tp, b));
            Json(PurgeResponse {
                tenant: "default".into(),
                purged: 1,
            })
        }
        let app = axum::Router::new()
            .route("/admin/publish", axum::routing::post(publish))
            .route("/admin/purge", axum::routing::post(purge))
            .with_state(seen);
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn a_burst_of_events_for_one_user_causes_one_republish_and_one_purge() {
        let dir = tempfile::tempdir().unwrap();
        let (snapshot, _store) = crate::snapshot::fixture(dir.path());
        let log = EventLog::open(&dir.path().join("fixture.sqlite"), 1000).unwrap();
        let seen: Seen = Arc::default();
        let url = fake_edge(seen.clone()).await;
        let health = Arc::new(PublishHealth::default());
        let targets = Targets {
            log: log.clone(),
            snapshot: Arc::new(ArcSwap::from_pointee(snapshot)),
            edge: Some(EdgeClient::new(&url, crate::config::Secret::new("t"))),
            cdn: None,
            region: Region::parse("us-east").unwrap(),
            publish_n: 5,
            health: health.clone(),
        };
        let r = Republisher::spawn(targets, Duration::from_millis(100));
        let user = UserId::parse("u1").unwrap();
        let trace = TraceContext::new_root();
        for i in 0..5 {
            log.append(vec![Event {
                user_id: user.clone(),
                item_id: ItemId::parse(&format!("i{i}")).unwrap(),
                kind: EventType::Click,
                value: None,
                timestamp: 1_764_000_000,
                context: None,
                source: None,
                region: None,
                event_id: None,
            }])
            .await
            .unwrap();
            r.touch(user.clone(), Instant::now(), Some(trace.clone()));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut waited = 0;
        while seen.lock().unwrap().len() < 2 && waited < 100 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            waited += 1;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let seen = seen.lock().unwrap();
        let paths: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(paths, ["publish", "purge"]);
        let doc = &seen[0].2["documents"][0];
        assert_eq!(doc["user_id"], "u1");
        assert_eq!(doc["items"].as_array().unwrap().len(), 5);
        assert!(seen[0].2["generation"].is_null());
        assert_eq!(seen[0].2["activate"], false);
        assert_eq!(seen[1].2["user_ids"], serde_json::json!(["u1"]));
        for (_, tp, _) in seen.iter() {
            let tp = TraceContext::parse(tp.as_deref().unwrap()).unwrap();
            assert_eq!(tp.trace_id, trace.trace_id, "the trace goes on to the edge");
        }
        assert_eq!(health.snapshot()["kv"].successes, 1);
    }
}
