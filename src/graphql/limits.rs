//! An extension that bounds the root fields of an operation and the size of
//! a document with its fragments expanded, and gives every error an
//! `extensions.code`, so clients can tell parse errors, validation errors and
//! bad arguments apart without reading messages.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery, NextPrepareRequest,
    NextRequest, NextValidation,
};
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{
    Name, Request, Response, ServerError, ServerResult, ValidationResult, Variables,
};

/// Code of a query that does not parse.
pub const PARSE_FAILED: &str = "GRAPHQL_PARSE_FAILED";
/// Code of a query that parses but breaks the schema's rules or limits.
pub const VALIDATION_FAILED: &str = "GRAPHQL_VALIDATION_FAILED";

pub struct RequestLimits {
    pub max_root_fields: usize,
    /// Most fields a document may select once its fragments are inlined.
    pub max_expanded_fields: usize,
}

impl ExtensionFactory for RequestLimits {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(RequestLimitsExtension {
            max_root_fields: self.max_root_fields,
            max_expanded_fields: self.max_expanded_fields,
        })
    }
}

struct RequestLimitsExtension {
    max_root_fields: usize,
    max_expanded_fields: usize,
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

/// Fields a selection set selects with every fragment spread inlined,
/// saturating. Each fragment is counted once and remembered, so a document
/// whose expansion is exponential (fragments spreading fragments ten times
/// over) costs time linear in its text; a spread inside its own fragment
/// counts nothing (the cycle is refused later).
fn expanded_fields<'a>(
    set: &'a SelectionSet,
    doc: &'a ExecutableDocument,
    known: &mut HashMap<&'a Name, usize>,
    open: &mut Vec<&'a Name>,
) -> usize {
    set.items.iter().fold(0usize, |total, item| {
        let size = match &item.node {
            Selection::Field(f) => 1usize.saturating_add(expanded_fields(
                &f.node.selection_set.node,
                doc,
                known,
                open,
            )),
            Selection::InlineFragment(f) => {
                expanded_fields(&f.node.selection_set.node, doc, known, open)
            }
            Selection::FragmentSpread(spread) => {
                let name = &spread.node.fragment_name.node;
                if let Some(&size) = known.get(name) {
                    size
                } else if open.contains(&name) {
                    0
                } else {
                    match doc.fragments.get(name) {
                        None => 0,
                        Some(fragment) => {
                            open.push(name);
                            let size = expanded_fields(
                                &fragment.node.selection_set.node,
                                doc,
                                known,
                                open,
                            );
                            open.pop();
                            known.insert(name, size);
                            size
                        }
                    }
                }
            }
        };
        total.saturating_add(size)
    })
}

#[async_trait::async_trait]
impl Extension for RequestLimitsExtension {
    /// Errors that escape every other hook (an unknown operation name, say)
    /// still get a code.
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let mut response = next.run(ctx).await;
        response.errors = response
            .errors
            .into_iter()
            .map(|e| with_code(e, VALIDATION_FAILED))
            .collect();
        response
    }

    /// Measures the expanded document before async-graphql's own checks,
    /// which walk every fragment spread anew (exponential in the nesting).
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        mut request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        let doc = request
            .parsed_query()
            .map_err(|e| with_code(e, PARSE_FAILED))?;
        let mut known = HashMap::new();
        for (_, operation) in doc.operations.iter() {
            let size = expanded_fields(
                &operation.node.selection_set.node,
                doc,
                &mut known,
                &mut Vec::new(),
            );
            if size > self.max_expanded_fields {
                return Err(with_code(
                    ServerError::new(
                        format!(
                            "the operation selects more than {} fields once its fragments are \
                             expanded",
                            self.max_expanded_fields
                        ),
                        Some(operation.pos),
                    ),
                    VALIDATION_FAILED,
                ));
            }
        }
        next.run(ctx, request).await
    }

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
