//! The AccountInventory aggregate's one error enum.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InventoryError {
    #[error("this inventory belongs to another account")]
    OtherAccount,
    #[error("{0}")]
    Rule(String),
}
