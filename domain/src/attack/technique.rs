//! Technique ids (`T1234`, `T1234.001`) and detection confidences in [0, 1].

use serde::{Deserialize, Serialize};
use std::fmt;

/// A technique counts as covered at this confidence or above.
pub const COVERED_AT: f64 = 0.6;

/// `T` and four digits, optionally `.` and three (a sub-technique).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TechniqueId(String);

impl TechniqueId {
    pub fn parse(input: &str) -> Result<Self, String> {
        let valid = |digits: &str, n: usize| digits.len() == n && digits.bytes().all(|b| b.is_ascii_digit());
        let ok = match input.strip_prefix('T') {
            Some(rest) => match rest.split_once('.') {
                None => valid(rest, 4),
                Some((technique, sub)) => valid(technique, 4) && valid(sub, 3),
            },
            None => false,
        };
        if ok {
            Ok(Self(input.to_owned()))
        } else {
            Err(format!("{input:?} is not an ATT&CK technique id (T1234 or T1234.001)"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `T1234` for `T1234.001`; None for a technique.
    pub fn parent(&self) -> Option<&str> {
        self.0.split_once('.').map(|(parent, _)| parent)
    }
}

impl TryFrom<String> for TechniqueId {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<TechniqueId> for String {
    fn from(value: TechniqueId) -> Self {
        value.0
    }
}

impl fmt::Display for TechniqueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How much a detection covers a technique, in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Confidence(f64);

impl Eq for Confidence {}

impl Confidence {
    pub fn parse(value: f64) -> Result<Self, String> {
        if (0.0..=1.0).contains(&value) {
            Ok(Self(value))
        } else {
            Err(format!("confidence {value} is outside [0, 1]"))
        }
    }

    pub fn value(self) -> f64 {
        self.0
    }

    /// Whether it counts towards coverage (≥ 0.6).
    pub fn covers(self) -> bool {
        self.0 >= COVERED_AT
    }
}

impl TryFrom<f64> for Confidence {
    type Error = String;
    fn try_from(value: f64) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl From<Confidence> for f64 {
    fn from(value: Confidence) -> Self {
        value.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn technique_ids_are_parsed() {
        assert!(TechniqueId::parse("T1078").is_ok());
        assert_eq!(TechniqueId::parse("T1078.004").unwrap().parent(), Some("T1078"));
        for bad in [
            "",
            "T107",
            "T10788",
            "t1078",
            "T1078.04",
            "T1078.0041",
            "T1078.",
            "1078",
            "T1O78",
        ] {
            assert!(TechniqueId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn confidence_is_bounded_and_covers_from_exactly_six_tenths() {
        assert!(Confidence::parse(-0.01).is_err());
        assert!(Confidence::parse(1.01).is_err());
        assert!(Confidence::parse(f64::NAN).is_err());
        assert!(Confidence::parse(0.6).unwrap().covers());
        assert!(!Confidence::parse(0.599_999).unwrap().covers());
        assert!(Confidence::parse(1.0).unwrap().covers());
        assert!(!Confidence::parse(0.0).unwrap().covers());
    }
}
