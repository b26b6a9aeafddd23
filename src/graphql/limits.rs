//! Bounds on a document (root fields, size with its fragments expanded,
//! nesting) checked before the schema runs it, and an `extensions.code` on
//! every error, so clients can tell parse errors, validation errors and bad
//! arguments apart without reading messages.
//!
//! Not an async-graphql extension: with any extension installed,
//! async-graphql sends every field of every response through the extension
//! chain, with a boxed future and type lookups per field (about 6% of the
//! server's CPU for a 50-profile nested page).

use std::collections::{HashMap, HashSet};

use async_graphql::Positioned;
use async_graphql::parser::types::{
    ExecutableDocument, OperationDefinition, Selection, SelectionSet,
};
use async_graphql::{Name, Request, Response, ServerError, Value, Variables};

/// Code of a query that does not parse.
pub const PARSE_FAILED: &str = "GRAPHQL_PARSE_FAILED";
/// Code of a query that parses but breaks the schema's rules or limits.
pub const VALIDATION_FAILED: &str = "GRAPHQL_VALIDATION_FAILED";
/// Deepest nesting of selection sets, fragments included; the schema is
/// built with the same limit and checks it again.
pub const RECURSION_DEPTH: usize = 32;

/// The most one field may add to a query's complexity. async-graphql adds
/// fields' complexities with wrapping arithmetic, so a product left to wrap
/// (a skipped `first: 2147483647` times its selection) could bring a huge
/// query's total back under the limit; capped, the fields a document may
/// hold cannot add up to a wrap.
const FIELD_COMPLEXITY_CAP: usize = u32::MAX as usize;

/// A list field's complexity: its page size (`first` or `last`, else
/// `default`) times its selection's, capped at [`FIELD_COMPLEXITY_CAP`].
pub fn list_complexity(page: Option<i32>, default: usize, child: usize) -> usize {
    let size = page.map_or(default, |n| usize::try_from(n.max(1)).unwrap_or(1));
    size.saturating_mul(child).min(FIELD_COMPLEXITY_CAP)
}

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
    seen: &mut HashSet<&'a Name>,
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
                // A set: a document may spread tens of thousands of them.
                if !seen.insert(name) {
                    continue;
                }
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
/// over) costs time linear in its text. Fragment cycles are refused before
/// this runs.
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

/// The first selection set nested deeper than `max` (following fragment
/// spreads, as async-graphql measures it), or a fragment that spreads
/// itself, in the operations and in every fragment. Checked before anything
/// else walks the document: each fragment's depth is worked out once and
/// remembered, so a wide document (fragments spreading fragments many times
/// over) costs time linear in its text, and no walk goes deeper than `max`,
/// so a long chain of fragments (a 2 MB body holds 45,000) cannot overflow
/// the stack of this walk or of those after it.
fn nesting_error(doc: &ExecutableDocument, max: usize) -> Option<ServerError> {
    let mut heights = HashMap::new();
    let mut open = Vec::new();
    let operations = doc.operations.iter().map(|(_, op)| &op.node.selection_set);
    let fragments = doc.fragments.values().map(|f| &f.node.selection_set);
    operations
        .chain(fragments)
        .find_map(|set| height(doc, set, 0, max, &mut heights, &mut open).err())
}

/// How many levels `set`, found at `depth`, nests below itself; `heights`
/// remembers each fragment's, `open` holds the fragments being measured.
fn height<'a>(
    doc: &'a ExecutableDocument,
    set: &'a Positioned<SelectionSet>,
    depth: usize,
    max: usize,
    heights: &mut HashMap<&'a Name, usize>,
    open: &mut Vec<&'a Name>,
) -> Result<usize, ServerError> {
    let too_deep = |pos| {
        ServerError::new(
            format!("The recursion depth of the query cannot be greater than `{max}`"),
            Some(pos),
        )
    };
    if depth > max {
        return Err(too_deep(set.pos));
    }
    let mut deepest = 0;
    for item in &set.node.items {
        let below = match &item.node {
            Selection::Field(f) if f.node.selection_set.node.items.is_empty() => 0,
            Selection::Field(f) => {
                1 + height(doc, &f.node.selection_set, depth + 1, max, heights, open)?
            }
            Selection::InlineFragment(f) => {
                1 + height(doc, &f.node.selection_set, depth + 1, max, heights, open)?
            }
            Selection::FragmentSpread(spread) => {
                let name = &spread.node.fragment_name.node;
                // An unknown fragment is validation's to refuse.
                let Some(fragment) = doc.fragments.get(name) else {
                    continue;
                };
                if let Some(at) = open.iter().position(|n| *n == name) {
                    let via: Vec<String> =
                        open[at + 1..].iter().map(|n| format!("\"{n}\"")).collect();
                    let via = if via.is_empty() {
                        String::new()
                    } else {
                        format!(" via {}", via.join(", "))
                    };
                    return Err(with_code(
                        ServerError::new(
                            format!("Cannot spread fragment \"{name}\" within itself{via}"),
                            Some(spread.pos),
                        ),
                        VALIDATION_FAILED,
                    ));
                }
                let below = match heights.get(name) {
                    Some(&known) => known,
                    None => {
                        open.push(name);
                        let measured = height(
                            doc,
                            &fragment.node.selection_set,
                            depth + 1,
                            max,
                            heights,
                            open,
                        )?;
                        open.pop();
                        heights.insert(name, measured);
                        measured
                    }
                };
                if depth + 1 + below > max {
                    return Err(too_deep(spread.pos));
                }
                1 + below
            }
        };
        deepest = deepest.max(below);
    }
    Ok(deepest)
}

/// Deepest nesting of `{`, `[` and `(` a document may have. The parser
/// takes a list or object value nested 1,500 deep, and async-graphql's later
/// walks of such a value recurse once per level: one 3 kB request overflowed
/// a worker's stack and ended the process. Selection sets are bounded much
/// lower ([`RECURSION_DEPTH`]); JSON variables, by serde_json, at 128.
const MAX_BRACKET_DEPTH: usize = 128;

/// The deepest bracket nesting of a GraphQL document, outside strings and
/// comments: a scan of its bytes, before the schema validates or runs it.
fn bracket_depth(text: &str) -> usize {
    let bytes = text.as_bytes();
    let (mut depth, mut deepest, mut i) = (0usize, 0usize, 0usize);
    while i < bytes.len() {
        match bytes[i] {
            b'#' => {
                while i < bytes.len() && !matches!(bytes[i], b'\n' | b'\r') {
                    i += 1;
                }
            }
            b'"' if bytes[i..].starts_with(b"\"\"\"") => {
                i += 3;
                while i < bytes.len() && !bytes[i..].starts_with(b"\"\"\"") {
                    // `\"""` is an escaped delimiter inside a block string.
                    i += if bytes[i..].starts_with(b"\\\"\"\"") {
                        4
                    } else {
                        1
                    };
                }
                i += 2;
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && !matches!(bytes[i], b'"' | b'\n' | b'\r') {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'{' | b'[' | b'(' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' | b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    deepest
}

impl RequestLimits {
    /// Parses the request's document (kept in the request for the schema)
    /// and measures it: the nesting first, which bounds how deep every
    /// later walk goes, then the expanded size, before anything walks
    /// fragment spreads anew (exponential in their nesting), then the root
    /// fields.
    pub fn check(&self, request: &mut Request) -> Result<(), ServerError> {
        // Out of the request while its document is borrowed from it.
        let variables = std::mem::take(&mut request.variables);
        let checked = self.check_document(request, &variables);
        request.variables = variables;
        checked
    }

    fn check_document(
        &self,
        request: &mut Request,
        variables: &Variables,
    ) -> Result<(), ServerError> {
        let name = request.operation_name.clone();
        if bracket_depth(&request.query) > MAX_BRACKET_DEPTH {
            return Err(with_code(
                ServerError::new(
                    format!("the document nests brackets more than {MAX_BRACKET_DEPTH} deep"),
                    None,
                ),
                PARSE_FAILED,
            ));
        }
        let doc = request
            .parsed_query()
            .map_err(|e| with_code(e, PARSE_FAILED))?;
        if let Some(error) = nesting_error(doc, RECURSION_DEPTH) {
            return Err(with_code(error, PARSE_FAILED));
        }
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
            let mut fields = Vec::new();
            root_fields(
                &operation.node.selection_set.node,
                doc,
                &mut HashSet::new(),
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
        if let Some((_, operation)) = super::operation(doc, name.as_deref()) {
            missing_variables(operation, variables)?;
        }
        Ok(())
    }
}

/// Refuses a request that leaves out a variable of a non-null type without
/// a default, or gives it `null`: the GraphQL spec makes that a request
/// error, so nothing runs. async-graphql would instead run the operation and
/// fail only the fields that read the variable, after the mutations before
/// them had been made.
fn missing_variables(
    operation: &Positioned<OperationDefinition>,
    variables: &Variables,
) -> Result<(), ServerError> {
    for definition in &operation.node.variable_definitions {
        let definition = &definition.node;
        if definition.var_type.node.nullable || definition.default_value.is_some() {
            continue;
        }
        let name = &definition.name.node;
        let given = match variables.get(name) {
            None => "was not provided",
            Some(Value::Null) => "must not be null",
            Some(_) => continue,
        };
        return Err(with_code(
            ServerError::new(
                format!(
                    "Variable \"${name}\" of required type \"{}\" {given}.",
                    definition.var_type.node
                ),
                Some(definition.name.pos),
            ),
            VALIDATION_FAILED,
        ));
    }
    Ok(())
}

/// Most errors without a path listed in one response: a document can be
/// written to fail validation in hundreds of thousands of places (each
/// repeated argument is one), and listing them all made a 1.8 MB request
/// answer 30 MB. Errors with a path stay: each stands for a null in `data`.
const MAX_LISTED_ERRORS: usize = 100;

/// Longest error message sent, in characters: a parse error quotes the line
/// it failed on, and a document may be one 2 MB line.
const MAX_MESSAGE_CHARS: usize = 1000;

/// Bounds what a response's errors may hold (see [`MAX_LISTED_ERRORS`] and
/// [`MAX_MESSAGE_CHARS`]); the errors left out are counted in one more.
pub fn bound_errors(response: &mut Response) {
    for error in &mut response.errors {
        if let Some((end, _)) = error.message.char_indices().nth(MAX_MESSAGE_CHARS) {
            error.message.truncate(end);
            error.message.push('…');
        }
    }
    let mut listed = 0;
    let mut unlisted = 0;
    let mut code = None;
    response.errors.retain(|error| {
        if !error.path.is_empty() {
            return true;
        }
        listed += 1;
        if listed <= MAX_LISTED_ERRORS {
            return true;
        }
        unlisted += 1;
        if code.is_none() {
            code = error
                .extensions
                .as_ref()
                .and_then(|x| x.get("code"))
                .cloned();
        }
        false
    });
    if unlisted > 0 {
        let mut summary = ServerError::new(
            format!("{unlisted} more errors like these are not listed"),
            None,
        );
        summary
            .extensions
            .get_or_insert_with(Default::default)
            .set("code", code.unwrap_or(Value::from(VALIDATION_FAILED)));
        response.errors.push(summary);
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

#[cfg(test)]
mod tests {
    use super::bracket_depth;

    #[test]
    fn bracket_depth_skips_strings_and_comments() {
        assert_eq!(bracket_depth("{ a(b: [[1]]) { c } }"), 4);
        assert_eq!(bracket_depth(r#"{ a(s: "[[[{{{(") }"#), 2);
        assert_eq!(bracket_depth(r#"{ a(s: "\" [[[") }"#), 2);
        assert_eq!(bracket_depth("{ a # [[[[[\n b }"), 1);
        assert_eq!(bracket_depth(r#"{ a(s: """ [[[ \""" {{{ """) }"#), 2);
        assert_eq!(bracket_depth(r#"{ a(s: """ " [[ """, t: [[1]]) }"#), 4);
    }
}
