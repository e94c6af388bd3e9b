//! The CTID security-stack mappings (AWS and GCP controls → ATT&CK
//! techniques). Derived detections take their techniques from a control's
//! `detect` mappings, scored minimal 0.3, partial 0.6, significant 0.9.

use super::catalog::AttackCatalog;
use super::technique::{Confidence, TechniqueId};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::LazyLock;

#[derive(Debug, Deserialize)]
struct Mapping {
    technique: String,
    category: String,
    value: String,
}

#[derive(Debug, Deserialize)]
struct Control {
    platform: String,
    id: String,
    mappable: bool,
    mappings: Vec<Mapping>,
}

#[derive(Debug, Deserialize)]
struct PlatformVersion {
    mapping_framework_version: String,
}

#[derive(Debug, Deserialize)]
struct File {
    attack_version: String,
    platforms: BTreeMap<String, PlatformVersion>,
    controls: Vec<Control>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MappedTechnique {
    pub technique: TechniqueId,
    pub confidence: Confidence,
}

pub struct CtidMappings {
    file: File,
}

static MAPPINGS: LazyLock<CtidMappings> = LazyLock::new(|| CtidMappings {
    file: serde_json::from_str(include_str!("../../data/attack/ctid-security-stack-mappings.json"))
        .expect("the shipped CTID mappings parse"),
});

pub fn ctid_mappings() -> &'static CtidMappings {
    &MAPPINGS
}

impl CtidMappings {
    /// `ctid-aws-12/12/2024 (ATT&CK 16.1)`: recorded with derived detections.
    pub fn version(&self, platform: &str) -> String {
        let framework = self
            .file
            .platforms
            .get(platform)
            .map(|p| p.mapping_framework_version.as_str())
            .unwrap_or("unknown");
        format!("ctid-{platform}-{framework} (ATT&CK {})", self.file.attack_version)
    }

    /// A control's detect techniques that exist in `catalog`, the best score
    /// per technique. An unknown or non-mappable control has none.
    pub fn detect(&self, platform: &str, control_id: &str, catalog: &AttackCatalog) -> Vec<MappedTechnique> {
        let mut best: BTreeMap<TechniqueId, f64> = BTreeMap::new();
        let Some(control) = self
            .file
            .controls
            .iter()
            .find(|c| c.platform == platform && c.id == control_id && c.mappable)
        else {
            return vec![];
        };
        for mapping in control.mappings.iter().filter(|m| m.category == "detect") {
            let score = match mapping.value.as_str() {
                "minimal" => 0.3,
                "partial" => 0.6,
                "significant" => 0.9,
                _ => continue,
            };
            let Ok(id) = TechniqueId::parse(&mapping.technique) else {
                continue;
            };
            if catalog.get(&id).is_none() {
                continue;
            }
            let entry = best.entry(id).or_insert(score);
            *entry = entry.max(score);
        }
        best.into_iter()
            .map(|(technique, score)| MappedTechnique {
                technique,
                confidence: Confidence::parse(score).expect("a CTID score is in [0, 1]"),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attack::latest;

    #[test]
    fn guardduty_detects_with_ctid_scores_and_cloudtrail_is_not_mappable() {
        let mappings = ctid_mappings();
        let guardduty = mappings.detect("aws", "amazon_guardduty", latest());
        assert!(!guardduty.is_empty());
        assert!(
            guardduty
                .iter()
                .all(|m| [0.3, 0.6, 0.9].contains(&m.confidence.value()))
        );
        // GuardDuty's T1020 detect mapping is partial (the data's first row).
        let t1020 = guardduty.iter().find(|m| m.technique.as_str() == "T1020").unwrap();
        assert_eq!(t1020.confidence.value(), 0.6);
        assert!(mappings.detect("aws", "aws_cloudtrail", latest()).is_empty());
        assert!(mappings.detect("aws", "no_such_control", latest()).is_empty());
        assert_eq!(mappings.version("aws"), "ctid-aws-12/12/2024 (ATT&CK 16.1)");
    }
}
