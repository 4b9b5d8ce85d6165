//! What the edge adds to the writes it sends the origin, so a retry or a failover to a
//! second origin is stored once and the origin knows who sent it:
//!
//! - every forwarded event without an `event_id` gets one: a random 128-bit base per
//!   request (`crypto.getRandomValues`, drawn by the glue) plus the event's index;
//! - every impressions answer gets an `id` (96 random bits; the origin stores item `j`
//!   as event `{id}-{j}`);
//! - `POST /v1/events` and `POST /v1/impressions` carry `Authorization: Bearer
//!   <ADMIN_TOKEN>`, and forwarded events also `X-Edge-Client` (the client key of
//!   [`crate::client`], never the IP), and the caller's tenant key (`X-Tenant-Key`)
//!   when it sent one of the right shape (another shape is refused here, 401
//!   `invalid_key`; the origin checks the key itself).

use contract::events::{Event, RawEvent};
use contract::Region;

/// Header naming the client of forwarded events (16 hex digits).
pub const EDGE_CLIENT_HEADER: &str = "X-Edge-Client";

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The base of a request's event ids: `e` and 32 hex digits (128 random bits).
pub fn event_id_base(random: [u8; 16]) -> String {
    format!("e{}", hex(&random))
}

/// An impressions answer's id: `s` and 24 hex digits (96 random bits).
pub fn answer_id(random: [u8; 12]) -> String {
    format!("s{}", hex(&random))
}

/// The validated events in wire form as the edge forwards them: the caller's region
/// where an event has none, and `{id_base}-{index}` where it has no `event_id`.
pub fn events_to_forward(events: &[Event], region: &Region, id_base: &str) -> Vec<RawEvent> {
    events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let mut r = e.to_raw();
            r.region.get_or_insert_with(|| region.to_string());
            r.event_id.get_or_insert_with(|| format!("{id_base}-{i}"));
            r
        })
        .collect()
}

/// The caller's `X-Tenant-Key` to forward: `None` without one, an error for a value
/// of another shape than a tenant key's.
pub fn tenant_key(header: Option<&str>) -> Result<Option<String>, crate::error::EdgeError> {
    match header.map(str::trim) {
        None => Ok(None),
        Some(k) if contract::auth::is_tenant_key_shaped(k) => Ok(Some(k.to_owned())),
        Some(_) => Err(crate::error::EdgeError::InvalidTenantKey),
    }
}

/// Headers of a write to the origin: the bearer token when one is configured, the
/// client key when given, and the trace.
pub fn write_headers(
    admin_token: Option<&str>,
    client_key: Option<&str>,
    traceparent: Option<String>,
) -> Vec<(&'static str, String)> {
    let mut h = Vec::with_capacity(3);
    if let Some(token) = admin_token {
        h.push(("Authorization", contract::auth::bearer_header(token)));
    }
    if let Some(client) = client_key {
        h.push((EDGE_CLIENT_HEADER, client.to_string()));
    }
    if let Some(t) = traceparent {
        h.push(("traceparent", t));
    }
    h
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use contract::events::{parse_body, Limits};
    use contract::{EventId, RegionMap};

    fn parsed(body: &str) -> Vec<Event> {
        let regions = RegionMap::builtin();
        let limits = Limits {
            now: 1_764_237_600,
            max_future_s: 300,
            regions: &regions,
        };
        parse_body(body.as_bytes(), &limits).unwrap()
    }

    #[test]
    fn every_forwarded_event_has_an_id_and_a_client_id_is_kept() {
        let events = parsed(
            r#"{"events":[{"user_id":"u1","item_id":"i1","type":"view"},
                          {"user_id":"u1","item_id":"i2","type":"view","event_id":"mine-1"},
                          {"user_id":"u1","item_id":"i3","type":"view","region":"asia"}]}"#,
        );
        let base = event_id_base([0xab; 16]);
        let out = events_to_forward(&events, &Region::parse("europe").unwrap(), &base);
        let ids: Vec<&str> = out.iter().map(|e| e.event_id.as_deref().unwrap()).collect();
        assert_eq!(
            ids,
            [format!("{base}-0").as_str(), "mine-1", &format!("{base}-2")]
        );
        assert!(ids.iter().all(|id| EventId::parse(id).is_ok()), "{ids:?}");
        let regions: Vec<&str> = out.iter().map(|e| e.region.as_deref().unwrap()).collect();
        assert_eq!(regions, ["europe", "europe", "asia"]);
    }

    #[test]
    fn ids_carry_at_least_64_random_bits_within_the_id_rules() {
        let base = event_id_base([7; 16]);
        assert_eq!(base.len(), 1 + 32);
        let id = answer_id([9; 12]);
        assert_eq!(id.len(), 1 + 24);
        assert!(id.len() <= contract::events::MAX_SHOWN_ID_LEN);
        assert_ne!(event_id_base([1; 16]), event_id_base([2; 16]));
        assert!(EventId::parse(&format!("{base}-499")).is_ok());
    }

    #[test]
    fn writes_carry_the_bearer_and_the_client_but_never_an_ip() {
        let h = write_headers(Some("tok"), Some("0123456789abcdef"), Some("00-x".into()));
        assert_eq!(
            h,
            vec![
                ("Authorization", "Bearer tok".to_string()),
                (EDGE_CLIENT_HEADER, "0123456789abcdef".to_string()),
                ("traceparent", "00-x".to_string()),
            ]
        );
        assert!(contract::auth::check_bearer(Some(&h[0].1), Some("tok")).is_ok());
        assert!(write_headers(None, None, None).is_empty());
    }

    #[test]
    fn a_tenant_key_is_forwarded_only_in_its_shape() {
        let key = format!("pk_{}", "0a".repeat(32));
        assert_eq!(tenant_key(None), Ok(None));
        assert_eq!(tenant_key(Some(&format!(" {key} "))), Ok(Some(key.clone())));
        for bad in ["", "pk_short", "Bearer x", &key.to_uppercase()] {
            let e = tenant_key(Some(bad)).unwrap_err();
            assert_eq!((e.status(), e.code()), (401, "invalid_key"), "{bad}");
        }
    }
}
