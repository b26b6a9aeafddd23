//! Load benchmark: `cargo bench --bench load [-- OPTIONS]`.
//!
//! Seeds (or reuses) a SQLite database, starts the real server, drives it
//! with concurrent keep-alive HTTP connections, and prints one table:
//! requests/s (median over rounds), p50 and p99 latency and SQL statements
//! per request for each scenario. Scenarios take turns within each round
//! (1 2 ... 10, 1 2 ... 10, ...) so that drift of a shared machine hits them
//! alike. `--scale` adds page-size and database-size sweeps with the
//! server's peak RSS; results go to `<out>/results.json` and `<out>/scale.svg`.
//! `--replicas REDIS_URL` (with `--postgres`) adds the scale-out part: two
//! replicas sharing Redis (see `replicas`).
//!
//! The scenarios run against servers started in this process
//! (`RunningServer`), whose statement and cache counters can be read
//! directly; the peak RSS figures come from the server binary run as a
//! child process, whose memory is its own.

mod child;
mod data;
mod drive;
mod replicas;
mod report;
mod scale;
mod scenarios;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use serde_json::json;

/// Options after `--`, e.g. `cargo bench --bench load -- --scale`.
#[derive(Debug, Parser)]
#[command(name = "load", about = "Load benchmark of the Catalynx API server")]
struct Args {
    /// Profiles in the benchmark database (20 opportunities each on average).
    #[arg(long, default_value_t = 10_000)]
    profiles: u64,
    /// Concurrent keep-alive connections, each sending requests back to back.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Seconds of load per scenario and round.
    #[arg(long, default_value_t = 3.0)]
    duration: f64,
    /// Rounds; every scenario runs once per round.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds of unmeasured load per scenario before the first round.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Run only these scenarios, e.g. `--only 1,3` (to profile one of them).
    #[arg(long, value_delimiter = ',')]
    only: Vec<u32>,
    /// Also run the scale part: page sizes 10..500, databases of 10k and 100k profiles, peak RSS.
    #[arg(long)]
    scale: bool,
    /// Include 1,000,000 profiles in the scale part (the first seed takes minutes and ~10 GB).
    #[arg(long)]
    million: bool,
    /// Admin URL of a PostgreSQL server: also run the scenarios there, in a
    /// database created for the run and dropped after it.
    #[arg(long)]
    postgres: Option<String>,
    /// Redis URL with a database number of its own, e.g.
    /// redis://127.0.0.1:6379/5: also measure two replicas of the release
    /// binary sharing Redis, on the --postgres database (its clx:* keys are
    /// deleted before and after).
    #[arg(long, value_name = "REDIS_URL", requires = "postgres")]
    replicas: Option<String>,
    /// Directory for the database files, results.json and scale.svg.
    #[arg(long, default_value = "target/bench-results")]
    out: PathBuf,
    /// Added by `cargo bench` itself; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(url) = &args.replicas {
        replicas::check_url(url)?;
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("create {}", args.out.display()))?;
    let timing = scenarios::Timing {
        rounds: args.rounds.max(1),
        duration: Duration::from_secs_f64(args.duration),
        warmup: Duration::from_secs_f64(args.warmup),
        only: args.only.clone(),
    };
    // The server gets the worker threads the binary would have on this
    // machine; the load generator has its own runtime so that neither can
    // starve the other's scheduler (they still share the CPUs).
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cpus)
        .thread_name("server")
        .enable_all()
        .build()?;
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cpus)
        .thread_name("load")
        .enable_all()
        .build()?;
    let load_before = load_average();

    let (file, seed) = server_rt.block_on(data::sqlite_file(&args.out, args.profiles))?;
    let scratch = data::scratch_copy(&file)?;
    let suite = scenarios::Suite::start(
        &server_rt,
        "sqlite",
        &data::sqlite_url(&file),
        &data::sqlite_url(&scratch),
        args.connections,
    )?;
    let sqlite = scenarios::run(&suite, &server_rt, &client_rt, &timing)?;
    let pages = if args.scale {
        scale::page_sizes(&suite.uncached, &client_rt, &timing)
    } else {
        Vec::new()
    };
    suite.stop(&server_rt)?;
    data::remove_sqlite(&scratch);

    let mut backends = vec![("sqlite", sqlite)];
    let mut seeds = vec![seed];
    let mut scaled_out = None;
    if let Some(admin) = &args.postgres {
        let pg = server_rt.block_on(data::PgDatabase::create(admin))?;
        let measured = (|| {
            seeds.push(server_rt.block_on(pg.seed(args.profiles))?);
            let suite = scenarios::Suite::start(
                &server_rt,
                "postgres",
                &pg.url,
                &pg.url,
                args.connections,
            )?;
            let outcomes = scenarios::run(&suite, &server_rt, &client_rt, &timing)?;
            suite.stop(&server_rt)?;
            if let Some(redis) = &args.replicas {
                scaled_out = Some(replicas::run(
                    &pg.url,
                    redis,
                    args.connections,
                    &client_rt,
                    &timing,
                )?);
            }
            anyhow::Ok(outcomes)
        })();
        server_rt.block_on(pg.drop_db())?;
        backends.push(("postgres", measured?));
    }

    let sizes = if args.scale {
        let mut sizes = vec![10_000, 100_000];
        if args.million {
            sizes.push(1_000_000);
        }
        scale::database_sizes(
            &args.out,
            &sizes,
            args.connections,
            &server_rt,
            &client_rt,
            &timing,
        )?
    } else {
        Vec::new()
    };
    let load_after = load_average();

    println!();
    println!(
        "{} profiles x {}, {} connections, {} rounds x {:.0} s, {} CPUs, load average {} -> {}",
        args.profiles,
        data::OPPORTUNITIES_PER_PROFILE,
        args.connections,
        timing.rounds,
        args.duration,
        cpus,
        load_before,
        load_after
    );
    print!("{}", report::table(&backends));
    for s in sizes.iter().map(|s| &s.seed) {
        if !seeds
            .iter()
            .any(|t| t.backend == s.backend && t.profiles == s.profiles)
        {
            seeds.push(s.clone());
        }
    }
    for s in &seeds {
        println!(
            "seed {} {}x{}: {:.0} rows/s ({:.1} s){}",
            s.backend,
            s.profiles,
            data::OPPORTUNITIES_PER_PROFILE,
            s.rows_per_second,
            s.seconds,
            if s.this_run {
                ""
            } else {
                ", measured when the file was created"
            }
        );
    }
    if args.scale {
        print!("{}", report::scale_lines(&pages, &sizes));
    }
    if let Some(r) = &scaled_out {
        print!("{}", replicas::lines(r, cpus));
    }
    let results = json!({
        "settings": {
            "profiles": args.profiles,
            "opportunities_per_profile": data::OPPORTUNITIES_PER_PROFILE,
            "seed": data::SEED,
            "connections": args.connections,
            "rounds": timing.rounds,
            "duration_seconds": args.duration,
            "warmup_seconds": args.warmup,
            "cpus": cpus,
            "load_average_before": load_before,
            "load_average_after": load_after,
        },
        "scenarios": backends.iter().map(|(b, o)| (b.to_string(), json!(o))).collect::<serde_json::Map<_, _>>(),
        "seeds": seeds,
        "scale": { "page_sizes": pages, "database_sizes": sizes },
        "replicas": scaled_out,
    });
    let path = args.out.join("results.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&results)?)?;
    println!("results: {}", path.display());
    if args.scale {
        let svg = args.out.join("scale.svg");
        report::plot(&svg, args.profiles, &pages, &sizes)?;
        println!("plot: {}", svg.display());
    }
    Ok(())
}

/// The 1, 5 and 15 minute load averages, to judge how quiet the machine was.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "n/a".to_owned())
}
