//! Coverwatch's HTTP API and the `coverwatch` binary: settings, the axum
//! application (routes, extractors, authentication, errors, OpenAPI,
//! idempotency, rate limits) and its start-up, the command line, and the
//! developer tools (`devtools`: the local PostgreSQL of the embedded
//! default, benchmarks). Everything else is the application layer's
//! (`coverwatch-commands`) and the read models' (`coverwatch-projections`).

pub mod auth;
pub mod cli;
pub mod database;
pub mod devtools;
pub mod error;
pub mod extract;
pub mod idempotency;
pub mod input;
pub mod openapi;
pub mod rate_limit;
pub mod routes;
pub mod settings;
pub mod startup;
pub mod state;
pub mod streaming;
pub mod suspension;
pub mod telemetry;

pub use settings::Settings;
pub use startup::Application;
