//! Ids that end up in storage keys and CDN paths.
//!
//! Every user, item and tenant id is checked here before it is used to build a key
//! or a path, so that no request can escape its tenant's namespace (`/`, `..`), smuggle
//! control characters into logs or headers, or blow up key sizes.
//!
//! Rules:
//! - user and item ids: 1 to 128 bytes of `A-Z a-z 0-9 . _ @ -`, not starting with `.`
//!   and not containing `..`;
//! - tenants: 1 to 64 bytes of `a-z 0-9 _ -`, starting with a letter or digit.

use std::fmt;

use thiserror::Error;

/// Longest user or item id accepted.
pub const MAX_ID_LEN: usize = 128;
/// Longest tenant name accepted.
pub const MAX_TENANT_LEN: usize = 64;

/// Why an id was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IdError {
    #[error("{kind} is empty")]
    Empty { kind: &'static str },
    #[error("{kind} is {len} bytes long; at most {max} are allowed")]
    TooLong {
        kind: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{kind} has a character that is not allowed ({found:?} at byte {at}); allowed are {allowed}")]
    BadChar {
        kind: &'static str,
        found: char,
        at: usize,
        allowed: &'static str,
    },
    #[error("{kind} may not start with '.' or contain '..'")]
    DotSegment { kind: &'static str },
}

impl IdError {
    /// Stable error code for JSON error bodies, e.g. `invalid_user_id`.
    pub fn code(&self) -> &'static str {
        match self.kind() {
            "user id" => "invalid_user_id",
            "item id" => "invalid_item_id",
            "event id" => "invalid_event_id",
            _ => "invalid_tenant",
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            IdError::Empty { kind }
            | IdError::TooLong { kind, .. }
            | IdError::BadChar { kind, .. }
            | IdError::DotSegment { kind } => kind,
        }
    }
}

const ID_ALLOWED: &str = "A-Z a-z 0-9 . _ @ -";
const TENANT_ALLOWED: &str = "a-z 0-9 _ -";

fn check_id(kind: &'static str, s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if s.len() > MAX_ID_LEN {
        return Err(IdError::TooLong {
            kind,
            len: s.len(),
            max: MAX_ID_LEN,
        });
    }
    if let Some((at, found)) = s
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-')))
    {
        return Err(IdError::BadChar {
            kind,
            found,
            at,
            allowed: ID_ALLOWED,
        });
    }
    if s.starts_with('.') || s.contains("..") {
        return Err(IdError::DotSegment { kind });
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        /// Serde reads it through [`Self::parse`], so a deserialized id is a valid one.
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(&s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl $name {
            pub fn parse(s: &str) -> Result<Self, IdError> {
                check_id($kind, s)?;
                Ok($name(s.to_owned()))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// A validated user id, safe to put in keys and paths.
    UserId,
    "user id"
);
id_type!(
    /// A validated item id, safe to put in keys and paths.
    ItemId,
    "item id"
);
id_type!(
    /// A client's idempotency key for one event, unique per tenant in the event log:
    /// a retried or failed-over batch stores each event once. Same rules as user ids.
    EventId,
    "event id"
);

/// A validated tenant name; every key and path starts with it.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct Tenant(String);

impl TryFrom<String> for Tenant {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(&s)
    }
}

impl From<Tenant> for String {
    fn from(t: Tenant) -> String {
        t.0
    }
}

impl Tenant {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let kind = "tenant";
        if s.is_empty() {
            return Err(IdError::Empty { kind });
        }
        if s.len() > MAX_TENANT_LEN {
            return Err(IdError::TooLong {
                kind,
                len: s.len(),
                max: MAX_TENANT_LEN,
            });
        }
        if let Some((at, found)) = s
            .char_indices()
            .find(|&(_, c)| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'))
        {
            return Err(IdError::BadChar {
                kind,
                found,
                at,
                allowed: TENANT_ALLOWED,
            });
        }
        if !s.as_bytes()[0].is_ascii_alphanumeric() {
            return Err(IdError::BadChar {
                kind,
                found: s.as_bytes()[0] as char,
                at: 0,
                allowed: TENANT_ALLOWED,
            });
        }
        Ok(Tenant(s.to_owned()))
    }

    /// The tenant used when a request names none.
    pub fn default_tenant() -> Self {
        Tenant(crate::DEFAULT_TENANT.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ordinary_ids_are_accepted() {
        for ok in ["u1", "user-42", "a.b@example.com", "X_Y", "0"] {
            assert!(UserId::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn path_tricks_and_control_characters_are_refused() {
        for bad in [
            "a/b", "..", "../etc", "a..b", ".hidden", "a\nb", "a\u{0}b", "a b", "é", "a%2Fb", "",
        ] {
            assert!(UserId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn long_ids_are_refused_with_their_length() {
        let long = "a".repeat(1000);
        assert_eq!(
            UserId::parse(&long),
            Err(IdError::TooLong {
                kind: "user id",
                len: 1000,
                max: MAX_ID_LEN
            })
        );
        assert!(UserId::parse(&"a".repeat(MAX_ID_LEN)).is_ok());
    }

    #[test]
    fn tenants_are_lowercase_names() {
        assert!(Tenant::parse("default").is_ok());
        assert!(Tenant::parse("shop-1").is_ok());
        for bad in ["Shop", "-x", "a/b", "", "a.b"] {
            assert!(Tenant::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn deserializing_validates_and_serializing_is_a_plain_string() {
        let id: UserId = serde_json::from_str("\"u1\"").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"u1\"");
        assert!(serde_json::from_str::<UserId>("\"a/b\"").is_err());
        assert!(serde_json::from_str::<Tenant>("\"Shop\"").is_err());
    }

    #[test]
    fn error_codes_name_the_kind() {
        assert_eq!(UserId::parse("").unwrap_err().code(), "invalid_user_id");
        assert_eq!(ItemId::parse("").unwrap_err().code(), "invalid_item_id");
        assert_eq!(Tenant::parse("").unwrap_err().code(), "invalid_tenant");
    }

    proptest! {
        #[test]
        fn accepted_ids_never_hold_separators_or_dot_segments(s in "\\PC{0,200}") {
            if let Ok(id) = UserId::parse(&s) {
                prop_assert!(!id.as_str().contains('/'));
                prop_assert!(!id.as_str().contains(".."));
                prop_assert!(!id.as_str().starts_with('.'));
                prop_assert!(id.as_str().len() <= MAX_ID_LEN);
                prop_assert!(id.as_str().bytes().all(|b| b.is_ascii_graphic()));
            }
        }
    }
}
