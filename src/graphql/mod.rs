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
use async_graphql::{Context, ErrorExtensions, InputType, Name, Positioned};

use crate::cache::{Cache, Tag};
use crate::config::ApiConfig;
use crate::db::Db;
use crate::error::{AppError, AppResult};
use crate::store::page::PageRequest;
use loaders::Loaders;

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

/// What a write (or a write attempt: a commit reported as failed may still
/// have been applied) leaves stale: the cached values of `tags`, and every
/// value the request has loaded so far.
pub async fn wrote(ctx: &Context<'_>, tags: &[Tag<'_>]) {
    ApiContext::of(ctx).cache.invalidate(tags).await;
    ctx.data_unchecked::<Loaders>().forget_loaded();
}

/// Items of a batch refused one by one, each by its index in `inputs`, all
/// with the code of `kind` (`AppError::BadUserInput`, `Conflict`, `NotFound`).
pub struct Refused {
    kind: fn(String) -> AppError,
    items: Vec<(usize, String)>,
}

/// Room in an error's message for the items it names (messages are cut at
/// 1,000 characters, see [`limits::bound_errors`]).
const ITEMS_IN_MESSAGE_CHARS: usize = 800;

impl Refused {
    pub fn new(kind: fn(String) -> AppError) -> Self {
        Self {
            kind,
            items: Vec::new(),
        }
    }

    pub fn add(&mut self, index: usize, message: impl Into<String>) {
        self.items.push((index, message.into()));
    }

    /// `Ok` when no item was refused.
    pub fn check(self) -> async_graphql::Result<()> {
        if self.items.is_empty() {
            Ok(())
        } else {
            Err(self.into_error())
        }
    }

    /// The message names items while it has room and counts the rest;
    /// `extensions.items` lists every one as `{ index, message }`, so a
    /// batch of a thousand bad items is reported whole.
    fn into_error(mut self) -> async_graphql::Error {
        self.items.sort_by_key(|(index, _)| *index);
        let mut message = String::new();
        let mut named = 0;
        for (index, item) in &self.items {
            let part = format!("inputs[{index}]: {item}");
            if named > 0 && message.len() + part.len() > ITEMS_IN_MESSAGE_CHARS {
                break;
            }
            if named > 0 {
                message.push_str("; ");
            }
            message.push_str(&part);
            named += 1;
        }
        let unnamed = self.items.len() - named;
        if unnamed > 0 {
            message.push_str(&format!(
                "; and {unnamed} more (extensions.items lists all {})",
                self.items.len()
            ));
        }
        let items: Vec<async_graphql::Value> = self
            .items
            .iter()
            .map(|(index, message)| async_graphql::value!({ "index": index, "message": message }))
            .collect();
        (self.kind)(message)
            .extend()
            .extend_with(|_, ext| ext.set("items", items))
    }
}

/// Most values a list of a filter may hold (`profileIds` excepted). Each
/// value becomes a bound variable or a term of an `OR` in SQL: SQLite refuses
/// a statement of more than 32,766 variables or an expression deeper than
/// 1,000 terms, and 15,000 NTEE codes once overflowed a worker's stack.
pub const MAX_FILTER_VALUES: usize = 100;

/// The values of an optional filter list named `field`, refused past `max`.
pub fn filter_values<T>(field: &str, values: Option<Vec<T>>, max: usize) -> AppResult<Vec<T>> {
    let values = values.unwrap_or_default();
    if values.len() > max {
        return Err(AppError::bad_input(format!(
            "{field} holds {} values; at most {max} are accepted",
            values.len()
        )));
    }
    Ok(values)
}

/// Validates each element of an optional filter list named `field` with
/// `parse`, after [`filter_values`].
pub fn parse_list<T>(
    field: &str,
    values: Option<Vec<String>>,
    parse: impl Fn(&str) -> AppResult<T>,
) -> AppResult<Vec<T>> {
    filter_values(field, values, MAX_FILTER_VALUES)?
        .iter()
        .map(|v| parse(v))
        .collect()
}

/// The sort keys of a list, each field at most once (a repeated field sorts
/// nothing further, and thousands of them made statements SQLite refuses),
/// or `default` when none is given.
pub fn sort_keys<F: Copy + PartialEq + InputType, O>(
    order: Option<Vec<O>>,
    key: impl Fn(O) -> (F, bool),
    default: (F, bool),
) -> AppResult<Vec<(F, bool)>> {
    let mut keys: Vec<(F, bool)> = Vec::new();
    for (field, descending) in order.into_iter().flatten().map(key) {
        if keys.iter().any(|(f, _)| *f == field) {
            return Err(AppError::bad_input(format!(
                "orderBy lists {} more than once",
                field.to_value()
            )));
        }
        keys.push((field, descending));
    }
    if keys.is_empty() {
        keys.push(default);
    }
    Ok(keys)
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
