//! Domain values that are validated at the edge ("parse, don't validate").
//!
//! Every value a client or an import asks to store passes through one of
//! these first, so the database only holds well-formed values. Lookups
//! (ids, search text) are bound as data: a malformed one finds nothing or,
//! where the database cannot compare it, is refused as bad input.

use std::fmt;

use async_graphql::{Enum, InputValueError, InputValueResult, Scalar, ScalarType, Value};
use chrono::{DateTime, Datelike, NaiveDate, SubsecRound, Timelike, Utc};

use crate::error::AppError;

/// An IRS Employer Identification Number: exactly 9 digits, stored without dash.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Ein(String);

impl Ein {
    /// Accepts `123456789` or `12-3456789`.
    pub fn parse(input: &str) -> Result<Self, AppError> {
        let trimmed = input.trim();
        let digits: String = match trimmed.split_once('-') {
            Some((a, b)) if a.len() == 2 && b.len() == 7 => format!("{a}{b}"),
            Some(_) => String::new(),
            None => trimmed.to_owned(),
        };
        if digits.len() == 9 && digits.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self(digits))
        } else {
            Err(AppError::bad_input(format!(
                "invalid EIN {input:?}: expected 9 digits, e.g. 12-3456789"
            )))
        }
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// A two-letter US state or territory code, upper case.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StateCode(String);

pub const US_STATES: &[&str] = &[
    "AL", "AK", "AZ", "AR", "CA", "CO", "CT", "DE", "DC", "FL", "GA", "HI", "ID", "IL", "IN", "IA",
    "KS", "KY", "LA", "ME", "MD", "MA", "MI", "MN", "MS", "MO", "MT", "NE", "NV", "NH", "NJ", "NM",
    "NY", "NC", "ND", "OH", "OK", "OR", "PA", "RI", "SC", "SD", "TN", "TX", "UT", "VT", "VA", "WA",
    "WV", "WI", "WY", "PR", "GU", "VI", "AS", "MP",
];

impl StateCode {
    pub fn parse(input: &str) -> Result<Self, AppError> {
        let upper = input.trim().to_ascii_uppercase();
        if US_STATES.contains(&upper.as_str()) {
            Ok(Self(upper))
        } else {
            Err(AppError::bad_input(format!(
                "invalid state {input:?}: expected a two-letter US state code, e.g. CA"
            )))
        }
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// An NTEE code: a letter A-Z, two digits, and an optional letter or digit (`B20`, `E32`, `R60A`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NteeCode(String);

impl NteeCode {
    pub fn parse(input: &str) -> Result<Self, AppError> {
        let upper = input.trim().to_ascii_uppercase();
        let b = upper.as_bytes();
        let ok = (3..=4).contains(&b.len())
            && b[0].is_ascii_uppercase()
            && b[1].is_ascii_digit()
            && b[2].is_ascii_digit()
            && b.get(3).is_none_or(|c| c.is_ascii_alphanumeric());
        if ok {
            Ok(Self(upper))
        } else {
            Err(AppError::bad_input(format!(
                "invalid NTEE code {input:?}: expected a letter and two digits, e.g. B20"
            )))
        }
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// An NTEE major group: the code's first letter, `A` to `Z`.
pub fn parse_ntee_major_group(input: &str) -> Result<String, AppError> {
    let upper = input.trim().to_ascii_uppercase();
    if upper.len() == 1 && upper.as_bytes()[0].is_ascii_uppercase() {
        Ok(upper)
    } else {
        Err(AppError::bad_input(format!(
            "invalid NTEE major group {input:?}: expected one letter A-Z"
        )))
    }
}

/// A value in 0..=1 (scores and confidence levels). `field` names it in errors.
pub fn parse_unit(field: &str, value: f64) -> Result<f64, AppError> {
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(AppError::bad_input(format!(
            "{field} must be between 0 and 1, got {value}"
        )))
    }
}

/// A user rating: 1 to 5 stars.
pub fn parse_rating(field: &str, value: i32) -> Result<i16, AppError> {
    if (1..=5).contains(&value) {
        Ok(value as i16)
    } else {
        Err(AppError::bad_input(format!(
            "{field} must be between 1 and 5, got {value}"
        )))
    }
}

/// Largest amount accepted: 2^53 - 1, the largest whole number a JSON
/// reader that keeps numbers as doubles (every browser) reads exactly.
pub const MAX_AMOUNT: i64 = (1 << 53) - 1;

/// An amount of whole dollars, refused when negative or past [`MAX_AMOUNT`].
pub fn parse_amount(field: &str, value: impl Into<i64>) -> Result<i64, AppError> {
    let value = value.into();
    if !(0..=MAX_AMOUNT).contains(&value) {
        return Err(AppError::bad_input(format!(
            "{field} must be between 0 and {MAX_AMOUNT}, got {value}"
        )));
    }
    Ok(value)
}

/// An amount in whole US dollars: GraphQL's `Int` holds 32 bits, too few
/// for the revenue of a large organisation, so amounts have a scalar of
/// their own, written as a JSON number up to [`MAX_AMOUNT`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dollars(pub i64);

/// A whole number of US dollars, 0 to 9007199254740991 (2^53 - 1), written as
/// a JSON number: exact in every JSON reader, JavaScript's included.
#[Scalar(name = "Dollars")]
impl ScalarType for Dollars {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::Number(n) => n.as_i64().map(Dollars).ok_or_else(|| {
                InputValueError::custom(format!("not a whole number of dollars: {n}"))
            }),
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn is_valid(value: &Value) -> bool {
        matches!(value, Value::Number(n) if n.is_i64())
    }

    fn to_value(&self) -> Value {
        Value::Number(self.0.into())
    }
}

impl From<Dollars> for i64 {
    fn from(value: Dollars) -> Self {
        value.0
    }
}

/// Trims a required text field and rejects it when empty, longer than
/// `max` characters or holding a NUL.
pub fn parse_text(field: &str, value: &str, max: usize) -> Result<String, AppError> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(AppError::bad_input(format!("{field} must not be empty")));
    }
    refuse_nul(field, trimmed)?;
    if trimmed.chars().count() > max {
        return Err(AppError::bad_input(format!(
            "{field} is longer than {max} characters"
        )));
    }
    Ok(trimmed.to_owned())
}

/// Longest short text the API stores (names, cities, websites, list items), in characters.
pub const MAX_NAME_CHARS: usize = 300;
/// Longest free text the API stores (mission statements, keywords, notes), in characters.
pub const MAX_TEXT_CHARS: usize = 10_000;
/// Most items of a text list (focus areas, tags).
pub const MAX_LIST_ITEMS: usize = 100;

/// A list of short texts (focus areas, tags): at most [`MAX_LIST_ITEMS`],
/// each item taken as [`parse_text`] takes it, up to [`MAX_NAME_CHARS`].
pub fn parse_text_list(field: &str, values: &[String]) -> Result<Vec<String>, AppError> {
    if values.len() > MAX_LIST_ITEMS {
        return Err(AppError::bad_input(format!(
            "{field} holds more than {MAX_LIST_ITEMS} items"
        )));
    }
    values
        .iter()
        .enumerate()
        .map(|(i, v)| parse_text(&format!("{field}[{i}]"), v, MAX_NAME_CHARS))
        .collect()
}

/// A website: text that frontends put in links, so an absolute URL must be
/// `http` or `https` (`javascript:` and `data:` would run in the reader's
/// browser). A bare host name (`www.example.org`) is kept as written.
pub fn parse_website(field: &str, value: &str, max: usize) -> Result<String, AppError> {
    let text = parse_text(field, value, max)?;
    match url::Url::parse(&text) {
        Ok(url) if !matches!(url.scheme(), "http" | "https") => Err(AppError::bad_input(format!(
            "{field} must be an http or https address, got a {}: address",
            url.scheme()
        ))),
        _ => Ok(text),
    }
}

/// PostgreSQL text cannot hold NUL, so no stored value has one and no
/// search for one can match; both databases refuse it the same way.
pub fn refuse_nul(field: &str, value: &str) -> Result<(), AppError> {
    if value.contains('\0') {
        return Err(AppError::bad_input(format!(
            "{field} must not contain NUL characters"
        )));
    }
    Ok(())
}

/// The years a date or time may have. SQLite keeps them as ISO 8601 text,
/// which sorts and compares as dates only with four-digit years, and
/// PostgreSQL's range ends before chrono's does.
const YEARS: std::ops::RangeInclusive<i32> = 1..=9999;

/// A date within [`YEARS`].
pub fn parse_date(field: &str, value: NaiveDate) -> Result<NaiveDate, AppError> {
    check_year(field, value.year(), &value)?;
    Ok(value)
}

/// A time within [`YEARS`], cut to whole microseconds: PostgreSQL keeps
/// no finer, and a list cursor carries microseconds, so a finer time stored
/// on SQLite would sort between the cursor and its own row (a page after it
/// would start with that row again, forever).
pub fn parse_time(field: &str, value: DateTime<Utc>) -> Result<DateTime<Utc>, AppError> {
    check_year(field, value.year(), &value)?;
    // A leap second (`23:59:60.5`) is kept as the last microsecond of the
    // second before it: databases and cursors count no 61st second, and
    // would sort it with the next minute.
    let value = if value.nanosecond() >= 1_000_000_000 {
        value.with_nanosecond(999_999_000).unwrap_or(value)
    } else {
        value
    };
    Ok(value.trunc_subsecs(6))
}

fn check_year(field: &str, year: i32, value: &dyn fmt::Display) -> Result<(), AppError> {
    if YEARS.contains(&year) {
        return Ok(());
    }
    Err(AppError::bad_input(format!(
        "{field} must be in the years {} to {}, got {value}",
        YEARS.start(),
        YEARS.end()
    )))
}

/// Stored lowercase text values of the domain's enumerations.
pub trait DbEnum: Sized + Copy + 'static {
    const ALL: &'static [Self];
    fn as_str(self) -> &'static str;
    fn from_db(value: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.as_str() == value)
    }
}

macro_rules! db_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Enum, Copy, Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl DbEnum for $name {
            const ALL: &'static [Self] = &[$(Self::$variant),+];
            fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

db_enum! {
    /// The kind of organisation a profile describes.
    OrganizationType {
        /// A charitable nonprofit (501(c)(3) and similar).
        Nonprofit = "nonprofit",
        /// A private or community foundation.
        Foundation = "foundation",
        /// A government body.
        Government = "government",
        /// A company.
        Corporate = "corporate",
    }
}

db_enum! {
    /// Where a profile is in its life cycle.
    ProfileStatus {
        /// In use.
        Active = "active",
        /// Being set up.
        Draft = "draft",
        /// Kept for the record; hidden from lists unless asked for.
        Archived = "archived",
        /// A starting point for new profiles.
        Template = "template",
    }
}

db_enum! {
    /// The funnel stage of an opportunity, from first sighting to active pursuit.
    Stage {
        /// Just found.
        Discovery = "discovery",
        /// Worth a look.
        Prospects = "prospects",
        /// Checked for fit.
        QualifiedProspects = "qualified_prospects",
        /// Shortlisted.
        Candidates = "candidates",
        /// Chosen to pursue.
        Targets = "targets",
        /// Being applied for.
        Opportunities = "opportunities",
    }
}

db_enum! {
    /// How urgently an opportunity needs attention.
    Priority {
        /// Can wait.
        Low = "low",
        /// Normal.
        Medium = "medium",
        /// Soon.
        High = "high",
        /// Now.
        Urgent = "urgent",
    }
}

db_enum! {
    /// The kind of funder behind an opportunity.
    FundingSource {
        /// A company or corporate foundation.
        Commercial = "commercial",
        /// A federal agency.
        Government = "government",
        /// A state agency.
        State = "state",
        /// A nonprofit or private foundation.
        Nonprofit = "nonprofit",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ein_accepts_both_forms_and_rejects_others() {
        assert_eq!(Ein::parse("12-3456789").unwrap().into_inner(), "123456789");
        assert_eq!(Ein::parse("123456789").unwrap().into_inner(), "123456789");
        for bad in [
            "",
            "12345678",
            "1234567890",
            "123-456789",
            "12a456789",
            "12-34567890",
        ] {
            assert!(Ein::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn ntee_and_state_codes() {
        assert_eq!(NteeCode::parse("b20").unwrap().into_inner(), "B20");
        assert!(NteeCode::parse("R60A").is_ok());
        for bad in ["B2", "20B", "B200A", "BB0", ""] {
            assert!(NteeCode::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(StateCode::parse("ca").unwrap().into_inner(), "CA");
        assert!(StateCode::parse("XX").is_err());
    }

    #[test]
    fn enums_round_trip_through_their_text() {
        for stage in Stage::ALL {
            assert_eq!(Stage::from_db(stage.as_str()), Some(*stage));
        }
        assert_eq!(Stage::from_db("nope"), None);
    }
}
