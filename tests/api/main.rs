//! Integration tests: the real server on a free port, against a real SQLite
//! file, and the same suite against PostgreSQL when
//! `CATALYNX_TEST_POSTGRES_URL` is set (CI sets it).

mod bench_routes;
mod cache;
mod foundation;
mod helpers;
mod mutations;
mod n_plus_one;
mod queries;
mod schema_file;
