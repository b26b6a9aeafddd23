//! The GraphQL API: one module per type (object, inputs, loaders, query and
//! mutation roots side by side); [`schema`] assembles them.

pub mod cache_stats;
pub mod connection;
pub mod limits;
pub mod loaders;
pub mod opportunity;
pub mod profile;
pub mod schema;
pub mod shape;

use async_graphql::parser::types::{ExecutableDocument, OperationDefinition};
use async_graphql::{Context, Name, Positioned};

use crate::cache::Cache;
use crate::config::ApiConfig;
use crate::db::Db;
use crate::store::page::PageRequest;

/// Schema-wide data every resolver can reach.
pub struct ApiContext {
    pub db: Db,
    pub config: ApiConfig,
    pub cache: Cache,
}

impl ApiContext {
    pub fn of<'a>(ctx: &Context<'a>) -> &'a ApiContext {
        ctx.data_unchecked::<ApiContext>()
    }

    pub fn page(
        &self,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> Result<PageRequest, crate::error::AppError> {
        PageRequest::new(
            first,
            after,
            last,
            before,
            self.config.default_page_size,
            self.config.max_page_size,
        )
    }
}

/// Validates each element of an optional list with `parse`, naming the
/// argument in errors.
pub fn parse_list<T>(
    values: Option<Vec<String>>,
    parse: impl Fn(&str) -> Result<T, crate::error::AppError>,
) -> Result<Vec<T>, crate::error::AppError> {
    values
        .unwrap_or_default()
        .iter()
        .map(|v| parse(v))
        .collect()
}

/// The operation of `doc` a request runs: the one it names, or the only one
/// when it names none; `None` when there is no such operation.
pub fn operation<'a>(
    doc: &'a ExecutableDocument,
    name: Option<&str>,
) -> Option<(Option<&'a Name>, &'a Positioned<OperationDefinition>)> {
    let mut operations = doc.operations.iter();
    match name {
        Some(name) => operations.find(|(n, _)| n.is_some_and(|n| n.as_str() == name)),
        None => {
            let only = operations.next()?;
            operations.next().is_none().then_some(only)
        }
    }
}
