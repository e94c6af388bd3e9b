//! The coverage rules, pure so the projection and the tests share them: which
//! detections apply to an account (its own, plus its organization's whose
//! scope includes it), which techniques they cover (enabled, confidence ≥
//! 0.6), and the figures over a denominator (account-only, organization-only,
//! overlap; union and minimum over several accounts).

use super::{DetectionScope, DetectionStatus, Techniques};
use crate::attack::{TechniqueId, TechniqueSet};
use crate::ids::OrganizationId;

/// Whether a detection with `scope` applies to `account_id`, an account of
/// organization `organization` (None for a standalone account). Account
/// detections are `Own`; organization detections are `Inherited`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applies {
    Own,
    Inherited,
    No,
}

pub fn applies(scope: &DetectionScope, account_id: &str, organization: Option<OrganizationId>) -> Applies {
    match scope {
        DetectionScope::Account { account_id: own } if own.as_str() == account_id => Applies::Own,
        DetectionScope::Account { .. } => Applies::No,
        DetectionScope::Organization {
            organization_id,
            accounts,
        } if Some(*organization_id) == organization => match accounts {
            None => Applies::Inherited,
            Some(subset) if subset.contains(account_id) => Applies::Inherited,
            Some(_) => Applies::No,
        },
        DetectionScope::Organization { .. } => Applies::No,
    }
}

/// The techniques a detection covers: none unless enabled; those at ≥ 0.6.
pub fn covered(status: DetectionStatus, techniques: &Techniques) -> impl Iterator<Item = &TechniqueId> {
    techniques
        .iter()
        .filter(move |(_, confidence)| status == DetectionStatus::Enabled && confidence.covers())
        .map(|(technique, _)| technique)
}

/// One account's figures over a denominator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breakdown {
    pub covered: TechniqueSet,
    pub account_only: TechniqueSet,
    pub organization_only: TechniqueSet,
    pub overlap: TechniqueSet,
    pub denominator: usize,
}

impl Breakdown {
    /// `own`: covered by the account's detections; `inherited`: by its
    /// organization's. Only techniques in the denominator count.
    pub fn of(own: &TechniqueSet, inherited: &TechniqueSet, denominator: &TechniqueSet) -> Self {
        let (own, inherited) = (own.intersection(denominator), inherited.intersection(denominator));
        Self {
            covered: own.union(&inherited),
            account_only: own.difference(&inherited),
            organization_only: inherited.difference(&own),
            overlap: own.intersection(&inherited),
            denominator: denominator.len(),
        }
    }

    pub fn total(&self) -> f64 {
        ratio(self.covered.len(), self.denominator)
    }
}

/// Covered / denominator, 0 for an empty denominator.
pub fn ratio(covered: usize, denominator: usize) -> f64 {
    if denominator == 0 {
        0.0
    } else {
        covered as f64 / denominator as f64
    }
}

/// Union (covered in any account) and minimum (covered in every account).
pub fn union_and_minimum<'a>(accounts: impl IntoIterator<Item = &'a TechniqueSet>) -> (TechniqueSet, TechniqueSet) {
    let mut union = TechniqueSet::default();
    let mut minimum: Option<TechniqueSet> = None;
    for covered in accounts {
        union = union.union(covered);
        minimum = Some(match minimum {
            None => *covered,
            Some(so_far) => so_far.intersection(covered),
        });
    }
    (union, minimum.unwrap_or_default())
}
