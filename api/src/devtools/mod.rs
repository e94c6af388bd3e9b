//! Developer tools of the `coverwatch` binary, outside the request path: the
//! local PostgreSQL cluster the embedded default provisions, and the
//! benchmark commands (each prints figures; none is a test).

pub mod bench;
pub mod local_pg;
