//! An extension that bounds the root fields of an operation and gives every
//! error an `extensions.code`, so clients can tell parse errors, validation
//! errors and bad arguments apart without reading messages.

use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery, NextValidation,
};
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{Response, ServerError, ServerResult, ValidationResult, Variables};

/// Code of a query that does not parse.
pub const PARSE_FAILED: &str = "GRAPHQL_PARSE_FAILED";
/// Code of a query that parses but breaks the schema's rules or limits.
pub const VALIDATION_FAILED: &str = "GRAPHQL_VALIDATION_FAILED";

pub struct RequestLimits {
    pub max_root_fields: usize,
}

impl ExtensionFactory for RequestLimits {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(RequestLimitsExtension {
            max_root_fields: self.max_root_fields,
        })
    }
}

struct RequestLimitsExtension {
    max_root_fields: usize,
}

fn with_code(mut error: ServerError, code: &str) -> ServerError {
    let extensions = error.extensions.get_or_insert_with(Default::default);
    if extensions.get("code").is_none() {
        extensions.set("code", code);
    }
    error
}

/// Root fields of a selection set, counting through fragments (each fragment
/// at most once, so a cycle cannot loop).
fn root_fields(set: &SelectionSet, doc: &ExecutableDocument, seen: &mut Vec<String>) -> usize {
    set.items
        .iter()
        .map(|item| match &item.node {
            Selection::Field(_) => 1,
            Selection::InlineFragment(f) => root_fields(&f.node.selection_set.node, doc, seen),
            Selection::FragmentSpread(spread) => {
                let name = spread.node.fragment_name.node.to_string();
                if seen.contains(&name) {
                    return 0;
                }
                seen.push(name.clone());
                doc.fragments
                    .get(&spread.node.fragment_name.node)
                    .map_or(0, |f| root_fields(&f.node.selection_set.node, doc, seen))
            }
        })
        .sum()
}

#[async_trait::async_trait]
impl Extension for RequestLimitsExtension {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let doc = next
            .run(ctx, query, variables)
            .await
            .map_err(|e| with_code(e, PARSE_FAILED))?;
        for (_, operation) in doc.operations.iter() {
            let count = root_fields(&operation.node.selection_set.node, &doc, &mut Vec::new());
            if count > self.max_root_fields {
                return Err(with_code(
                    ServerError::new(
                        format!(
                            "the operation selects {count} root fields; at most {} are allowed",
                            self.max_root_fields
                        ),
                        None,
                    ),
                    VALIDATION_FAILED,
                ));
            }
        }
        Ok(doc)
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        next.run(ctx).await.map_err(|errors| {
            errors
                .into_iter()
                .map(|e| with_code(e, VALIDATION_FAILED))
                .collect()
        })
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        let mut response = next.run(ctx, operation_name).await;
        // Resolver errors carry their own code; what is left are arguments
        // that failed to parse into their input types.
        response.errors = response
            .errors
            .into_iter()
            .map(|e| with_code(e, "BAD_USER_INPUT"))
            .collect();
        response
    }
}
