//! The client behind a request, as the edge names it to its rate limiter and to the
//! origin: a key of 16 hex digits, a keyed hash (SipHash-1-3) of the client's IP —
//! for IPv6 its /64 network, which one subscriber holds — never the address itself.
//! The hash key comes from `ADMIN_TOKEN`, which every edge of a deployment shares, so
//! a client has one key at every edge and the origin can count per client; without the
//! token the key is fixed (still no raw IP, but guessable by trying addresses).
//!
//! Also the rate-limit answer's `Retry-After`: Cloudflare's limiter counts in fixed
//! windows of `period_s`, so a refused client may retry when the current one ends.

use std::hash::Hasher;
use std::net::IpAddr;

use siphasher::sip::SipHasher13;

/// Name of the rate limiting binding (`[[ratelimits]]` in `wrangler.toml`) that limits
/// `POST /v1/events` per client; without it the route is not limited.
pub const EVENTS_LIMITER_BINDING: &str = "EVENTS_LIMITER";

/// Name of the rate limiting binding that limits `POST /v1/events` per tenant key
/// (`X-Tenant-Key`), so one tenant's clients together cannot flood it; without it
/// only the per-client limit applies.
pub const TENANT_EVENTS_LIMITER_BINDING: &str = "TENANT_EVENTS_LIMITER";

/// The bytes that identify a client: the IPv4 address, or the IPv6 /64 prefix
/// (an IPv4-mapped IPv6 address counts as its IPv4 address).
fn client_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.octets().to_vec(),
            None => v6.octets()[..8].to_vec(),
        },
    }
}

/// The hash keys derived from the deployment's secret.
pub fn hash_keys(secret: Option<&str>) -> (u64, u64) {
    let Some(secret) = secret else {
        return (0, 0);
    };
    let derive = |salt: u64| {
        let mut h = SipHasher13::new_with_keys(salt, !salt);
        h.write(secret.as_bytes());
        h.finish()
    };
    (derive(0x6564_6765_2d63_6c69), derive(0x656e_742d_6b65_7931))
}

/// The client key of `ip` (`None`: the client could not be told apart, one shared key).
pub fn client_key(ip: Option<IpAddr>, keys: (u64, u64)) -> String {
    let mut h = SipHasher13::new_with_keys(keys.0, keys.1);
    match ip {
        Some(ip) => h.write(&client_bytes(ip)),
        None => h.write(b"unknown client"),
    }
    format!("{:016x}", h.finish())
}

/// The rate limiter's key of a tenant key: `tk` and a keyed hash (the key itself never
/// leaves the request).
pub fn tenant_limit_key(tenant_key: &str, keys: (u64, u64)) -> String {
    let mut h = SipHasher13::new_with_keys(keys.0, keys.1);
    h.write(b"tenant key:");
    h.write(tenant_key.as_bytes());
    format!("tk{:016x}", h.finish())
}

/// Seconds until the current rate-limit window of `period_s` ends (1 to `period_s`).
pub fn retry_after_s(now_s: u64, period_s: u64) -> u64 {
    let period_s = period_s.max(1);
    period_s - now_s % period_s
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(ip: &str, secret: Option<&str>) -> String {
        client_key(Some(ip.parse().unwrap()), hash_keys(secret))
    }

    #[test]
    fn a_client_key_is_16_hex_digits_and_never_shows_the_ip() {
        let k = key("203.0.113.7", Some("s"));
        assert_eq!(k.len(), 16);
        assert!(k.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(k, key("203.0.113.7", Some("s")), "stable for a client");
    }

    #[test]
    fn a_tenant_keys_limit_key_is_a_hash_apart_from_client_keys() {
        let keys = hash_keys(Some("s"));
        let a = tenant_limit_key(&format!("pk_{}", "0a".repeat(32)), keys);
        assert_eq!(a.len(), 2 + 16);
        assert!(a.starts_with("tk") && !a.contains("0a0a"));
        assert_ne!(
            a,
            tenant_limit_key(&format!("pk_{}", "0b".repeat(32)), keys)
        );
        assert_eq!(
            a,
            tenant_limit_key(&format!("pk_{}", "0a".repeat(32)), keys)
        );
    }

    #[test]
    fn clients_differ_and_the_secret_changes_every_key() {
        assert_ne!(key("203.0.113.7", Some("s")), key("203.0.113.8", Some("s")));
        assert_ne!(key("203.0.113.7", Some("s")), key("203.0.113.7", Some("t")));
        assert_ne!(key("203.0.113.7", Some("s")), key("203.0.113.7", None));
    }

    #[test]
    fn an_ipv6_subscriber_is_one_client_across_its_64() {
        assert_eq!(
            key("2001:db8:1:2::1", Some("s")),
            key("2001:db8:1:2:ffff::9", Some("s"))
        );
        assert_ne!(
            key("2001:db8:1:2::1", Some("s")),
            key("2001:db8:1:3::1", Some("s"))
        );
        assert_eq!(
            key("::ffff:203.0.113.7", Some("s")),
            key("203.0.113.7", Some("s"))
        );
    }

    #[test]
    fn retry_after_runs_to_the_end_of_the_window() {
        assert_eq!(retry_after_s(120, 60), 60);
        assert_eq!(retry_after_s(121, 60), 59);
        assert_eq!(retry_after_s(179, 60), 1);
        assert_eq!(retry_after_s(5, 10), 5);
    }

    proptest! {
        #[test]
        fn retry_after_is_within_one_window(now in 0u64..u64::MAX / 2, period in 1u64..=3600) {
            let r = retry_after_s(now, period);
            prop_assert!((1..=period).contains(&r));
            prop_assert_eq!((now + r) % period, 0);
        }
    }
}
