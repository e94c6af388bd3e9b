//! The plan catalog: tiers, prices, Stripe price ids and entitlements, parsed
//! from the TOML file shipped in `domain/data/plans.toml` (or one named in
//! configuration), plus per-tenant overrides that win over the tier.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The catalog shipped with the project.
pub const DEFAULT_CATALOG: &str = include_str!("../data/plans.toml");

/// A subscription tier. `Subscriber` is retired: it is never sold, but tenants
/// migrated from it keep its limits for the legacy grace period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Tier {
    #[default]
    Free,
    Individual,
    Pro,
    Enterprise,
    Subscriber,
}

impl Tier {
    pub const ALL: [Tier; 5] = [
        Tier::Free,
        Tier::Individual,
        Tier::Pro,
        Tier::Enterprise,
        Tier::Subscriber,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Free => "FREE",
            Tier::Individual => "INDIVIDUAL",
            Tier::Pro => "PRO",
            Tier::Enterprise => "ENTERPRISE",
            Tier::Subscriber => "SUBSCRIBER",
        }
    }

    pub fn parse(input: &str) -> Option<Tier> {
        Tier::ALL.into_iter().find(|tier| tier.as_str() == input)
    }

    /// Order of the sold tiers, for "upgrade now, downgrade at period end".
    pub fn rank(self) -> u8 {
        match self {
            Tier::Free => 0,
            Tier::Individual => 1,
            Tier::Subscriber => 1,
            Tier::Pro => 2,
            Tier::Enterprise => 3,
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BillingCycle {
    Monthly,
    Annual,
}

/// A count limit: a number, or no limit at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "LimitRepr", into = "LimitRepr")]
pub enum Limit {
    AtMost(u64),
    Unlimited,
}

impl Limit {
    /// Whether `used` items leave room for `adding` more.
    pub fn allows(self, used: u64, adding: u64) -> bool {
        match self {
            Limit::AtMost(max) => used.saturating_add(adding) <= max,
            Limit::Unlimited => true,
        }
    }

    /// The number, or `None` when unlimited (how the API shows it).
    pub fn value(self) -> Option<u64> {
        match self {
            Limit::AtMost(max) => Some(max),
            Limit::Unlimited => None,
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum LimitRepr {
    Number(u64),
    Word(String),
}

impl TryFrom<LimitRepr> for Limit {
    type Error = String;
    fn try_from(value: LimitRepr) -> Result<Self, Self::Error> {
        match value {
            LimitRepr::Number(n) => Ok(Limit::AtMost(n)),
            LimitRepr::Word(w) if w == "unlimited" => Ok(Limit::Unlimited),
            LimitRepr::Word(w) => Err(format!("a limit is a number or \"unlimited\", not {w:?}")),
        }
    }
}

impl From<Limit> for LimitRepr {
    fn from(value: Limit) -> Self {
        match value {
            Limit::AtMost(n) => LimitRepr::Number(n),
            Limit::Unlimited => LimitRepr::Word("unlimited".into()),
        }
    }
}

/// A list price in cents, or sold by contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "LimitRepr", into = "LimitRepr")]
pub enum Price {
    Cents(u64),
    Custom,
}

impl TryFrom<LimitRepr> for Price {
    type Error = String;
    fn try_from(value: LimitRepr) -> Result<Self, Self::Error> {
        match value {
            LimitRepr::Number(n) => Ok(Price::Cents(n)),
            LimitRepr::Word(w) if w == "custom" => Ok(Price::Custom),
            LimitRepr::Word(w) => Err(format!("a price is cents or \"custom\", not {w:?}")),
        }
    }
}

impl From<Price> for LimitRepr {
    fn from(value: Price) -> Self {
        match value {
            Price::Cents(n) => LimitRepr::Number(n),
            Price::Custom => LimitRepr::Word("custom".into()),
        }
    }
}

/// What a tenant may do and hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entitlements {
    pub max_accounts: Limit,
    pub max_members: Limit,
    pub org_features: bool,
    pub history_retention_days: u32,
    pub api_rate_per_minute: u32,
    /// How often each connected account is scanned on schedule (hours);
    /// 0: on demand only.
    pub scan_interval_hours: u32,
}

/// A feature the tenant's tier lacks, with the cheapest tier that has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{feature} needs the {required_tier} tier or above")]
pub struct FeatureNotInPlan {
    pub feature: &'static str,
    pub required_tier: Tier,
}

/// The one rule for organization features (registering an organization,
/// discovering it, connecting its members, organization-scoped detections):
/// every aggregate and service that needs them asks here. `org_features` is
/// the tenant's entitlement now; `cheapest` the tier to name in a refusal.
pub fn require_org_features(org_features: bool, cheapest: Tier, feature: &'static str) -> Result<(), FeatureNotInPlan> {
    if org_features {
        Ok(())
    } else {
        Err(FeatureNotInPlan {
            feature,
            required_tier: cheapest,
        })
    }
}

/// Per-tenant exceptions set by the platform admin; each present field wins
/// over the tier's value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_accounts: Option<Limit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_members: Option<Limit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_retention_days: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_features: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_rate_per_minute: Option<u32>,
    /// A schedule of its own (0: on demand only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan_interval_hours: Option<u32>,
}

impl Overrides {
    pub fn apply(&self, base: Entitlements) -> Entitlements {
        Entitlements {
            max_accounts: self.max_accounts.unwrap_or(base.max_accounts),
            max_members: self.max_members.unwrap_or(base.max_members),
            org_features: self.org_features.unwrap_or(base.org_features),
            history_retention_days: self.history_retention_days.unwrap_or(base.history_retention_days),
            api_rate_per_minute: self.api_rate_per_minute.unwrap_or(base.api_rate_per_minute),
            scan_interval_hours: self.scan_interval_hours.unwrap_or(base.scan_interval_hours),
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == Overrides::default()
    }
}

/// One tier as the catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub id: Tier,
    pub name: String,
    #[serde(default)]
    pub retired: bool,
    pub monthly_price_cents: Price,
    pub annual_price_cents: Price,
    pub max_accounts: Limit,
    pub max_members: Limit,
    pub org_features: bool,
    pub history_retention_days: u32,
    pub api_rate_per_minute: u32,
    /// Scheduled scanning: every this many hours (0 or absent: none).
    #[serde(default)]
    pub scan_interval_hours: u32,
    #[serde(default)]
    pub stripe_price_monthly: Option<String>,
    #[serde(default)]
    pub stripe_price_annual: Option<String>,
}

impl Plan {
    pub fn entitlements(&self) -> Entitlements {
        Entitlements {
            max_accounts: self.max_accounts,
            max_members: self.max_members,
            org_features: self.org_features,
            history_retention_days: self.history_retention_days,
            api_rate_per_minute: self.api_rate_per_minute,
            scan_interval_hours: self.scan_interval_hours,
        }
    }

    pub fn stripe_price(&self, cycle: BillingCycle) -> Option<&str> {
        match cycle {
            BillingCycle::Monthly => self.stripe_price_monthly.as_deref(),
            BillingCycle::Annual => self.stripe_price_annual.as_deref(),
        }
    }

    /// Whether a tenant can buy this tier through checkout.
    pub fn purchasable(&self) -> bool {
        !self.retired && self.id != Tier::Free
    }
}

/// The whole catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanCatalog {
    pub version: u32,
    pub currency: String,
    pub legacy_grace_months: u32,
    pub past_due_grace_days: u32,
    pub tiers: Vec<Plan>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid plan catalog: {0}")]
pub struct CatalogError(String);

impl PlanCatalog {
    /// Parses and checks a catalog: every tier exactly once, FREE free, and a
    /// Stripe price for every cycle of every purchasable tier.
    pub fn parse(toml_text: &str) -> Result<Self, CatalogError> {
        let catalog: PlanCatalog = toml::from_str(toml_text).map_err(|e| CatalogError(e.to_string()))?;
        for tier in Tier::ALL {
            let count = catalog.tiers.iter().filter(|plan| plan.id == tier).count();
            if count != 1 {
                return Err(CatalogError(format!(
                    "tier {tier} must appear exactly once, not {count} times"
                )));
            }
        }
        let free = catalog.plan(Tier::Free);
        if free.monthly_price_cents != Price::Cents(0) || free.retired {
            return Err(CatalogError("FREE must cost nothing and not be retired".into()));
        }
        if !catalog.plan(Tier::Subscriber).retired {
            return Err(CatalogError("SUBSCRIBER is a retired tier".into()));
        }
        for plan in catalog.tiers.iter().filter(|plan| plan.purchasable()) {
            for cycle in [BillingCycle::Monthly, BillingCycle::Annual] {
                if plan.stripe_price(cycle).is_none_or(str::is_empty) {
                    return Err(CatalogError(format!("{} has no Stripe price for {cycle:?}", plan.id)));
                }
            }
        }
        Ok(catalog)
    }

    pub fn shipped() -> Self {
        Self::parse(DEFAULT_CATALOG).expect("the shipped plan catalog is valid")
    }

    pub fn plan(&self, tier: Tier) -> &Plan {
        self.tiers
            .iter()
            .find(|plan| plan.id == tier)
            .expect("parse checked every tier is present")
    }

    /// The tier and cycle a Stripe price id sells, if any.
    pub fn tier_for_price(&self, price_id: &str) -> Option<(Tier, BillingCycle)> {
        self.tiers.iter().find_map(|plan| {
            [BillingCycle::Monthly, BillingCycle::Annual]
                .into_iter()
                .find(|cycle| plan.stripe_price(*cycle) == Some(price_id))
                .map(|cycle| (plan.id, cycle))
        })
    }

    /// The cheapest sold tier whose entitlements include organization features.
    pub fn cheapest_with_org_features(&self) -> Tier {
        self.tiers
            .iter()
            .filter(|plan| !plan.retired && plan.org_features)
            .min_by_key(|plan| plan.id.rank())
            .map(|plan| plan.id)
            .unwrap_or(Tier::Enterprise)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_catalog_has_the_documented_tiers() {
        let catalog = PlanCatalog::shipped();
        let free = catalog.plan(Tier::Free).entitlements();
        assert_eq!(free.max_accounts, Limit::AtMost(1));
        assert_eq!(free.max_members, Limit::AtMost(1));
        assert!(!free.org_features);
        assert_eq!(free.history_retention_days, 30);
        let individual = catalog.plan(Tier::Individual);
        assert_eq!(individual.monthly_price_cents, Price::Cents(2900));
        assert_eq!(
            (individual.max_accounts, individual.max_members),
            (Limit::AtMost(6), Limit::AtMost(3))
        );
        let pro = catalog.plan(Tier::Pro);
        assert_eq!(pro.monthly_price_cents, Price::Cents(25000));
        assert_eq!(
            (pro.max_accounts, pro.max_members),
            (Limit::AtMost(500), Limit::AtMost(20))
        );
        assert!(pro.org_features);
        assert_eq!(pro.history_retention_days, 365);
        let enterprise = catalog.plan(Tier::Enterprise);
        assert_eq!(enterprise.max_accounts, Limit::Unlimited);
        assert_eq!(enterprise.monthly_price_cents, Price::Custom);
        assert_eq!(enterprise.history_retention_days, 7 * 365);
        assert_eq!(
            catalog.tier_for_price("price_pro_annual"),
            Some((Tier::Pro, BillingCycle::Annual))
        );
        assert_eq!(catalog.cheapest_with_org_features(), Tier::Pro);
    }

    #[test]
    fn a_catalog_missing_a_tier_or_a_price_is_refused() {
        let without_pro = DEFAULT_CATALOG.replace("id = \"PRO\"", "id = \"FREE\"");
        assert!(
            PlanCatalog::parse(&without_pro)
                .unwrap_err()
                .to_string()
                .contains("exactly once")
        );
        let without_price = DEFAULT_CATALOG.replace("stripe_price_annual = \"price_pro_annual\"", "");
        assert!(
            PlanCatalog::parse(&without_price)
                .unwrap_err()
                .to_string()
                .contains("Stripe price")
        );
        assert!(PlanCatalog::parse("max_accounts = \"lots\"").is_err());
    }

    #[test]
    fn overrides_win_over_the_tier() {
        let base = PlanCatalog::shipped().plan(Tier::Free).entitlements();
        let overrides = Overrides {
            max_members: Some(Limit::AtMost(12)),
            org_features: Some(true),
            ..Overrides::default()
        };
        let effective = overrides.apply(base);
        assert_eq!(effective.max_members, Limit::AtMost(12));
        assert!(effective.org_features);
        assert_eq!(effective.max_accounts, base.max_accounts);
    }
}
