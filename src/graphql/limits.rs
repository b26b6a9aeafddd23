//! Bounds on a document (root fields, size with its fragments expanded,
//! nesting) checked before the schema runs it, and an `extensions.code` on
//! every error, so clients can tell parse errors, validation errors and bad
//! arguments apart without reading messages.
//!
//! Not an async-graphql extension: with any extension installed,
//! async-graphql sends every field of every response through the extension
//! chain, with a boxed future and type lookups per field (about 6% of the
//! server's CPU for a 50-profile nested page).

use std::collections::HashMap;

use async_graphql::Positioned;
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{Name, Request, Response, ServerError};

/// Code of a query that does not parse.
pub const PARSE_FAILED: &str = "GRAPHQL_PARSE_FAILED";
/// Code of a query that parses but breaks the schema's rules or limits.
pub const VALIDATION_FAILED: &str = "GRAPHQL_VALIDATION_FAILED";
/// Deepest nesting of selection sets, fragments included; the schema is
/// built with the same limit and checks it again.
pub const RECURSION_DEPTH: usize = 32;

#[derive(Clone, Debug)]
pub struct RequestLimits {
    pub max_root_fields: usize,
    /// Most fields a document may select once its fragments are inlined.
    pub max_expanded_fields: usize,
    /// False when introspection is turned off: async-graphql then answers
    /// `__schema` and `__type` with `null` and no error, which tells a
    /// client nothing.
    pub introspection: bool,
}

fn with_code(mut error: ServerError, code: &str) -> ServerError {
    set_code(&mut error, code);
    error
}

fn set_code(error: &mut ServerError, code: &str) {
    let extensions = error.extensions.get_or_insert_with(Default::default);
    if extensions.get("code").is_none() {
        extensions.set("code", code);
    }
}

/// Names of the root fields a selection set selects, through fragments
/// (each fragment at most once, so a cycle cannot loop).
fn root_fields<'a>(
    set: &'a SelectionSet,
    doc: &'a ExecutableDocument,
    seen: &mut Vec<&'a Name>,
    fields: &mut Vec<&'a Name>,
) {
    for item in &set.items {
        match &item.node {
            Selection::Field(f) => fields.push(&f.node.name.node),
            Selection::InlineFragment(f) => {
                root_fields(&f.node.selection_set.node, doc, seen, fields)
            }
            Selection::FragmentSpread(spread) => {
                let name = &spread.node.fragment_name.node;
                if seen.contains(&name) {
                    continue;
                }
                seen.push(name);
                if let Some(f) = doc.fragments.get(name) {
                    root_fields(&f.node.selection_set.node, doc, seen, fields);
                }
            }
        }
    }
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

/// Selection sets nested deeper than `max`, following fragment spreads
/// (so a fragment cycle is too deep): as async-graphql measures it.
fn too_deep(
    doc: &ExecutableDocument,
    set: &Positioned<SelectionSet>,
    depth: usize,
    max: usize,
) -> Option<ServerError> {
    if depth > max {
        return Some(ServerError::new(
            format!("The recursion depth of the query cannot be greater than `{max}`"),
            Some(set.pos),
        ));
    }
    set.node.items.iter().find_map(|item| match &item.node {
        Selection::Field(f) if f.node.selection_set.node.items.is_empty() => None,
        Selection::Field(f) => too_deep(doc, &f.node.selection_set, depth + 1, max),
        Selection::InlineFragment(f) => too_deep(doc, &f.node.selection_set, depth + 1, max),
        Selection::FragmentSpread(spread) => doc
            .fragments
            .get(&spread.node.fragment_name.node)
            .and_then(|f| too_deep(doc, &f.node.selection_set, depth + 1, max)),
    })
}

impl RequestLimits {
    /// Parses the request's document (kept in the request for the schema)
    /// and measures it: the expanded size first, before anything walks
    /// fragment spreads anew (exponential in their nesting), then the
    /// nesting, then the root fields.
    pub fn check(&self, request: &mut Request) -> Result<(), ServerError> {
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
        for (_, operation) in doc.operations.iter() {
            if let Some(error) = too_deep(doc, &operation.node.selection_set, 0, RECURSION_DEPTH) {
                return Err(with_code(error, PARSE_FAILED));
            }
        }
        for (_, operation) in doc.operations.iter() {
            let mut fields = Vec::new();
            root_fields(
                &operation.node.selection_set.node,
                doc,
                &mut Vec::new(),
                &mut fields,
            );
            if !self.introspection
                && let Some(field) = fields
                    .iter()
                    .find(|f| matches!(f.as_str(), "__schema" | "__type"))
            {
                return Err(with_code(
                    ServerError::new(
                        format!("introspection is turned off on this server (`{field}`)"),
                        Some(operation.pos),
                    ),
                    VALIDATION_FAILED,
                ));
            }
            let count = fields.len();
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
        Ok(())
    }
}

/// Codes the errors of an executed request that have none. Resolver errors
/// carry their own; what is left with a path are arguments that failed to
/// parse into their input types, and without one the schema's validation
/// (rules, complexity, depth, an unknown operation name).
pub fn code_errors(response: &mut Response) {
    for error in &mut response.errors {
        let code = if error.path.is_empty() {
            VALIDATION_FAILED
        } else {
            "BAD_USER_INPUT"
        };
        set_code(error, code);
    }
}
