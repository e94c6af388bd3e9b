//! Typed identifiers for what crosses layers (route → service → command →
//! event → read model), so a member id is never passed where a tenant id
//! belongs. Each serializes as its UUID (`serde(transparent)`), so events
//! and snapshots written before these types existed read back unchanged;
//! with the `sqlx` feature each binds and decodes as a PostgreSQL `uuid`.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        #[cfg_attr(feature = "sqlx", derive(sqlx::Type), sqlx(transparent))]
        pub struct $name(Uuid);

        impl $name {
            /// A new, time-ordered (UUID v7) id: lists ordered by id are
            /// ordered by creation.
            pub fn generate() -> Self {
                Self(Uuid::now_v7())
            }

            pub const fn from_uuid(id: Uuid) -> Self {
                Self(id)
            }

            /// For fixtures: `TenantId::from_u128(1)`.
            pub const fn from_u128(value: u128) -> Self {
                Self(Uuid::from_u128(value))
            }

            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                Uuid::try_parse(text).map(Self)
            }
        }
    };
}

typed_id!(
    /// A tenant (the Tenant, Subscription and CloudAccounts aggregates live
    /// under it).
    TenantId
);
typed_id!(
    /// A member of a tenant.
    MemberId
);
typed_id!(
    /// An invitation to join a tenant.
    InvitationId
);
typed_id!(
    /// An API key (the id is part of the key, so it is found without a scan).
    ApiKeyId
);
typed_id!(
    /// A registered cloud organization (the CloudOrganization aggregate).
    OrganizationId
);
typed_id!(
    /// A detection (the Detection aggregate).
    DetectionId
);
typed_id!(
    /// One discovery run of an organization.
    RunId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_serializes_as_its_uuid_and_parses_back() {
        let id = TenantId::from_u128(7);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{}\"", Uuid::from_u128(7)));
        assert_eq!(serde_json::from_str::<TenantId>(&json).unwrap(), id);
        assert_eq!(id.to_string().parse::<TenantId>().unwrap(), id);
        assert!("not-a-uuid".parse::<TenantId>().is_err());
    }
}
