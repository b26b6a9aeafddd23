//! The release server binary as a child process: the only way to read the
//! server's own peak memory apart from the load generator's.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use anyhow::Context;

/// Log lines kept to explain a failed start.
const LOG_TAIL: usize = 20;

pub struct ChildServer {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl ChildServer {
    /// Starts `catalynx serve` on a free port over the SQLite file at `db`.
    /// `admin_key`, if given, as its one API key (for cacheStats).
    pub fn start(db: &Path, cache: bool, admin_key: Option<&str>) -> anyhow::Result<Self> {
        let mut env = vec![("CATALYNX_CACHE", cache.to_string())];
        if let Some(key) = admin_key {
            env.push(("CATALYNX_API_KEYS", format!("admin={key}")));
        }
        Self::spawn(&super::data::sqlite_url(db), &env)
    }

    /// Starts a replica: `catalynx serve` on a free port with the cache on,
    /// the shared Redis tier at `redis_url` if given, and `admin_key` as its
    /// one API key.
    pub fn replica(
        database_url: &str,
        redis_url: Option<&str>,
        admin_key: &str,
    ) -> anyhow::Result<Self> {
        let mut env = vec![
            ("CATALYNX_CACHE", "true".to_owned()),
            ("CATALYNX_API_KEYS", format!("admin={admin_key}")),
        ];
        if let Some(url) = redis_url {
            env.push(("CATALYNX_REDIS_URL", url.to_owned()));
        }
        Self::spawn(database_url, &env)
    }

    fn spawn(database_url: &str, env: &[(&str, String)]) -> anyhow::Result<Self> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_catalynx"))
            .arg("--database-url")
            .arg(database_url)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("CATALYNX_LOG", "info,sqlx=warn,sea_orm=warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("start the server binary")?;
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let (found, addr) = mpsc::channel();
        let tail = log.clone();
        // Drains stderr for the child's whole life so its writes never block.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = listening_addr(&line) {
                    let _ = found.send(addr);
                }
                let mut tail = tail.lock().expect("log lock");
                if tail.len() == LOG_TAIL {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        });
        let addr = match addr.recv_timeout(Duration::from_secs(120)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let tail: Vec<_> = log.lock().expect("log lock").iter().cloned().collect();
                anyhow::bail!("the server did not start:\n{}", tail.join("\n"));
            }
        };
        Ok(Self { child, addr, log })
    }

    /// The peak resident set of the server so far (`VmHWM`), in bytes.
    pub fn peak_rss_bytes(&self) -> anyhow::Result<u64> {
        self.status_bytes("VmHWM")
    }

    /// Resident anonymous memory now (`RssAnon`: heap, the resolver cache,
    /// SQLite's page caches), in bytes.
    pub fn anon_rss_bytes(&self) -> anyhow::Result<u64> {
        self.status_bytes("RssAnon")
    }

    /// Resident file-backed memory now (`RssFile`: the binary and SQLite's
    /// memory-mapped database pages, which the kernel can drop), in bytes.
    pub fn file_rss_bytes(&self) -> anyhow::Result<u64> {
        self.status_bytes("RssFile")
    }

    /// A `kB` field of `/proc/PID/status`, in bytes.
    fn status_bytes(&self, field: &str) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .context("read /proc/PID/status (Linux only)")?;
        let kib = status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .with_context(|| format!("no {field} in /proc/PID/status"))?;
        Ok(kib * 1024)
    }

    pub fn log_tail(&self) -> String {
        let tail: Vec<_> = self.log.lock().expect("log lock").iter().cloned().collect();
        tail.join("\n")
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address in the server's "listening on http://ADDR ..." log line.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("listening on http://")? + "listening on http://".len()..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}
