//! `Profile`: its object, inputs, connection, query and mutation roots.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::{
    ComplexObject, Context, ErrorExtensions, ID, InputObject, InputType, Lookahead, MaybeUndefined,
    Name, Object, Result, SelectionField, SimpleObject, Value,
};
use chrono::{DateTime, Utc};
use entity::{StringList, profile};

use super::connection::{OrderDirection, PageInfo, node_fields};
use super::loaders::{CountKey, Hashed, Loaders, NestedPageArgs, PageKey};
use super::opportunity::{
    OpportunityConnection, OpportunityFilterInput, OpportunityOrder, Total, node_columns,
};
use super::{ApiContext, MAX_FILTER_VALUES, Refused, filter_values, limits, parse_list, wrote};
use crate::auth::{Role, RoleGuard};
use crate::cache::Tag;
use crate::domain::{
    DbEnum, Dollars, Ein, MAX_NAME_CHARS, MAX_TEXT_CHARS, NteeCode, OrganizationType,
    ProfileStatus, StateCode, parse_amount, parse_ntee_major_group, parse_text, parse_text_list,
    parse_time, parse_website, refuse_nul,
};
use crate::error::{AppError, AppResult, GqlResultExt};
use crate::store::opportunities::{self, OpportunityFilter};
use crate::store::page::{self, PageRequest, SortKey};
use crate::store::profiles::{self, ProfileColumns, ProfileFilter, ProfileOrderField};
use crate::store::{bulk, new_id, now};

/// Longest free-text search accepted.
pub const MAX_SEARCH_CHARS: usize = 200;
/// Most items in one batch mutation.
pub const MAX_BATCH: usize = 1000;

pub struct Profile(pub profile::Model);

/// An organisation doing grant research, usually a US nonprofit known by its EIN.
#[Object(cache_control(max_age = 10))]
impl Profile {
    /// Unique id (`profile_` + 12 hex characters).
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    /// Organisation name.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// Kind of organisation.
    async fn organization_type(&self) -> Result<OrganizationType> {
        stored_enum(&self.0.organization_type)
    }
    /// IRS Employer Identification Number, 9 digits without dash.
    async fn ein(&self) -> Option<&str> {
        self.0.ein.as_deref()
    }
    /// What the organisation sets out to do.
    async fn mission_statement(&self) -> Option<&str> {
        self.0.mission_statement.as_deref()
    }
    /// Life-cycle status; archived profiles are hidden from lists unless asked for.
    async fn status(&self) -> Result<ProfileStatus> {
        stored_enum(&self.0.status)
    }
    /// Free-text keywords.
    async fn keywords(&self) -> Option<&str> {
        self.0.keywords.as_deref()
    }
    /// Areas of work, e.g. `education`, `youth`.
    async fn focus_areas(&self) -> &[String] {
        &self.0.focus_areas.0
    }
    /// NTEE classification codes, e.g. `B20`.
    async fn ntee_codes(&self) -> &[String] {
        &self.0.ntee_codes.0
    }
    /// City.
    async fn city(&self) -> Option<&str> {
        self.0.city.as_deref()
    }
    /// Two-letter US state code.
    async fn state(&self) -> Option<&str> {
        self.0.state.as_deref()
    }
    /// Annual revenue in whole dollars.
    async fn annual_revenue(&self) -> Option<Dollars> {
        self.0.annual_revenue.map(Dollars)
    }
    /// Website.
    async fn website_url(&self) -> Option<&str> {
        self.0.website_url.as_deref()
    }
    /// When opportunities were last searched for (UTC).
    async fn last_discovery_date(&self) -> Option<DateTime<Utc>> {
        self.0.last_discovery_date
    }
    /// When the profile was created (UTC).
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// When the profile last changed (UTC).
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }

    /// Number of this profile's opportunities, optionally filtered. Batched
    /// across the profiles of a page.
    async fn opportunities_count(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Count only the opportunities that match.")] filter: Option<
            OpportunityFilterInput,
        >,
    ) -> Result<u64> {
        let loaders = ctx.data_unchecked::<Loaders>();
        let filter = loaders
            .per_field(ctx.item.pos, || {
                Ok(Hashed::new(OpportunityFilterInput::parse(filter)?))
            })
            .gql()?;
        let key = CountKey {
            profile_id: self.0.id.clone(),
            filter,
        };
        loaders.count(key).await.map_err(|e| e.as_ref().extend())
    }

    /// This profile's opportunities, best score first unless ordered otherwise.
    /// Batched across the profiles of a page: one statement for all of them.
    #[graphql(
        complexity = "limits::list_complexity(first, NESTED_PAGE_SIZE as usize, child_complexity)"
    )]
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
        #[graphql(desc = "Page size (default 20).")] first: Option<i32>,
        #[graphql(desc = "Start after this cursor.")] after: Option<String>,
    ) -> Result<OpportunityConnection> {
        let loaders = ctx.data_unchecked::<Loaders>();
        let nested = loaders
            .per_field(ctx.item.pos, || {
                let args = nested_page_args(
                    ApiContext::of(ctx),
                    filter,
                    order_by,
                    first,
                    after,
                    ctx.field(),
                )?;
                Ok(NestedField {
                    keys: args.keys().into(),
                    count_filter: Arc::new(Hashed::new(args.filter.clone())),
                    args,
                })
            })
            .gql()?;
        let key = PageKey {
            profile_id: self.0.id.clone(),
            args: nested.args.clone(),
        };
        let fetched = loaders.page(key).await.map_err(|e| e.as_ref().extend())?;
        let total = Total::Nested(CountKey {
            profile_id: self.0.id.clone(),
            filter: nested.count_filter.clone(),
        });
        Ok(OpportunityConnection::new(
            fetched.rows.clone(),
            fetched.has_more,
            nested.keys.clone(),
            &nested.args.page,
            total,
        ))
    }
}

/// What the profiles of a page share for one `opportunities` field.
struct NestedField {
    args: Arc<Hashed<NestedPageArgs>>,
    /// The page's sort keys, shared by its edges.
    keys: Arc<[SortKey]>,
    /// The page's filter, for its `totalCount`.
    count_filter: Arc<Hashed<OpportunityFilter>>,
}

/// Default size of a profile's nested opportunities page.
const NESTED_PAGE_SIZE: u32 = 20;

/// The validated arguments of `Profile.opportunities`; the resolver and the
/// prefetch build them the same way, so their loader keys match.
fn nested_page_args(
    api: &ApiContext,
    filter: Option<OpportunityFilterInput>,
    order_by: Option<Vec<OpportunityOrder>>,
    first: Option<i32>,
    after: Option<String>,
    field: SelectionField<'_>,
) -> AppResult<Arc<Hashed<NestedPageArgs>>> {
    let filter = OpportunityFilterInput::parse(filter)?;
    let order = OpportunityOrder::parse(order_by)?;
    let request = PageRequest::new(
        first,
        after,
        None,
        None,
        NESTED_PAGE_SIZE,
        api.config.max_page_size,
    )?;
    let keys = opportunities::sort_keys(&order);
    // Read here, with the other arguments, so that a bad cursor is refused
    // at the field that has it rather than by the statement of a whole page.
    if let Some(cursor) = &request.cursor {
        page::decode_cursor(&keys, cursor)?;
    }
    let columns = node_columns(field, &keys);
    Ok(Arc::new(Hashed::new(NestedPageArgs {
        filter,
        order,
        page: request,
        columns,
    })))
}

/// One argument of a looked-ahead field, parsed into its input type.
fn argument<T: InputType>(args: &[(Name, Value)], name: &str) -> AppResult<T> {
    let value = args
        .iter()
        .find(|(n, _)| n.as_str() == name)
        .map(|(_, v)| v.clone());
    T::parse(value).map_err(|e| {
        AppError::bad_input(format!(
            "{name}: {}",
            e.into_server_error(Default::default()).message
        ))
    })
}

/// Loads, before the nodes resolve, the counts and nested pages that the
/// selection under `nodes` / `edges.node` asks for, for the whole page in one
/// statement each. Waiting for the nodes to ask one by one would rely on the
/// DataLoader's timer catching every sibling, which a large page outlasts.
async fn prefetch_nested(ctx: &Context<'_>, loaders: &Loaders, ids: &[String]) -> Result<()> {
    if !loaders.batching || ids.is_empty() {
        return Ok(());
    }
    let api = ApiContext::of(ctx);
    let look = ctx.look_ahead();
    let mut count_keys = Vec::new();
    let mut page_keys = Vec::new();
    for node in [look.field("nodes"), look.field("edges").field("node")] {
        // A field whose arguments are refused is not prefetched: its own
        // resolver reports the error, at its own path.
        for field in node.field("opportunitiesCount").selection_fields() {
            let Ok(filter) = field
                .arguments()
                .map_err(|e| AppError::bad_input(e.message))
                .and_then(|args| OpportunityFilterInput::parse(argument(&args, "filter")?))
            else {
                continue;
            };
            let filter = Arc::new(Hashed::new(filter));
            count_keys.extend(ids.iter().map(|id| CountKey {
                profile_id: id.clone(),
                filter: filter.clone(),
            }));
        }
        for field in node.field("opportunities").selection_fields() {
            let Ok(page) = field
                .arguments()
                .map_err(|e| AppError::bad_input(e.message))
                .and_then(|args| {
                    nested_page_args(
                        api,
                        argument(&args, "filter")?,
                        argument(&args, "orderBy")?,
                        argument(&args, "first")?,
                        argument(&args, "after")?,
                        field,
                    )
                })
            else {
                continue;
            };
            if Lookahead::from(field).field("totalCount").exists() {
                let filter = Arc::new(Hashed::new(page.filter.clone()));
                count_keys.extend(ids.iter().map(|id| CountKey {
                    profile_id: id.clone(),
                    filter: filter.clone(),
                }));
            }
            page_keys.extend(ids.iter().map(|id| PageKey {
                profile_id: id.clone(),
                args: page.clone(),
            }));
        }
    }
    let (counts, pages) = tokio::join!(
        async {
            if count_keys.is_empty() {
                Ok(Default::default())
            } else {
                loaders.counts.load_many(count_keys).await
            }
        },
        async {
            if page_keys.is_empty() {
                Ok(Default::default())
            } else {
                loaders.pages.load_many(page_keys).await
            }
        },
    );
    counts.map_err(|e| e.as_ref().extend())?;
    pages.map_err(|e| e.as_ref().extend())?;
    Ok(())
}

/// A value of a text column that CHECK constraints keep within the enum.
pub fn stored_enum<T: DbEnum>(value: &str) -> Result<T> {
    T::from_db(value).ok_or_else(|| {
        AppError::Internal(anyhow::anyhow!("unexpected stored value {value:?}")).extend()
    })
}

/// Which profiles a list returns. Conditions combine with AND; list
/// conditions match any of their values, and an empty list, like one left
/// out, sets no condition (a form with nothing ticked filters nothing).
#[derive(InputObject, Default)]
#[graphql(name = "ProfileFilter")]
pub struct ProfileFilterInput {
    /// Only these statuses (archived included when listed here).
    statuses: Option<Vec<ProfileStatus>>,
    /// Include archived profiles, which are hidden by default.
    include_archived: Option<bool>,
    /// Only these kinds of organisation.
    organization_types: Option<Vec<OrganizationType>>,
    /// Only these two-letter US state codes.
    states: Option<Vec<String>>,
    /// Profiles carrying any of these NTEE codes, e.g. `B20`.
    ntee_codes: Option<Vec<String>>,
    /// Profiles with a code in any of these NTEE major groups (first letter), e.g. `B`.
    ntee_major_groups: Option<Vec<String>>,
    /// Annual revenue at least this (whole dollars).
    revenue_min: Option<Dollars>,
    /// Annual revenue at most this (whole dollars).
    revenue_max: Option<Dollars>,
    /// Text found in the name or mission statement, in any case (SQLite folds
    /// ASCII letters only); a search of digits and dashes alone (`12-345`) is
    /// also looked for in EINs.
    search: Option<String>,
}

impl ProfileFilterInput {
    fn parse(input: Option<Self>) -> AppResult<ProfileFilter> {
        let Some(input) = input else {
            return Ok(ProfileFilter::default());
        };
        let revenue_min = input
            .revenue_min
            .map(|v| parse_amount("revenueMin", v))
            .transpose()?;
        let revenue_max = input
            .revenue_max
            .map(|v| parse_amount("revenueMax", v))
            .transpose()?;
        if let (Some(min), Some(max)) = (revenue_min, revenue_max)
            && min > max
        {
            return Err(AppError::bad_input("revenueMin must not exceed revenueMax"));
        }
        Ok(ProfileFilter {
            statuses: filter_values("statuses", input.statuses, MAX_FILTER_VALUES)?,
            include_archived: input.include_archived.unwrap_or(false),
            organization_types: filter_values(
                "organizationTypes",
                input.organization_types,
                MAX_FILTER_VALUES,
            )?,
            states: parse_list("states", input.states, |s| {
                StateCode::parse(s).map(StateCode::into_inner)
            })?,
            ntee_codes: parse_list("nteeCodes", input.ntee_codes, |s| {
                NteeCode::parse(s).map(NteeCode::into_inner)
            })?,
            ntee_major_groups: parse_list(
                "nteeMajorGroups",
                input.ntee_major_groups,
                parse_ntee_major_group,
            )?,
            revenue_min,
            revenue_max,
            search: parse_search(input.search)?,
        })
    }
}

/// Trims a search string; empty means no search, overlong is refused.
pub fn parse_search(search: Option<String>) -> AppResult<Option<String>> {
    let Some(search) = search else {
        return Ok(None);
    };
    let trimmed = search.trim();
    refuse_nul("search", trimmed)?;
    if trimmed.chars().count() > MAX_SEARCH_CHARS {
        return Err(AppError::bad_input(format!(
            "search is longer than {MAX_SEARCH_CHARS} characters"
        )));
    }
    Ok((!trimmed.is_empty()).then(|| trimmed.to_owned()))
}

/// One sort key of a profile list.
#[derive(InputObject, Clone, Copy)]
pub struct ProfileOrder {
    /// What to sort by.
    field: ProfileOrderField,
    /// Direction; each field has a natural default (names A-Z, the rest largest or newest first).
    direction: Option<OrderDirection>,
}

impl ProfileOrder {
    fn parse(order: Option<Vec<Self>>) -> AppResult<Vec<(ProfileOrderField, bool)>> {
        super::sort_keys(
            order,
            |o| {
                (
                    o.field,
                    OrderDirection::is_desc(o.direction, o.field.descending_by_default()),
                )
            },
            (ProfileOrderField::UpdatedAt, true),
        )
    }
}

/// An edge of a profile list.
#[derive(SimpleObject)]
pub struct ProfileEdge {
    /// Opaque position of this profile in its list.
    cursor: String,
    /// The profile.
    node: Profile,
}

/// A page of profiles (Relay connection).
#[derive(SimpleObject)]
#[graphql(complex, cache_control(max_age = 10))]
pub struct ProfileConnection {
    /// The profiles with their cursors.
    edges: Vec<ProfileEdge>,
    /// Where this page sits in the list.
    page_info: PageInfo,
    #[graphql(skip)]
    filter: ProfileFilter,
}

#[ComplexObject]
impl ProfileConnection {
    /// The profiles of this page.
    async fn nodes(&self) -> Vec<&Profile> {
        self.edges.iter().map(|e| &e.node).collect()
    }
    /// Profiles in the whole list (all pages); computed only when asked for.
    async fn total_count(&self, ctx: &Context<'_>) -> Result<u64> {
        // Boxed to keep this type's field futures small (see `Loaders::one`).
        let api = ApiContext::of(ctx);
        Box::pin(api.cache.get_or_load(
            "profiles.totalCount",
            &self.filter,
            &[Tag::Profiles],
            || async { Ok(profiles::count(&api.db.read, &self.filter).await?) },
        ))
        .await
        .gql()
    }
}

#[derive(Default)]
pub struct ProfileQuery;

#[Object]
impl ProfileQuery {
    /// One profile by id.
    async fn profile(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The profile's id.")] id: ID,
    ) -> Result<Option<Profile>> {
        // Through the loader: its cache entries (whole rows, under the same
        // key) are the ones nested lookups use, and a missing id is not one.
        let found = ctx
            .data_unchecked::<Loaders>()
            .profile(&id)
            .await
            .map_err(|e| e.as_ref().extend())?;
        Ok(found.map(Profile))
    }

    /// One profile by EIN (`12-3456789` or `123456789`).
    async fn profile_by_ein(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The EIN, with or without dash.")] ein: String,
    ) -> Result<Option<Profile>> {
        let ein = Ein::parse(&ein).gql()?.into_inner();
        let api = ApiContext::of(ctx);
        // Any profile change may move an EIN, so this depends on all of them.
        let found = api
            .cache
            .get_or_load("profileByEin", &ein, &[Tag::Profiles], || async {
                Ok(profiles::by_ein(&api.db.read, &ein).await?)
            })
            .await
            .gql()?;
        Ok(found.map(Profile))
    }

    /// Profiles, newest change first unless ordered otherwise; archived ones
    /// only when the filter asks for them. Relay cursor pagination.
    #[graphql(complexity = "limits::list_complexity(first.or(last), 100, child_complexity)")]
    async fn profiles(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only the profiles that match.")] filter: Option<ProfileFilterInput>,
        #[graphql(desc = "Sort keys, most significant first; default: updatedAt, newest first.")]
        order_by: Option<Vec<ProfileOrder>>,
        #[graphql(desc = "Page size from the start (or after `after`).")] first: Option<i32>,
        #[graphql(desc = "Start after this cursor.")] after: Option<String>,
        #[graphql(desc = "Page size from the end (or before `before`).")] last: Option<i32>,
        #[graphql(desc = "End before this cursor.")] before: Option<String>,
    ) -> Result<ProfileConnection> {
        let api = ApiContext::of(ctx);
        let filter = ProfileFilterInput::parse(filter).gql()?;
        let order = ProfileOrder::parse(order_by).gql()?;
        let request = api.page(first, after, last, before).gql()?;
        let keys = profiles::sort_keys(&order);
        let by_count = order
            .iter()
            .any(|(f, _)| *f == ProfileOrderField::OpportunitiesCount);
        // Sorting by count makes the page depend on every opportunity too.
        let tags: &[Tag] = if by_count {
            &[Tag::Profiles, Tag::Opportunities]
        } else {
            &[Tag::Profiles]
        };
        // Nested `opportunity { profile }` fields find these rows without a
        // query: whole rows then, each copied. Otherwise only the columns
        // the nodes and cursors read.
        let feeds_parent = selects(ctx.field(), "profile");
        let columns = if feeds_parent {
            ProfileColumns::all()
        } else {
            profile_columns(ctx.field(), &keys)
        };
        let CachedProfilePage { fetched, counts } = api
            .cache
            .get_or_load(
                "profiles",
                &(&filter, &order, &request, columns),
                tags,
                || async {
                    let fetched =
                        profiles::page(&api.db.read, &filter, &keys, &request, columns).await?;
                    let counts = if by_count {
                        page_counts(api, &fetched.rows).await?
                    } else {
                        HashMap::new()
                    };
                    Ok(CachedProfilePage { fetched, counts })
                },
            )
            .await
            .gql()?;
        let loaders = ctx.data_unchecked::<Loaders>();
        if by_count {
            let all = Arc::new(Hashed::new(OpportunityFilter::default()));
            loaders
                .counts
                .feed_many(counts.iter().map(|(id, n)| {
                    (
                        CountKey {
                            profile_id: id.clone(),
                            filter: all.clone(),
                        },
                        *n,
                    )
                }))
                .await;
        }
        if feeds_parent {
            loaders
                .profiles
                .feed_many(fetched.rows.iter().map(|p| (p.id.clone(), p.clone())))
                .await;
        }
        let ids: Vec<String> = fetched.rows.iter().map(|p| p.id.clone()).collect();
        prefetch_nested(ctx, loaders, &ids).await?;
        Ok(ProfileConnection::new(
            fetched, &keys, &request, &counts, filter,
        ))
    }
}

/// The profile columns that a connection field's selection reads under
/// `nodes` and `edges.node`, with those its cursors read. Every field of
/// `Profile` is one column but for the nested opportunity fields, which
/// need only the id (always selected); a field that is none selects every
/// column.
fn profile_columns(connection: SelectionField<'_>, keys: &[SortKey]) -> ProfileColumns {
    // The count key is no column: its values come with the page's counts.
    let set = keys.iter().fold(ProfileColumns::none(), |set, key| {
        match key.name.parse::<profile::Column>() {
            Ok(column) => set.with(column),
            Err(_) => set,
        }
    });
    node_fields(connection)
        .into_iter()
        .fold(set, |set, field| match field.name() {
            "__typename" | "opportunitiesCount" | "opportunities" => set,
            name => set.with_field(name),
        })
}

/// Whether a field named `name` appears anywhere under `field`, through
/// fragments too.
fn selects(field: SelectionField<'_>, name: &str) -> bool {
    field
        .selection_set()
        .any(|f| f.name() == name || selects(f, name))
}

/// A cached root page: its rows and, when sorted by count, their counts.
#[derive(serde::Serialize, serde::Deserialize)]
struct CachedProfilePage {
    fetched: page::Fetched<profile::Model>,
    counts: HashMap<String, u64>,
}

/// Unfiltered opportunity counts of a page's profiles: their cursors need
/// them when the list is sorted by count. They are fed to the count loader,
/// so `opportunitiesCount` then costs nothing more.
async fn page_counts(api: &ApiContext, rows: &[profile::Model]) -> AppResult<HashMap<String, u64>> {
    let ids: Vec<String> = rows.iter().map(|p| p.id.clone()).collect();
    Ok(opportunities::counts_by_profile(&api.db.read, &ids, &OpportunityFilter::default()).await?)
}

impl ProfileConnection {
    fn new(
        fetched: page::Fetched<profile::Model>,
        keys: &[SortKey],
        request: &PageRequest,
        counts: &HashMap<String, u64>,
        filter: ProfileFilter,
    ) -> Self {
        let edges: Vec<ProfileEdge> = fetched
            .rows
            .into_iter()
            .map(|p| ProfileEdge {
                cursor: page::encode_cursor(keys, profiles::sort_values(&p, keys, counts)),
                node: Profile(p),
            })
            .collect();
        let cursors: Vec<String> = edges.iter().map(|e| e.cursor.clone()).collect();
        Self {
            page_info: PageInfo::new(
                &cursors,
                request.backward,
                fetched.has_more,
                request.cursor.is_some(),
            ),
            edges,
            filter,
        }
    }
}

/// Fields of a new profile.
#[derive(InputObject)]
pub struct CreateProfileInput {
    /// Organisation name (required, at most 300 characters).
    name: String,
    /// Kind of organisation; default NONPROFIT.
    organization_type: Option<OrganizationType>,
    /// EIN, `12-3456789` or `123456789`; unique.
    ein: Option<String>,
    /// Mission statement.
    mission_statement: Option<String>,
    /// Status; default ACTIVE.
    status: Option<ProfileStatus>,
    /// Free-text keywords.
    keywords: Option<String>,
    /// Areas of work.
    focus_areas: Option<Vec<String>>,
    /// NTEE codes, e.g. `B20`.
    ntee_codes: Option<Vec<String>>,
    /// City.
    city: Option<String>,
    /// Two-letter US state code.
    state: Option<String>,
    /// Annual revenue in whole dollars.
    annual_revenue: Option<Dollars>,
    /// Website.
    website_url: Option<String>,
    /// When opportunities were last searched for.
    last_discovery_date: Option<DateTime<Utc>>,
}

fn optional_text(field: &str, value: Option<String>, max: usize) -> AppResult<Option<String>> {
    optional(value, |v| parse_text(field, v, max))
}

/// An optional text input: blank means none, anything else is parsed.
pub fn optional<T>(
    value: Option<String>,
    parse: impl FnOnce(&str) -> AppResult<T>,
) -> AppResult<Option<T>> {
    value
        .filter(|v| !v.trim().is_empty())
        .map(|v| parse(&v))
        .transpose()
}

fn string_list(field: &str, values: Vec<String>) -> AppResult<StringList> {
    Ok(StringList(parse_text_list(field, &values)?))
}

fn ntee_list(values: Vec<String>) -> AppResult<StringList> {
    Ok(StringList(
        values
            .iter()
            .map(|v| NteeCode::parse(v).map(NteeCode::into_inner))
            .collect::<AppResult<_>>()?,
    ))
}

impl CreateProfileInput {
    fn into_model(self) -> AppResult<profile::Model> {
        let now = now();
        Ok(profile::Model {
            id: new_id("profile_", &mut rand::rng()),
            name: parse_text("name", &self.name, MAX_NAME_CHARS)?,
            organization_type: self
                .organization_type
                .unwrap_or(OrganizationType::Nonprofit)
                .as_str()
                .to_owned(),
            ein: self
                .ein
                .map(|e| Ein::parse(&e).map(Ein::into_inner))
                .transpose()?,
            mission_statement: optional_text(
                "missionStatement",
                self.mission_statement,
                MAX_TEXT_CHARS,
            )?,
            status: self
                .status
                .unwrap_or(ProfileStatus::Active)
                .as_str()
                .to_owned(),
            keywords: optional_text("keywords", self.keywords, MAX_TEXT_CHARS)?,
            focus_areas: string_list("focusAreas", self.focus_areas.unwrap_or_default())?,
            ntee_codes: ntee_list(self.ntee_codes.unwrap_or_default())?,
            city: optional_text("city", self.city, MAX_NAME_CHARS)?,
            state: self
                .state
                .map(|s| StateCode::parse(&s).map(StateCode::into_inner))
                .transpose()?,
            annual_revenue: self
                .annual_revenue
                .map(|v| parse_amount("annualRevenue", v))
                .transpose()?,
            website_url: optional(self.website_url, |v| {
                parse_website("websiteUrl", v, MAX_NAME_CHARS)
            })?,
            last_discovery_date: self
                .last_discovery_date
                .map(|t| parse_time("lastDiscoveryDate", t))
                .transpose()?,
            created_at: now,
            updated_at: now,
        })
    }
}

/// Changes to a profile: omitted fields stay as they are; `null` clears a nullable field.
#[derive(InputObject)]
pub struct UpdateProfileInput {
    /// Organisation name.
    name: MaybeUndefined<String>,
    /// Kind of organisation.
    organization_type: MaybeUndefined<OrganizationType>,
    /// EIN, `12-3456789` or `123456789`; unique.
    ein: MaybeUndefined<String>,
    /// Mission statement.
    mission_statement: MaybeUndefined<String>,
    /// Status.
    status: MaybeUndefined<ProfileStatus>,
    /// Free-text keywords.
    keywords: MaybeUndefined<String>,
    /// Areas of work (replaces the list).
    focus_areas: MaybeUndefined<Vec<String>>,
    /// NTEE codes (replaces the list).
    ntee_codes: MaybeUndefined<Vec<String>>,
    /// City.
    city: MaybeUndefined<String>,
    /// Two-letter US state code.
    state: MaybeUndefined<String>,
    /// Annual revenue in whole dollars.
    annual_revenue: MaybeUndefined<Dollars>,
    /// Website.
    website_url: MaybeUndefined<String>,
    /// When opportunities were last searched for.
    last_discovery_date: MaybeUndefined<DateTime<Utc>>,
}

/// Applies a nullable change: undefined keeps, null clears, a value is parsed.
pub fn apply<T, U>(
    slot: &mut Option<U>,
    change: MaybeUndefined<T>,
    parse: impl FnOnce(T) -> AppResult<U>,
) -> AppResult<()> {
    match change {
        MaybeUndefined::Undefined => {}
        MaybeUndefined::Null => *slot = None,
        MaybeUndefined::Value(v) => *slot = Some(parse(v)?),
    }
    Ok(())
}

/// Applies a change to a field that always has a value: undefined keeps, a
/// value is parsed, and null is refused rather than ignored (a client that
/// sends it expects the field cleared).
pub fn apply_required<T, U>(
    slot: &mut U,
    field: &str,
    change: MaybeUndefined<T>,
    parse: impl FnOnce(T) -> AppResult<U>,
) -> AppResult<()> {
    match change {
        MaybeUndefined::Undefined => {}
        MaybeUndefined::Null => {
            return Err(AppError::bad_input(format!(
                "{field} cannot be null; leave it out to keep its value"
            )));
        }
        MaybeUndefined::Value(v) => *slot = parse(v)?,
    }
    Ok(())
}

impl UpdateProfileInput {
    fn apply_to(self, p: &mut profile::Model) -> AppResult<()> {
        apply_required(&mut p.name, "name", self.name, |name| {
            parse_text("name", &name, MAX_NAME_CHARS)
        })?;
        apply_required(
            &mut p.organization_type,
            "organizationType",
            self.organization_type,
            |t| Ok(t.as_str().to_owned()),
        )?;
        apply(&mut p.ein, self.ein, |e| {
            Ein::parse(&e).map(Ein::into_inner)
        })?;
        apply(&mut p.mission_statement, self.mission_statement, |v| {
            parse_text("missionStatement", &v, MAX_TEXT_CHARS)
        })?;
        apply_required(&mut p.status, "status", self.status, |s| {
            Ok(s.as_str().to_owned())
        })?;
        apply(&mut p.keywords, self.keywords, |v| {
            parse_text("keywords", &v, MAX_TEXT_CHARS)
        })?;
        apply_required(&mut p.focus_areas, "focusAreas", self.focus_areas, |v| {
            string_list("focusAreas", v)
        })?;
        apply_required(&mut p.ntee_codes, "nteeCodes", self.ntee_codes, ntee_list)?;
        apply(&mut p.city, self.city, |v| {
            parse_text("city", &v, MAX_NAME_CHARS)
        })?;
        apply(&mut p.state, self.state, |v| {
            StateCode::parse(&v).map(StateCode::into_inner)
        })?;
        apply(&mut p.annual_revenue, self.annual_revenue, |v| {
            parse_amount("annualRevenue", v)
        })?;
        apply(&mut p.website_url, self.website_url, |v| {
            parse_website("websiteUrl", &v, MAX_NAME_CHARS)
        })?;
        apply(&mut p.last_discovery_date, self.last_discovery_date, |t| {
            parse_time("lastDiscoveryDate", t)
        })?;
        Ok(())
    }
}

/// Validates every item of a batch, naming the index of each bad one.
pub fn parse_batch<I, T>(
    inputs: Vec<I>,
    parse: impl Fn(I) -> AppResult<T>,
) -> async_graphql::Result<Vec<T>> {
    if inputs.is_empty() || inputs.len() > MAX_BATCH {
        return Err(AppError::bad_input(format!(
            "inputs must hold 1 to {MAX_BATCH} items, got {}",
            inputs.len()
        ))
        .extend());
    }
    let mut ok = Vec::with_capacity(inputs.len());
    let mut refused = Refused::new(AppError::BadUserInput);
    for (index, input) in inputs.into_iter().enumerate() {
        match parse(input) {
            Ok(v) => ok.push(v),
            Err(e @ AppError::Internal(_)) => return Err(e.extend()),
            Err(e) => refused.add(index, e.to_string()),
        }
    }
    refused.check()?;
    Ok(ok)
}

#[derive(Default)]
pub struct ProfileMutation;

#[Object]
impl ProfileMutation {
    /// Creates a profile. A duplicate EIN is a CONFLICT.
    #[graphql(guard = "RoleGuard(Role::Editor)")]
    async fn create_profile(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The new profile's fields.")] input: CreateProfileInput,
    ) -> Result<Option<Profile>> {
        let model = input.into_model().gql()?;
        let api = ApiContext::of(ctx);
        let saved = profiles::insert(&api.db.write, model.clone()).await;
        wrote(ctx, &[Tag::Profiles, Tag::Profile(&model.id)]).await;
        Ok(Some(Profile(saved.gql()?)))
    }

    /// Creates many profiles in one transaction: all of them or none. A
    /// refused batch's error names the bad items by index, and its
    /// `extensions.items` lists every one as `{ index, message }`.
    #[graphql(guard = "RoleGuard(Role::Editor)")]
    async fn create_profiles(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The new profiles (1 to 1000).")] inputs: Vec<CreateProfileInput>,
    ) -> Result<Option<Vec<Profile>>> {
        let models = parse_batch(inputs, CreateProfileInput::into_model)?;
        let api = ApiContext::of(ctx);
        check_unique_eins(&api.db, &models).await?;
        let written = async {
            let txn = api.db.begin_write().await?;
            bulk::insert_many::<profile::Entity, _>(&txn, &models).await?;
            txn.commit().await
        }
        .await;
        let mut tags = vec![Tag::Profiles];
        tags.extend(models.iter().map(|m| Tag::Profile(&m.id)));
        wrote(ctx, &tags).await;
        written.gql()?;
        Ok(Some(models.into_iter().map(Profile).collect()))
    }

    /// Changes a profile's fields.
    #[graphql(guard = "RoleGuard(Role::Editor)")]
    async fn update_profile(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The profile's id.")] id: ID,
        #[graphql(desc = "The fields to change.")] input: UpdateProfileInput,
    ) -> Result<Option<Profile>> {
        let api = ApiContext::of(ctx);
        let mut written = false;
        let saved = async {
            let txn = api.db.begin_write().await?;
            let mut model = profiles::by_id(&txn, &id)
                .await?
                .ok_or_else(|| AppError::not_found("profile", &id))?;
            let current = model.clone();
            input.apply_to(&mut model)?;
            // A change to what it already holds writes nothing: the profile
            // keeps its place in the default order (newest change first).
            if model == current {
                return AppResult::Ok(current);
            }
            model.updated_at = now();
            written = true;
            let saved = profiles::update(&txn, model).await?;
            txn.commit().await?;
            AppResult::Ok(saved)
        }
        .await;
        // After any write attempt, also a failed one: a commit reported as
        // failed may still have been applied.
        if written {
            wrote(ctx, &[Tag::Profiles, Tag::Profile(&id)]).await;
        }
        Ok(Some(Profile(saved.gql()?)))
    }

    /// Deletes a profile and its opportunities; returns the deleted id.
    #[graphql(guard = "RoleGuard(Role::Editor)")]
    async fn delete_profile(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The profile's id.")] id: ID,
    ) -> Result<Option<ID>> {
        let api = ApiContext::of(ctx);
        let deleted = profiles::delete(&api.db.write, &id).await;
        // Its opportunities went with it (ON DELETE CASCADE).
        wrote(
            ctx,
            &[
                Tag::Profiles,
                Tag::Profile(&id),
                Tag::Opportunities,
                Tag::ProfileOpportunities(&id),
            ],
        )
        .await;
        if deleted.gql()? {
            Ok(Some(id))
        } else {
            Err(AppError::not_found("profile", &id).extend())
        }
    }
}

/// Refuses a batch whose EINs repeat within it or exist already, naming the items.
async fn check_unique_eins(
    db: &crate::db::Db,
    models: &[profile::Model],
) -> async_graphql::Result<()> {
    let mut seen = HashMap::new();
    let mut refused = Refused::new(AppError::Conflict);
    for (index, m) in models.iter().enumerate() {
        if let Some(ein) = &m.ein
            && let Some(first) = seen.insert(ein.clone(), index)
        {
            refused.add(index, format!("EIN {ein} repeats inputs[{first}]"));
        }
    }
    let eins: Vec<String> = seen.keys().cloned().collect();
    let taken = profiles::existing_eins(&db.read, &eins).await.gql()?;
    for (index, m) in models.iter().enumerate() {
        if let Some(ein) = m.ein.as_ref().filter(|e| taken.contains(*e)) {
            refused.add(index, format!("a profile with EIN {ein} already exists"));
        }
    }
    refused.check()
}
