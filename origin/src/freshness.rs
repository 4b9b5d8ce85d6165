//! Freshness: when a user's document is published, and the republish after events.
//!
//! Publishing is earned and bounded. Every publish of one user, after events or on an
//! answered request (`api`'s publish-on-miss), goes through one [`PublishGate`] per
//! process, a [`PublishBudget`] that is given the time:
//! - after events, a user is published only when their answer *changed*: the content
//!   hash of the new items ([`ContentHash`]) differs from what was last published for
//!   them, or, for a user never published, from the region's popular list, which the
//!   edge serves an unknown user anyway (so events for made-up users with unknown
//!   items publish nothing);
//! - an answered request publishes the user only when they were not published within
//!   the freshness window (`--fresh-for-s`), not once per request;
//! - one user is never published twice within `--publish-min-interval-ms` (default 1 s:
//!   Workers KV allows about one write per second per key); a changed answer that comes
//!   too soon is republished when the interval is over, not dropped.
//!
//! Touches after events are debounced per user ([`Debouncer`]): the republish runs once
//! no new event for the user arrived for the debounce time (capped at
//! [`MAX_DEBOUNCE_FACTOR`] debounces after the first), so a burst of events causes one
//! republish. Impressions (`recommendation_viewed`) do not touch, unless the tenant
//! has a fatigue rule ([`crate::rules`]): then an impression may take an item out of
//! the user's list, and touches them like an event. The time from the
//! first touching commit to the republish being done is the publish lag metric.
//!
//! Memory is bounded: the budget remembers at most `--publish-state-users` users (least
//! recently used forgotten first; a forgotten user may be published once more than
//! needed, never less), and at most that many users wait in the debouncer (touches of
//! further users are dropped and counted in `origin_republish_skipped_total`).
//!
//! # Layout
//! - [`Debouncer`]: pure per-user debounce queue, given the time.
//! - [`PublishBudget`], [`BudgetSettings`], [`Verdict`], [`ContentHash`]: pure publish
//!   budget, given the time; [`PublishGate`] shares one between tasks.
//! - [`Republisher`]: the handle requests use to touch users.
//! - [`Targets`]: where and with what a user is republished.
//! - [`PublishHealth`]: last success and failure of each publish target.

use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use contract::{RecItem, Region, UserId};
use hashlink::LruCache;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::observability::TraceContext;
use crate::publish::PublishTargets;
use crate::retrain::SharedSnapshot;
use crate::snapshot::{now_unix, DocRequest};
use crate::store::SharedStore;

/// A user's republish waits at most this many debounce periods after the first touch.
pub const MAX_DEBOUNCE_FACTOR: u32 = 10;
/// Republishes running at once, at most.
pub const MAX_CONCURRENT_REPUBLISHES: usize = 16;
/// Default of `--publish-min-interval-ms`.
pub const DEFAULT_MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Default of `--publish-state-users`.
pub const DEFAULT_STATE_USERS: usize = 100_000;

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

/// Per-user debounce queue. Pure: every call is given the time.
///
/// A user fires once no touch came for `debounce` (but at most `max_wait` after their
/// first touch), and never before a time set with [`Debouncer::defer`]. The payload of
/// the first touch is kept. At most `capacity` users wait at once.
#[derive(Debug)]
pub struct Debouncer<T> {
    debounce: Duration,
    max_wait: Duration,
    capacity: usize,
    pending: HashMap<UserId, Waiting<T>>,
    /// (fire time, user) of every waiting user, earliest first.
    queue: BTreeSet<(Instant, UserId)>,
}

#[derive(Debug)]
struct Waiting<T> {
    due: Instant,
    deadline: Instant,
    not_before: Instant,
    payload: T,
}

impl<T> Waiting<T> {
    fn fires_at(&self) -> Instant {
        self.due.min(self.deadline).max(self.not_before)
    }
}

impl<T> Debouncer<T> {
    pub fn new(debounce: Duration, max_wait: Duration, capacity: usize) -> Self {
        Debouncer {
            debounce,
            max_wait: max_wait.max(debounce),
            capacity: capacity.max(1),
            pending: HashMap::new(),
            queue: BTreeSet::new(),
        }
    }

    /// The user changed at `now`. Returns false when the queue is full and the user was
    /// not waiting (the touch is dropped).
    pub fn touch(&mut self, user: UserId, now: Instant, payload: T) -> bool {
        let (due, deadline) = (now + self.debounce, now + self.max_wait);
        self.upsert(user, payload, |w| w.due = due, || (due, deadline, now))
    }

    /// The user may not fire before `until` (their answer changed, but publishing it now
    /// would be too soon). Returns false when the queue is full and the user was not waiting.
    pub fn defer(&mut self, user: UserId, until: Instant, payload: T) -> bool {
        self.upsert(
            user,
            payload,
            |w| w.not_before = w.not_before.max(until),
            || (until, until, until),
        )
    }

    fn upsert(
        &mut self,
        user: UserId,
        payload: T,
        update: impl FnOnce(&mut Waiting<T>),
        fresh: impl FnOnce() -> (Instant, Instant, Instant),
    ) -> bool {
        if let Some(w) = self.pending.get_mut(&user) {
            self.queue.remove(&(w.fires_at(), user.clone()));
            update(w);
            self.queue.insert((w.fires_at(), user));
            return true;
        }
        if self.pending.len() >= self.capacity {
            return false;
        }
        let (due, deadline, not_before) = fresh();
        let w = Waiting {
            due,
            deadline,
            not_before,
            payload,
        };
        self.queue.insert((w.fires_at(), user.clone()));
        self.pending.insert(user, w);
        true
    }

    /// When the next user fires, if any is waiting.
    pub fn next_due(&self) -> Option<Instant> {
        self.queue.first().map(|(at, _)| *at)
    }

    /// Removes and returns every user due at `now`, earliest first.
    pub fn take_due(&mut self, now: Instant) -> Vec<(UserId, T)> {
        let mut due = Vec::new();
        while let Some((at, _)) = self.queue.first() {
            if *at > now {
                break;
            }
            let Some((_, user)) = self.queue.pop_first() else {
                break;
            };
            if let Some(w) = self.pending.remove(&user) {
                due.push((user, w.payload));
            }
        }
        due
    }

    /// Users waiting.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

/// A hash of a document's items (ids, scores, reasons and categories, in order): what
/// the edge would serve, without the generation time or model version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContentHash(u64);

impl ContentHash {
    pub fn of(items: &[RecItem]) -> Self {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        items.len().hash(&mut h);
        for i in items {
            i.item_id.hash(&mut h);
            i.score.to_bits().hash(&mut h);
            i.reason.hash(&mut h);
            i.categories.hash(&mut h);
        }
        ContentHash(h.finish())
    }
}

/// Settings of the [`PublishBudget`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetSettings {
    /// An answered request republishes a user only this long after their last publish
    /// (the documents' freshness: the edge serves the published one until then).
    pub refresh_after: Duration,
    /// Shortest time between two publishes of one user.
    pub min_interval: Duration,
    /// Users remembered; the least recently used are forgotten first.
    pub capacity: usize,
}

impl Default for BudgetSettings {
    fn default() -> Self {
        BudgetSettings {
            refresh_after: Duration::from_secs(300),
            min_interval: DEFAULT_MIN_INTERVAL,
            capacity: DEFAULT_STATE_USERS,
        }
    }
}

/// What the budget says about publishing a changed answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Publish now; recorded as published at the time given.
    Publish,
    /// The content is what the edge already serves for the user: nothing to publish.
    Unchanged,
    /// The user was published too recently; publish again at this time.
    TooSoon(Instant),
}

/// What was last published for one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Content {
    /// A publish is under way, content not known yet.
    Pending,
    Known(ContentHash),
    /// The last publish failed somewhere: the edge may hold anything.
    Failed,
}

#[derive(Debug, Clone, Copy)]
struct Last {
    at: Instant,
    content: Content,
}

/// Decides when a user may be published. Pure: every call is given the time.
#[derive(Debug)]
pub struct PublishBudget {
    settings: BudgetSettings,
    last: LruCache<UserId, Last>,
}

impl PublishBudget {
    pub fn new(settings: BudgetSettings) -> Self {
        PublishBudget {
            settings,
            last: LruCache::new(settings.capacity.max(1)),
        }
    }

    pub fn settings(&self) -> BudgetSettings {
        self.settings
    }

    /// After an answered request (nothing about the user changed): publish them now?
    /// Yes when never published, or last published (successfully or under way) at least
    /// `refresh_after` ago, or a failed publish at least `min_interval` ago. A yes is
    /// recorded as a publish under way at `now`.
    pub fn admit_refresh(&mut self, user: &UserId, now: Instant) -> bool {
        if let Some(last) = self.last.get(user) {
            let wait = match last.content {
                Content::Failed => self.settings.min_interval,
                Content::Pending | Content::Known(_) => {
                    self.settings.refresh_after.max(self.settings.min_interval)
                }
            };
            if now < last.at + wait {
                return false;
            }
        }
        self.record(user, now, Content::Pending);
        true
    }

    /// After events: publish `content` for `user` now? `baseline` is what the edge
    /// serves a user never published (the region's popular list). A
    /// [`Verdict::Publish`] is recorded as published at `now`.
    pub fn admit_change(
        &mut self,
        user: &UserId,
        content: ContentHash,
        baseline: ContentHash,
        now: Instant,
    ) -> Verdict {
        match self.last.get(user).copied() {
            None if content == baseline => return Verdict::Unchanged,
            None => {}
            Some(last) => {
                if last.content == Content::Known(content) {
                    return Verdict::Unchanged;
                }
                let next = last.at + self.settings.min_interval;
                if now < next {
                    return Verdict::TooSoon(next);
                }
            }
        }
        self.record(user, now, Content::Known(content));
        Verdict::Publish
    }

    /// The publish admitted at `at` reached every target with `content` (ignored when a
    /// later publish of the user was admitted since).
    pub fn published(&mut self, user: &UserId, at: Instant, content: ContentHash) {
        self.settle(user, at, Content::Known(content));
    }

    /// The publish admitted at `at` failed somewhere: the next one may go after
    /// `min_interval`, whatever its content (ignored when a later one was admitted since).
    pub fn failed(&mut self, user: &UserId, at: Instant) {
        self.settle(user, at, Content::Failed);
    }

    /// Something else replaced the user's published document (a full publish): what
    /// the edge holds is not known any more, so the next changed answer is published
    /// (still no sooner than `min_interval` after the last publish of this process).
    pub fn replaced_elsewhere(&mut self, user: &UserId, now: Instant) {
        match self.last.get_mut(user) {
            Some(last) => last.content = Content::Failed,
            None => self.record(user, now, Content::Failed),
        }
    }

    fn settle(&mut self, user: &UserId, at: Instant, content: Content) {
        if let Some(last) = self.last.get_mut(user).filter(|l| l.at == at) {
            last.content = content;
        }
    }

    fn record(&mut self, user: &UserId, at: Instant, content: Content) {
        self.last.insert(user.clone(), Last { at, content });
    }

    /// Users remembered.
    pub fn len(&self) -> usize {
        self.last.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

/// One [`PublishBudget`] shared by every publishing task of a process; cheap to clone.
#[derive(Debug, Clone)]
pub struct PublishGate(Arc<Mutex<PublishBudget>>);

impl Default for PublishGate {
    fn default() -> Self {
        PublishGate::new(BudgetSettings::default())
    }
}

impl PublishGate {
    pub fn new(settings: BudgetSettings) -> Self {
        PublishGate(Arc::new(Mutex::new(PublishBudget::new(settings))))
    }

    /// Runs `f` on the budget (a poisoned lock is taken over: the budget stays usable).
    pub fn with<R>(&self, f: impl FnOnce(&mut PublishBudget) -> R) -> R {
        let mut guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    /// Records how the publish admitted for `user` at `at` ended.
    pub fn settle(&self, user: &UserId, at: Instant, content: ContentHash, ok: bool) {
        self.with(|b| {
            if ok {
                b.published(user, at, content)
            } else {
                b.failed(user, at)
            }
        })
    }
}

/// Where and with what users are republished.
#[derive(Clone)]
pub struct Targets {
    pub store: SharedStore,
    pub snapshot: SharedSnapshot,
    /// Where documents go (each target's current generation), and whose caches are
    /// purged afterwards.
    pub publish: PublishTargets,
    /// Region of users the snapshot does not know.
    pub region: Region,
    /// Items per republished document.
    pub publish_n: usize,
    pub health: Arc<PublishHealth>,
    /// The process's publish budget (shared with publish-on-miss).
    pub gate: PublishGate,
}

enum Message {
    /// Events for the user were committed.
    Touch {
        user: UserId,
        committed_at: Instant,
        trace: Option<TraceContext>,
    },
    /// The user's changed answer came too soon after their last publish.
    Defer {
        user: UserId,
        until: Instant,
        first: First,
    },
}

/// What the first touch of a waiting user carried.
#[derive(Debug, Clone)]
struct First {
    committed_at: Instant,
    trace: Option<TraceContext>,
}

/// The handle requests use to touch users; cheap to clone.
#[derive(Clone)]
pub struct Republisher {
    tx: mpsc::UnboundedSender<Message>,
}

impl Republisher {
    /// Starts the debouncing worker; at most `capacity` users wait at once.
    pub fn spawn(targets: Targets, debounce: Duration) -> Self {
        let capacity = targets.gate.with(|b| b.settings().capacity);
        let (tx, rx) = mpsc::unbounded_channel();
        let queue = Debouncer::new(debounce, debounce * MAX_DEBOUNCE_FACTOR, capacity);
        tokio::spawn(run(targets, queue, tx.downgrade(), rx));
        Republisher { tx }
    }

    /// Marks `user` as changed by events committed at `committed_at`.
    pub fn touch(&self, user: UserId, committed_at: Instant, trace: Option<TraceContext>) {
        let _ = self.tx.send(Message::Touch {
            user,
            committed_at,
            trace,
        });
    }
}

fn skipped(reason: &'static str) {
    metrics::counter!("origin_republish_skipped_total", "reason" => reason).increment(1);
}

async fn run(
    targets: Targets,
    mut queue: Debouncer<First>,
    // Weak: the worker ends when the last handle is dropped.
    tx: mpsc::WeakUnboundedSender<Message>,
    mut rx: mpsc::UnboundedReceiver<Message>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_REPUBLISHES));
    loop {
        let next = queue.next_due();
        tokio::select! {
            message = rx.recv() => {
                let queued = match message {
                    None => break,
                    Some(Message::Touch { user, committed_at, trace }) => {
                        queue.touch(user, Instant::now(), First { committed_at, trace })
                    }
                    Some(Message::Defer { user, until, first }) => queue.defer(user, until, first),
                };
                if !queued {
                    skipped("queue_full");
                }
            }
            _ = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {
                for (user, first) in queue.take_due(Instant::now()) {
                    let Ok(slot) = slots.clone().acquire_owned().await else { return };
                    let (targets, tx) = (targets.clone(), tx.clone());
                    tokio::spawn(async move {
                        let _slot = slot;
                        match republish(&targets, &user, first.trace.as_ref()).await {
                            Republished::TooSoon(until) => {
                                if let Some(tx) = tx.upgrade() {
                                    let _ = tx.send(Message::Defer { user, until, first });
                                }
                            }
                            Republished::Done => {
                                metrics::histogram!("origin_publish_lag_seconds")
                                    .record(first.committed_at.elapsed().as_secs_f64());
                            }
                        }
                    });
                }
            }
        }
    }
}

/// How a [`republish`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Republished {
    /// Published, unchanged (nothing to publish), or failed (recorded in the health).
    Done,
    /// The answer changed but the user was published too recently: again at this time.
    TooSoon(Instant),
}

/// Rescores one user with their current history and, when their answer changed and the
/// budget allows, publishes the document to every target, then purges the user's
/// edge-cache entry. Failures are recorded, not returned.
pub async fn republish(
    targets: &Targets,
    user: &UserId,
    trace: Option<&TraceContext>,
) -> Republished {
    let history = match targets.store.user_history(user).await {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(user = %user, error = %e, "cannot read history for republish");
            targets.health.record("store", &Err::<(), _>(e));
            return Republished::Done;
        }
    };
    let snapshot = targets.snapshot.load_full();
    let now = now_unix();
    let fatigued = crate::store::fatigued_for(
        Some(&targets.store),
        &snapshot.rules.rules(),
        Some(vec![user.clone()]),
        now as i64,
    )
    .await;
    let doc = snapshot.user_doc_with_history(
        user,
        &history,
        &DocRequest {
            n: targets.publish_n,
            fallback_region: Some(&targets.region),
            fatigued: fatigued.of(user.as_str()),
            ..Default::default()
        },
        now,
    );
    let region = snapshot.known_user_region(user).unwrap_or(&targets.region);
    let baseline = ContentHash::of(&snapshot.popular_doc(region, targets.publish_n, now).items);
    let content = ContentHash::of(&doc.items);
    let admitted = Instant::now();
    match targets
        .gate
        .with(|b| b.admit_change(user, content, baseline, admitted))
    {
        Verdict::Publish => {}
        Verdict::Unchanged => {
            skipped("unchanged");
            tracing::debug!(user = %user, "answer unchanged; not republished");
            return Republished::Done;
        }
        Verdict::TooSoon(until) => {
            skipped("too_soon");
            return Republished::TooSoon(until);
        }
    }
    let tenant = snapshot.tenant.clone();
    // The same code as publish-on-miss: each target's current generation.
    let outcome = crate::publish::publish_one(
        &targets.publish,
        &tenant,
        &doc,
        trace.map(|t| t.child().header_value()).as_deref(),
    )
    .await;
    targets
        .gate
        .settle(user, admitted, content, outcome.all_ok());
    for (target, r) in &outcome.results {
        targets.health.record(target, r);
    }
    let subjects = [contract::Subject::User(user.clone())];
    for target in targets.publish.iter() {
        let header = trace.map(|t| t.child().header_value());
        let purged = target.purge(&tenant, &subjects, header.as_deref()).await;
        match purged {
            Ok(false) => {}
            Ok(true) => targets.health.record("purge", &Ok::<(), String>(())),
            Err(e) => {
                tracing::warn!(user = %user, target = target.name(), error = %e, "edge purge failed");
                targets.health.record("purge", &Err::<(), _>(e));
            }
        }
    }
    tracing::debug!(user = %user, "republished after events");
    Republished::Done
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

    fn uid(s: &str) -> UserId {
        UserId::parse(s).unwrap()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_touched_user_fires_after_the_quiet_time_and_a_burst_fires_once() {
        let t0 = Instant::now();
        let mut q = Debouncer::new(ms(100), ms(1000), 10);
        assert!(q.touch(uid("u1"), t0, 1));
        assert!(q.touch(uid("u1"), t0 + ms(50), 2));
        assert_eq!(q.next_due(), Some(t0 + ms(150)));
        assert!(q.take_due(t0 + ms(149)).is_empty());
        assert_eq!(
            q.take_due(t0 + ms(150)),
            vec![(uid("u1"), 1)],
            "first payload kept"
        );
        assert!(q.is_empty());
        assert_eq!(q.next_due(), None);
    }

    #[test]
    fn a_user_touched_without_pause_fires_at_the_deadline() {
        let t0 = Instant::now();
        let mut q = Debouncer::new(ms(100), ms(300), 10);
        for i in 0..10 {
            q.touch(uid("u1"), t0 + ms(50 * i), ());
        }
        assert_eq!(q.next_due(), Some(t0 + ms(300)));
        assert_eq!(q.take_due(t0 + ms(300)).len(), 1);
    }

    #[test]
    fn a_deferred_user_fires_no_earlier_than_the_deferral() {
        let t0 = Instant::now();
        let mut q = Debouncer::new(ms(100), ms(1000), 10);
        q.defer(uid("u1"), t0 + ms(700), "a");
        q.touch(uid("u1"), t0 + ms(10), "b");
        q.touch(uid("u2"), t0 + ms(10), "c");
        assert_eq!(q.take_due(t0 + ms(110)), vec![(uid("u2"), "c")]);
        assert!(q.take_due(t0 + ms(699)).is_empty());
        assert_eq!(q.take_due(t0 + ms(700)), vec![(uid("u1"), "a")]);
    }

    #[test]
    fn users_fire_earliest_first_and_a_full_queue_drops_new_users_only() {
        let t0 = Instant::now();
        let mut q = Debouncer::new(ms(100), ms(1000), 2);
        assert!(q.touch(uid("b"), t0 + ms(20), ()));
        assert!(q.touch(uid("a"), t0 + ms(10), ()));
        assert!(
            !q.touch(uid("c"), t0 + ms(30), ()),
            "a third user does not fit"
        );
        assert!(
            q.touch(uid("a"), t0 + ms(40), ()),
            "a waiting user is still touched"
        );
        let order: Vec<UserId> = q
            .take_due(t0 + ms(1000))
            .into_iter()
            .map(|(u, _)| u)
            .collect();
        assert_eq!(order, vec![uid("b"), uid("a")]);
        assert_eq!(q.len(), 0);
    }

    fn item(id: &str, score: f64) -> RecItem {
        RecItem {
            item_id: id.into(),
            score,
            reason: Some("popular".into()),
            categories: Vec::new(),
        }
    }

    #[test]
    fn the_content_hash_changes_with_the_items_their_order_and_scores() {
        let a = ContentHash::of(&[item("i1", 1.0), item("i2", 0.5)]);
        assert_eq!(a, ContentHash::of(&[item("i1", 1.0), item("i2", 0.5)]));
        assert_ne!(a, ContentHash::of(&[item("i2", 0.5), item("i1", 1.0)]));
        assert_ne!(a, ContentHash::of(&[item("i1", 1.0), item("i2", 0.4)]));
        assert_ne!(a, ContentHash::of(&[item("i1", 1.0)]));
    }

    fn budget(capacity: usize) -> PublishBudget {
        PublishBudget::new(BudgetSettings {
            refresh_after: Duration::from_secs(300),
            min_interval: Duration::from_secs(1),
            capacity,
        })
    }

    /// After a full publish replaced a user's document, the same content is published
    /// again (the edge may hold the full publish's one), no sooner than the interval.
    #[test]
    fn a_document_replaced_elsewhere_is_published_again_even_when_unchanged() {
        let mut b = budget(10);
        let t0 = Instant::now();
        let (u, c, popular) = (uid("u"), ContentHash(7), ContentHash(1));
        assert_eq!(b.admit_change(&u, c, popular, t0), Verdict::Publish);
        b.published(&u, t0, c);
        assert_eq!(
            b.admit_change(&u, c, popular, t0 + ms(1500)),
            Verdict::Unchanged
        );
        b.replaced_elsewhere(&u, t0 + ms(1500));
        assert_eq!(
            b.admit_change(&u, c, popular, t0 + ms(1600)),
            Verdict::Publish
        );
        // A user this process never published: known again a second later.
        let v = uid("v");
        b.replaced_elsewhere(&v, t0);
        assert_eq!(
            b.admit_change(&v, c, popular, t0 + ms(10)),
            Verdict::TooSoon(t0 + ms(1000))
        );
        assert_eq!(
            b.admit_change(&v, c, popular, t0 + ms(1000)),
            Verdict::Publish
        );
    }

    #[test]
    fn a_user_whose_answer_is_the_popular_list_is_not_published() {
        let t0 = Instant::now();
        let mut b = budget(10);
        let popular = ContentHash::of(&[item("i1", 1.0)]);
        let own = ContentHash::of(&[item("i9", 1.0)]);
        assert_eq!(
            b.admit_change(&uid("made-up"), popular, popular, t0),
            Verdict::Unchanged
        );
        assert!(b.is_empty(), "nothing is remembered for them");
        assert_eq!(
            b.admit_change(&uid("real"), own, popular, t0),
            Verdict::Publish
        );
        // Once published with their own list, going back to the popular one is a change.
        assert_eq!(
            b.admit_change(&uid("real"), popular, popular, t0 + Duration::from_secs(2)),
            Verdict::Publish
        );
    }

    #[test]
    fn a_changed_answer_waits_for_the_minimum_interval_and_an_unchanged_one_is_skipped() {
        let t0 = Instant::now();
        let mut b = budget(10);
        let (base, v1, v2) = (
            ContentHash::of(&[]),
            ContentHash::of(&[item("i1", 1.0)]),
            ContentHash::of(&[item("i2", 1.0)]),
        );
        let u = uid("u1");
        assert_eq!(b.admit_change(&u, v1, base, t0), Verdict::Publish);
        assert_eq!(
            b.admit_change(&u, v1, base, t0 + ms(10)),
            Verdict::Unchanged
        );
        assert_eq!(
            b.admit_change(&u, v2, base, t0 + ms(400)),
            Verdict::TooSoon(t0 + ms(1000))
        );
        assert_eq!(
            b.admit_change(&u, v2, base, t0 + ms(1000)),
            Verdict::Publish
        );
        assert_eq!(
            b.admit_change(&u, v2, base, t0 + ms(5000)),
            Verdict::Unchanged
        );
    }

    #[test]
    fn an_answered_request_publishes_a_user_once_per_freshness_window() {
        let t0 = Instant::now();
        let mut b = budget(10);
        let u = uid("u1");
        assert!(b.admit_refresh(&u, t0));
        let admitted = (1..=2999)
            .filter(|i| b.admit_refresh(&u, t0 + ms(100 * i)))
            .count();
        assert_eq!(admitted, 0, "none within the 300 s window");
        assert!(b.admit_refresh(&u, t0 + Duration::from_secs(300)));
        // A refresh also counts for the minimum interval of a change.
        let v = ContentHash::of(&[item("i1", 1.0)]);
        assert!(matches!(
            b.admit_change(&u, v, ContentHash::of(&[]), t0 + Duration::from_secs(300)),
            Verdict::TooSoon(_)
        ));
    }

    #[test]
    fn a_failed_publish_may_be_retried_after_the_minimum_interval() {
        let t0 = Instant::now();
        let mut b = budget(10);
        let u = uid("u1");
        assert!(b.admit_refresh(&u, t0));
        b.failed(&u, t0);
        assert!(!b.admit_refresh(&u, t0 + ms(999)));
        assert!(b.admit_refresh(&u, t0 + ms(1000)));
        let v = ContentHash::of(&[item("i1", 1.0)]);
        b.published(&u, t0 + ms(1000), v);
        assert_eq!(
            b.admit_change(&u, v, ContentHash::of(&[]), t0 + ms(5000)),
            Verdict::Unchanged,
            "the refresh published v"
        );
        b.failed(&u, t0 + ms(1000));
        assert_eq!(
            b.admit_change(&u, v, ContentHash::of(&[]), t0 + ms(5000)),
            Verdict::Publish,
            "after a failure the same content is published again"
        );
        // The end of an older publish does not overwrite what a later one recorded.
        b.failed(&u, t0 + ms(1000));
        assert_eq!(
            b.admit_change(&u, v, ContentHash::of(&[]), t0 + ms(9000)),
            Verdict::Unchanged
        );
    }

    #[test]
    fn the_budget_remembers_at_most_its_capacity_forgetting_the_least_recently_used() {
        let t0 = Instant::now();
        let mut b = budget(1000);
        for i in 0..300_000 {
            b.admit_refresh(&uid(&format!("u{i}")), t0);
        }
        assert_eq!(b.len(), 1000);
        assert!(b.admit_refresh(&uid("u0"), t0 + ms(1)), "u0 was forgotten");
        assert!(
            !b.admit_refresh(&uid("u299999"), t0 + ms(1)),
            "the latest is remembered"
        );
    }

    /// A republisher over the fixture snapshot, publishing to a fake edge.
    struct Rig {
        _dir: tempfile::TempDir,
        store: SharedStore,
        seen: Seen,
        health: Arc<PublishHealth>,
        republisher: Republisher,
    }

    async fn rig(gate: PublishGate) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let (snapshot, _store) = crate::snapshot::fixture(dir.path());
        let store: SharedStore = Arc::new(
            crate::store::SqliteStore::open(&dir.path().join("fixture.sqlite"), 1000).unwrap(),
        );
        let seen: Seen = Arc::default();
        let url = fake_edge(seen.clone()).await;
        let health = Arc::new(PublishHealth::default());
        let targets = Targets {
            store: store.clone(),
            snapshot: Arc::new(ArcSwap::from_pointee(snapshot)),
            publish: PublishTargets::default().with(Arc::new(crate::publish::EdgeKv::new(
                crate::publish::EdgeClient::new(&url, crate::auth::Secret::new("t")),
            ))),
            region: Region::parse("us-east").unwrap(),
            publish_n: 5,
            health: health.clone(),
            gate,
        };
        Rig {
            _dir: dir,
            store,
            seen,
            health,
            republisher: Republisher::spawn(targets, Duration::from_millis(100)),
        }
    }

    impl Rig {
        /// Commits a click of `user` on `item` and touches the user.
        async fn click(&self, user: &str, item: &str, trace: Option<&TraceContext>) {
            let user = UserId::parse(user).unwrap();
            self.store
                .append(
                    vec![Event {
                        user_id: user.clone(),
                        item_id: ItemId::parse(item).unwrap(),
                        kind: EventType::Click,
                        value: None,
                        timestamp: 1_764_000_000,
                        context: None,
                        source: None,
                        region: None,
                        event_id: None,
                    }],
                    None,
                )
                .await
                .unwrap();
            self.republisher.touch(user, Instant::now(), trace.cloned());
        }

        fn publishes(&self) -> Vec<serde_json::Value> {
            let seen = self.seen.lock().unwrap();
            seen.iter()
                .filter(|s| s.0 == "publish")
                .map(|s| s.2.clone())
                .collect()
        }
    }

    #[tokio::test]
    async fn events_for_a_made_up_user_buying_unknown_items_publish_nothing() {
        let r = rig(PublishGate::default()).await;
        for i in 0..20 {
            r.click(&format!("made-up-{i}"), &format!("invented-{i}"), None)
                .await;
        }
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(
            r.seen.lock().unwrap().is_empty(),
            "nothing reaches the edge"
        );
        // A real user clicking a real item changes their answer: published.
        r.click("u1", "i3", None).await;
        let mut waited = 0;
        while r.publishes().is_empty() && waited < 100 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            waited += 1;
        }
        let published = r.publishes();
        assert_eq!(published.len(), 1);
        assert_eq!(published[0]["documents"][0]["user_id"], "u1");
    }

    #[tokio::test]
    async fn a_change_too_soon_after_a_publish_is_published_when_the_interval_is_over() {
        let gate = PublishGate::new(BudgetSettings {
            min_interval: Duration::from_millis(800),
            ..BudgetSettings::default()
        });
        let r = rig(gate).await;
        r.click("u1", "i1", None).await;
        let first = std::time::Instant::now();
        while r.publishes().is_empty() && first.elapsed() < Duration::from_secs(2) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(r.publishes().len(), 1);
        r.click("u1", "i2", None).await;
        // Debounced after 100 ms, but held until 800 ms after the first publish.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(r.publishes().len(), 1, "not within the minimum interval");
        while r.publishes().len() < 2 && first.elapsed() < Duration::from_secs(3) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let took = first.elapsed();
        let published = r.publishes();
        assert_eq!(published.len(), 2, "the changed answer is not dropped");
        assert!(took >= Duration::from_millis(700), "{took:?}");
        assert_ne!(
            published[0]["documents"][0]["items"],
            published[1]["documents"][0]["items"]
        );
    }

    #[tokio::test]
    async fn a_burst_of_events_for_one_user_causes_one_republish_and_one_purge() {
        let r = rig(PublishGate::default()).await;
        let (seen, health) = (r.seen.clone(), r.health.clone());
        let trace = TraceContext::new_root();
        for i in 0..5 {
            r.click("u1", &format!("i{i}"), Some(&trace)).await;
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
