//! Sets of an entity's columns: those a page selects when its query reads
//! only some of them.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;

use sea_orm::ColumnTrait;
use serde::{Serialize, Serializer};

use super::page::SortKey;

/// A set of columns of one entity. Rows read with fewer than all columns
/// hold placeholders in the others, so a set must cover every field its
/// rows will be asked for.
pub struct Columns<C> {
    /// Bit `i` for the entity's `i`-th column (at most 32 columns).
    bits: u32,
    column: PhantomData<fn() -> C>,
}

impl<C: ColumnTrait + Copy> Columns<C> {
    pub fn none() -> Self {
        Self {
            bits: 0,
            column: PhantomData,
        }
    }

    pub fn all() -> Self {
        C::iter().fold(Self::none(), |set, c| set.with(c))
    }

    pub fn with(self, column: C) -> Self {
        let place = C::iter()
            .position(|c| c.as_str() == column.as_str())
            .expect("a column of its own entity");
        Self {
            bits: self.bits | 1 << place,
            ..self
        }
    }

    /// Adds the columns a cursor under `keys` reads; a key that is no
    /// column (a computed one) needs every column.
    pub fn with_sort_keys(self, keys: &[SortKey]) -> Self {
        keys.iter()
            .fold(self, |set, key| match key.name.parse::<C>() {
                Ok(column) => set.with(column),
                Err(_) => Self::all(),
            })
    }

    /// Adds the column behind a GraphQL field of the entity's object (its
    /// name in camelCase), or every column for a field that is none.
    pub fn with_field(self, field: &str) -> Self {
        match field.parse::<C>() {
            Ok(column) => self.with(column),
            Err(_) => Self::all(),
        }
    }

    /// The columns in the entity's order (the order they are selected in).
    pub fn columns(self) -> impl Iterator<Item = C> {
        C::iter()
            .enumerate()
            .filter(move |(place, _)| self.bits & 1 << place != 0)
            .map(|(_, c)| c)
    }
}

// By hand: derived impls would ask the same of the column type.
impl<C> Clone for Columns<C> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<C> Copy for Columns<C> {}

impl<C> PartialEq for Columns<C> {
    fn eq(&self, other: &Self) -> bool {
        self.bits == other.bits
    }
}

impl<C> Eq for Columns<C> {}

impl<C> Hash for Columns<C> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.bits.hash(state);
    }
}

impl<C> fmt::Debug for Columns<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Columns({:#b})", self.bits)
    }
}

impl<C> Serialize for Columns<C> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.bits.serialize(serializer)
    }
}
