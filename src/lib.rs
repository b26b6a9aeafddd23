//! Catalynx API: a GraphQL server for grant-research data.
//!
//! # Layout
//! - [`auth`]: API keys and roles; who may read, write and operate.
//! - [`availability`]: a probe that lets requests fail fast while PostgreSQL is down.
//! - [`cache`]: the resolver cache: compressed MessagePack, byte-bounded, invalidated by writes.
//! - [`config`]: the clap configuration; every flag has an environment variable.
//! - [`db`]: SQLite (default) and PostgreSQL pools, tuning, migrations, statement counter.
//! - [`domain`]: validated domain values (EIN, state, NTEE code, ...) and enumerations.
//! - [`error`]: the one `AppError` enum and the GraphQL error code of each variant.
//! - [`store`]: database access as plain `async fn`s (queries, keyset pages, bulk inserts).
//! - [`seed`]: deterministic demo data.
//! - [`import`]: streaming, batched imports of IRS EO BMF files and Catalynx data.
//! - [`export`]: every profile and opportunity as JSONL or CSV.
//! - [`graphql`]: the schema: one module per type, DataLoaders, limits.
//! - [`http`]: GraphQL over HTTP, persisted queries, caching headers, load shedding, playground, operator endpoints.
//! - [`rest`]: the seed platform's REST endpoints (`/api/profiles...`).
//! - [`metrics`]: Prometheus metrics.
//! - [`server`]: shared state, the router, graceful shutdown.

mod alloc;
pub mod auth;
pub mod availability;
pub mod cache;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod export;
pub mod graphql;
pub mod http;
pub mod import;
pub mod metrics;
pub mod rest;
pub mod seed;
pub mod server;
pub mod store;

use config::{Cli, Command, ImportCommand};
use db::Db;

/// Writes a command's output. `print!` panics when the reader is gone
/// (`| head`); this ends the command with an error instead.
fn print_out(text: impl std::fmt::Display) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    write!(out, "{text}")
        .and_then(|()| out.flush())
        .context("cannot write to standard output")
}

/// Runs one CLI command to completion.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let command = cli
        .command
        .unwrap_or_else(|| Command::Serve(Box::default()));
    match command {
        Command::Schema => print_out(server::sdl()),
        Command::Migrate => {
            let db = Db::connect(&cli.db).await?;
            db.migrate().await?;
            db.close_after_writes().await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Seed(config) => {
            let db = Db::connect(&cli.db).await?;
            db.migrate().await?;
            // The load has the database to itself: on SQLite it can then
            // skip the WAL.
            db.close().await?;
            let plan = seed::SeedPlan {
                profiles: config.profiles,
                opportunities_per_profile: config.opportunities_per_profile,
                seed: config.seed,
            };
            let report = seed::seed(&db, plan, !config.quiet).await?;
            // The load had its own connection; when another process kept the
            // file open, its rows went through the WAL.
            Db::connect(&cli.db).await?.close_after_writes().await?;
            tracing::info!(
                profiles = report.profiles,
                opportunities = report.opportunities,
                seconds = format!("{:.2}", report.seconds),
                rows_per_second = format!("{:.0}", report.rows_per_second()),
                "seeded"
            );
            Ok(())
        }
        Command::Import(command) => {
            let sources = match &command {
                ImportCommand::Bmf(config) => config.files.clone(),
                ImportCommand::Catalynx(config) => vec![config.path.clone()],
            };
            import::refuse_source_as_target(&cli.db.database_url, &sources)?;
            let inputs = import::open(&command).await?;
            let db = Db::connect(&cli.db).await?;
            db.migrate().await?;
            let imported = inputs.import(&db).await;
            // The batches committed before a failure stay: they belong in the
            // file too.
            let closed = db.close_after_writes().await;
            let report = imported?;
            closed?;
            print_out(report)
        }
        Command::Export(config) => {
            // Opening a SQLite file creates it: a mistyped path would export
            // nothing, succeed, and leave an empty database behind.
            if let Some(path) = db::sqlite_path(&cli.db.database_url)
                && !path.is_file()
            {
                anyhow::bail!(
                    "DATABASE_URL / --database-url: SQLite database {:?} does not exist; nothing to export",
                    path.display().to_string()
                );
            }
            if let Some(output) = &config.output {
                let database = db::sqlite_path(&cli.db.database_url);
                export::check_output(output, database.as_deref())?;
            }
            let db = Db::connect(&cli.db).await?;
            db.migrate_if_pending().await?;
            let report = export::export_to(&db, config.format, config.output.as_deref()).await?;
            tracing::info!(
                profiles = report.profiles,
                opportunities = report.opportunities,
                "exported"
            );
            Ok(())
        }
        Command::Serve(config) => {
            config.api.check()?;
            let db = Db::connect(&cli.db).await?;
            db.migrate().await?;
            if config.demo && seed::seed_demo_if_empty(&db).await? {
                tracing::info!("empty database: demo data seeded");
            }
            server::serve(db, *config).await
        }
    }
}

#[global_allocator]
static ALLOCATOR: alloc::Allocator = alloc::Allocator;
