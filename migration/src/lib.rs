//! Schema migrations, applied in order on every start (and by `catalynx migrate`).
//!
//! sea-orm-migration records applied migrations in `seaql_migrations`, so a
//! second run is a no-op; tables and indexes are also created `IF NOT EXISTS`.

pub use sea_orm_migration::prelude::*;

mod m20261129_000001_create_profiles_table;
mod m20261129_000002_create_opportunities_table;
mod m20261129_000003_add_sort_indexes;
mod m20261130_000004_drop_prefix_indexes;
mod m20261130_000005_profile_status_counts;
mod m20261130_000006_profile_status_deltas;
mod m20261130_000007_stage_window_index;
mod m20261130_000008_data_epoch;
mod m20261130_000009_folded_name_order;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261129_000001_create_profiles_table::Migration),
            Box::new(m20261129_000002_create_opportunities_table::Migration),
            Box::new(m20261129_000003_add_sort_indexes::Migration),
            Box::new(m20261130_000004_drop_prefix_indexes::Migration),
            Box::new(m20261130_000005_profile_status_counts::Migration),
            Box::new(m20261130_000006_profile_status_deltas::Migration),
            Box::new(m20261130_000007_stage_window_index::Migration),
            Box::new(m20261130_000008_data_epoch::Migration),
            Box::new(m20261130_000009_folded_name_order::Migration),
        ]
    }
}

/// Runs `statements` in order on a `backend` database; on the other, nothing
/// (for migrations that only one backend needs).
async fn run_on(
    manager: &SchemaManager<'_>,
    backend: sea_orm_migration::sea_orm::DatabaseBackend,
    statements: &[&str],
) -> Result<(), DbErr> {
    if manager.get_database_backend() != backend {
        return Ok(());
    }
    let db = manager.get_connection();
    for sql in statements {
        db.execute_unprepared(sql).await?;
    }
    Ok(())
}

/// `column IN ('a', 'b', ...)`, for CHECK constraints over enumerated text.
fn one_of<C: IntoIden + 'static>(column: C, values: &[&str]) -> SimpleExpr {
    Expr::col(column).is_in(values.iter().copied())
}

/// `column IS NULL OR column IN (...)`.
fn null_or_one_of<C: IntoIden + Clone + 'static>(column: C, values: &[&str]) -> SimpleExpr {
    Expr::col(column.clone())
        .is_null()
        .or(one_of(column, values))
}

/// `column IS NULL OR length(column) = 9`: an EIN is stored as 9 digits.
fn null_or_ein<C: IntoIden + Clone + 'static>(column: C) -> SimpleExpr {
    Expr::col(column.clone())
        .is_null()
        .or(Func::char_length(Expr::col(column)).eq(9))
}
