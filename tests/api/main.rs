//! Integration tests: the real server on a free port, against a real SQLite
//! file, and the same suite against PostgreSQL when
//! `CATALYNX_TEST_POSTGRES_URL` is set (CI sets it).

mod auth;
mod bench_routes;
mod cache;
mod faults;
mod foundation;
mod fuzz;
mod helpers;
mod hostile;
mod http;
mod import;
mod mutations;
mod n_plus_one;
mod operations;
mod playground;
mod queries;
mod replicas;
mod rest;
mod schema_file;
mod soak;
