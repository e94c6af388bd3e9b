//! The Subscription aggregate: one per tenant (its id is the tenant's), FREE
//! and active from the start; the tier, Stripe's view of the paid
//! subscription, scheduled changes, overrides and grace periods, and the
//! entitlements all of that grants at any instant. Layout as every
//! aggregate: `commands`, `events`, `error`, `state`, `aggregate`.

mod aggregate;
mod commands;
mod error;
mod events;
mod state;
#[cfg(test)]
mod tests;

pub use aggregate::{BillingGateway, SubscriptionServices};
pub use commands::{OverridesPatch, StripeChange, StripeFact, SubscriptionCommand, Usage};
pub use error::SubscriptionError;
pub use events::{InvoiceRecord, ScheduledChange, StripeSubscriptionState, SubscriptionEvent};
pub use state::{
    InvoiceReport, LegacyGrace, Rank, Subscription, SubscriptionReport, SubscriptionStatus, threshold_key,
};
