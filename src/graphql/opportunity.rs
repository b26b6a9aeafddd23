//! `Opportunity`: its object, inputs, connection, query and mutation roots.

use std::sync::Arc;

use async_graphql::{
    Context, ErrorExtensions, ID, InputObject, MaybeUndefined, Object, Result, SelectionField,
};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use entity::{StringList, opportunity};

use super::connection::{OrderDirection, PageInfo, node_fields};
use super::loaders::{CountKey, Loaders};
use super::profile::{
    Profile, apply, apply_required, optional, parse_batch, parse_search, stored_enum,
};
use super::{ApiContext, MAX_FILTER_VALUES, Refused, filter_values, limits, wrote};
use crate::auth::{Role, RoleGuard};
use crate::cache::Tag;
use crate::domain::{
    DbEnum, Dollars, Ein, FundingSource, MAX_NAME_CHARS, MAX_TEXT_CHARS, Priority, Stage,
    parse_amount, parse_date, parse_rating, parse_text, parse_text_list, parse_time, parse_unit,
};
use crate::error::{AppError, AppResult, GqlResultExt};
use crate::store::opportunities::{
    self, ColumnSet, OpportunityFilter, OpportunityOrderField, ScoreBound,
};
use crate::store::page::{self, Fetched, PageRequest, SortKey};
use crate::store::{bulk, new_id, now, profiles};

pub struct Opportunity(pub opportunity::Model);

/// The columns that an opportunity connection field's selection reads under
/// `nodes` and `edges.node` (through fragments too), with those every page
/// needs: the row's id, its profile and the cursor's sort keys. Every field
/// of `Opportunity` is one column (`profile` is `profile_id`); a field that
/// is none selects every column.
pub fn node_columns(connection: SelectionField<'_>, keys: &[SortKey]) -> ColumnSet {
    node_fields(connection).into_iter().fold(
        ColumnSet::keys().with_sort_keys(keys),
        |set, field| match field.name() {
            "__typename" => set,
            "profile" => set.with(opportunity::Column::ProfileId),
            name => set.with_field(name),
        },
    )
}

/// A prospective funder or grant found for one profile, moved through the
/// stages of a funnel and scored.
#[Object(cache_control(max_age = 10))]
impl Opportunity {
    /// Unique id (`opp_` + 12 hex characters).
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    /// Id of the profile this opportunity was found for.
    async fn profile_id(&self) -> ID {
        ID(self.0.profile_id.clone())
    }
    /// The profile this opportunity was found for (batched across a page).
    async fn profile(&self, ctx: &Context<'_>) -> Result<Profile> {
        let found = ctx
            .data_unchecked::<Loaders>()
            .profile(&self.0.profile_id)
            .await
            .map_err(|e| e.as_ref().extend())?;
        // The foreign key guarantees the parent; a miss means it was deleted meanwhile.
        found
            .map(Profile)
            .ok_or_else(|| AppError::not_found("profile", &self.0.profile_id).extend())
    }
    /// The funder's name.
    async fn organization_name(&self) -> &str {
        &self.0.organization_name
    }
    /// The funder's EIN, 9 digits.
    async fn ein(&self) -> Option<&str> {
        self.0.ein.as_deref()
    }
    /// Funnel stage.
    async fn current_stage(&self) -> Result<Stage> {
        stored_enum(&self.0.current_stage)
    }
    /// Overall fit score, 0 to 1.
    async fn overall_score(&self) -> f64 {
        self.0.overall_score
    }
    /// Confidence in the score, 0 to 1.
    async fn confidence_level(&self) -> Option<f64> {
        self.0.confidence_level
    }
    /// Priority.
    async fn priority_level(&self) -> Result<Option<Priority>> {
        self.0
            .priority_level
            .as_deref()
            .map(stored_enum)
            .transpose()
    }
    /// The researcher's rating, 1 to 5 stars.
    async fn user_rating(&self) -> Option<i16> {
        self.0.user_rating
    }
    /// Kind of funder.
    async fn source(&self) -> Result<Option<FundingSource>> {
        self.0.source.as_deref().map(stored_enum).transpose()
    }
    /// Smallest award, whole dollars.
    async fn award_floor(&self) -> Option<Dollars> {
        self.0.award_floor.map(Dollars)
    }
    /// Largest award, whole dollars.
    async fn award_ceiling(&self) -> Option<Dollars> {
        self.0.award_ceiling.map(Dollars)
    }
    /// Application deadline.
    async fn close_date(&self) -> Option<NaiveDate> {
        self.0.close_date
    }
    /// Tags.
    async fn tags(&self) -> &[String] {
        &self.0.tags.0
    }
    /// Notes.
    async fn notes(&self) -> Option<&str> {
        self.0.notes.as_deref()
    }
    /// When the opportunity was found (UTC).
    async fn discovery_date(&self) -> DateTime<Utc> {
        self.0.discovery_date
    }
    /// When the opportunity was created (UTC).
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// When the opportunity last changed (UTC).
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
}

/// Which opportunities a list returns. Conditions combine with AND; list
/// conditions match any of their values, and an empty list, like one left
/// out, sets no condition (a form with nothing ticked filters nothing).
#[derive(InputObject, Default, Clone)]
#[graphql(name = "OpportunityFilter")]
pub struct OpportunityFilterInput {
    /// Only opportunities of these profiles.
    profile_ids: Option<Vec<ID>>,
    /// Only these stages.
    stages: Option<Vec<Stage>>,
    /// Only these priorities.
    priority_levels: Option<Vec<Priority>>,
    /// Only these kinds of funder.
    sources: Option<Vec<FundingSource>>,
    /// Overall score at least this (0 to 1).
    score_min: Option<f64>,
    /// Overall score at most this (0 to 1).
    score_max: Option<f64>,
    /// Deadline on or after this date.
    close_date_from: Option<NaiveDate>,
    /// Deadline on or before this date.
    close_date_to: Option<NaiveDate>,
    /// Deadline between today and this many days from today (UTC).
    closing_within_days: Option<i32>,
    /// Awards that can reach at least this amount (the floor..ceiling range overlaps awardMin..awardMax).
    award_min: Option<Dollars>,
    /// Awards that can be at most this amount (the floor..ceiling range overlaps awardMin..awardMax).
    award_max: Option<Dollars>,
    /// Rating at least this (1 to 5).
    rating_min: Option<i32>,
    /// Rating at most this (1 to 5).
    rating_max: Option<i32>,
    /// Text found in the funder name, the notes or one of the tags, in any
    /// case (SQLite folds ASCII letters only).
    search: Option<String>,
}

/// Most profiles one opportunity filter may name: as many as a page of
/// profiles can hold, each a bound variable.
const MAX_PROFILE_IDS: usize = 1000;

/// Longest deadline window accepted, in days.
const MAX_WINDOW_DAYS: i32 = 3650;

impl OpportunityFilterInput {
    pub fn parse(input: Option<Self>) -> AppResult<OpportunityFilter> {
        let Some(input) = input else {
            return Ok(OpportunityFilter::default());
        };
        let unit = |field: &str, v: Option<f64>| {
            v.map(|v| parse_unit(field, v).map(ScoreBound)).transpose()
        };
        let rating = |field: &str, v: Option<i32>| v.map(|v| parse_rating(field, v)).transpose();
        let amount =
            |field: &str, v: Option<Dollars>| v.map(|v| parse_amount(field, v)).transpose();
        let date = |field: &str, v: Option<NaiveDate>| v.map(|v| parse_date(field, v)).transpose();
        let mut from = date("closeDateFrom", input.close_date_from)?;
        let mut to = date("closeDateTo", input.close_date_to)?;
        if let Some(days) = input.closing_within_days {
            if !(0..=MAX_WINDOW_DAYS).contains(&days) {
                return Err(AppError::bad_input(format!(
                    "closingWithinDays must be between 0 and {MAX_WINDOW_DAYS}, got {days}"
                )));
            }
            let today = Utc::now().date_naive();
            from = Some(from.map_or(today, |f| f.max(today)));
            let end = today + Duration::days(days.into());
            to = Some(to.map_or(end, |t| t.min(end)));
        }
        let filter = OpportunityFilter {
            profile_ids: filter_values("profileIds", input.profile_ids, MAX_PROFILE_IDS)?
                .into_iter()
                .map(|id| id.0)
                .collect(),
            stages: filter_values("stages", input.stages, MAX_FILTER_VALUES)?,
            priorities: filter_values("priorityLevels", input.priority_levels, MAX_FILTER_VALUES)?,
            sources: filter_values("sources", input.sources, MAX_FILTER_VALUES)?,
            score_min: unit("scoreMin", input.score_min)?,
            score_max: unit("scoreMax", input.score_max)?,
            close_date_from: from,
            close_date_to: to,
            award_min: amount("awardMin", input.award_min)?,
            award_max: amount("awardMax", input.award_max)?,
            rating_min: rating("ratingMin", input.rating_min)?,
            rating_max: rating("ratingMax", input.rating_max)?,
            search: parse_search(input.search)?,
        };
        let ordered =
            |a: Option<f64>, b: Option<f64>| matches!((a, b), (Some(a), Some(b)) if a > b);
        if ordered(filter.score_min.map(|s| s.0), filter.score_max.map(|s| s.0)) {
            return Err(AppError::bad_input("scoreMin must not exceed scoreMax"));
        }
        if ordered(
            filter.award_min.map(|v| v as f64),
            filter.award_max.map(|v| v as f64),
        ) {
            return Err(AppError::bad_input("awardMin must not exceed awardMax"));
        }
        if ordered(
            filter.rating_min.map(f64::from),
            filter.rating_max.map(f64::from),
        ) {
            return Err(AppError::bad_input("ratingMin must not exceed ratingMax"));
        }
        Ok(filter)
    }
}

/// One sort key of an opportunity list.
#[derive(InputObject, Clone, Copy)]
pub struct OpportunityOrder {
    /// What to sort by.
    field: OpportunityOrderField,
    /// Direction; each field has a natural default (score, award and discovery
    /// largest or newest first; deadline soonest first; names A-Z).
    direction: Option<OrderDirection>,
}

impl OpportunityOrder {
    pub fn parse(order: Option<Vec<Self>>) -> AppResult<Vec<(OpportunityOrderField, bool)>> {
        super::sort_keys(
            order,
            |o| {
                (
                    o.field,
                    OrderDirection::is_desc(o.direction, o.field.descending_by_default()),
                )
            },
            (OpportunityOrderField::OverallScore, true),
        )
    }
}

pub struct OpportunityEdge {
    node: Opportunity,
    /// The list's sort keys, shared by its edges.
    keys: Arc<[SortKey]>,
}

/// An edge of an opportunity list.
#[Object]
impl OpportunityEdge {
    /// Opaque position of this opportunity in its list.
    async fn cursor(&self) -> String {
        cursor(&self.node.0, &self.keys)
    }

    /// The opportunity.
    async fn node(&self) -> &Opportunity {
        &self.node
    }
}

/// The cursor of `row` in a list sorted by `keys`. Edges encode theirs only
/// when a query asks for them: a nested page of 50 x 5 rows spent 2.6% of
/// its CPU encoding cursors that most queries never read.
fn cursor(row: &opportunity::Model, keys: &[SortKey]) -> String {
    page::encode_cursor(keys, opportunities::sort_values(row, keys))
}

/// How a connection's `totalCount` is found, when it is asked for.
pub enum Total {
    /// A root list: count the filter's rows.
    Filter(OpportunityFilter),
    /// One profile's nested list: batched through the count loader.
    Nested(CountKey),
}

/// A fetched page of opportunities, with what its `pageInfo` needs.
pub struct OpportunityConnection {
    edges: Vec<OpportunityEdge>,
    /// Walked backwards (`last`/`before`).
    backward: bool,
    /// More rows beyond the page in the walking direction.
    has_more: bool,
    /// The page started from a cursor.
    from_cursor: bool,
    total: Total,
}

/// A page of opportunities (Relay connection).
#[Object(cache_control(max_age = 10))]
impl OpportunityConnection {
    /// The opportunities with their cursors.
    async fn edges(&self) -> &[OpportunityEdge] {
        &self.edges
    }
    /// Where this page sits in the list.
    // Its cursors are encoded only when asked for, as the edges' are.
    async fn page_info(&self) -> PageInfo {
        let ends: Vec<String> = self
            .edges
            .first()
            .into_iter()
            .chain(self.edges.last())
            .map(|edge| cursor(&edge.node.0, &edge.keys))
            .collect();
        PageInfo::new(&ends, self.backward, self.has_more, self.from_cursor)
    }
    /// The opportunities of this page.
    async fn nodes(&self) -> Vec<&Opportunity> {
        self.edges.iter().map(|e| &e.node).collect()
    }
    /// Opportunities in the whole list (all pages); computed only when asked for.
    async fn total_count(&self, ctx: &Context<'_>) -> Result<u64> {
        match &self.total {
            Total::Filter(filter) => {
                // Boxed to keep this type's field futures small (see `Loaders::one`).
                let api = ApiContext::of(ctx);
                Box::pin(api.cache.get_or_load(
                    "opportunities.totalCount",
                    filter,
                    &[Tag::Opportunities],
                    || async { Ok(opportunities::count(&api.db.read, filter).await?) },
                ))
                .await
                .gql()
            }
            Total::Nested(key) => ctx
                .data_unchecked::<Loaders>()
                .count(key.clone())
                .await
                .map_err(|e| e.as_ref().extend()),
        }
    }
}

impl OpportunityConnection {
    pub fn new(
        rows: Vec<opportunity::Model>,
        has_more: bool,
        keys: Arc<[SortKey]>,
        request: &PageRequest,
        total: Total,
    ) -> Self {
        let edges: Vec<OpportunityEdge> = rows
            .into_iter()
            .map(|o| OpportunityEdge {
                node: Opportunity(o),
                keys: keys.clone(),
            })
            .collect();
        Self {
            edges,
            backward: request.backward,
            has_more,
            from_cursor: request.cursor.is_some(),
            total,
        }
    }
}

#[derive(Default)]
pub struct OpportunityQuery;

#[Object]
impl OpportunityQuery {
    /// One opportunity by id.
    async fn opportunity(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The opportunity's id.")] id: ID,
    ) -> Result<Option<Opportunity>> {
        let api = ApiContext::of(ctx);
        // Deleting a profile deletes its opportunities unseen, so a lookup
        // depends on every opportunity rather than on its own id.
        let found = api
            .cache
            .get_or_load("opportunity", &id.0, &[Tag::Opportunities], || async {
                Ok(opportunities::by_id(&api.db.read, &id).await?)
            })
            .await
            .gql()?;
        Ok(found.map(Opportunity))
    }

    /// Opportunities across profiles, best score first unless ordered
    /// otherwise. Relay cursor pagination.
    #[graphql(complexity = "limits::list_complexity(first.or(last), 100, child_complexity)")]
    async fn opportunities(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only the opportunities that match.")] filter: Option<
            OpportunityFilterInput,
        >,
        #[graphql(
            desc = "Sort keys, most significant first; default: overall score, highest first."
        )]
        order_by: Option<Vec<OpportunityOrder>>,
        #[graphql(desc = "Page size from the start (or after `after`).")] first: Option<i32>,
        #[graphql(desc = "Start after this cursor.")] after: Option<String>,
        #[graphql(desc = "Page size from the end (or before `before`).")] last: Option<i32>,
        #[graphql(desc = "End before this cursor.")] before: Option<String>,
    ) -> Result<OpportunityConnection> {
        let api = ApiContext::of(ctx);
        let filter = OpportunityFilterInput::parse(filter).gql()?;
        let order = OpportunityOrder::parse(order_by).gql()?;
        let request = api.page(first, after, last, before).gql()?;
        let keys = opportunities::sort_keys(&order);
        let fetched: Fetched<opportunity::Model> = api
            .cache
            .get_or_load(
                "opportunities",
                &(&filter, &order, &request),
                &[Tag::Opportunities],
                || async { opportunities::page(&api.db.read, &filter, &keys, &request).await },
            )
            .await
            .gql()?;
        prefetch_profiles(ctx, &fetched.rows).await?;
        Ok(OpportunityConnection::new(
            fetched.rows,
            fetched.has_more,
            keys.into(),
            &request,
            Total::Filter(filter),
        ))
    }
}

/// Loads the parents of a page's opportunities in one statement when the
/// selection asks for them (see `prefetch_nested` for why not lazily).
async fn prefetch_profiles(ctx: &Context<'_>, rows: &[opportunity::Model]) -> Result<()> {
    let loaders = ctx.data_unchecked::<Loaders>();
    let look = ctx.look_ahead();
    let wanted = look.field("nodes").field("profile").exists()
        || look.field("edges").field("node").field("profile").exists();
    if !loaders.batching || !wanted || rows.is_empty() {
        return Ok(());
    }
    let mut ids: Vec<String> = rows.iter().map(|o| o.profile_id.clone()).collect();
    ids.sort();
    ids.dedup();
    loaders
        .profiles
        .load_many(ids)
        .await
        .map_err(|e| e.as_ref().extend())?;
    Ok(())
}

/// Fields of a new opportunity.
#[derive(InputObject)]
pub struct CreateOpportunityInput {
    /// The profile it is found for.
    profile_id: ID,
    /// The funder's name (required).
    organization_name: String,
    /// The funder's EIN.
    ein: Option<String>,
    /// Funnel stage; default DISCOVERY.
    current_stage: Option<Stage>,
    /// Overall fit score, 0 to 1; default 0.
    overall_score: Option<f64>,
    /// Confidence in the score, 0 to 1.
    confidence_level: Option<f64>,
    /// Priority.
    priority_level: Option<Priority>,
    /// Rating, 1 to 5.
    user_rating: Option<i32>,
    /// Kind of funder.
    source: Option<FundingSource>,
    /// Smallest award, whole dollars; not above the ceiling.
    award_floor: Option<Dollars>,
    /// Largest award, whole dollars.
    award_ceiling: Option<Dollars>,
    /// Application deadline.
    close_date: Option<NaiveDate>,
    /// Tags.
    tags: Option<Vec<String>>,
    /// Notes.
    notes: Option<String>,
    /// When it was found; default now.
    discovery_date: Option<DateTime<Utc>>,
}

fn check_award_range(o: &opportunity::Model) -> AppResult<()> {
    match (o.award_floor, o.award_ceiling) {
        (Some(floor), Some(ceiling)) if floor > ceiling => Err(AppError::bad_input(format!(
            "awardFloor ({floor}) must not exceed awardCeiling ({ceiling})"
        ))),
        _ => Ok(()),
    }
}

fn tag_list(values: Vec<String>) -> AppResult<StringList> {
    Ok(StringList(parse_text_list("tags", &values)?))
}

impl CreateOpportunityInput {
    fn into_model(self) -> AppResult<opportunity::Model> {
        let now = now();
        let model = opportunity::Model {
            id: new_id("opp_", &mut rand::rng()),
            profile_id: self.profile_id.0,
            organization_name: parse_text(
                "organizationName",
                &self.organization_name,
                MAX_NAME_CHARS,
            )?,
            ein: self
                .ein
                .map(|e| Ein::parse(&e).map(Ein::into_inner))
                .transpose()?,
            current_stage: self
                .current_stage
                .unwrap_or(Stage::Discovery)
                .as_str()
                .to_owned(),
            overall_score: parse_unit("overallScore", self.overall_score.unwrap_or(0.0))?,
            confidence_level: self
                .confidence_level
                .map(|v| parse_unit("confidenceLevel", v))
                .transpose()?,
            priority_level: self.priority_level.map(|p| p.as_str().to_owned()),
            user_rating: self
                .user_rating
                .map(|v| parse_rating("userRating", v))
                .transpose()?,
            source: self.source.map(|s| s.as_str().to_owned()),
            award_floor: self
                .award_floor
                .map(|v| parse_amount("awardFloor", v))
                .transpose()?,
            award_ceiling: self
                .award_ceiling
                .map(|v| parse_amount("awardCeiling", v))
                .transpose()?,
            close_date: self
                .close_date
                .map(|d| parse_date("closeDate", d))
                .transpose()?,
            tags: tag_list(self.tags.unwrap_or_default())?,
            notes: optional(self.notes, |n| parse_text("notes", n, MAX_TEXT_CHARS))?,
            discovery_date: self
                .discovery_date
                .map(|t| parse_time("discoveryDate", t))
                .transpose()?
                .unwrap_or(now),
            created_at: now,
            updated_at: now,
        };
        check_award_range(&model)?;
        Ok(model)
    }
}

/// Changes to an opportunity: omitted fields stay as they are; `null` clears a nullable field.
#[derive(InputObject)]
pub struct UpdateOpportunityInput {
    /// The funder's name.
    organization_name: MaybeUndefined<String>,
    /// The funder's EIN.
    ein: MaybeUndefined<String>,
    /// Funnel stage.
    current_stage: MaybeUndefined<Stage>,
    /// Overall fit score, 0 to 1.
    overall_score: MaybeUndefined<f64>,
    /// Confidence in the score, 0 to 1.
    confidence_level: MaybeUndefined<f64>,
    /// Priority.
    priority_level: MaybeUndefined<Priority>,
    /// Rating, 1 to 5.
    user_rating: MaybeUndefined<i32>,
    /// Kind of funder.
    source: MaybeUndefined<FundingSource>,
    /// Smallest award, whole dollars.
    award_floor: MaybeUndefined<Dollars>,
    /// Largest award, whole dollars.
    award_ceiling: MaybeUndefined<Dollars>,
    /// Application deadline.
    close_date: MaybeUndefined<NaiveDate>,
    /// Tags (replaces the list).
    tags: MaybeUndefined<Vec<String>>,
    /// Notes.
    notes: MaybeUndefined<String>,
}

impl UpdateOpportunityInput {
    fn apply_to(self, o: &mut opportunity::Model) -> AppResult<()> {
        apply_required(
            &mut o.organization_name,
            "organizationName",
            self.organization_name,
            |name| parse_text("organizationName", &name, MAX_NAME_CHARS),
        )?;
        apply(&mut o.ein, self.ein, |e| {
            Ein::parse(&e).map(Ein::into_inner)
        })?;
        apply_required(
            &mut o.current_stage,
            "currentStage",
            self.current_stage,
            |s| Ok(s.as_str().to_owned()),
        )?;
        apply_required(
            &mut o.overall_score,
            "overallScore",
            self.overall_score,
            |v| parse_unit("overallScore", v),
        )?;
        apply(&mut o.confidence_level, self.confidence_level, |v| {
            parse_unit("confidenceLevel", v)
        })?;
        apply(&mut o.priority_level, self.priority_level, |p| {
            Ok(p.as_str().to_owned())
        })?;
        apply(&mut o.user_rating, self.user_rating, |v| {
            parse_rating("userRating", v)
        })?;
        apply(&mut o.source, self.source, |s| Ok(s.as_str().to_owned()))?;
        apply(&mut o.award_floor, self.award_floor, |v| {
            parse_amount("awardFloor", v)
        })?;
        apply(&mut o.award_ceiling, self.award_ceiling, |v| {
            parse_amount("awardCeiling", v)
        })?;
        apply(&mut o.close_date, self.close_date, |d| {
            parse_date("closeDate", d)
        })?;
        apply_required(&mut o.tags, "tags", self.tags, tag_list)?;
        apply(&mut o.notes, self.notes, |v| {
            parse_text("notes", &v, MAX_TEXT_CHARS)
        })?;
        check_award_range(o)?;
        Ok(())
    }
}

#[derive(Default)]
pub struct OpportunityMutation;

#[Object]
impl OpportunityMutation {
    /// Creates an opportunity for an existing profile.
    #[graphql(guard = "RoleGuard(Role::Editor)")]
    async fn create_opportunity(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The new opportunity's fields.")] input: CreateOpportunityInput,
    ) -> Result<Option<Opportunity>> {
        let model = input.into_model().gql()?;
        let api = ApiContext::of(ctx);
        if !profiles::exists(&api.db.read, &model.profile_id)
            .await
            .gql()?
        {
            return Err(AppError::not_found("profile", &model.profile_id).extend());
        }
        let saved = opportunities::insert(&api.db.write, model.clone()).await;
        wrote(
            ctx,
            &[
                Tag::Opportunities,
                Tag::ProfileOpportunities(&model.profile_id),
            ],
        )
        .await;
        Ok(Some(Opportunity(saved.gql()?)))
    }

    /// Creates many opportunities in one transaction: all of them or none. A
    /// refused batch's error names the bad items by index, and its
    /// `extensions.items` lists every one as `{ index, message }`.
    #[graphql(guard = "RoleGuard(Role::Editor)")]
    async fn create_opportunities(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The new opportunities (1 to 1000).")] inputs: Vec<CreateOpportunityInput>,
    ) -> Result<Option<Vec<Opportunity>>> {
        let models = parse_batch(inputs, CreateOpportunityInput::into_model)?;
        let api = ApiContext::of(ctx);
        let mut ids: Vec<String> = models.iter().map(|m| m.profile_id.clone()).collect();
        ids.sort();
        ids.dedup();
        let found = profiles::by_ids(&api.db.read, &ids).await.gql()?;
        let mut missing = Refused::new(AppError::NotFound);
        for (index, m) in models.iter().enumerate() {
            if !found.iter().any(|p| p.id == m.profile_id) {
                missing.add(index, format!("profile {:?} does not exist", m.profile_id));
            }
        }
        missing.check()?;
        let written = async {
            let txn = api.db.begin_write().await?;
            bulk::insert_many::<opportunity::Entity, _>(&txn, &models).await?;
            txn.commit().await
        }
        .await;
        let mut tags = vec![Tag::Opportunities];
        tags.extend(ids.iter().map(|id| Tag::ProfileOpportunities(id)));
        wrote(ctx, &tags).await;
        written.gql()?;
        Ok(Some(models.into_iter().map(Opportunity).collect()))
    }

    /// Changes an opportunity's fields.
    #[graphql(guard = "RoleGuard(Role::Editor)")]
    async fn update_opportunity(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The opportunity's id.")] id: ID,
        #[graphql(desc = "The fields to change.")] input: UpdateOpportunityInput,
    ) -> Result<Option<Opportunity>> {
        change_opportunity(ctx, &id, |model| input.apply_to(model)).await
    }

    /// Moves an opportunity to another funnel stage.
    #[graphql(guard = "RoleGuard(Role::Editor)")]
    async fn move_opportunity_stage(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The opportunity's id.")] id: ID,
        #[graphql(desc = "The stage to move to.")] stage: Stage,
    ) -> Result<Option<Opportunity>> {
        change_opportunity(ctx, &id, |model| {
            model.current_stage = stage.as_str().to_owned();
            Ok(())
        })
        .await
    }

    /// Deletes an opportunity; returns the deleted id.
    #[graphql(guard = "RoleGuard(Role::Editor)")]
    async fn delete_opportunity(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The opportunity's id.")] id: ID,
    ) -> Result<Option<ID>> {
        let api = ApiContext::of(ctx);
        let mut parent = None;
        let deleted = async {
            let txn = api.db.begin_write().await?;
            let model = opportunities::by_id(&txn, &id)
                .await?
                .ok_or_else(|| AppError::not_found("opportunity", &id))?;
            parent = Some(model.profile_id);
            opportunities::delete(&txn, &id).await?;
            txn.commit().await?;
            AppResult::Ok(())
        }
        .await;
        // Also after a failure past the read: a commit reported as failed
        // may still have been applied (a connection lost during COMMIT).
        if let Some(profile_id) = &parent {
            wrote(
                ctx,
                &[Tag::Opportunities, Tag::ProfileOpportunities(profile_id)],
            )
            .await;
        }
        deleted.gql()?;
        Ok(Some(id))
    }
}

/// Loads an opportunity, applies `change`, writes it back in one transaction,
/// and invalidates what depends on it.
async fn change_opportunity(
    ctx: &Context<'_>,
    id: &str,
    change: impl FnOnce(&mut opportunity::Model) -> AppResult<()>,
) -> Result<Option<Opportunity>> {
    let api = ApiContext::of(ctx);
    let mut parent = None;
    let saved = async {
        let txn = api.db.begin_write().await?;
        let mut model = opportunities::by_id(&txn, id)
            .await?
            .ok_or_else(|| AppError::not_found("opportunity", id))?;
        let current = model.clone();
        change(&mut model)?;
        // A change to what it already holds writes nothing: the row keeps
        // its place in lists ordered by `updatedAt`, and caches stay.
        if model == current {
            return AppResult::Ok(current);
        }
        model.updated_at = now();
        parent = Some(model.profile_id.clone());
        let saved = opportunities::update(&txn, model).await?;
        txn.commit().await?;
        AppResult::Ok(saved)
    }
    .await;
    // After any write attempt, also a failed one, as for deletes.
    if let Some(profile_id) = &parent {
        wrote(
            ctx,
            &[Tag::Opportunities, Tag::ProfileOpportunities(profile_id)],
        )
        .await;
    }
    Ok(Some(Opportunity(saved.gql()?)))
}
