//! The ATT&CK Enterprise catalog, one per shipped version, parsed once. The
//! coverage denominator is the catalog's techniques and sub-techniques for a
//! platform set (by default the cloud platforms).

use super::set::TechniqueSet;
use super::technique::TechniqueId;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::LazyLock;

#[derive(Debug, Clone, Deserialize)]
pub struct Tactic {
    pub id: String,
    pub shortname: String,
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Technique {
    pub id: TechniqueId,
    pub name: String,
    /// Tactic shortnames, in matrix order.
    pub tactics: Vec<String>,
    pub platforms: Vec<String>,
    pub is_subtechnique: bool,
}

#[derive(Debug, Deserialize)]
pub struct AttackCatalog {
    pub attack_version: String,
    pub domain: String,
    pub tactics: Vec<Tactic>,
    #[serde(deserialize_with = "by_id")]
    pub techniques: BTreeMap<TechniqueId, Technique>,
    /// Technique ids in order: a technique's index in a [`TechniqueSet`].
    #[serde(skip)]
    order: Vec<TechniqueId>,
    #[serde(skip)]
    index: HashMap<TechniqueId, usize>,
    /// The default denominator (the cloud platforms), computed once.
    #[serde(skip)]
    cloud: TechniqueSet,
}

fn by_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<TechniqueId, Technique>, D::Error> {
    let list: Vec<Technique> = Vec::deserialize(d)?;
    Ok(list.into_iter().map(|t| (t.id.clone(), t)).collect())
}

/// Shipped catalogs by version; the newest is the default.
static CATALOGS: LazyLock<BTreeMap<&'static str, AttackCatalog>> = LazyLock::new(|| {
    let shipped = [("18.1", include_str!("../../data/attack/enterprise-attack-18.1.json"))];
    shipped
        .into_iter()
        .map(|(version, json)| {
            let mut catalog: AttackCatalog = serde_json::from_str(json).expect("the shipped ATT&CK catalog parses");
            assert_eq!(catalog.attack_version, version);
            assert!(catalog.techniques.len() <= TechniqueSet::CAPACITY);
            catalog.order = catalog.techniques.keys().cloned().collect();
            catalog.index = catalog.order.iter().cloned().enumerate().map(|(i, t)| (t, i)).collect();
            catalog.cloud = catalog.denominator_set(&PlatformSet::cloud());
            (version, catalog)
        })
        .collect()
});

/// The catalog of one ATT&CK version, if shipped.
pub fn catalog(version: &str) -> Option<&'static AttackCatalog> {
    CATALOGS.get(version)
}

/// The newest shipped catalog.
pub fn latest() -> &'static AttackCatalog {
    CATALOGS.values().next_back().expect("a catalog is shipped")
}

/// The ATT&CK platforms a coverage figure counts over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformSet(BTreeSet<String>);

impl PlatformSet {
    pub const CLOUD: [&'static str; 4] = ["IaaS", "SaaS", "Office Suite", "Identity Provider"];

    pub fn cloud() -> Self {
        Self(Self::CLOUD.iter().map(|p| p.to_string()).collect())
    }

    /// A comma-separated list of the catalog's platform names.
    pub fn parse(input: &str, catalog: &AttackCatalog) -> Result<Self, String> {
        let known: BTreeSet<&str> = catalog
            .techniques
            .values()
            .flat_map(|t| t.platforms.iter().map(String::as_str))
            .collect();
        let mut set = BTreeSet::new();
        for name in input.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if !known.contains(name) {
                return Err(format!(
                    "unknown platform {name:?}; ATT&CK {} has {}",
                    catalog.attack_version,
                    known.into_iter().collect::<Vec<_>>().join(", ")
                ));
            }
            set.insert(name.to_owned());
        }
        if set.is_empty() {
            return Err("name at least one platform".into());
        }
        Ok(Self(set))
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
}

impl AttackCatalog {
    /// Techniques and sub-techniques on any of the platforms.
    pub fn denominator(&self, platforms: &PlatformSet) -> BTreeSet<&TechniqueId> {
        self.techniques
            .values()
            .filter(|t| t.platforms.iter().any(|p| platforms.0.contains(p)))
            .map(|t| &t.id)
            .collect()
    }

    pub fn get(&self, id: &TechniqueId) -> Option<&Technique> {
        self.techniques.get(id)
    }

    pub fn index_of(&self, id: &TechniqueId) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// The catalog's techniques among `ids` (others are left out).
    pub fn set_of<'a>(&self, ids: impl IntoIterator<Item = &'a TechniqueId>) -> TechniqueSet {
        let mut set = TechniqueSet::default();
        for index in ids.into_iter().filter_map(|id| self.index_of(id)) {
            set.insert(index);
        }
        set
    }

    pub fn id_at(&self, index: usize) -> Option<&TechniqueId> {
        self.order.get(index)
    }

    /// The ids of a set, in order.
    pub fn ids_of(&self, set: &TechniqueSet) -> Vec<&TechniqueId> {
        set.iter().filter_map(|i| self.id_at(i)).collect()
    }

    pub fn denominator_set(&self, platforms: &PlatformSet) -> TechniqueSet {
        self.set_of(self.denominator(platforms))
    }

    /// The default denominator: the cloud platforms' techniques.
    pub fn cloud_denominator(&self) -> &TechniqueSet {
        &self.cloud
    }

    /// The techniques of one tactic (by shortname).
    pub fn tactic_set(&self, shortname: &str) -> TechniqueSet {
        self.set_of(
            self.techniques
                .values()
                .filter(|t| t.tactics.iter().any(|s| s == shortname))
                .map(|t| &t.id),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_catalog_is_attack_18_1_with_its_counts() {
        let catalog = latest();
        assert_eq!(catalog.attack_version, "18.1");
        assert_eq!(catalog.tactics.len(), 14);
        assert_eq!(catalog.techniques.len(), 691);
        // The data's README: 151 entries list a cloud platform.
        assert_eq!(catalog.denominator(&PlatformSet::cloud()).len(), 151);
        assert_eq!(catalog.cloud_denominator().len(), 151);
        let iaas = PlatformSet::parse("IaaS", catalog).unwrap();
        assert_eq!(catalog.denominator(&iaas).len(), 104);
        assert!(PlatformSet::parse("Windows, Mainframe", catalog).is_err());
        assert!(PlatformSet::parse(" , ", catalog).is_err());
    }
}
