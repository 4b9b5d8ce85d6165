//! A tenant as data: its id (the contract's rules), display name and quotas.
//!
//! Quotas are stored and shown; nothing enforces them yet (issue #13's "Quotas and
//! abuse" section).

use contract::Tenant as TenantId;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Longest display name, in characters.
pub const MAX_NAME_CHARS: usize = 100;
/// Largest value any quota may take (fits the stores' signed 64-bit columns).
pub const MAX_QUOTA: u64 = 1_000_000_000_000;

/// A tenant of the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tenant {
    pub id: TenantId,
    pub name: DisplayName,
    pub quotas: Quotas,
    /// The model the tenant's recommendations train (`None`: the origin's `--model`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelSetting>,
    /// Unix seconds.
    pub created_at: i64,
}

/// Longest model setting, in bytes.
pub const MAX_MODEL_BYTES: usize = 1000;

/// A tenant's model: what `--model` accepts (a model name, a JSON spec, or `auto`),
/// checked when set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ModelSetting(String);

/// Why a model setting was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ModelError {
    #[error("the model setting is {0} bytes long; at most {MAX_MODEL_BYTES} are allowed")]
    TooLong(usize),
    #[error("the model setting is not a model: {0}")]
    NotAModel(String),
}

impl ModelSetting {
    pub fn parse(s: &str) -> Result<Self, ModelError> {
        let s = s.trim();
        if s.len() > MAX_MODEL_BYTES {
            return Err(ModelError::TooLong(s.len()));
        }
        s.parse::<crate::engine::ModelChoice>()
            .map_err(ModelError::NotAModel)?;
        Ok(ModelSetting(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The model to train.
    pub fn choice(&self) -> crate::engine::ModelChoice {
        // Checked when parsed.
        self.0.parse().unwrap_or_else(|_| {
            crate::engine::ModelChoice::Spec(crate::engine::ModelSpec::default_for(
                crate::engine::ModelKind::Hybrid,
            ))
        })
    }
}

/// A tenant's display name: 1 to [`MAX_NAME_CHARS`] printable characters, not only
/// spaces, without control characters or the invisible ones that reorder or hide
/// text (bidirectional overrides and isolates, zero-width characters, line and
/// paragraph separators, the byte-order mark).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct DisplayName(String);

/// Why a display name was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    #[error("the display name is empty")]
    Empty,
    #[error("the display name is {0} characters long; at most {MAX_NAME_CHARS} are allowed")]
    TooLong(usize),
    #[error("the display name has a character that is not printable (U+{0:04X})")]
    NotPrintable(u32),
}

/// Characters that are not `char::is_control` but still hide or reorder text.
fn invisible(c: char) -> bool {
    matches!(c,
        '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

impl DisplayName {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.trim().is_empty() {
            return Err(NameError::Empty);
        }
        let chars = s.chars().count();
        if chars > MAX_NAME_CHARS {
            return Err(NameError::TooLong(chars));
        }
        if let Some(c) = s.chars().find(|&c| c.is_control() || invisible(c)) {
            return Err(NameError::NotPrintable(u32::from(c)));
        }
        Ok(DisplayName(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A tenant's limits, with defaults for any left out. Stored and shown; not enforced
/// yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Quotas {
    /// Origin requests per second (a token bucket, when enforced).
    pub requests_per_second: u64,
    /// Events accepted per day.
    pub events_per_day: u64,
    /// Users stored, at most.
    pub max_users: u64,
    /// Items stored, at most.
    pub max_items: u64,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            requests_per_second: 100,
            events_per_day: 1_000_000,
            max_users: 1_000_000,
            max_items: 100_000,
        }
    }
}

/// A quota outside 1..=[`MAX_QUOTA`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("quota {name} must be from 1 to {MAX_QUOTA}, not {value}")]
pub struct QuotaError {
    pub name: &'static str,
    pub value: u64,
}

impl Quotas {
    /// The quotas by name, in a fixed order.
    pub fn named(&self) -> [(&'static str, u64); 4] {
        [
            ("requests_per_second", self.requests_per_second),
            ("events_per_day", self.events_per_day),
            ("max_users", self.max_users),
            ("max_items", self.max_items),
        ]
    }

    /// Every quota from 1 to [`MAX_QUOTA`].
    pub fn validate(&self) -> Result<(), QuotaError> {
        match self
            .named()
            .into_iter()
            .find(|&(_, v)| v == 0 || v > MAX_QUOTA)
        {
            Some((name, value)) => Err(QuotaError { name, value }),
            None => Ok(()),
        }
    }
}

/// What creating a tenant needs, checked by [`NewTenant::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTenant {
    pub id: TenantId,
    pub name: DisplayName,
    pub quotas: Quotas,
    /// The tenant's model (`None`: the origin's `--model`).
    pub model: Option<ModelSetting>,
}

/// Why a new tenant was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InvalidTenant {
    #[error(transparent)]
    Id(#[from] contract::IdError),
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    Quota(#[from] QuotaError),
    #[error(transparent)]
    Model(#[from] ModelError),
}

impl NewTenant {
    /// Checks an id, a display name (the id when `None`) and quotas.
    pub fn parse(id: &str, name: Option<&str>, quotas: Quotas) -> Result<Self, InvalidTenant> {
        let id = TenantId::parse(id)?;
        let name = DisplayName::parse(name.unwrap_or(id.as_str()))?;
        quotas.validate()?;
        Ok(NewTenant {
            id,
            name,
            quotas,
            model: None,
        })
    }
}

impl Tenant {
    /// A tenant created from `new` at `now` (unix seconds).
    pub fn created(new: NewTenant, now: i64) -> Self {
        Tenant {
            id: new.id,
            name: new.name,
            quotas: new.quotas,
            model: new.model,
            created_at: now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_id_follows_the_contract_and_escapes_are_refused() {
        assert!(NewTenant::parse("shop-1", None, Quotas::default()).is_ok());
        for bad in [
            "",
            "..",
            "a/b",
            "a%2Fb",
            "Shop",
            "-x",
            "a b",
            &"x".repeat(65),
        ] {
            assert!(
                matches!(
                    NewTenant::parse(bad, None, Quotas::default()),
                    Err(InvalidTenant::Id(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_display_name_defaults_to_the_id_and_must_be_printable() {
        let t = NewTenant::parse("books", None, Quotas::default()).unwrap();
        assert_eq!(t.name.as_str(), "books");
        assert!(DisplayName::parse("Bücher & Co. — Berlin").is_ok());
        assert_eq!(DisplayName::parse("   "), Err(NameError::Empty));
        assert_eq!(
            DisplayName::parse(&"é".repeat(101)),
            Err(NameError::TooLong(101))
        );
        assert!(DisplayName::parse(&"é".repeat(100)).is_ok());
        for bad in [
            "a\nb",
            "a\u{7}",
            "evil\u{202E}txt",
            "zero\u{200B}width",
            "\u{FEFF}x",
        ] {
            assert!(
                matches!(DisplayName::parse(bad), Err(NameError::NotPrintable(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn quotas_default_when_left_out_and_must_be_positive_and_bounded() {
        let q: Quotas = serde_json::from_str(r#"{"max_items": 5}"#).unwrap();
        assert_eq!(q.max_items, 5);
        assert_eq!(q.requests_per_second, Quotas::default().requests_per_second);
        assert!(serde_json::from_str::<Quotas>(r#"{"max_itemz": 5}"#).is_err());
        assert!(Quotas::default().validate().is_ok());
        let zero = Quotas {
            events_per_day: 0,
            ..Quotas::default()
        };
        assert_eq!(
            zero.validate(),
            Err(QuotaError {
                name: "events_per_day",
                value: 0
            })
        );
        let huge = Quotas {
            max_users: MAX_QUOTA + 1,
            ..Quotas::default()
        };
        assert!(huge.validate().is_err());
    }
}
