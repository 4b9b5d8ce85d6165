//! Impressions and cache-hit counts the edge reports to the origin without slowing
//! answers down: what it served (`recommendation_viewed` events, one per item shown)
//! goes into an in-isolate buffer, and a batch is sent in the background
//! (`ctx.waitUntil`) once `batch` events are waiting or the oldest has waited
//! `flush_ms`. The buffer is bounded: when the origin cannot take them, the oldest
//! impressions are dropped and counted (they are analytics, not user data).

use std::collections::BTreeMap;

use contract::events::{RawEvent, MAX_EVENTS_PER_BATCH};
use contract::RecommendationDoc;

/// Impression settings (`IMPRESSIONS`, `IMPRESSION_BATCH`, `IMPRESSION_FLUSH_MS`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImpressionConfig {
    pub enabled: bool,
    pub batch: usize,
    pub flush_ms: f64,
    /// Most impressions kept while the origin does not take them.
    pub capacity: usize,
}

impl Default for ImpressionConfig {
    fn default() -> Self {
        ImpressionConfig {
            enabled: true,
            batch: 500,
            flush_ms: 2000.0,
            capacity: 5000,
        }
    }
}

/// The `recommendation_viewed` events for the items of a served answer.
pub fn impressions_of(doc: &RecommendationDoc, source: &str, now_s: u64) -> Vec<RawEvent> {
    doc.items
        .iter()
        .map(|item| RawEvent {
            user_id: doc.user_id.clone(),
            item_id: item.item_id.clone(),
            kind: "recommendation_viewed".into(),
            value: item.score.is_finite().then_some(item.score),
            timestamp: Some(now_s as i64),
            context: None,
            source: Some(source.to_string()),
            region: Some(doc.region.clone()),
        })
        .collect()
}

/// Requests and edge-cache hits per region since the last report.
pub type HitCounts = BTreeMap<String, (u64, u64)>;

#[derive(Debug, Default)]
pub struct ImpressionBuffer {
    events: Vec<RawEvent>,
    oldest_ms: Option<f64>,
    pub dropped: u64,
    hits: HitCounts,
}

/// What to send now.
#[derive(Debug, Clone, PartialEq)]
pub struct Flush {
    pub events: Vec<RawEvent>,
    pub hits: HitCounts,
}

impl ImpressionBuffer {
    /// Counts a recommendation answer for the hit-rate report.
    pub fn count_request(&mut self, region: &str, edge_cache_hit: bool) {
        let e = self.hits.entry(region.to_string()).or_default();
        e.0 += 1;
        e.1 += edge_cache_hit as u64;
    }

    /// Adds impressions, dropping the oldest beyond `cfg.capacity`.
    pub fn push(&mut self, events: Vec<RawEvent>, now_ms: f64, cfg: &ImpressionConfig) {
        if !cfg.enabled || events.is_empty() {
            return;
        }
        self.oldest_ms.get_or_insert(now_ms);
        self.events.extend(events);
        if self.events.len() > cfg.capacity {
            let excess = self.events.len() - cfg.capacity;
            self.events.drain(..excess);
            self.dropped += excess as u64;
        }
    }

    /// A batch to send when one is due (enough waiting, or waited long enough): at most
    /// [`MAX_EVENTS_PER_BATCH`] events, and the hit counts gathered so far (which ride
    /// along with impressions, so a quiet edge sends nothing).
    pub fn take_due(&mut self, now_ms: f64, cfg: &ImpressionConfig) -> Option<Flush> {
        let waited_long = self.oldest_ms.is_some_and(|t| now_ms - t >= cfg.flush_ms);
        if !(self.events.len() >= cfg.batch || waited_long) {
            return None;
        }
        let n = self.events.len().min(MAX_EVENTS_PER_BATCH);
        let events: Vec<RawEvent> = self.events.drain(..n).collect();
        self.oldest_ms = if self.events.is_empty() {
            None
        } else {
            Some(now_ms)
        };
        Some(Flush {
            events,
            hits: std::mem::take(&mut self.hits),
        })
    }

    /// Puts back a batch the origin did not take (it is retried with the next flush).
    pub fn put_back(&mut self, flush: Flush, now_ms: f64, cfg: &ImpressionConfig) {
        let mut events = flush.events;
        events.append(&mut self.events);
        self.events = events;
        self.oldest_ms.get_or_insert(now_ms);
        for (region, (r, h)) in flush.hits {
            let e = self.hits.entry(region).or_default();
            e.0 += r;
            e.1 += h;
        }
        if self.events.len() > cfg.capacity {
            let excess = self.events.len() - cfg.capacity;
            self.events.drain(..excess);
            self.dropped += excess as u64;
        }
    }

    pub fn waiting(&self) -> usize {
        self.events.len()
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
                })
                .collect(),
            model_version: "m".into(),
            generated_at: 0,
            fresh_for_s: 1,
            stale_for_s: 1,
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
    fn each_served_item_is_one_recommendation_viewed_event_with_source_and_region() {
        let ev = impressions_of(&doc(3), "kv", 1_764_237_600);
        assert_eq!(ev.len(), 3);
        assert_eq!(
            (ev[1].item_id.as_str(), ev[1].kind.as_str()),
            ("i1", "recommendation_viewed")
        );
        assert_eq!(
            (ev[0].source.as_deref(), ev[0].region.as_deref()),
            (Some("kv"), Some("europe"))
        );
        let regions = contract::RegionMap::builtin();
        let limits = contract::events::Limits {
            now: 1_764_237_600,
            max_future_s: 300,
            regions: &regions,
        };
        assert!(
            ev.into_iter()
                .all(|e| contract::events::validate(e, &limits).is_ok()),
            "impressions must pass the origin's validation"
        );
    }

    #[test]
    fn a_batch_is_due_when_full_or_when_the_oldest_waited_long_enough() {
        let mut b = ImpressionBuffer::default();
        b.push(impressions_of(&doc(4), "kv", 0), 0.0, &cfg());
        assert_eq!(b.take_due(500.0, &cfg()), None);
        let f = b.take_due(1000.0, &cfg()).expect("due after flush_ms");
        assert_eq!(f.events.len(), 4);
        b.push(impressions_of(&doc(10), "kv", 0), 2000.0, &cfg());
        assert_eq!(b.take_due(2001.0, &cfg()).unwrap().events.len(), 10);
        assert_eq!(b.waiting(), 0);
    }

    #[test]
    fn the_buffer_is_bounded_and_counts_what_it_drops() {
        let mut b = ImpressionBuffer::default();
        b.push(impressions_of(&doc(20), "kv", 0), 0.0, &cfg());
        b.push(impressions_of(&doc(20), "kv", 0), 0.0, &cfg());
        assert_eq!((b.waiting(), b.dropped), (25, 15));
    }

    #[test]
    fn a_failed_batch_goes_back_in_front_with_its_hit_counts() {
        let mut b = ImpressionBuffer::default();
        b.count_request("europe", true);
        b.count_request("europe", false);
        b.push(impressions_of(&doc(10), "kv", 0), 0.0, &cfg());
        let f = b.take_due(0.0, &cfg()).unwrap();
        assert_eq!(f.hits.get("europe"), Some(&(2, 1)));
        b.put_back(f, 10.0, &cfg());
        let again = b.take_due(2000.0, &cfg()).unwrap();
        assert_eq!(
            (again.events.len(), again.hits.get("europe")),
            (10, Some(&(2, 1)))
        );
    }

    #[test]
    fn disabled_impressions_are_not_kept() {
        let mut b = ImpressionBuffer::default();
        b.push(
            impressions_of(&doc(3), "kv", 0),
            0.0,
            &ImpressionConfig {
                enabled: false,
                ..cfg()
            },
        );
        assert_eq!(b.waiting(), 0);
    }
}
