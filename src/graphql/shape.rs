//! The response's shape as the document and the schema give it: each
//! object's keys in the order the document asks for them, and each field
//! error's null where the spec puts it.
//!
//! Order: GraphQL serialises each object with its keys in the order its
//! selection names them (the spec's CollectFields order). async-graphql
//! inserts a key when its resolver finishes, which varies with timing, so
//! the same answer would come out in different orders, under different
//! ETags. Put back in the document's order, responses read as they were
//! asked for, and an answer's bytes stay the same from one request to the
//! next.
//!
//! Nulls: a field that fails is null, and when its type may not be null the
//! null goes to its parent, up to the nearest field that may be null, or to
//! `data` itself (the spec's "Handling Field Errors"). async-graphql 7.2
//! leaves a failed field's key out of its object instead, which clients
//! generated from the schema read as a broken response.

use std::collections::{HashMap, HashSet};

use async_graphql::indexmap::IndexMap;
use async_graphql::parser::types::{
    BaseType, ExecutableDocument, OperationType, Selection, SelectionSet, Type, TypeKind,
    TypeSystemDefinition,
};
use async_graphql::{Name, PathSegment, Response, Value};

/// The type of every field of the schema's object types.
pub struct FieldTypes {
    /// By object type, then field name: the named type and its non-null
    /// levels (see [`Shape::non_null`]).
    objects: HashMap<String, HashMap<String, (String, u32)>>,
    query: String,
    mutation: Option<String>,
}

impl FieldTypes {
    /// From the schema's SDL, which async-graphql prints and so parses.
    pub fn from_sdl(sdl: &str) -> Self {
        let doc = async_graphql::parser::parse_schema(sdl).expect("the schema's own SDL parses");
        let mut types = Self {
            objects: HashMap::new(),
            query: "Query".into(),
            mutation: None,
        };
        for definition in doc.definitions {
            match definition {
                TypeSystemDefinition::Schema(schema) => {
                    if let Some(query) = &schema.node.query {
                        types.query = query.node.to_string();
                    }
                    types.mutation = schema.node.mutation.map(|m| m.node.to_string());
                }
                TypeSystemDefinition::Type(ty) => {
                    if let TypeKind::Object(object) = &ty.node.kind {
                        let fields = object
                            .fields
                            .iter()
                            .map(|f| (f.node.name.node.to_string(), levels(&f.node.ty.node)))
                            .collect();
                        types.objects.insert(ty.node.name.node.to_string(), fields);
                    }
                }
                TypeSystemDefinition::Directive(_) => {}
            }
        }
        types
    }

    /// The named type of `object.field` and its non-null levels; `None`
    /// for what the SDL does not hold (introspection's own types).
    fn field(&self, object: &str, field: &str) -> Option<(&str, u32)> {
        if field == "__typename" {
            return Some(("String", 1));
        }
        let (named, non_null) = self.objects.get(object)?.get(field)?;
        Some((named, *non_null))
    }
}

/// The named type of `ty`, and its non-null levels.
fn levels(mut ty: &Type) -> (String, u32) {
    let mut non_null = 0;
    let mut level = 0u32;
    loop {
        if !ty.nullable {
            non_null |= 1u32.checked_shl(level).unwrap_or(0);
        }
        match &ty.base {
            BaseType::Named(name) => return (name.to_string(), non_null),
            BaseType::List(item) => {
                ty = item;
                level += 1;
            }
        }
    }
}

/// What the document selects, for one response key: the keys of its
/// objects, in the document's order, each with its own shape.
#[derive(Debug, Default)]
pub struct Shape {
    /// Which levels of the value may not be null: bit 0 the value itself,
    /// bit 1 a list's items, bit 2 their items, and so on. 0 where the type
    /// is not known (`data` itself, introspection), which may be null.
    non_null: u32,
    keys: IndexMap<Name, Shape>,
}

impl Shape {
    /// The shape of the operation `name` (the document's only one when
    /// `None`); `None` when the document has no such operation.
    ///
    /// Fragments apply whatever their type condition: the schema has no
    /// interfaces or unions (a test says so), so a spread that validates
    /// applies to the object it is spread in. A fragment spread inside
    /// itself, which the limits refuse before this runs, is walked once.
    pub fn of(doc: &ExecutableDocument, name: Option<&str>, types: &FieldTypes) -> Option<Self> {
        let (_, operation) = super::operation(doc, name)?;
        let root = match operation.node.ty {
            OperationType::Query => Some(types.query.as_str()),
            OperationType::Mutation => types.mutation.as_deref(),
            OperationType::Subscription => None,
        };
        Some(Self::collect(
            doc,
            &[&operation.node.selection_set.node],
            root,
            0,
            types,
        ))
    }

    /// The shape of the selection sets that one response key merges, of
    /// objects of type `object`.
    fn collect(
        doc: &ExecutableDocument,
        sets: &[&SelectionSet],
        object: Option<&str>,
        non_null: u32,
        types: &FieldTypes,
    ) -> Self {
        let mut grouped = IndexMap::new();
        for set in sets {
            group(doc, set, &mut grouped, &mut Vec::new());
        }
        Self {
            non_null,
            keys: grouped
                .into_iter()
                .map(|(key, (field, sets))| {
                    let ty = object.and_then(|o| types.field(o, field.as_str()));
                    let shape = Self::collect(
                        doc,
                        &sets,
                        ty.map(|(named, _)| named),
                        ty.map_or(0, |(_, non_null)| non_null),
                        types,
                    );
                    (key, shape)
                })
                .collect(),
        }
    }

    /// Puts each field error's null in place, then every object's keys in
    /// the document's order.
    pub fn apply(&self, response: &mut Response) {
        let nulls: Option<Vec<&[PathSegment]>> = response
            .errors
            .iter()
            .filter(|e| !e.path.is_empty())
            .map(|e| Some(&e.path[..=self.nullable_at(&e.path)?]))
            .collect();
        match nulls {
            Some(paths) => {
                // A set: a response may hold tens of thousands of errors.
                let nulls: HashSet<String> = paths.iter().map(|p| path_key(p)).collect();
                for path in &paths {
                    null_at(&mut response.data, path, &nulls);
                }
            }
            None => response.data = Value::Null,
        }
        self.order(&mut response.data);
    }

    /// Where the null of a field error at `path` goes: the index in `path`
    /// of the failed field's value or, when that may not be null, of its
    /// nearest ancestor that may be; `None` for `data` itself.
    fn nullable_at(&self, path: &[PathSegment]) -> Option<usize> {
        let mut shape = Some(self);
        let mut level = 0;
        let mut nullable_at = None;
        for (i, segment) in path.iter().enumerate() {
            match segment {
                PathSegment::Field(key) => {
                    shape = shape.and_then(|s| s.keys.get(key.as_str()));
                    level = 0;
                }
                PathSegment::Index(_) => level += 1,
            }
            let non_null = shape.map_or(0, |s| s.non_null);
            if non_null & 1u32.checked_shl(level).unwrap_or(0) == 0 {
                nullable_at = Some(i);
            }
        }
        nullable_at
    }

    /// Puts every object under `value` in the document's order. Keys the
    /// document does not name (there are none) would go last.
    fn order(&self, value: &mut Value) {
        match value {
            Value::Object(fields) => {
                // Most objects finish in order already: checked by walking
                // both lists once, without hashing a key.
                let mut expected = self.keys.keys();
                if !fields.keys().all(|key| expected.any(|k| k == key)) {
                    let rank = |key: &Name| self.keys.get_index_of(key).unwrap_or(usize::MAX);
                    fields.sort_unstable_by_key(|key, _| rank(key));
                }
                // In order now: each key's shape is found after the last one's.
                let mut shapes = self.keys.iter();
                for (key, value) in fields.iter_mut() {
                    if let Some((_, shape)) = shapes.find(|(k, _)| *k == key) {
                        shape.order(value);
                    }
                }
            }
            Value::List(items) => items.iter_mut().for_each(|item| self.order(item)),
            _ => {}
        }
    }
}

/// Sets the value at `path` to null. On the way there, a null that
/// another error put (one of `nulls`) holds this one already; any other
/// null stands for an object whose fields all failed, which async-graphql
/// gives as null rather than as an object of their nulls.
fn null_at(data: &mut Value, path: &[PathSegment], nulls: &HashSet<String>) {
    let Some((last, above)) = path.split_last() else {
        return;
    };
    let mut value = data;
    for (depth, segment) in above.iter().chain([last]).enumerate() {
        if *value == Value::Null {
            if !matches!(segment, PathSegment::Field(_))
                || nulls.contains(&path_key(&path[..depth]))
            {
                return;
            }
            *value = Value::Object(Default::default());
        }
        if depth == above.len() {
            break;
        }
        let next = match (segment, value) {
            (PathSegment::Field(key), Value::Object(fields)) => fields.get_mut(key.as_str()),
            (PathSegment::Index(i), Value::List(items)) => items.get_mut(*i),
            _ => None,
        };
        // A key left out: its own error puts its null.
        let Some(next) = next else {
            return;
        };
        value = next;
    }
    match (last, value) {
        (PathSegment::Field(key), Value::Object(fields)) => {
            fields.insert(Name::new(key), Value::Null);
        }
        (PathSegment::Index(i), Value::List(items)) => {
            if let Some(item) = items.get_mut(*i) {
                *item = Value::Null;
            }
        }
        _ => {}
    }
}

/// `path` as one string, e.g. `profiles.nodes.#3.name`: names never hold
/// `.` or `#`.
fn path_key(path: &[PathSegment]) -> String {
    let segments: Vec<String> = path
        .iter()
        .map(|segment| match segment {
            PathSegment::Field(name) => name.clone(),
            PathSegment::Index(i) => format!("#{i}"),
        })
        .collect();
    segments.join(".")
}

/// Adds the fields of `set` to `grouped`: by response key in first-seen
/// order, the field's name and every selection set of that key, fragments
/// expanded in place; `within` holds the fragments being expanded.
fn group<'a>(
    doc: &'a ExecutableDocument,
    set: &'a SelectionSet,
    grouped: &mut IndexMap<Name, (Name, Vec<&'a SelectionSet>)>,
    within: &mut Vec<&'a Name>,
) {
    for selection in &set.items {
        match &selection.node {
            Selection::Field(field) => grouped
                .entry(field.node.response_key().node.clone())
                .or_insert_with(|| (field.node.name.node.clone(), Vec::new()))
                .1
                .push(&field.node.selection_set.node),
            Selection::FragmentSpread(spread) => {
                let name = &spread.node.fragment_name.node;
                if within.contains(&name) {
                    continue;
                }
                if let Some(fragment) = doc.fragments.get(name) {
                    within.push(name);
                    group(doc, &fragment.node.selection_set.node, grouped, within);
                    within.pop();
                }
            }
            Selection::InlineFragment(fragment) => {
                group(doc, &fragment.node.selection_set.node, grouped, within);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use async_graphql::parser::parse_query;
    use async_graphql::{Pos, ServerError};
    use serde_json::json;

    use super::*;

    fn types() -> FieldTypes {
        FieldTypes::from_sdl(&crate::graphql::schema::sdl())
    }

    fn shape(query: &str, operation: Option<&str>) -> Option<Shape> {
        Shape::of(&parse_query(query).unwrap(), operation, &types())
    }

    /// `value` with every object's keys reversed, as if its fields had
    /// finished last to first.
    fn reversed(value: &Value) -> Value {
        match value {
            Value::Object(fields) => Value::Object(
                fields
                    .iter()
                    .rev()
                    .map(|(k, v)| (k.clone(), reversed(v)))
                    .collect(),
            ),
            Value::List(items) => Value::List(items.iter().map(reversed).collect()),
            other => other.clone(),
        }
    }

    /// `data` as the query's shape leaves it, after `errors` at those paths.
    fn shaped(query: &str, data: serde_json::Value, errors: &[serde_json::Value]) -> String {
        let mut response = Response::new(reversed(&Value::from_json(data).unwrap()));
        response.errors = errors
            .iter()
            .map(|path| {
                let mut error = ServerError::new("failed", Some(Pos::default()));
                error.path = serde_json::from_value(path.clone()).unwrap();
                error
            })
            .collect();
        shape(query, None).unwrap().apply(&mut response);
        serde_json::to_string(&response.data).unwrap()
    }

    #[test]
    fn objects_follow_the_selection_through_aliases_fragments_and_lists() {
        let query = r#"
            query Page {
                profiles(first: 2) {
                    totalCount
                    nodes { updatedAt ...Named top: opportunities(first: 1) { nodes { overallScore organizationName } } }
                }
                profiles(first: 2) { nodes { id ... on Profile { city name } } }
                __typename
            }
            fragment Named on Profile { name opportunitiesCount }
            query Other { __typename }
        "#;
        // Keys as a JSON object holds them (sorted); the document's order is
        // another.
        let node = |n: u32| {
            json!({
                "city": null, "id": format!("p{n}"), "name": format!("N{n}"),
                "opportunitiesCount": n,
                "top": { "nodes": [{ "organizationName": "F", "overallScore": 0.5 }] },
                "updatedAt": "2026-01-01T00:00:00Z"
            })
        };
        let data = json!({
            "__typename": "QueryRoot",
            "profiles": { "nodes": [node(1), node(2)], "totalCount": 2 }
        });
        let node = |n: u32| {
            format!(
                r#"{{"updatedAt":"2026-01-01T00:00:00Z","name":"N{n}","opportunitiesCount":{n},"top":{{"nodes":[{{"overallScore":0.5,"organizationName":"F"}}]}},"id":"p{n}","city":null}}"#
            )
        };
        let expected = format!(
            r#"{{"profiles":{{"totalCount":2,"nodes":[{},{}]}},"__typename":"QueryRoot"}}"#,
            node(1),
            node(2)
        );
        let page = shape(query, Some("Page")).unwrap();
        let mut response = Response::new(reversed(&Value::from_json(data).unwrap()));
        page.apply(&mut response);
        assert_eq!(serde_json::to_string(&response.data).unwrap(), expected);
        // Already in order: unchanged.
        page.apply(&mut response);
        assert_eq!(serde_json::to_string(&response.data).unwrap(), expected);
        // Two operations and no name: nothing to go by.
        assert!(shape(query, None).is_none());
        assert!(shape(query, Some("Missing")).is_none());
    }

    #[test]
    fn a_fragment_inside_itself_is_walked_once() {
        let query = "{ profile(id: \"p\") { ...A } } fragment A on Profile { name ...A id }";
        let data = json!({ "profile": { "id": "p", "name": "N" } });
        assert_eq!(
            shaped(query, data, &[]),
            r#"{"profile":{"name":"N","id":"p"}}"#
        );
    }

    /// async-graphql leaves a failed field's key out; the null goes where
    /// the spec puts it.
    #[test]
    fn a_field_error_nulls_the_nearest_field_that_may_be_null() {
        // `profile` may be null; `name` and `opportunities` may not.
        let query = "{ p: profile(id: \"a\") { name opportunities(first: 1) { totalCount } } \
                     q: profile(id: \"b\") { name city } }";
        let data = json!({ "p": { "name": "A" }, "q": { "name": "B" } });
        assert_eq!(
            shaped(
                query,
                data.clone(),
                &[json!(["p", "opportunities"]), json!(["q", "city"])]
            ),
            r#"{"p":null,"q":{"name":"B","city":null}}"#
        );
        // A failed field that may be null stays where the document puts it.
        let data = json!({ "q": { "name": "B" } });
        assert_eq!(
            shaped(query, data, &[json!(["q", "city"]), json!(["p"])]),
            r#"{"p":null,"q":{"name":"B","city":null}}"#
        );
        // Through non-null lists and their non-null items up to a root
        // field that may not be null: `data` itself.
        let query = "{ profiles(first: 2) { nodes { name opportunitiesCount } } }";
        let data = json!({ "profiles": { "nodes": [{ "name": "A", "opportunitiesCount": 1 }, { "name": "B" }] } });
        assert_eq!(
            shaped(
                query,
                data,
                &[json!(["profiles", "nodes", 1, "opportunitiesCount"])]
            ),
            "null"
        );
        // async-graphql gives an object whose fields all failed as null.
        let query = "{ q: profile(id: \"b\") { city } cacheStats { entries } }";
        assert_eq!(
            shaped(
                query,
                json!({ "q": null }),
                &[json!(["q", "city"]), json!(["cacheStats"])]
            ),
            r#"{"q":{"city":null},"cacheStats":null}"#
        );
        assert_eq!(
            shaped(query, json!(null), &[json!(["cacheStats"])]),
            r#"{"cacheStats":null}"#
        );
        // Unknown to the schema (introspection's types): may be null.
        let query = "{ __schema { queryType { name } } }";
        let data = json!({ "__schema": { "queryType": {} } });
        assert_eq!(
            shaped(query, data, &[json!(["__schema", "queryType", "name"])]),
            r#"{"__schema":{"queryType":{"name":null}}}"#
        );
    }

    /// [`Shape::of`] applies every fragment whatever its type condition,
    /// which holds only while no field can return more than one type.
    #[test]
    fn the_schema_has_no_interfaces_or_unions() {
        let sdl = crate::graphql::schema::sdl();
        let doc = async_graphql::parser::parse_schema(&sdl).unwrap();
        for definition in doc.definitions {
            if let TypeSystemDefinition::Type(ty) = definition {
                assert!(
                    !matches!(ty.node.kind, TypeKind::Interface(_) | TypeKind::Union(_)),
                    "{} is abstract: Shape::of must check type conditions",
                    ty.node.name.node
                );
            }
        }
    }

    #[test]
    fn field_types_come_from_the_schema() {
        let types = types();
        assert_eq!(types.query, "QueryRoot");
        assert_eq!(types.mutation.as_deref(), Some("MutationRoot"));
        // [Profile!]!: the list and its items may not be null.
        assert_eq!(
            types.field("ProfileConnection", "nodes"),
            Some(("Profile", 0b11))
        );
        assert_eq!(types.field("QueryRoot", "profile"), Some(("Profile", 0)));
        assert_eq!(types.field("Profile", "city"), Some(("String", 0)));
        assert_eq!(types.field("Profile", "__typename"), Some(("String", 1)));
        assert_eq!(types.field("Profile", "nothing"), None);
    }
}
