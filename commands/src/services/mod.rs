//! Application services, one per aggregate: each looks up what a decision
//! needs (entitlements, the catalog, ids it chooses), builds the command and
//! executes it (with retry where a rule must see concurrent winners). HTTP
//! handlers call them; so do workflows.

pub mod billing;
pub mod cloud_accounts;
pub mod cloud_organizations;
pub mod detections;
pub mod tenants;

pub use billing::BillingService;
pub use cloud_accounts::CloudAccountService;
pub use cloud_organizations::CloudOrganizationService;
pub use detections::DetectionService;
pub use tenants::TenantService;
