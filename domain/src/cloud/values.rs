//! Parsed cloud identifiers: AWS account ids, IAM role ARNs, regions, and the
//! small enumerations accounts and organizations are described with.

use crate::values::{InvalidValue, string_value};
use serde::{Deserialize, Serialize};
use std::fmt;

/// An AWS account id: exactly 12 digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AwsAccountId(String);
string_value!(AwsAccountId, "AwsAccountId");

impl AwsAccountId {
    pub fn parse(input: &str) -> Result<Self, InvalidValue> {
        if input.len() == 12 && input.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self(input.to_owned()))
        } else {
            Err(InvalidValue::new(
                "account_id",
                "an AWS account id is exactly 12 digits",
            ))
        }
    }
}

/// An IAM role ARN: `arn:<partition>:iam::<12 digits>:role/<path/name>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RoleArn(String);
string_value!(RoleArn, "RoleArn");

impl RoleArn {
    pub fn parse(input: &str) -> Result<Self, InvalidValue> {
        let invalid = || {
            InvalidValue::new(
                "role_arn",
                "must look like arn:aws:iam::123456789012:role/CoverwatchAudit",
            )
        };
        let parts: Vec<&str> = input.splitn(6, ':').collect();
        let [arn, partition, service, region, account, resource] = parts[..] else {
            return Err(invalid());
        };
        let partition_ok = ["aws", "aws-cn", "aws-us-gov"].contains(&partition);
        let name = resource.strip_prefix("role/").ok_or_else(invalid)?;
        let name_ok = !name.is_empty()
            && name.len() <= 512
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-/".contains(&b))
            && !name.ends_with('/');
        if arn != "arn" || !partition_ok || service != "iam" || !region.is_empty() || !name_ok {
            return Err(invalid());
        }
        AwsAccountId::parse(account).map_err(|_| invalid())?;
        Ok(Self(input.to_owned()))
    }

    /// The account the role lives in.
    pub fn account_id(&self) -> &str {
        self.0.split(':').nth(4).unwrap_or_default()
    }
}

/// An AWS region name such as `us-east-1` or `us-gov-west-1`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Region(String);
string_value!(Region, "Region");

impl Region {
    pub fn parse(input: &str) -> Result<Self, InvalidValue> {
        let parts: Vec<&str> = input.split('-').collect();
        let ok = (3..=4).contains(&parts.len())
            && parts[0].len() == 2
            && parts[..parts.len() - 1]
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
            && parts[parts.len() - 1].parse::<u8>().is_ok();
        if ok {
            Ok(Self(input.to_owned()))
        } else {
            Err(InvalidValue::new("region", "must be an AWS region such as us-east-1"))
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Environment {
    Production,
    Staging,
    Development,
}

impl Environment {
    pub fn parse(input: &str) -> Result<Self, InvalidValue> {
        match input {
            "production" => Ok(Self::Production),
            "staging" => Ok(Self::Staging),
            "development" => Ok(Self::Development),
            _ => Err(InvalidValue::new(
                "environment",
                "must be production, staging or development",
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Production => "production",
            Self::Staging => "staging",
            Self::Development => "development",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    Aws,
    Gcp,
}

impl Provider {
    pub fn parse(input: &str) -> Result<Self, InvalidValue> {
        match input {
            "aws" => Ok(Self::Aws),
            "gcp" => Ok(Self::Gcp),
            _ => Err(InvalidValue::new("provider", "must be aws or gcp")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Aws => "aws",
            Self::Gcp => "gcp",
        }
    }
}

/// Lets sets of account ids be searched with a plain `&str`.
impl std::borrow::Borrow<str> for AwsAccountId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_ids_are_twelve_digits() {
        assert!(AwsAccountId::parse("123456789012").is_ok());
        for bad in ["12345678901", "1234567890123", "12345678901a", "", " 123456789012"] {
            assert!(AwsAccountId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn role_arns_are_well_formed() {
        let arn = RoleArn::parse("arn:aws:iam::123456789012:role/audit/CoverwatchAudit").unwrap();
        assert_eq!(arn.account_id(), "123456789012");
        assert!(RoleArn::parse("arn:aws-us-gov:iam::123456789012:role/X").is_ok());
        for bad in [
            "arn:aws:iam::12345678901:role/X",
            "arn:aws:iam:us-east-1:123456789012:role/X",
            "arn:aws:s3:::bucket",
            "arn:aws:iam::123456789012:user/X",
            "arn:aws:iam::123456789012:role/",
            "arn:aws:iam::123456789012:role/has space",
            "not an arn",
        ] {
            assert!(RoleArn::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn regions_look_like_aws_regions() {
        for good in ["us-east-1", "eu-central-2", "us-gov-west-1", "ap-southeast-4"] {
            assert!(Region::parse(good).is_ok(), "{good}");
        }
        for bad in ["us-east", "US-EAST-1", "useast1", "u-east-1", "us--1"] {
            assert!(Region::parse(bad).is_err(), "{bad}");
        }
    }
}

/// Where an organization stands: derived from its last discovery and from
/// the connections of the members the tenant selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrganizationStatus {
    /// Registered; nothing discovered yet.
    #[default]
    Pending,
    Connected,
    Partial,
    Error,
}

impl OrganizationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Connected => "connected",
            Self::Partial => "partial",
            Self::Error => "error",
        }
    }
}
