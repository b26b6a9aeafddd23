//! Multi-row inserts for any entity, chunked below the database's
//! bind-parameter limit.
//!
//! The SQL text depends only on the row count, so every full chunk sends the
//! same statement and the driver reuses its prepared form.

use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseBackend, DbErr, EntityTrait, IdenStatic, Iterable,
    ModelTrait, Statement,
};

/// Bind parameters one statement may carry.
fn parameter_limit(backend: DatabaseBackend) -> usize {
    match backend {
        DatabaseBackend::Sqlite => 32_766,
        _ => 65_535,
    }
}

/// Rows per statement at most: beyond this, bigger statements stop paying off.
const MAX_ROWS_PER_STATEMENT: usize = 1000;

/// Inserts `models` with as few statements as the parameter limit allows.
pub async fn insert_many<E, C>(conn: &C, models: &[E::Model]) -> Result<(), DbErr>
where
    E: EntityTrait,
    C: ConnectionTrait,
{
    for statement in insert_statements::<E>(conn.get_database_backend(), models) {
        conn.execute_raw(statement).await?;
    }
    Ok(())
}

/// The statements `insert_many` sends, built without a connection so that a
/// bulk load can build them on another thread while the database works.
pub fn insert_statements<E: EntityTrait>(
    backend: DatabaseBackend,
    models: &[E::Model],
) -> Vec<Statement> {
    let columns: Vec<E::Column> = E::Column::iter().collect();
    let rows_per_statement = (parameter_limit(backend) / columns.len()).min(MAX_ROWS_PER_STATEMENT);
    let mut cached: Option<(usize, String)> = None;
    let mut statements = Vec::with_capacity(models.len().div_ceil(rows_per_statement));
    for chunk in models.chunks(rows_per_statement) {
        let sql = match &cached {
            Some((rows, sql)) if *rows == chunk.len() => sql.clone(),
            _ => {
                let sql = insert_sql::<E>(backend, &columns, chunk.len());
                cached = Some((chunk.len(), sql.clone()));
                sql
            }
        };
        let values = chunk
            .iter()
            .flat_map(|model| columns.iter().map(move |c| model.get(*c)))
            .collect::<Vec<_>>();
        statements.push(Statement::from_sql_and_values(backend, sql, values));
    }
    statements
}

/// `INSERT INTO <table> (<columns>) VALUES (...), ...` for `rows` rows.
pub fn insert_sql<E: EntityTrait>(
    backend: DatabaseBackend,
    columns: &[E::Column],
    rows: usize,
) -> String {
    // Both databases quote identifiers with double quotes; names are static.
    let quote = |name: &str| format!("\"{name}\"");
    let names: Vec<String> = columns.iter().map(|c| quote(c.as_str())).collect();
    let mut sql = format!(
        "INSERT INTO {} ({}) VALUES ",
        quote(E::default().table_name()),
        names.join(", ")
    );
    let width = columns.len();
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for (col, column) in columns.iter().enumerate() {
            if col > 0 {
                sql.push_str(", ");
            }
            match backend {
                DatabaseBackend::Postgres => {
                    let n = row * width + col + 1;
                    sql.push('$');
                    sql.push_str(&n.to_string());
                    if let Some(cast) = postgres_cast::<E>(column) {
                        sql.push_str(cast);
                    }
                }
                _ => sql.push('?'),
            }
        }
        sql.push(')');
    }
    sql
}

/// JSON values bind as text-typed JSON on PostgreSQL; name the column type.
fn postgres_cast<E: EntityTrait>(column: &E::Column) -> Option<&'static str> {
    match column.def().get_column_type() {
        sea_orm::ColumnType::JsonBinary => Some("::jsonb"),
        sea_orm::ColumnType::Json => Some("::json"),
        _ => None,
    }
}

/// An index to rebuild: its name and the statement that creates it.
pub struct IndexDefinition {
    pub name: String,
    pub sql: String,
}

/// Drops the non-unique secondary indexes of `tables` and returns how to
/// recreate them. Unique indexes stay: they enforce constraints.
pub async fn drop_secondary_indexes<C: ConnectionTrait>(
    conn: &C,
    tables: &[&str],
) -> Result<Vec<IndexDefinition>, DbErr> {
    let backend = conn.get_database_backend();
    let sql = secondary_indexes_query(backend, tables);
    let rows = conn
        .query_all_raw(Statement::from_string(backend, sql))
        .await?;
    let mut indexes = Vec::with_capacity(rows.len());
    for row in rows {
        let name: String = row.try_get_by_index(0)?;
        let sql: String = row.try_get_by_index(1)?;
        conn.execute_unprepared(&format!("DROP INDEX \"{name}\""))
            .await?;
        indexes.push(IndexDefinition { name, sql });
    }
    Ok(indexes)
}

/// Lists the non-unique secondary indexes of `tables`: (name, CREATE statement).
pub fn secondary_indexes_query(backend: DatabaseBackend, tables: &[&str]) -> String {
    let list = tables
        .iter()
        .map(|t| format!("'{t}'"))
        .collect::<Vec<_>>()
        .join(", ");
    match backend {
        // Constraint indexes (sqlite_autoindex_*) have no SQL.
        DatabaseBackend::Sqlite => format!(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name IN ({list}) AND sql IS NOT NULL AND sql NOT LIKE 'CREATE UNIQUE%'"
        ),
        _ => format!(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() AND tablename IN ({list}) AND indexdef NOT LIKE 'CREATE UNIQUE%'"
        ),
    }
}

/// Recreates indexes dropped by `drop_secondary_indexes`.
pub async fn create_indexes<C: ConnectionTrait>(
    conn: &C,
    indexes: &[IndexDefinition],
) -> Result<(), DbErr> {
    for index in indexes {
        tracing::debug!(index = %index.name, "rebuilding index");
        conn.execute_unprepared(&index.sql).await?;
    }
    Ok(())
}
