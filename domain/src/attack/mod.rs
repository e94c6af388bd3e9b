//! MITRE ATT&CK: the Enterprise catalog (versioned, so a newer release can be
//! shipped beside the old one), technique ids, confidences, platform sets (the
//! coverage denominator) and the CTID security-stack mappings that give
//! derived detections their techniques. Data and attribution: `domain/data/attack/`
//! and NOTICE.

mod catalog;
mod mappings;
mod set;
mod technique;

pub use catalog::{AttackCatalog, PlatformSet, Tactic, Technique, catalog, latest};
pub use mappings::{CtidMappings, MappedTechnique, ctid_mappings};
pub use set::TechniqueSet;
pub use technique::{COVERED_AT, Confidence, TechniqueId};
