//! API keys of a tenant: what they look like, how they are drawn, hashed and checked.
//!
//! A key is a prefix naming its kind (`pk_` for the public client key, `sk_` for the
//! secret server key) and 256 random bits from the operating system, as 64 lowercase
//! hex digits. Nothing in a key depends on its tenant. The registry stores only a key's
//! SHA-256 (enough for a key of this entropy: nobody can guess a preimage), a short
//! hint to tell keys apart in listings, and when it stops being valid. A key is shown
//! once, when it is issued.
//!
//! Pure: the time is passed in (unix seconds), the random source too.

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use thiserror::Error;

/// Random bytes in a key (256 bits).
pub const KEY_BYTES: usize = 32;
/// Hex digits of a key after its prefix.
pub const KEY_HEX_LEN: usize = KEY_BYTES * 2;
/// Hex digits of the key kept in the hint (after the prefix): 24 of the 256 bits.
pub const HINT_HEX_LEN: usize = 6;
/// How long the replaced key stays valid after a rotation, unless told otherwise.
pub const DEFAULT_OVERLAP_S: u64 = 24 * 3600;
/// The longest overlap a rotation may give the replaced key (30 days).
pub const MAX_OVERLAP_S: u64 = 30 * 24 * 3600;

/// The two kinds of key a tenant has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    /// The public client key (`pk_…`): may sit in a web page; sends events and reads
    /// recommendations of its tenant.
    Client,
    /// The secret server key (`sk_…`): catalogue, bulk import, the tenant's settings
    /// and analytics. Kept on servers.
    Server,
}

/// A key kind that is not `client` or `server`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("key kind must be `client` or `server`, not {0:?}")]
pub struct UnknownKeyKind(pub String);

impl KeyKind {
    pub const ALL: [KeyKind; 2] = [KeyKind::Client, KeyKind::Server];

    /// The kind's name in URLs, flags and storage.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Client => "client",
            KeyKind::Server => "server",
        }
    }

    /// The prefix every key of this kind starts with.
    pub fn prefix(self) -> &'static str {
        match self {
            KeyKind::Client => "pk_",
            KeyKind::Server => "sk_",
        }
    }

    /// Parses a kind's name (`client`, `server`).
    pub fn parse(s: &str) -> Result<Self, UnknownKeyKind> {
        KeyKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownKeyKind(s.chars().take(40).collect()))
    }

    /// The kind of a well-formed key (its prefix and 64 lowercase hex digits); `None`
    /// for anything else, so a malformed key is refused without a lookup.
    pub fn of_key(key: &str) -> Option<Self> {
        if !contract::auth::is_tenant_key_shaped(key) {
            return None;
        }
        KeyKind::ALL
            .into_iter()
            .find(|k| key.starts_with(k.prefix()))
    }
}

impl std::fmt::Display for KeyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for KeyKind {
    type Err = UnknownKeyKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeyKind::parse(s)
    }
}

/// A key in clear: only ever held between issuing it and showing it once. Its `Debug`
/// is redacted so it cannot end up in a log by accident; it serializes as the key
/// (for the one answer that shows it).
#[derive(Clone, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct PlainKey(String);

impl PlainKey {
    /// The key itself, to show it once.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for PlainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PlainKey(***)")
    }
}

/// The SHA-256 of a key: what the registry stores and looks keys up by.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash([u8; 32]);

/// `bytes` as lowercase hex digits.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

/// A stored hash that is not 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("a stored key hash is not 64 hex digits")]
pub struct BadKeyHash;

impl KeyHash {
    /// The hash of `key` (any string; a malformed key simply matches nothing).
    pub fn of(key: &str) -> Self {
        let digest = Sha256::digest(key.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(&digest);
        KeyHash(out)
    }

    /// Lowercase hex, as stored.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// Reads a stored hash.
    pub fn from_hex(s: &str) -> Result<Self, BadKeyHash> {
        let bytes = s.as_bytes();
        if bytes.len() != 64 {
            return Err(BadKeyHash);
        }
        let nibble = |c: u8| match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            _ => Err(BadKeyHash),
        };
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
        }
        Ok(KeyHash(out))
    }

    /// Equality in constant time.
    pub fn matches(&self, other: &KeyHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl std::fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyHash({}…)", &self.to_hex()[..8])
    }
}

/// What the registry keeps of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub kind: KeyKind,
    pub hash: KeyHash,
    /// The prefix and the first [`HINT_HEX_LEN`] digits, e.g. `pk_3f9a0c`: enough to
    /// tell keys apart, far too little to guess one.
    pub hint: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix second from which the key is refused; `None`: valid until rotated.
    pub expires_at: Option<i64>,
}

impl KeyRecord {
    /// Whether the key is accepted at `now` (unix seconds).
    pub fn valid_at(&self, now: i64) -> bool {
        self.expires_at.is_none_or(|until| now < until)
    }
}

/// A new key of `kind` with randomness from `rng`, and its record (issued at `now`,
/// valid until rotated).
pub fn generate(
    kind: KeyKind,
    rng: &mut impl RngCore,
    now: i64,
) -> Result<(PlainKey, KeyRecord), rand::Error> {
    let mut bytes = [0u8; KEY_BYTES];
    rng.try_fill_bytes(&mut bytes)?;
    let digits = hex(&bytes);
    let key = format!("{}{digits}", kind.prefix());
    let record = KeyRecord {
        kind,
        hash: KeyHash::of(&key),
        hint: format!("{}{}", kind.prefix(), &digits[..HINT_HEX_LEN]),
        created_at: now,
        expires_at: None,
    };
    Ok((PlainKey(key), record))
}

/// When the keys a rotation at `now` replaces stop being valid: `overlap_s` later.
/// A key already due to expire sooner keeps its earlier deadline (the registry applies
/// `min`).
pub fn overlap_deadline(now: i64, overlap_s: u64) -> i64 {
    now.saturating_add(i64::try_from(overlap_s).unwrap_or(i64::MAX))
}

/// Whether `given` is the key `record` describes and is valid at `now`: the kind from
/// the prefix, the hash compared in constant time, then the deadline.
pub fn accepts(record: &KeyRecord, given: &str, now: i64) -> bool {
    let Some(kind) = KeyKind::of_key(given) else {
        return false;
    };
    let same = KeyHash::of(given).matches(&record.hash);
    same && kind == record.kind && record.valid_at(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn rng(seed: u64) -> rand_chacha::ChaCha20Rng {
        rand_chacha::ChaCha20Rng::seed_from_u64(seed)
    }

    #[test]
    fn keys_carry_their_kind_prefix_and_256_random_bits() {
        let mut r = rng(1);
        let (client, record) = generate(KeyKind::Client, &mut r, 10).unwrap();
        let (server, _) = generate(KeyKind::Server, &mut r, 10).unwrap();
        assert!(client.expose().starts_with("pk_"));
        assert!(server.expose().starts_with("sk_"));
        assert_eq!(client.expose().len(), 3 + KEY_HEX_LEN);
        assert_eq!(KeyKind::of_key(client.expose()), Some(KeyKind::Client));
        assert_eq!(KeyKind::of_key(server.expose()), Some(KeyKind::Server));
        assert_eq!(record.hint, client.expose()[..3 + HINT_HEX_LEN]);
        assert_eq!(record.created_at, 10);
        assert_eq!(record.expires_at, None);
        assert_ne!(client.expose()[3..], server.expose()[3..]);
    }

    #[test]
    fn keys_from_the_operating_system_never_repeat() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let (key, _) = generate(KeyKind::Client, &mut rand::rngs::OsRng, 0).unwrap();
            assert!(seen.insert(key.expose().to_owned()));
        }
    }

    #[test]
    fn the_stored_hash_is_sha256_of_the_key_and_not_the_key() {
        let (key, record) = generate(KeyKind::Server, &mut rng(2), 0).unwrap();
        assert_eq!(record.hash, KeyHash::of(key.expose()));
        let hex = record.hash.to_hex();
        assert_eq!(KeyHash::from_hex(&hex), Ok(record.hash));
        assert!(!hex.contains(&key.expose()[3..]));
        // The SHA-256 of "abc" (FIPS 180-2 test vector).
        assert_eq!(
            KeyHash::of("abc").to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        for bad in ["", "zz", &"g".repeat(64), &"A".repeat(64)] {
            assert_eq!(KeyHash::from_hex(bad), Err(BadKeyHash), "{bad}");
        }
    }

    #[test]
    fn a_key_is_accepted_only_by_its_own_record() {
        let (key, record) = generate(KeyKind::Client, &mut rng(3), 0).unwrap();
        let (other, _) = generate(KeyKind::Client, &mut rng(4), 0).unwrap();
        assert!(accepts(&record, key.expose(), 5));
        assert!(!accepts(&record, other.expose(), 5));
        // The same digits under the other prefix are another key.
        let as_server = format!("sk_{}", &key.expose()[3..]);
        assert!(!accepts(&record, &as_server, 5));
        // Malformed keys: no lookup, no match.
        let upper = key.expose().to_uppercase();
        let truncated = &key.expose()[..20];
        let padded = format!("{} ", key.expose());
        for bad in ["", "pk_", upper.as_str(), truncated, padded.as_str()] {
            assert_eq!(KeyKind::of_key(bad), None, "{bad:?}");
            assert!(!accepts(&record, bad, 5), "{bad:?}");
        }
    }

    #[test]
    fn a_replaced_key_works_until_its_overlap_deadline_and_not_after() {
        let (key, mut record) = generate(KeyKind::Server, &mut rng(5), 1_000).unwrap();
        record.expires_at = Some(overlap_deadline(2_000, 3_600));
        assert!(accepts(&record, key.expose(), 2_000));
        assert!(accepts(&record, key.expose(), 5_599));
        assert!(!accepts(&record, key.expose(), 5_600));
        assert!(!accepts(&record, key.expose(), 9_000));
        // An overlap of zero ends the old key at once.
        record.expires_at = Some(overlap_deadline(2_000, 0));
        assert!(!accepts(&record, key.expose(), 2_000));
        assert_eq!(overlap_deadline(i64::MAX - 1, u64::MAX), i64::MAX);
    }

    #[test]
    fn kinds_parse_from_their_names_only() {
        assert_eq!(KeyKind::parse("client"), Ok(KeyKind::Client));
        assert_eq!(KeyKind::parse("server"), Ok(KeyKind::Server));
        for bad in ["", "Client", "public", "secret", "../client"] {
            assert!(KeyKind::parse(bad).is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn no_string_but_the_key_itself_is_accepted(given in "(pk_|sk_)?[0-9a-fA-F_\\PC]{0,80}") {
            let (key, record) = generate(KeyKind::Client, &mut rng(7), 0).unwrap();
            proptest::prop_assert_eq!(accepts(&record, &given, 1), given == key.expose());
            let _ = KeyHash::from_hex(&given);
        }

        #[test]
        fn a_well_formed_key_of_another_record_is_refused(given in "(pk|sk)_[0-9a-f]{64}") {
            let (_, record) = generate(KeyKind::Client, &mut rng(8), 0).unwrap();
            proptest::prop_assert!(KeyKind::of_key(&given).is_some());
            proptest::prop_assert!(!accepts(&record, &given, 1));
        }
    }

    #[test]
    fn a_key_never_shows_in_debug_output() {
        let (key, record) = generate(KeyKind::Server, &mut rng(6), 0).unwrap();
        let shown = format!("{key:?} {record:?}");
        assert!(!shown.contains(&key.expose()[3..]), "{shown}");
    }
}
