//! Coverwatch's HTTP API and command-line entry points: settings, the local
//! PostgreSQL used by default, the axum application and its routes.

pub mod auth;
pub mod bench;
pub mod cli;
pub mod coverage_history;
pub mod derived;
pub mod discovery;
pub mod error;
pub mod extract;
pub mod idempotency;
pub mod local_pg;
pub mod openapi;
pub mod routes;
pub mod settings;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod usage;

pub use settings::Settings;
pub use startup::Application;
