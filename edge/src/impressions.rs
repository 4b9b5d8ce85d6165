//! Impressions and cache-hit counts the edge reports to the origin without slowing
//! answers down. What it served goes into an in-isolate buffer as whole answers
//! ([`Shown`]: one user, source, region and time, the items in order; the origin's
//! `POST /v1/impressions` stores one `recommendation_viewed` event per item). A batch is
//! sent in the background (`ctx.waitUntil`) once `batch` impressions are waiting or the
//! oldest has waited `flush_ms`. Whole answers instead of one event per item make a batch
//! about a quarter of the bytes, so one send carries ten times the impressions of the
//! 500-event `/v1/events` limit; each send is what costs the edge (docs/benchmarks.md).
//! The buffer is bounded: when the origin cannot take them, the oldest answers are
//! dropped and counted (they are analytics, not user data).

use std::collections::{BTreeMap, VecDeque};

use contract::events::{Shown, ShownItem, MAX_IMPRESSIONS_PER_BATCH, MAX_SHOWN_PER_BATCH};
use contract::RecommendationDoc;

/// Impression settings (`IMPRESSIONS`, `IMPRESSION_BATCH`, `IMPRESSION_FLUSH_MS`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImpressionConfig {
    pub enabled: bool,
    /// Impressions (items shown) waiting that make a batch due.
    pub batch: usize,
    /// Longest the oldest waiting answer waits before a batch is due; also the shortest
    /// time between two hit-rate reports.
    pub flush_ms: f64,
    /// Most impressions kept while the origin does not take them.
    pub capacity: usize,
}

impl Default for ImpressionConfig {
    fn default() -> Self {
        ImpressionConfig {
            enabled: true,
            batch: 2000,
            flush_ms: 2000.0,
            capacity: 20_000,
        }
    }
}

/// What an answer showed: its items in order, with their scores, under the answer id
/// `id` (see [`crate::forward::answer_id`]), so a resent batch is stored once.
pub fn impressions_of(doc: &RecommendationDoc, source: &str, now_s: u64, id: String) -> Shown {
    Shown {
        id: Some(id),
        user_id: doc.user_id.clone(),
        source: source.to_string(),
        region: doc.region.clone(),
        timestamp: now_s as i64,
        items: doc
            .items
            .iter()
            .map(|item| ShownItem {
                item_id: item.item_id.clone(),
                score: item.score.is_finite().then_some(item.score),
            })
            .collect(),
    }
}

/// Requests and edge-cache hits per region since the last report.
pub type HitCounts = BTreeMap<String, (u64, u64)>;

#[derive(Debug, Default)]
pub struct ImpressionBuffer {
    shown: VecDeque<Shown>,
    /// Items over all of `shown`.
    impressions: usize,
    oldest_ms: Option<f64>,
    /// Impressions dropped because the buffer was full.
    pub dropped: u64,
    hits: HitCounts,
    last_report_ms: Option<f64>,
}

/// What to send now.
#[derive(Debug, Clone, PartialEq)]
pub struct Flush {
    pub shown: Vec<Shown>,
    /// Hit counts to report, empty when the last report is under `flush_ms` old.
    pub hits: HitCounts,
}

impl Flush {
    pub fn impressions(&self) -> usize {
        self.shown.iter().map(|s| s.items.len()).sum()
    }
}

impl ImpressionBuffer {
    /// Counts a recommendation answer for the hit-rate report.
    pub fn count_request(&mut self, region: &str, edge_cache_hit: bool) {
        let e = self.hits.entry(region.to_string()).or_default();
        e.0 = e.0.saturating_add(1);
        e.1 = e.1.saturating_add(edge_cache_hit as u64);
    }

    /// Adds an answer's impressions, dropping the oldest answers beyond `cfg.capacity`.
    pub fn push(&mut self, shown: Shown, now_ms: f64, cfg: &ImpressionConfig) {
        if !cfg.enabled || shown.items.is_empty() {
            return;
        }
        self.oldest_ms.get_or_insert(now_ms);
        self.impressions += shown.items.len();
        self.shown.push_back(shown);
        self.drop_beyond_capacity(cfg);
    }

    fn drop_beyond_capacity(&mut self, cfg: &ImpressionConfig) {
        while self.impressions > cfg.capacity {
            let Some(oldest) = self.shown.pop_front() else {
                break;
            };
            self.impressions -= oldest.items.len();
            self.dropped += oldest.items.len() as u64;
        }
    }

    /// A batch to send when one is due (enough waiting, or waited long enough): the
    /// oldest answers, at most [`MAX_SHOWN_PER_BATCH`] of them and
    /// [`MAX_IMPRESSIONS_PER_BATCH`] impressions, and the hit counts gathered so far when
    /// the last report is `flush_ms` old (they ride along with impressions, so a quiet
    /// edge sends nothing).
    pub fn take_due(&mut self, now_ms: f64, cfg: &ImpressionConfig) -> Option<Flush> {
        let waited_long = self.oldest_ms.is_some_and(|t| now_ms - t >= cfg.flush_ms);
        if !(self.impressions >= cfg.batch || waited_long) {
            return None;
        }
        let (mut answers, mut items) = (0, 0);
        for s in &self.shown {
            if answers == MAX_SHOWN_PER_BATCH || items + s.items.len() > MAX_IMPRESSIONS_PER_BATCH {
                break;
            }
            answers += 1;
            items += s.items.len();
        }
        let shown: Vec<Shown> = self.shown.drain(..answers).collect();
        self.impressions -= items;
        self.oldest_ms = if self.shown.is_empty() {
            None
        } else {
            Some(now_ms)
        };
        let report_due = self
            .last_report_ms
            .is_none_or(|t| now_ms - t >= cfg.flush_ms);
        let hits = if report_due {
            self.last_report_ms = Some(now_ms);
            std::mem::take(&mut self.hits)
        } else {
            HitCounts::new()
        };
        Some(Flush { shown, hits })
    }

    /// Puts back a batch the origin did not take (it is retried with the next flush).
    pub fn put_back(&mut self, flush: Flush, now_ms: f64, cfg: &ImpressionConfig) {
        self.impressions += flush.impressions();
        for s in flush.shown.into_iter().rev() {
            self.shown.push_front(s);
        }
        self.oldest_ms.get_or_insert(now_ms);
        for (region, (r, h)) in flush.hits {
            let e = self.hits.entry(region).or_default();
            e.0 = e.0.saturating_add(r);
            e.1 = e.1.saturating_add(h);
        }
        self.drop_beyond_capacity(cfg);
    }

    /// Impressions waiting to be sent.
    pub fn waiting(&self) -> usize {
        self.impressions
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use contract::RecItem;

    fn doc(items: usize) -> RecommendationDoc {
        RecommendationDoc {
            tenant: "default".into(),
            user_id: "u1".into(),
            region: "europe".into(),
            items: (0..items)
                .map(|i| RecItem {
                    item_id: format!("i{i}"),
                    score: 0.5,
                    reason: None,
                    categories: Vec::new(),
                })
                .collect(),
            model_version: "m".into(),
            generated_at: 0,
            fresh_for_s: 1,
            stale_for_s: 1,
            list: None,
            item_id: None,
            variant: None,
        }
    }

    fn cfg() -> ImpressionConfig {
        ImpressionConfig {
            enabled: true,
            batch: 10,
            flush_ms: 1000.0,
            capacity: 25,
        }
    }

    #[test]
    fn an_answer_is_its_items_in_order_and_passes_the_origins_validation() {
        let shown = impressions_of(&doc(3), "kv", 1_764_237_600, "s0a1b".into());
        assert_eq!(shown.items.len(), 3);
        assert_eq!(shown.items[1].item_id, "i1");
        assert_eq!(
            (shown.source.as_str(), shown.region.as_str()),
            ("kv", "europe")
        );
        let regions = contract::RegionMap::builtin();
        let limits = contract::events::Limits {
            now: 1_764_237_600,
            max_future_s: 300,
            regions: &regions,
        };
        let body =
            serde_json::to_vec(&contract::events::ShownBatch { shown: vec![shown] }).unwrap();
        let events = contract::events::parse_impressions(&body, &limits)
            .expect("impressions must pass the origin's validation");
        assert_eq!(events.len(), 3);
        assert_eq!(events[2].item_id.as_str(), "i2");
        assert_eq!(events[0].value, Some(0.5));
        let ids: Vec<_> = events
            .iter()
            .map(|e| e.event_id.as_ref().unwrap().as_str())
            .collect();
        assert_eq!(
            ids,
            ["s0a1b-0", "s0a1b-1", "s0a1b-2"],
            "a resent answer keeps its ids"
        );
    }

    #[test]
    fn a_batch_is_due_when_enough_impressions_wait_or_the_oldest_waited_long_enough() {
        let mut b = ImpressionBuffer::default();
        b.push(impressions_of(&doc(4), "kv", 0, "s1".into()), 0.0, &cfg());
        assert_eq!(b.take_due(500.0, &cfg()), None);
        let f = b.take_due(1000.0, &cfg()).expect("due after flush_ms");
        assert_eq!(f.impressions(), 4);
        b.push(
            impressions_of(&doc(6), "kv", 0, "s1".into()),
            2000.0,
            &cfg(),
        );
        assert_eq!(b.take_due(2001.0, &cfg()), None, "6 of 10 waiting");
        b.push(
            impressions_of(&doc(4), "kv", 0, "s1".into()),
            2002.0,
            &cfg(),
        );
        let f = b.take_due(2003.0, &cfg()).expect("10 waiting");
        assert_eq!((f.shown.len(), f.impressions()), (2, 10));
        assert_eq!(b.waiting(), 0);
    }

    #[test]
    fn a_batch_stays_within_the_origins_limits() {
        let big = ImpressionConfig {
            batch: 1,
            capacity: 100_000,
            ..cfg()
        };
        let mut b = ImpressionBuffer::default();
        for _ in 0..150 {
            b.push(impressions_of(&doc(100), "kv", 0, "s1".into()), 0.0, &big);
        }
        let f = b.take_due(0.0, &big).unwrap();
        assert_eq!(f.impressions(), MAX_IMPRESSIONS_PER_BATCH);
        assert_eq!(b.waiting(), 5000);
        let mut b = ImpressionBuffer::default();
        for _ in 0..MAX_SHOWN_PER_BATCH + 5 {
            b.push(impressions_of(&doc(1), "kv", 0, "s1".into()), 0.0, &big);
        }
        assert_eq!(
            b.take_due(0.0, &big).unwrap().shown.len(),
            MAX_SHOWN_PER_BATCH
        );
        assert_eq!(b.waiting(), 5);
    }

    #[test]
    fn the_buffer_is_bounded_and_counts_what_it_drops() {
        let mut b = ImpressionBuffer::default();
        for _ in 0..4 {
            b.push(impressions_of(&doc(10), "kv", 0, "s1".into()), 0.0, &cfg());
        }
        assert_eq!((b.waiting(), b.dropped), (20, 20));
    }

    #[test]
    fn hit_counts_are_reported_at_most_once_per_flush_interval() {
        let mut b = ImpressionBuffer::default();
        b.count_request("europe", true);
        b.push(impressions_of(&doc(10), "kv", 0, "s1".into()), 0.0, &cfg());
        assert_eq!(
            b.take_due(0.0, &cfg()).unwrap().hits.get("europe"),
            Some(&(1, 1))
        );
        b.count_request("europe", false);
        b.push(impressions_of(&doc(10), "kv", 0, "s1".into()), 10.0, &cfg());
        assert!(
            b.take_due(10.0, &cfg()).unwrap().hits.is_empty(),
            "reported 10 ms ago"
        );
        b.count_request("europe", true);
        b.push(
            impressions_of(&doc(10), "kv", 0, "s1".into()),
            1000.0,
            &cfg(),
        );
        assert_eq!(
            b.take_due(1000.0, &cfg()).unwrap().hits.get("europe"),
            Some(&(2, 1))
        );
    }

    #[test]
    fn a_failed_batch_goes_back_in_front_with_its_hit_counts() {
        let mut b = ImpressionBuffer::default();
        b.count_request("europe", true);
        b.count_request("europe", false);
        b.push(impressions_of(&doc(10), "kv", 0, "s1".into()), 0.0, &cfg());
        let f = b.take_due(0.0, &cfg()).unwrap();
        assert_eq!(f.hits.get("europe"), Some(&(2, 1)));
        b.push(
            impressions_of(&doc(3), "later", 0, "s1".into()),
            5.0,
            &cfg(),
        );
        b.put_back(f, 10.0, &cfg());
        assert_eq!(b.waiting(), 13);
        let again = b.take_due(2000.0, &cfg()).unwrap();
        assert_eq!(
            (
                again.shown[0].source.as_str(),
                again.impressions(),
                again.hits.get("europe")
            ),
            ("kv", 13, Some(&(2, 1)))
        );
    }

    #[test]
    fn disabled_impressions_are_not_kept() {
        let mut b = ImpressionBuffer::default();
        b.push(
            impressions_of(&doc(3), "kv", 0, "s1".into()),
            0.0,
            &ImpressionConfig {
                enabled: false,
                ..cfg()
            },
        );
        assert_eq!(b.waiting(), 0);
    }
}
