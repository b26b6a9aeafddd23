//! Relay connection pieces shared by every list.

use async_graphql::{SelectionField, SimpleObject};

/// The fields a connection field's selection asks of its nodes, under
/// `nodes` and `edges.node` (through fragments too); `totalCount`,
/// `pageInfo` and the edges' cursors read nothing of them.
pub fn node_fields<'a>(connection: SelectionField<'a>) -> Vec<SelectionField<'a>> {
    let mut fields = Vec::new();
    for part in connection.selection_set() {
        match part.name() {
            "nodes" => fields.extend(part.selection_set()),
            "edges" => {
                for node in part.selection_set().filter(|f| f.name() == "node") {
                    fields.extend(node.selection_set());
                }
            }
            _ => {}
        }
    }
    fields
}

/// Where a page sits in its list.
#[derive(SimpleObject, Clone, Debug)]
pub struct PageInfo {
    /// True when more rows follow the last one of this page.
    pub has_next_page: bool,
    /// True when rows come before the first one of this page.
    pub has_previous_page: bool,
    /// Cursor of the first row, to page backwards with `before`.
    pub start_cursor: Option<String>,
    /// Cursor of the last row, to page forwards with `after`.
    pub end_cursor: Option<String>,
}

impl PageInfo {
    /// `has_more` says whether rows lie beyond the page in the walking
    /// direction; `from_cursor` whether the page started from a cursor.
    pub fn new(cursors: &[String], backward: bool, has_more: bool, from_cursor: bool) -> Self {
        let (has_next_page, has_previous_page) = if backward {
            (from_cursor, has_more)
        } else {
            (has_more, from_cursor)
        };
        Self {
            has_next_page,
            has_previous_page,
            start_cursor: cursors.first().cloned(),
            end_cursor: cursors.last().cloned(),
        }
    }
}

/// The order direction of one sort key.
#[derive(async_graphql::Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum OrderDirection {
    /// Smallest (or A) first.
    Asc,
    /// Largest (or Z) first.
    Desc,
}

impl OrderDirection {
    pub fn is_desc(direction: Option<Self>, default_desc: bool) -> bool {
        direction.map_or(default_desc, |d| d == Self::Desc)
    }
}
