//! Whether the database can be reached, watched in the background.
//!
//! While PostgreSQL is down, a pooled connection cannot be had: each request
//! would wait out the pool's acquire timeout (sqlx retries refused
//! connections until then) and hold its slot all that time. A probe on a
//! connection of its own notices the outage within a fraction of a second;
//! requests then fail at once with 503 and `Retry-After`, and succeed again
//! as soon as the probe gets through, with no restart.
//!
//! The probe has its own connection, outside the pool, so a pool saturated
//! by load can never make it report the database down. SQLite is a local
//! file: always reachable, no probe.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use sea_orm::DatabaseBackend;
use sea_orm::sqlx::postgres::{PgConnectOptions, PgConnection};
use sea_orm::sqlx::{Connection, Executor};

use crate::db::Db;

/// Time between two probes.
const INTERVAL: Duration = Duration::from_millis(250);
/// Longest a probe may take before the database counts as unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether the database answers; cheap to clone.
#[derive(Clone)]
pub struct Availability {
    up: Arc<AtomicBool>,
}

impl Availability {
    /// Watches `db` (PostgreSQL only) until the last clone is dropped.
    pub fn watch(db: &Db) -> Self {
        let up = Arc::new(AtomicBool::new(true));
        if db.backend() == DatabaseBackend::Postgres {
            let options = db.write.get_postgres_connection_pool().connect_options();
            tokio::spawn(probe(
                PgConnectOptions::clone(&options),
                Arc::downgrade(&up),
            ));
        }
        Self { up }
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }
}

/// Runs `SELECT 1` every `INTERVAL` on one connection, reconnecting after
/// a failure, and records the outcome until `up` is dropped.
async fn probe(options: PgConnectOptions, up: Weak<AtomicBool>) {
    let mut conn: Option<PgConnection> = None;
    let mut interval = tokio::time::interval(INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(up) = up.upgrade() else {
            return;
        };
        let answered = tokio::time::timeout(PROBE_TIMEOUT, async {
            if conn.is_none() {
                conn = Some(PgConnection::connect_with(&options).await?);
            }
            let c = conn.as_mut().expect("connected above");
            c.execute("SELECT 1").await.map(|_| ())
        })
        .await;
        let now_up = match answered {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                conn = None;
                answered_but_busy(&e)
            }
            Err(_) => {
                conn = None;
                false
            }
        };
        let was_up = up.swap(now_up, Ordering::Relaxed);
        if was_up != now_up {
            if now_up {
                tracing::info!("the database answers again");
            } else {
                tracing::warn!("the database is unreachable: requests fail fast until it is back");
            }
        }
    }
}

/// A refusal from a running server that can still serve the pool (too many
/// connections, say) is not an outage; shutting down or starting up is.
fn answered_but_busy(error: &sea_orm::sqlx::Error) -> bool {
    match error {
        sea_orm::sqlx::Error::Database(e) => {
            let code = e.code().unwrap_or_default();
            !(code.starts_with("57P") || code.starts_with("08"))
        }
        _ => false,
    }
}
