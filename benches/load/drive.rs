//! The load generator: a fixed number of keep-alive connections, each sending
//! requests back to back until the round's deadline, timing every response.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// One request of a workload.
#[derive(Clone)]
pub enum Request {
    /// `POST /graphql` with this JSON body.
    Graphql(Bytes),
    /// `POST /graphql` with this JSON body, accepting the answer compressed
    /// as browsers ask for it; an answer sent uncompressed is an error.
    GraphqlCompressed(Bytes),
    /// `GET` of this path.
    Get(Arc<str>),
}

impl Request {
    /// The same GraphQL request, accepting its answer compressed.
    pub fn compressed(self) -> Self {
        match self {
            Self::Graphql(body) => Self::GraphqlCompressed(body),
            other => other,
        }
    }
}

/// Makes the next request of a connection; the generator lets a workload
/// pick random ids or mix reads and writes.
pub type Workload = Arc<dyn Fn(&mut ChaCha8Rng) -> Request + Send + Sync>;

/// A workload that sends the same request every time.
pub fn fixed(request: Request) -> Workload {
    Arc::new(move |_| request.clone())
}

/// A GraphQL operation as a ready-to-send body.
pub fn graphql(query: &str, variables: serde_json::Value) -> Request {
    let body = serde_json::json!({ "query": query, "variables": variables });
    Request::Graphql(Bytes::from(serde_json::to_vec(&body).expect("JSON body")))
}

/// What browsers send: the server picks brotli.
const BROWSER_ACCEPT_ENCODING: &str = "gzip, deflate, br, zstd";

/// A server under load and one HTTP client per connection: a client with a
/// pool of one keeps exactly one keep-alive connection open, so
/// `connections` is the number of sockets, not a pool's upper bound.
/// With several addresses (replicas) each connection sends its requests to
/// them in turn, keeping one socket open to each.
pub struct Target {
    bases: Arc<[String]>,
    clients: Vec<reqwest::Client>,
    /// Sent as `Authorization: Bearer ...` with every request.
    bearer: Option<Arc<str>>,
}

impl Target {
    pub fn new(addr: SocketAddr, connections: usize) -> Self {
        Self::spread(&[addr], connections, None)
    }

    /// Load shared round-robin by request across `addrs`.
    pub fn spread(addrs: &[SocketAddr], connections: usize, bearer: Option<&str>) -> Self {
        assert!(!addrs.is_empty(), "a target needs an address");
        let clients = (0..connections.max(1))
            .map(|_| {
                reqwest::Client::builder()
                    .pool_max_idle_per_host(1)
                    .timeout(Duration::from_secs(60))
                    .build()
                    .expect("HTTP client")
            })
            .collect();
        Self {
            bases: addrs.iter().map(|a| format!("http://{a}")).collect(),
            clients,
            bearer: bearer.map(Arc::from),
        }
    }

    /// Sends one request (to the first address) and returns its status and body.
    pub async fn send(&self, request: &Request) -> anyhow::Result<(u16, Bytes)> {
        send(
            &self.clients[0],
            &self.bases[0],
            self.bearer.as_deref(),
            request,
        )
        .await
    }
}

async fn send(
    client: &reqwest::Client,
    base: &str,
    bearer: Option<&str>,
    request: &Request,
) -> anyhow::Result<(u16, Bytes)> {
    let builder = match request {
        Request::Graphql(body) => client
            .post(format!("{base}/graphql"))
            .header("content-type", "application/json")
            .body(body.clone()),
        Request::GraphqlCompressed(body) => client
            .post(format!("{base}/graphql"))
            .header("content-type", "application/json")
            .header("accept-encoding", BROWSER_ACCEPT_ENCODING)
            .body(body.clone()),
        Request::Get(path) => client.get(format!("{base}{path}")),
    };
    let builder = match bearer {
        Some(key) => builder.bearer_auth(key),
        None => builder,
    };
    let response = builder.send().await?;
    let status = response.status().as_u16();
    // The client does not decompress (reqwest without its decoders), so a
    // compressed answer is measured at its size on the wire and not checked
    // for GraphQL errors: scenario 1 sends the same query uncompressed.
    if matches!(request, Request::GraphqlCompressed(_))
        && !response.headers().contains_key("content-encoding")
    {
        anyhow::bail!("answer not compressed");
    }
    Ok((status, response.bytes().await?))
}

/// What one round measured.
#[derive(Default)]
pub struct Round {
    pub requests: u64,
    /// Transport errors, non-2xx answers and GraphQL answers with `errors`.
    pub errors: u64,
    pub first_error: Option<String>,
    pub seconds: f64,
    /// Per-request latency in microseconds, unsorted.
    pub latencies_us: Vec<u32>,
}

impl Round {
    pub fn requests_per_second(&self) -> f64 {
        self.requests as f64 / self.seconds.max(1e-9)
    }
}

/// Drives `workload` over every connection of `target` for `duration`.
/// Requests in flight at the deadline finish and count; the round lasts
/// until the last of them.
pub async fn run(target: &Target, workload: &Workload, duration: Duration, seed: u64) -> Round {
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = target
        .clients
        .iter()
        .enumerate()
        .map(|(i, client)| {
            let client = client.clone();
            let bases = target.bases.clone();
            let bearer = target.bearer.clone();
            let workload = workload.clone();
            let mut rng =
                ChaCha8Rng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(i as u64));
            tokio::spawn(async move {
                let mut round = Round::default();
                // Connections start at different addresses, then take turns.
                let mut next = i;
                while Instant::now() < deadline {
                    let request = workload(&mut rng);
                    let base = &bases[next % bases.len()];
                    next += 1;
                    let sent = Instant::now();
                    let outcome = send(&client, base, bearer.as_deref(), &request).await;
                    round
                        .latencies_us
                        .push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    round.requests += 1;
                    if let Some(error) = failure(&request, outcome) {
                        round.errors += 1;
                        round.first_error.get_or_insert(error);
                    }
                }
                round
            })
        })
        .collect();
    let mut total = Round::default();
    for task in tasks {
        let round = task.await.expect("load task");
        total.requests += round.requests;
        total.errors += round.errors;
        if total.first_error.is_none() {
            total.first_error = round.first_error;
        }
        total.latencies_us.extend(round.latencies_us);
    }
    total.seconds = started.elapsed().as_secs_f64();
    total
}

/// Why a response counts as an error, if it does.
fn failure(request: &Request, outcome: anyhow::Result<(u16, Bytes)>) -> Option<String> {
    match outcome {
        Err(e) => Some(format!("transport: {e:#}")),
        Ok((status, body)) if !(200..300).contains(&status) => Some(format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        )),
        // async-graphql writes `errors` last, so an answer with errors ends in
        // `]}` while a clean one ends in `}}`; checking the end keeps the
        // client's cost per response constant whatever the body size.
        Ok((_, body)) if matches!(request, Request::Graphql(_)) && body.ends_with(b"]}") => {
            Some(format!(
                "GraphQL: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            ))
        }
        Ok(_) => None,
    }
}

/// The value at `percent` of sorted `values` (nearest rank), in milliseconds.
pub fn percentile_ms(sorted_us: &[u32], percent: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let rank = ((percent / 100.0) * sorted_us.len() as f64).ceil() as usize;
    f64::from(sorted_us[rank.clamp(1, sorted_us.len()) - 1]) / 1000.0
}

/// The median of `values` (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}
