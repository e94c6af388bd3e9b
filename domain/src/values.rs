//! Parsed domain values: built only through `parse`, so a value that exists is
//! valid. Serde goes through the same parsing (`try_from`).

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a value was refused; `field` names the input it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidValue {
    pub field: &'static str,
    pub message: String,
}

impl InvalidValue {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

macro_rules! string_value {
    ($name:ident, $field:literal) => {
        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl TryFrom<String> for $name {
            type Error = InvalidValue;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(&value)
            }
        }
        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }
    };
}

pub(crate) use string_value;

/// A tenant's URL-safe unique name: 3–63 chars of a-z, 0-9 and inner hyphens.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Slug(String);
string_value!(Slug, "slug");

impl Slug {
    pub fn parse(input: &str) -> Result<Self, InvalidValue> {
        let ok_chars = input
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !(3..=63).contains(&input.len()) {
            return Err(InvalidValue::new("slug", "must be 3 to 63 characters"));
        }
        if !ok_chars || input.starts_with('-') || input.ends_with('-') || input.contains("--") {
            return Err(InvalidValue::new(
                "slug",
                "only lowercase letters, digits and single inner hyphens are allowed",
            ));
        }
        Ok(Self(input.to_owned()))
    }
}

/// A display name: trimmed, 1–200 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Name(String);
string_value!(Name, "name");

impl Name {
    pub fn parse(input: &str) -> Result<Self, InvalidValue> {
        let trimmed = input.trim();
        if trimmed.is_empty() || trimmed.chars().count() > 200 {
            return Err(InvalidValue::new("name", "must be 1 to 200 characters"));
        }
        if trimmed.chars().any(char::is_control) {
            return Err(InvalidValue::new("name", "must not contain control characters"));
        }
        Ok(Self(trimmed.to_owned()))
    }
}

/// A short free-text attribute such as an industry or a company size band.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Label(String);
string_value!(Label, "label");

impl Label {
    pub fn parse(input: &str) -> Result<Self, InvalidValue> {
        let trimmed = input.trim();
        if trimmed.is_empty() || trimmed.chars().count() > 100 || trimmed.chars().any(char::is_control) {
            return Err(InvalidValue::new(
                "label",
                "must be 1 to 100 characters without control characters",
            ));
        }
        Ok(Self(trimmed.to_owned()))
    }
}

/// An e-mail address, lower-cased. Checks shape, not deliverability.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);
string_value!(Email, "email");

impl Email {
    pub fn parse(input: &str) -> Result<Self, InvalidValue> {
        let value = input.trim().to_lowercase();
        let invalid = || InvalidValue::new("email", "is not a valid e-mail address");
        if value.len() > 254 || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid());
        }
        let (local, domain) = value.split_once('@').ok_or_else(invalid)?;
        if local.is_empty()
            || local.len() > 64
            || domain.contains('@')
            || !domain.contains('.')
            || domain.starts_with('.')
            || domain.ends_with('.')
            || domain.contains("..")
        {
            return Err(invalid());
        }
        Ok(Self(value))
    }
}

/// A member's role. `Owner` is held by exactly one member and only moves by
/// ownership transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Owner,
    Admin,
    Analyst,
    ReadOnly,
    Auditor,
}

impl Role {
    pub fn parse(input: &str) -> Result<Self, InvalidValue> {
        match input {
            "owner" => Ok(Self::Owner),
            "admin" => Ok(Self::Admin),
            "analyst" => Ok(Self::Analyst),
            "read_only" => Ok(Self::ReadOnly),
            "auditor" => Ok(Self::Auditor),
            _ => Err(InvalidValue::new(
                "role",
                "must be one of owner, admin, analyst, read_only, auditor",
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::Admin => "admin",
            Self::Analyst => "analyst",
            Self::ReadOnly => "read_only",
            Self::Auditor => "auditor",
        }
    }

    /// Members and settings.
    pub fn can_administer(self) -> bool {
        matches!(self, Self::Owner | Self::Admin)
    }

    /// Registering and changing detections.
    pub fn can_manage_detections(self) -> bool {
        matches!(self, Self::Owner | Self::Admin | Self::Analyst)
    }

    /// The audit log and the history.
    pub fn can_read_audit(self) -> bool {
        matches!(self, Self::Owner | Self::Admin | Self::Auditor)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Serde helper for `Option<Option<T>>` fields: absent → `None` (with
/// `#[serde(default)]`), `null` → `Some(None)`, a value → `Some(Some(v))`.
/// Pair it with `skip_serializing_if = "Option::is_none"` so the three
/// states survive a round trip (a plain `Option<Option<T>>` writes both
/// `None` and `Some(None)` as `null`).
pub fn double_option<'de, T, D>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_lowercase_words_with_inner_hyphens() {
        assert!(Slug::parse("acme-corp-2").is_ok());
        for bad in [
            "ab",
            "Acme",
            "-acme",
            "acme-",
            "ac--me",
            "ac me",
            "acmé",
            &"a".repeat(64),
        ] {
            assert!(Slug::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn emails_are_lowercased_and_shape_checked() {
        assert_eq!(Email::parse(" Ann@Example.COM ").unwrap().as_str(), "ann@example.com");
        for bad in [
            "",
            "ann",
            "ann@",
            "@example.com",
            "ann@example",
            "a b@example.com",
            "ann@@example.com",
            "ann@example..com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(Name::parse("  Acme ").unwrap().as_str(), "Acme");
        assert!(Name::parse("   ").is_err());
        assert!(Name::parse(&"x".repeat(201)).is_err());
        assert!(Name::parse("bad\u{0}name").is_err());
    }

    #[test]
    fn serde_goes_through_parse() {
        assert!(serde_json::from_str::<Slug>("\"BAD\"").is_err());
        assert_eq!(serde_json::from_str::<Role>("\"read_only\"").unwrap(), Role::ReadOnly);
    }
}
