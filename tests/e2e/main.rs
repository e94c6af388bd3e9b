//! End-to-end tests: the real server on a real PostgreSQL (a database per
//! test, copied from a migrated template), driven over HTTP.

mod audit;
mod billing;
mod cloud;
mod coverage;
mod crash;
mod discovery;
mod errors;
mod event_log;
mod fuzz;
mod helpers;
mod idempotency;
mod isolation;
mod kafka;
mod members;
mod openapi;
mod privileges;
mod rate_limits;
mod read_models;
mod replay;
mod scanning;
mod stripe_fakes;
mod suspension;
mod tenants;
