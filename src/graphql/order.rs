//! Response objects in the order the document asks for their fields.
//!
//! GraphQL serialises each object with its keys in the order its selection
//! names them (the spec's CollectFields order). async-graphql inserts a key
//! when its resolver finishes, which varies with timing, so the same answer
//! would come out in different orders, under different ETags. Putting every
//! object back in the document's order makes responses read as they were
//! asked for and keeps an answer's bytes the same from one request to the
//! next.

use async_graphql::indexmap::IndexMap;
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{Name, Value};

/// The response keys an object may hold, in the document's order, each with
/// the order of its own selection.
#[derive(Debug, Default)]
pub struct FieldOrder {
    keys: IndexMap<Name, FieldOrder>,
}

impl FieldOrder {
    /// The order of the operation `name` (the document's only one when
    /// `None`); `None` when the document has no such operation.
    ///
    /// Fragments apply whatever their type condition: the schema has no
    /// interfaces or unions, so a spread that validates applies to the
    /// object it is spread in. A fragment spread inside itself (which
    /// validation refuses later) is walked once.
    pub fn of(doc: &ExecutableDocument, name: Option<&str>) -> Option<Self> {
        let mut operations = doc.operations.iter();
        let (_, operation) = match name {
            Some(name) => operations.find(|(n, _)| n.is_some_and(|n| n.as_str() == name))?,
            None => {
                let only = operations.next()?;
                if operations.next().is_some() {
                    return None;
                }
                only
            }
        };
        Some(Self::collect(doc, &[&operation.node.selection_set.node]))
    }

    /// The order of the selection sets that one response key merges.
    fn collect(doc: &ExecutableDocument, sets: &[&SelectionSet]) -> Self {
        let mut grouped = IndexMap::new();
        for set in sets {
            group(doc, set, &mut grouped, &mut Vec::new());
        }
        Self {
            keys: grouped
                .into_iter()
                .map(|(key, sets)| (key, Self::collect(doc, &sets)))
                .collect(),
        }
    }

    /// Puts every object under `value` in this order. Keys the document
    /// does not name (there are none) would go last.
    pub fn apply(&self, value: &mut Value) {
        match value {
            Value::Object(fields) => {
                // Most objects finish in order already: checked by walking
                // both lists once, without hashing a key.
                let mut expected = self.keys.keys();
                if !fields.keys().all(|key| expected.any(|k| k == key)) {
                    let rank = |key: &Name| self.keys.get_index_of(key).unwrap_or(usize::MAX);
                    fields.sort_unstable_by_key(|key, _| rank(key));
                }
                // In order now: each key's order is found after the last one's.
                let mut orders = self.keys.iter();
                for (key, value) in fields.iter_mut() {
                    if let Some((_, order)) = orders.find(|(k, _)| *k == key) {
                        order.apply(value);
                    }
                }
            }
            Value::List(items) => items.iter_mut().for_each(|item| self.apply(item)),
            _ => {}
        }
    }
}

/// Adds the fields of `set` to `grouped`, by response key in first-seen
/// order, with fragments expanded in place; `within` holds the fragments
/// being expanded.
fn group<'a>(
    doc: &'a ExecutableDocument,
    set: &'a SelectionSet,
    grouped: &mut IndexMap<Name, Vec<&'a SelectionSet>>,
    within: &mut Vec<&'a Name>,
) {
    for selection in &set.items {
        match &selection.node {
            Selection::Field(field) => grouped
                .entry(field.node.response_key().node.clone())
                .or_default()
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
    use serde_json::json;

    use super::*;

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

    fn ordered(query: &str, operation: Option<&str>, data: serde_json::Value) -> String {
        let doc = parse_query(query).unwrap();
        let order = FieldOrder::of(&doc, operation).unwrap();
        let mut value = reversed(&Value::from_json(data).unwrap());
        order.apply(&mut value);
        serde_json::to_string(&value).unwrap()
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
        assert_eq!(ordered(query, Some("Page"), data.clone()), expected);
        // Already in order: unchanged.
        let doc = parse_query(query).unwrap();
        let mut value = Value::from_json(serde_json::from_str(&expected).unwrap()).unwrap();
        FieldOrder::of(&doc, Some("Page"))
            .unwrap()
            .apply(&mut value);
        assert_eq!(serde_json::to_string(&value).unwrap(), expected);
        // Two operations and no name: nothing to order by.
        assert!(FieldOrder::of(&doc, None).is_none());
        assert!(FieldOrder::of(&doc, Some("Missing")).is_none());
    }

    #[test]
    fn a_fragment_inside_itself_is_walked_once() {
        let query = "{ profile(id: \"p\") { ...A } } fragment A on Profile { name ...A id }";
        let data = json!({ "profile": { "id": "p", "name": "N" } });
        assert_eq!(
            ordered(query, None, data),
            r#"{"profile":{"name":"N","id":"p"}}"#
        );
    }
}
