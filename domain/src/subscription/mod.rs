//! The Subscription aggregate: one per tenant (its id is the tenant's), FREE
//! and active from the start; the tier, Stripe's view of the paid
//! subscription, scheduled changes, overrides and grace periods, and the
//! entitlements all of that grants at any instant.

mod aggregate;
mod model;
#[cfg(test)]
mod tests;

pub use aggregate::{BillingGateway, LegacyGrace, Subscription, SubscriptionServices, threshold_key};
pub use model::{
    InvoiceRecord, OverridesPatch, ScheduledChange, StripeChange, StripeFact, StripeSubscriptionState,
    SubscriptionCommand, SubscriptionError, SubscriptionEvent, SubscriptionStatus, Usage,
};
