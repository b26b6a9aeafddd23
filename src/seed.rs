//! Deterministic, realistic demo data: the same seed gives the same rows.

use std::time::Instant;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use entity::{StringList, opportunity, profile};
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sea_orm::{
    ConnectionTrait, DatabaseBackend, DatabaseConnection, EntityTrait, PaginatorTrait, Statement,
};
use tokio::sync::mpsc::Receiver;

use crate::db::Db;
use crate::domain::{DbEnum, FundingSource, OrganizationType, Priority, Stage, US_STATES};
use crate::store::bulk;
use crate::store::sqlite_bulk::{self, BulkConnection, Rows};

/// Profiles generated (and inserted) per step into SQLite. Small steps keep
/// a step's values (about 2.5 MB) warm between the thread that makes them
/// and the one that binds them; steps of 2,000 profiles (23 MB) were fresh
/// pages each time, and page faults took a quarter of the generating
/// thread. A multiple of the 20-profile cycle of `opportunity_count`, so
/// that every full step sends the same statements.
const SQLITE_PROFILES_PER_STEP: u64 = 200;
/// Profiles per step into PostgreSQL, where the server's own work sets the
/// pace: steps of 200 loaded 10k x 20 about 15% slower than these.
const POSTGRES_PROFILES_PER_STEP: u64 = 2_000;
/// Generated batches waiting for the database at most.
const BATCHES_AHEAD: usize = 2;

/// One step's rows, encoded for the database ahead of it.
struct Batch<T> {
    profiles_done: u64,
    opportunities: u64,
    rows: T,
}

#[derive(Debug, Clone, Copy)]
pub struct SeedPlan {
    pub profiles: u64,
    pub opportunities_per_profile: u64,
    pub seed: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct SeedReport {
    pub profiles: u64,
    pub opportunities: u64,
    pub seconds: f64,
}

impl SeedReport {
    pub fn rows_per_second(&self) -> f64 {
        (self.profiles + self.opportunities) as f64 / self.seconds.max(1e-9)
    }
}

/// Loads the plan's rows in one transaction: all of them or, on any error, none.
/// Refuses a database that already holds profiles, so ids never collide.
/// On SQLite the load is fastest when nothing else has the file open (the
/// `seed` command closes its pools first): see [`sqlite_bulk`].
pub async fn seed(db: &Db, plan: SeedPlan, progress: bool) -> anyhow::Result<SeedReport> {
    let bar = if progress {
        ProgressBar::new(plan.profiles).with_style(
            ProgressStyle::with_template(
                "{spinner} seeding [{bar:40}] {pos}/{len} profiles ({per_sec}, eta {eta})",
            )?
            .progress_chars("=> "),
        )
    } else {
        ProgressBar::hidden()
    };
    let started = Instant::now();
    let opportunities = match db.sqlite_file() {
        Some((path, busy_timeout)) => {
            let batches = produce(plan, SQLITE_PROFILES_PER_STEP, |profiles, opportunities| {
                Ok((
                    Rows::<profile::Entity>::encode(&profiles)?,
                    Rows::<opportunity::Entity>::encode(&opportunities)?,
                ))
            });
            let bar = bar.clone();
            tokio::task::spawn_blocking(move || {
                let mut conn = BulkConnection::open(&path, busy_timeout)?;
                tracing::debug!(without_wal = conn.without_wal(), "bulk load");
                let loaded = load_sqlite(&mut conn, plan, batches, &bar);
                conn.finish()?;
                loaded
            })
            .await??
        }
        None => {
            let batches = produce(
                plan,
                POSTGRES_PROFILES_PER_STEP,
                |profiles, opportunities| {
                    let backend = DatabaseBackend::Postgres;
                    let mut statements =
                        bulk::insert_statements::<profile::Entity>(backend, &profiles);
                    statements.extend(bulk::insert_statements::<opportunity::Entity>(
                        backend,
                        &opportunities,
                    ));
                    Ok(statements)
                },
            );
            let conn = db.postgres_bulk_connection().await?;
            let loaded = load_postgres(&conn, plan, batches, &bar).await;
            conn.close().await?;
            loaded?
        }
    };
    bar.finish_and_clear();
    Ok(SeedReport {
        profiles: plan.profiles,
        opportunities,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Generates the plan's rows and encodes them on a thread of their own, a
/// few batches ahead, while the database loads the previous ones: the two
/// halves of the load run on two cores instead of taking turns on one.
fn produce<T: Send + 'static>(
    plan: SeedPlan,
    profiles_per_step: u64,
    encode: impl Fn(Vec<profile::Model>, Vec<opportunity::Model>) -> anyhow::Result<T> + Send + 'static,
) -> Receiver<anyhow::Result<Batch<T>>> {
    let (batches, ready) = tokio::sync::mpsc::channel(BATCHES_AHEAD);
    tokio::task::spawn_blocking(move || {
        let mut generator = Generator::new(plan);
        let mut done = 0;
        while done < plan.profiles {
            let step = profiles_per_step.min(plan.profiles - done);
            let (profiles, opportunities) = generator.next_batch(done, step);
            done += step;
            let count = opportunities.len() as u64;
            let batch = encode(profiles, opportunities).map(|rows| Batch {
                profiles_done: done,
                opportunities: count,
                rows,
            });
            // The receiver is gone when the load failed: stop generating.
            if batches.blocking_send(batch).is_err() {
                return;
            }
        }
    });
    ready
}

/// The generator's channel also closes when its thread panics: commit only
/// a load that got every batch.
fn complete(plan: SeedPlan, done: u64) -> anyhow::Result<()> {
    if done != plan.profiles {
        anyhow::bail!(
            "seed: row generation stopped after {done} of {} profiles",
            plan.profiles
        );
    }
    Ok(())
}

fn refuse_existing(profiles: u64) -> anyhow::Result<()> {
    if profiles > 0 {
        anyhow::bail!(
            "seed: the database already holds {profiles} profiles; seed an empty database (another --database-url)"
        );
    }
    Ok(())
}

/// The SQLite load, on the calling (blocking) thread; returns the
/// opportunities inserted.
fn load_sqlite(
    conn: &mut BulkConnection,
    plan: SeedPlan,
    mut batches: Receiver<anyhow::Result<SqliteBatch>>,
    bar: &ProgressBar,
) -> anyhow::Result<u64> {
    let txn = conn.transaction()?;
    let existing: i64 = txn.query_row("SELECT COUNT(*) FROM profiles", [], |row| row.get(0))?;
    refuse_existing(existing as u64)?;
    // Secondary indexes are dropped for the load and rebuilt at the end:
    // building one from sorted rows is far cheaper than updating it row by
    // row. Inside the transaction, so a failure restores them.
    let indexes = sqlite_bulk::drop_secondary_indexes(&txn, TABLES)?;
    let mut opportunities = 0;
    let mut done = 0;
    while let Some(batch) = batches.blocking_recv() {
        let batch = batch?;
        batch.rows.0.insert(&txn)?;
        batch.rows.1.insert(&txn)?;
        opportunities += batch.opportunities;
        done = batch.profiles_done;
        bar.set_position(done);
    }
    complete(plan, done)?;
    sqlite_bulk::create_indexes(&txn, &indexes)?;
    txn.execute_batch(crate::store::RAISE_DATA_EPOCH)?;
    txn.commit()?;
    Ok(opportunities)
}

type SqliteBatch = Batch<(Rows<profile::Entity>, Rows<opportunity::Entity>)>;

/// The PostgreSQL load; returns the opportunities inserted.
async fn load_postgres(
    conn: &DatabaseConnection,
    plan: SeedPlan,
    mut batches: Receiver<anyhow::Result<Batch<Vec<Statement>>>>,
    bar: &ProgressBar,
) -> anyhow::Result<u64> {
    refuse_existing(profile::Entity::find().count(conn).await?)?;
    let txn = crate::db::begin_write(conn).await?;
    let indexes = bulk::drop_secondary_indexes(&txn, TABLES).await?;
    let mut opportunities = 0;
    let mut done = 0;
    while let Some(batch) = batches.recv().await {
        let batch = batch?;
        for statement in batch.rows {
            txn.execute_raw(statement).await?;
        }
        opportunities += batch.opportunities;
        done = batch.profiles_done;
        bar.set_position(done);
    }
    complete(plan, done)?;
    bulk::create_indexes(&txn, &indexes).await?;
    crate::store::raise_data_epoch(&txn).await?;
    txn.commit().await?;
    // Right after a load the planner has no statistics for the new rows and
    // no page is marked all-visible, so index-only scans (filtered counts)
    // still read every row's page until autovacuum comes round; a load is
    // when PostgreSQL's documentation says to do both.
    conn.execute_unprepared("VACUUM (ANALYZE) profiles, opportunities")
        .await?;
    Ok(opportunities)
}

/// The tables a seed fills.
const TABLES: &[&str] = &["profiles", "opportunities"];

/// Seeds a small data set when the database has no profiles; true if it did.
pub async fn seed_demo_if_empty(db: &Db) -> anyhow::Result<bool> {
    if profile::Entity::find().count(&db.read).await? > 0 {
        return Ok(false);
    }
    let plan = SeedPlan {
        profiles: 60,
        opportunities_per_profile: 12,
        seed: 7,
    };
    seed(db, plan, false).await?;
    Ok(true)
}

const NAME_STEMS: &[&str] = &[
    "Harbor",
    "Riverbend",
    "Summit",
    "Prairie",
    "Lakeside",
    "Evergreen",
    "Cedar",
    "Blue Ridge",
    "Golden Valley",
    "Northstar",
    "Bright Futures",
    "Open Door",
    "Common Ground",
    "New Horizons",
    "Heartland",
    "Pacific",
    "Keystone",
    "Magnolia",
    "Redwood",
    "Sunrise",
    "Unity",
    "Liberty",
];
const NAME_KINDS: &[&str] = &[
    "Youth Alliance",
    "Community Health Center",
    "Arts Council",
    "Food Bank",
    "Literacy Project",
    "Housing Partnership",
    "Environmental Trust",
    "Animal Rescue",
    "Family Services",
    "Education Fund",
    "Workforce Collaborative",
    "Veterans Network",
    "Music Academy",
    "Science Museum",
    "Legal Aid Society",
    "Senior Center",
];
const CITIES: &[&str] = &[
    "Springfield",
    "Riverside",
    "Franklin",
    "Greenville",
    "Madison",
    "Clinton",
    "Salem",
    "Fairview",
    "Georgetown",
    "Arlington",
    "Ashland",
    "Burlington",
    "Oakland",
    "Portland",
    "Columbus",
    "Austin",
    "Denver",
    "Raleigh",
    "Tucson",
    "Omaha",
];
/// NTEE codes with the focus areas they stand for.
const NTEE: &[(&str, &str)] = &[
    ("A20", "arts"),
    ("A50", "museums"),
    ("B20", "education"),
    ("B70", "libraries"),
    ("C30", "environment"),
    ("D20", "animal welfare"),
    ("E32", "health"),
    ("F30", "mental health"),
    ("I80", "legal aid"),
    ("J20", "employment"),
    ("K31", "food security"),
    ("L41", "housing"),
    ("O50", "youth"),
    ("P20", "human services"),
    ("P81", "seniors"),
    ("R60", "civil rights"),
    ("S20", "community development"),
    ("W30", "veterans"),
];
const FUNDER_SURNAMES: &[&str] = &[
    "Walton", "Hewlett", "Packard", "Kellogg", "Mellon", "Moore", "Lilly", "Knight", "Casey",
    "Duke", "Kresge", "Heinz", "Sloan", "Mott", "Joyce", "Surdna", "Bush", "Rasmuson",
];
const FUNDER_KINDS: &[&str] = &[
    "Family Foundation",
    "Foundation",
    "Charitable Trust",
    "Fund",
    "Philanthropies",
];
const AGENCIES: &[&str] = &[
    "National Endowment for the Arts",
    "Department of Education",
    "HHS Administration for Children and Families",
    "Environmental Protection Agency",
    "Department of Labor",
    "AmeriCorps",
    "HUD Community Grants",
];
const CORPORATE: &[&str] = &[
    "Bank Community Giving",
    "Health Systems Foundation",
    "Energy Cares",
    "Tech for Good Fund",
    "Retail Neighborhood Grants",
];
const TAGS: &[&str] = &[
    "capacity-building",
    "general-operating",
    "capital",
    "program",
    "multi-year",
    "matching",
    "rural",
    "urban",
    "pilot",
    "renewal",
];

struct Generator {
    rng: ChaCha8Rng,
    /// Ids count up from random starting points: still 12 hex characters,
    /// but appended in key order, which keeps the primary-key B-trees cheap.
    next_profile: u64,
    next_opportunity: u64,
    plan: SeedPlan,
    /// A fixed "now" so that the same seed gives the same timestamps.
    epoch: DateTime<Utc>,
}

impl Generator {
    fn new(plan: SeedPlan) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(plan.seed);
        // Room for 2^40 ids above the start, within 48 bits.
        let mut start = || rng.random_range(0..(1u64 << 47));
        let (next_profile, next_opportunity) = (start(), start());
        Self {
            rng,
            next_profile,
            next_opportunity,
            plan,
            epoch: Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap(),
        }
    }

    fn next_id(&mut self, prefix: &str) -> String {
        let counter = if prefix == "opp_" {
            &mut self.next_opportunity
        } else {
            &mut self.next_profile
        };
        *counter += 1;
        format!("{prefix}{:012x}", *counter)
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        *items.choose(&mut self.rng).expect("non-empty list")
    }

    fn ago(&mut self, max_days: i64) -> DateTime<Utc> {
        self.epoch - Duration::seconds(self.rng.random_range(0..max_days * 86_400))
    }

    fn ein(&mut self) -> String {
        format!("{:09}", self.rng.random_range(10_000_000..999_999_999u32))
    }

    /// Most profiles get the planned count; one in 20 none, one in 20 twice as many.
    fn opportunity_count(&self, index: u64) -> u64 {
        match index % 20 {
            7 => 0,
            13 => self.plan.opportunities_per_profile * 2,
            _ => self.plan.opportunities_per_profile,
        }
    }

    fn next_batch(
        &mut self,
        first: u64,
        count: u64,
    ) -> (Vec<profile::Model>, Vec<opportunity::Model>) {
        let mut profiles = Vec::with_capacity(count as usize);
        let planned = (first..first + count).map(|i| self.opportunity_count(i));
        let mut opportunities = Vec::with_capacity(planned.sum::<u64>() as usize);
        for index in first..first + count {
            let p = self.profile(index);
            for _ in 0..self.opportunity_count(index) {
                opportunities.push(self.opportunity(&p));
            }
            profiles.push(p);
        }
        (profiles, opportunities)
    }

    fn profile(&mut self, index: u64) -> profile::Model {
        let (code, area) = self.pick(NTEE);
        let (code2, area2) = self.pick(NTEE);
        let name = format!("{} {}", self.pick(NAME_STEMS), self.pick(NAME_KINDS));
        let city = self.pick(CITIES);
        let org_type = match self.rng.random_range(0..10) {
            0 => OrganizationType::Foundation,
            1 => OrganizationType::Government,
            2 => OrganizationType::Corporate,
            _ => OrganizationType::Nonprofit,
        };
        let status = match self.rng.random_range(0..20) {
            0 => "archived",
            1 => "draft",
            2 => "template",
            _ => "active",
        };
        let created_at = self.ago(900);
        let updated_at = created_at + Duration::seconds(self.rng.random_range(0..86_400 * 60));
        // EINs are unique; the index keeps generated ones apart.
        let ein = format!(
            "{:02}{:07}",
            10 + index % 89,
            (index * 7919 + 13) % 10_000_000
        );
        profile::Model {
            id: self.next_id("profile_"),
            name: format!("{name} of {city}"),
            organization_type: org_type.as_str().to_owned(),
            ein: (index % 10 != 3).then_some(ein),
            mission_statement: Some(format!(
                "We advance {area} and {area2} for families in {city} and the surrounding region."
            )),
            status: status.to_owned(),
            keywords: Some(format!("{area}, {area2}, {}", city.to_lowercase())),
            focus_areas: StringList(dedup(vec![area.to_owned(), area2.to_owned()])),
            ntee_codes: StringList(dedup(vec![code.to_owned(), code2.to_owned()])),
            city: Some(city.to_owned()),
            state: Some(self.pick(US_STATES).to_owned()),
            annual_revenue: (index % 8 != 5).then(|| self.rng.random_range(25_000..50_000_000i64)),
            website_url: Some(format!("https://www.{}.org", slug(&name))),
            last_discovery_date: (!index.is_multiple_of(4)).then_some(updated_at),
            created_at,
            updated_at,
        }
    }

    fn opportunity(&mut self, profile: &profile::Model) -> opportunity::Model {
        let source = self.pick(FundingSource::ALL);
        let organization_name = match source {
            FundingSource::Government => self.pick(AGENCIES).to_owned(),
            FundingSource::State => format!(
                "{} State Arts and Humanities Council",
                profile.state.as_deref().unwrap_or("CA")
            ),
            FundingSource::Commercial => {
                format!("{} {}", self.pick(FUNDER_SURNAMES), self.pick(CORPORATE))
            }
            FundingSource::Nonprofit => {
                format!("{} {}", self.pick(FUNDER_SURNAMES), self.pick(FUNDER_KINDS))
            }
        };
        // Later stages are rarer: a funnel.
        let stage = Stage::ALL[[0, 0, 0, 1, 1, 1, 2, 2, 3, 4, 5][self.rng.random_range(0..11)]];
        let floor = self.rng.random_range(1..200) * 1_000i64;
        let ceiling = floor + self.rng.random_range(0..50) * 5_000i64;
        let discovery_date = self.ago(365).max(profile.created_at);
        let created_at = discovery_date;
        let close_date = (self.rng.random_range(0..6) != 0).then(|| {
            NaiveDate::from_ymd_opt(2026, 6, 1).unwrap()
                + Duration::days(self.rng.random_range(-60..300))
        });
        let tag_count = self.rng.random_range(0..4);
        let tags = (0..tag_count).map(|_| self.pick(TAGS).to_owned()).collect();
        opportunity::Model {
            id: self.next_id("opp_"),
            profile_id: profile.id.clone(),
            organization_name,
            ein: (self.rng.random_range(0..3) != 0).then(|| self.ein()),
            current_stage: stage.as_str().to_owned(),
            overall_score: (self.rng.random_range(0..=1000) as f64) / 1000.0,
            confidence_level: Some((self.rng.random_range(0..=100) as f64) / 100.0),
            priority_level: (self.rng.random_range(0..5) != 0)
                .then(|| self.pick(Priority::ALL).as_str().to_owned()),
            user_rating: (self.rng.random_range(0..3) == 0).then(|| self.rng.random_range(1..=5)),
            source: Some(source.as_str().to_owned()),
            award_floor: Some(floor),
            award_ceiling: Some(ceiling),
            close_date,
            tags: StringList(dedup(tags)),
            notes: (self.rng.random_range(0..4) == 0).then(|| {
                format!("Program officer prefers a letter of inquiry before {stage} review.")
            }),
            discovery_date,
            created_at,
            updated_at: created_at + Duration::seconds(self.rng.random_range(0..86_400 * 30)),
        }
    }
}

fn dedup(mut items: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    items.retain(|item| seen.insert(item.clone()));
    items
}

fn slug(name: &str) -> String {
    name.to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect()
}
