//! Test-only crate: see e2e/.
