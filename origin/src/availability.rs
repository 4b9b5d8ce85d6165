//! What may be served: items' availability and categories as the served snapshot
//! knows them, plus the catalogue writes made through this origin since it was read
//! ([`LiveItems`]), and which users' published lists a change touches
//! ([`crate::snapshot::Snapshot::users_listing`]).
//!
//! **Never served.** An item with `available = false` is masked before the model's top-n
//! is taken (`crate::model::Query::allowed`), so every answer and every document built
//! from a snapshot (a request, publish on miss, the republisher, `origin publish`, the
//! leader's scheduled publish) leaves it out and still holds `n` items. The snapshot
//! reads availability and categories with the training set; a `PUT`, `PATCH`, bulk
//! `POST` or `DELETE` of an item is recorded here at once, and the snapshot applies the
//! record on top of what it read, so the origin's own answers leave an item out from the
//! moment its write returns, before any retrain. A record is dropped when a snapshot
//! whose store read began after it was made is swapped in (it holds the write then).
//!
//! **Republishing what the edge holds.** The edge serves published documents without
//! asking the origin, so a changed item must leave (or enter) them too. The origin
//! keeps no index of which items each published document holds; instead, after a write
//! that changes an item's availability or categories, it recomputes, on a blocking
//! thread, every user's canonical list (`--publish-n` items) with the changed items
//! allowed, and touches the republisher ([`crate::freshness::Republisher`]) for each
//! user whose list holds one of them. The republisher rescores them with the item now
//! masked, publishes only those whose answer changed, and purges their edge-cache
//! entries, as after events: within seconds. Items' lists (similar items, bought
//! together) are scanned the same way next
//! ([`crate::snapshot::Snapshot::item_lists_listing`], one model query per item): those
//! holding a changed item are rewritten into each target's current generation and
//! purged from the edge cache.
//!
//! Trade-off: the scan costs one model query per user with history (about what a bulk
//! publish computes, without its writes; users without history have their region's
//! popular list, computed once per region), so it is bounded: at most [`MAX_SCAN_USERS`]
//! users per scan (the first in id order; those past the bound get the change at the
//! next scheduled or manual publish, and a warning says how many), one scan at a time
//! per tenant, and a bulk write scans once for all its items. An index of published
//! items per user would answer in microseconds but costs memory per published user
//! (`publish_n` ids each) and misses documents written by another process (`origin
//! publish`); the scan finds every user whose list holds the item as this snapshot
//! computes it, wherever their document was written from.
//!
//! Limits: a write through one origin is live only on that origin; the others see it at
//! their next retrain (several origins on PostgreSQL). Popular lists in KV and the CDN
//! are not rewritten live (only the publish gets them, at the next full publish), and the
//! global list baked into the worker never changes: both are served only to users the
//! edge has no document for.

use std::collections::HashMap;
use std::sync::RwLock;

/// Most users one availability scan recomputes.
pub const MAX_SCAN_USERS: usize = 200_000;

/// An item as the latest catalogue write through this origin left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveItem {
    pub available: bool,
    pub categories: Vec<String>,
    /// Unix seconds, taken after the write committed.
    pub at: u64,
}

/// Catalogue writes since the served snapshot's store read: item id → its state. At
/// most one entry per item of the catalogue, and each entry is dropped at the first
/// retrain that read the store after it.
#[derive(Debug, Default)]
pub struct LiveItems {
    items: RwLock<HashMap<String, LiveItem>>,
    /// One availability scan at a time.
    pub(crate) scanning: tokio::sync::Mutex<()>,
}

impl LiveItems {
    /// Records that `item` is now as given (the newest write wins).
    pub fn record(&self, item: &str, available: bool, categories: Vec<String>, at: u64) {
        let mut m = self.items.write().unwrap_or_else(|e| e.into_inner());
        m.insert(
            item.to_owned(),
            LiveItem {
                available,
                categories,
                at,
            },
        );
    }

    /// The recorded state of `item`, when a write since the snapshot changed it.
    pub fn get(&self, item: &str) -> Option<LiveItem> {
        self.read(|m| m.get(item).cloned())
    }

    pub fn is_empty(&self) -> bool {
        self.read(|m| m.is_empty())
    }

    pub fn len(&self) -> usize {
        self.read(|m| m.len())
    }

    /// Runs `f` over every record under the read lock.
    pub fn read<R>(&self, f: impl FnOnce(&HashMap<String, LiveItem>) -> R) -> R {
        let m = self.items.read().unwrap_or_else(|e| e.into_inner());
        f(&m)
    }

    /// Drops the records made before `read_from` (unix seconds): a store read that began
    /// then already holds them. A record made in that very second stays (it may have
    /// committed after the read began).
    pub fn prune_before(&self, read_from: u64) {
        let mut m = self.items.write().unwrap_or_else(|e| e.into_inner());
        m.retain(|_, v| v.at >= read_from);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_record_wins_and_a_later_read_drops_older_ones() {
        let live = LiveItems::default();
        assert!(live.is_empty());
        live.record("i1", false, vec!["a".into()], 10);
        live.record("i2", false, Vec::new(), 12);
        live.record("i1", true, Vec::new(), 11);
        assert_eq!(
            live.get("i1").map(|i| (i.available, i.at)),
            Some((true, 11))
        );
        live.prune_before(11);
        assert_eq!(live.len(), 2, "a record of the read's own second stays");
        live.prune_before(12);
        assert_eq!(live.get("i1"), None);
        assert!(live.get("i2").is_some());
    }
}
