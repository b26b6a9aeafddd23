//! Prometheus metrics, served as text on `GET /metrics`.
//!
//! Each server owns its registry (no process-wide one), so servers started
//! side by side in tests count separately.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::db::Db;
use crate::http::limits::Capacity;

/// Distinct operation names given their own label; later ones count as
/// `other`, since clients choose names and each label value costs memory.
const MAX_OPERATION_NAMES: usize = 200;

/// Seconds: from 1 ms to about 16 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 16.0,
];

/// The server's metrics; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    operations: IntCounterVec,
    operation_duration: HistogramVec,
    errors: IntCounterVec,
    sql_statements: IntCounter,
    pool_connections: IntGaugeVec,
    requests_running: IntGauge,
    /// Operation names seen so far, bounded by `MAX_OPERATION_NAMES`.
    names: Mutex<HashSet<String>>,
    /// Serialises scrapes, so two at once cannot both add the same statements.
    scrape: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new(
                "catalynx_http_requests_total",
                "HTTP requests answered, by route and status.",
            ),
            &["method", "route", "status"],
        )
        .expect("valid metric");
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "catalynx_http_request_duration_seconds",
                "Time to answer an HTTP request, by route.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["method", "route"],
        )
        .expect("valid metric");
        let operations = IntCounterVec::new(
            Opts::new(
                "catalynx_graphql_operations_total",
                "GraphQL operations run, by operation name and type.",
            ),
            &["operation", "type"],
        )
        .expect("valid metric");
        let operation_duration = HistogramVec::new(
            HistogramOpts::new(
                "catalynx_graphql_operation_duration_seconds",
                "Time to run a GraphQL operation, by operation name and type.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["operation", "type"],
        )
        .expect("valid metric");
        let errors = IntCounterVec::new(
            Opts::new(
                "catalynx_graphql_errors_total",
                "Errors in GraphQL responses, by operation name and error code.",
            ),
            &["operation", "code"],
        )
        .expect("valid metric");
        let sql_statements = IntCounter::new(
            "catalynx_sql_statements_total",
            "SQL statements sent to the database.",
        )
        .expect("valid metric");
        let pool_connections = IntGaugeVec::new(
            Opts::new(
                "catalynx_db_pool_connections",
                "Database connections per pool: open, and in use by a request.",
            ),
            &["pool", "state"],
        )
        .expect("valid metric");
        let requests_running = IntGauge::new(
            "catalynx_http_requests_running",
            "API requests running now, against --max-concurrent-requests (0 while there is no limit).",
        )
        .expect("valid metric");
        for collector in [
            Box::new(http_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(http_duration.clone()),
            Box::new(operations.clone()),
            Box::new(operation_duration.clone()),
            Box::new(errors.clone()),
            Box::new(sql_statements.clone()),
            Box::new(pool_connections.clone()),
            Box::new(requests_running.clone()),
        ] {
            registry.register(collector).expect("unique metric names");
        }
        Self {
            inner: Arc::new(Inner {
                registry,
                http_requests,
                http_duration,
                operations,
                operation_duration,
                errors,
                sql_statements,
                pool_connections,
                requests_running,
                names: Mutex::new(HashSet::new()),
                scrape: Mutex::new(()),
            }),
        }
    }

    /// The registry, for other parts of the server to add their own metrics.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    pub fn observe_http(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let i = &self.inner;
        i.http_requests
            .with_label_values(&[method, route, &status.to_string()])
            .inc();
        i.http_duration
            .with_label_values(&[method, route])
            .observe(elapsed.as_secs_f64());
    }

    /// One GraphQL operation: its name (already a label, see
    /// [`Metrics::operation_label`]), type, duration and error codes.
    pub fn observe_operation(&self, label: &str, kind: &str, elapsed: Duration, codes: &[&str]) {
        let i = &self.inner;
        i.operations.with_label_values(&[label, kind]).inc();
        i.operation_duration
            .with_label_values(&[label, kind])
            .observe(elapsed.as_secs_f64());
        for code in codes {
            i.errors.with_label_values(&[label, code]).inc();
        }
    }

    /// A request refused before any operation ran (malformed, unknown
    /// persisted query, ...), counted under the operation label `refused`.
    pub fn observe_refused(&self, code: &str) {
        self.inner
            .errors
            .with_label_values(&["refused", code])
            .inc();
    }

    /// The label for an operation name: the name itself while fewer than
    /// `MAX_OPERATION_NAMES` are known, `anonymous` without one.
    pub fn operation_label(&self, name: Option<&str>) -> String {
        let Some(name) = name else {
            return "anonymous".into();
        };
        let mut names = self.inner.names.lock().expect("metric names lock");
        if names.contains(name) {
            return name.to_owned();
        }
        if names.len() < MAX_OPERATION_NAMES {
            names.insert(name.to_owned());
            return name.to_owned();
        }
        "other".into()
    }

    /// The Prometheus text exposition, with database and capacity figures
    /// read now.
    pub fn render(&self, db: &Db, capacity: &Capacity) -> String {
        let i = &self.inner;
        let _scrape = i.scrape.lock().expect("scrape lock");
        let statements = db.statement_count();
        // A counter only goes up: add what was sent since the last scrape.
        i.sql_statements
            .inc_by(statements.saturating_sub(i.sql_statements.get()));
        for usage in db.pool_usage() {
            i.pool_connections
                .with_label_values(&[usage.pool, "open"])
                .set(i64::from(usage.open));
            i.pool_connections
                .with_label_values(&[usage.pool, "in_use"])
                .set(i64::from(usage.in_use));
        }
        if let Some(running) = capacity.running() {
            i.requests_running.set(running as i64);
        }
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&i.registry.gather(), &mut out) {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}
