//! An organization's hierarchy as one discovery run saw it, and the changes
//! between two runs (recorded as events, never a rewrite of state).

use serde::{Deserialize, Serialize};

/// An organizational unit with its materialized paths from the root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoveredOu {
    pub id: String,
    pub name: String,
    pub parent_id: String,
    /// Names from the root, e.g. `["Root", "Production", "Web"]`.
    pub path_names: Vec<String>,
    /// Ids from the root, the OU's own last.
    pub path_ids: Vec<String>,
}

/// A member account where discovery found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoveredAccount {
    pub id: String,
    pub name: String,
    pub email: String,
    /// AWS's status: ACTIVE, SUSPENDED, PENDING_CLOSURE, ...
    pub status: String,
    pub parent_id: String,
    /// The parent's path of names (the account sits under it).
    pub path_names: Vec<String>,
    pub path_ids: Vec<String>,
}

impl DiscoveredAccount {
    /// Suspended or closed accounts are recorded but cannot be connected.
    pub fn connectable(&self) -> bool {
        self.status == "ACTIVE"
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoveredHierarchy {
    pub root_id: String,
    pub ous: Vec<DiscoveredOu>,
    pub accounts: Vec<DiscoveredAccount>,
}

/// `Root/Production/Web`.
pub fn path(names: &[String]) -> String {
    names.join("/")
}
