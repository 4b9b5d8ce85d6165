//! A tenant's quotas, enforced: origin requests per second (a token bucket) and events
//! per day (UTC days). Pure: every call is given the time, so the rules are tested
//! without waiting.
//!
//! **Requests.** A bucket of `requests_per_second` tokens (one second of burst), refilled
//! continuously; a request takes one token or is refused with the time until the next.
//!
//! **Events.** A batch is admitted whole or refused whole (nothing partial stored): it
//! is refused when today's count plus the batch would pass `events_per_day`, with the
//! time until the next UTC midnight. Several origins on one database each count what
//! they accept and adopt the store's count of today's events when it is higher
//! ([`QuotaMeter::observe_stored`], every few seconds), so together they pass the quota
//! by at most what they accept between two of those reads.
//!
//! **Users and items.** A batch that would store more users or items than `max_users`
//! or `max_items` is refused whole; the meter keeps the store's counts (read every few
//! seconds, [`QuotaMeter::observe_counts`]). A batch whose distinct ids would fit even
//! if all were new passes without a lookup; otherwise the caller counts those the
//! store does not hold yet, which are admitted against the room left and counted until
//! the next read. Batches (of one or several origins) can pass the limit by the new
//! ids they bring between two reads.

use std::time::Duration;

use thiserror::Error;

use super::Quotas;

/// Seconds in a UTC day.
const DAY_S: u64 = 86_400;

/// Which quota a request or batch ran into, with when to retry.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum QuotaExceeded {
    #[error("over the quota requests_per_second ({limit}) of tenant {tenant}")]
    RequestsPerSecond {
        tenant: String,
        limit: u64,
        retry_after: Duration,
    },
    #[error("over the quota events_per_day ({limit}) of tenant {tenant}: {used} events today, {batch} more refused")]
    EventsPerDay {
        tenant: String,
        limit: u64,
        used: u64,
        batch: u64,
        retry_after: Duration,
    },
    #[error("over the quota {quota} ({limit}) of tenant {tenant}: {stored} stored, {new} new ones refused")]
    Stored {
        tenant: String,
        /// `max_users` or `max_items`.
        quota: &'static str,
        limit: u64,
        stored: u64,
        new: u64,
    },
}

/// How long a client refused for `max_users`/`max_items` is asked to wait: the limit
/// lifts only when the quota is raised (read every few seconds) or rows are removed.
pub const STORED_RETRY_AFTER: Duration = Duration::from_secs(60);

impl QuotaExceeded {
    /// The quota's name, as in [`Quotas`].
    pub fn quota(&self) -> &'static str {
        match self {
            QuotaExceeded::RequestsPerSecond { .. } => "requests_per_second",
            QuotaExceeded::EventsPerDay { .. } => "events_per_day",
            QuotaExceeded::Stored { quota, .. } => quota,
        }
    }

    pub fn retry_after(&self) -> Duration {
        match self {
            QuotaExceeded::RequestsPerSecond { retry_after, .. }
            | QuotaExceeded::EventsPerDay { retry_after, .. } => *retry_after,
            QuotaExceeded::Stored { .. } => STORED_RETRY_AFTER,
        }
    }
}

/// What a tenant used, for `/health` and the admin routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    /// The UTC day (days since 1970-01-01) the count is of.
    pub day: u64,
    pub events_today: u64,
}

/// One tenant's meter (see the module docs).
#[derive(Debug, Clone)]
pub struct QuotaMeter {
    tenant: String,
    quotas: Quotas,
    /// Tokens in the bucket and when it was last refilled (seconds, any origin).
    tokens: f64,
    refilled_at: f64,
    usage: Usage,
    /// Users and items stored (the store's last count plus what was admitted since).
    users_stored: u64,
    items_stored: u64,
}

impl QuotaMeter {
    /// A full bucket at `now_s` (seconds on a monotonic clock) and no events counted
    /// for the day of `now_unix`.
    pub fn new(tenant: &str, quotas: Quotas, now_s: f64, now_unix: u64) -> Self {
        QuotaMeter {
            tenant: tenant.to_owned(),
            tokens: quotas.requests_per_second as f64,
            refilled_at: now_s,
            quotas,
            usage: Usage {
                day: now_unix / DAY_S,
                events_today: 0,
            },
            users_stored: 0,
            items_stored: 0,
        }
    }

    /// Whether `new_users` and `new_items` more might pass `max_users`/`max_items`: when
    /// not, a batch with at most that many distinct ids needs no store lookup.
    pub fn room_for(&self, new_users: u64, new_items: u64) -> bool {
        self.users_stored.saturating_add(new_users) <= self.quotas.max_users
            && self.items_stored.saturating_add(new_items) <= self.quotas.max_items
    }

    /// Admits a batch storing `new_users` users and `new_items` items the store does
    /// not hold yet, or refuses it whole.
    pub fn admit_stored(&mut self, new_users: u64, new_items: u64) -> Result<(), QuotaExceeded> {
        for (quota, limit, stored, new) in [
            (
                "max_users",
                self.quotas.max_users,
                self.users_stored,
                new_users,
            ),
            (
                "max_items",
                self.quotas.max_items,
                self.items_stored,
                new_items,
            ),
        ] {
            if stored.saturating_add(new) > limit {
                return Err(QuotaExceeded::Stored {
                    tenant: self.tenant.clone(),
                    quota,
                    limit,
                    stored,
                    new,
                });
            }
        }
        self.users_stored += new_users;
        self.items_stored += new_items;
        Ok(())
    }

    /// The store's counts of users and items (they replace the meter's).
    /// Users and items stored, as last counted (plus admitted since).
    pub fn stored(&self) -> (u64, u64) {
        (self.users_stored, self.items_stored)
    }

    pub fn observe_counts(&mut self, users: u64, items: u64) {
        self.users_stored = users;
        self.items_stored = items;
    }

    pub fn quotas(&self) -> Quotas {
        self.quotas
    }

    /// New quotas (changed in the registry); the bucket keeps its tokens, capped.
    pub fn set_quotas(&mut self, quotas: Quotas) {
        self.quotas = quotas;
        self.tokens = self.tokens.min(quotas.requests_per_second as f64);
    }

    /// Takes one request token, or says how long until there is one.
    pub fn admit_request(&mut self, now_s: f64) -> Result<(), QuotaExceeded> {
        let rate = self.quotas.requests_per_second as f64;
        let elapsed = (now_s - self.refilled_at).max(0.0);
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        self.refilled_at = self.refilled_at.max(now_s);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        Err(QuotaExceeded::RequestsPerSecond {
            tenant: self.tenant.clone(),
            limit: self.quotas.requests_per_second,
            retry_after: Duration::from_secs_f64((1.0 - self.tokens) / rate),
        })
    }

    /// Counts a batch of `batch` events in today's quota, or refuses all of it.
    pub fn admit_events(&mut self, batch: u64, now_unix: u64) -> Result<(), QuotaExceeded> {
        self.roll(now_unix);
        let used = self.usage.events_today;
        if used.saturating_add(batch) > self.quotas.events_per_day {
            return Err(QuotaExceeded::EventsPerDay {
                tenant: self.tenant.clone(),
                limit: self.quotas.events_per_day,
                used,
                batch,
                retry_after: Duration::from_secs(DAY_S - now_unix % DAY_S),
            });
        }
        self.usage.events_today = used + batch;
        Ok(())
    }

    /// Takes back `batch` events admitted but not stored (the store refused them).
    pub fn refund_events(&mut self, batch: u64, now_unix: u64) {
        self.roll(now_unix);
        self.usage.events_today = self.usage.events_today.saturating_sub(batch);
    }

    /// The store holds `stored` events of day `day` (every origin's): adopt the count
    /// when it is higher than this meter's.
    pub fn observe_stored(&mut self, day: u64, stored: u64, now_unix: u64) {
        self.roll(now_unix);
        if day == self.usage.day {
            self.usage.events_today = self.usage.events_today.max(stored);
        }
    }

    pub fn usage(&mut self, now_unix: u64) -> Usage {
        self.roll(now_unix);
        self.usage
    }

    /// A new UTC day starts from zero.
    fn roll(&mut self, now_unix: u64) {
        let day = now_unix / DAY_S;
        if day > self.usage.day {
            self.usage = Usage {
                day,
                events_today: 0,
            };
        }
    }
}

/// The first unix second of UTC day `day`.
pub fn day_start(day: u64) -> u64 {
    day * DAY_S
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quotas(rps: u64, per_day: u64) -> Quotas {
        Quotas {
            requests_per_second: rps,
            events_per_day: per_day,
            ..Quotas::default()
        }
    }

    /// Noon (UTC) of 2026-12-03.
    const NOON: u64 = 20_790 * 86_400 + 43_200;

    #[test]
    fn the_bucket_allows_one_second_of_burst_then_the_rate() {
        let mut m = QuotaMeter::new("shop", quotas(5, 100), 10.0, NOON);
        for _ in 0..5 {
            m.admit_request(10.0).unwrap();
        }
        let e = m.admit_request(10.0).unwrap_err();
        assert_eq!(e.quota(), "requests_per_second");
        assert!((e.retry_after().as_secs_f64() - 0.2).abs() < 1e-9, "{e:?}");
        assert!(e.to_string().contains("(5) of tenant shop"), "{e}");
        // 0.4 s later: two tokens.
        m.admit_request(10.4).unwrap();
        m.admit_request(10.4).unwrap();
        assert!(m.admit_request(10.4).is_err());
        // A long pause fills the bucket only to its size.
        let admitted = (0..20).filter(|_| m.admit_request(100.0).is_ok()).count();
        assert_eq!(admitted, 5);
    }

    #[test]
    fn a_batch_past_the_days_quota_is_refused_whole_until_midnight() {
        let mut m = QuotaMeter::new("shop", quotas(5, 10), 0.0, NOON);
        m.admit_events(8, NOON).unwrap();
        let e = m.admit_events(3, NOON + 1).unwrap_err();
        assert_eq!(
            e,
            QuotaExceeded::EventsPerDay {
                tenant: "shop".into(),
                limit: 10,
                used: 8,
                batch: 3,
                retry_after: Duration::from_secs(43_199),
            }
        );
        assert_eq!(m.usage(NOON + 1).events_today, 8, "nothing of it counted");
        m.admit_events(2, NOON + 2).unwrap();
        assert!(m.admit_events(1, NOON + 3).is_err());
        // The next UTC day starts from zero.
        m.admit_events(10, NOON + 43_200).unwrap();
        assert_eq!(m.usage(NOON + 43_200).events_today, 10);
    }

    #[test]
    fn the_stores_count_is_adopted_when_higher_and_refunds_give_back() {
        let mut m = QuotaMeter::new("shop", quotas(5, 100), 0.0, NOON);
        let today = NOON / DAY_S;
        m.admit_events(10, NOON).unwrap();
        m.observe_stored(today, 7, NOON);
        assert_eq!(
            m.usage(NOON).events_today,
            10,
            "this origin's own count is higher"
        );
        m.observe_stored(today, 95, NOON);
        assert_eq!(
            m.usage(NOON).events_today,
            95,
            "other origins accepted more"
        );
        m.observe_stored(today - 1, 1_000, NOON);
        assert_eq!(
            m.usage(NOON).events_today,
            95,
            "yesterday's count is not today's"
        );
        assert!(m.admit_events(6, NOON).is_err());
        m.refund_events(4, NOON);
        m.admit_events(6, NOON).unwrap();
        assert_eq!(day_start(today) + 43_200, NOON);
    }

    #[test]
    fn a_batch_with_more_new_users_or_items_than_room_is_refused_whole() {
        let q = Quotas {
            max_users: 10,
            max_items: 5,
            ..Quotas::default()
        };
        let mut m = QuotaMeter::new("shop", q, 0.0, NOON);
        m.observe_counts(8, 5);
        assert!(m.room_for(2, 0) && !m.room_for(3, 0) && !m.room_for(0, 1));
        m.admit_stored(2, 0).unwrap();
        let e = m.admit_stored(1, 0).unwrap_err();
        assert_eq!(e.quota(), "max_users");
        assert!(
            e.to_string()
                .contains("max_users (10) of tenant shop: 10 stored, 1 new"),
            "{e}"
        );
        assert_eq!(e.retry_after(), STORED_RETRY_AFTER);
        let e = m.admit_stored(0, 1).unwrap_err();
        assert_eq!(e.quota(), "max_items");
        // Nothing of a refused batch was counted; a batch of known ids always passes.
        m.admit_stored(0, 0).unwrap();
        m.observe_counts(3, 1);
        m.admit_stored(7, 4).unwrap();
    }

    #[test]
    fn lower_quotas_cap_the_tokens_at_once() {
        let mut m = QuotaMeter::new("shop", quotas(100, 100), 0.0, NOON);
        m.set_quotas(quotas(2, 100));
        assert_eq!(m.quotas().requests_per_second, 2);
        assert!(m.admit_request(0.0).is_ok() && m.admit_request(0.0).is_ok());
        assert!(m.admit_request(0.0).is_err());
    }
}
