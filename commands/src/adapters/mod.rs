//! Adapters to the outside world, each behind the narrow surface the rest of
//! the application uses: AWS (STS, Organizations, CloudTrail, Config) and
//! Stripe (API client, webhook signatures, lenient object models).

pub mod aws;
pub mod stripe;
