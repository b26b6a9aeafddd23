//! The printed table, the ratios under it, `results.json` and the scale plot.

use std::path::Path;

use plotters::prelude::*;

use crate::scale::{PagePoint, SizePoint};
use crate::scenarios::Outcome;

/// The table of every backend's scenarios, as printed.
pub fn table(backends: &[(&str, Vec<Outcome>)]) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{:<8} {:>2}  {:<36} {:>9} {:>8} {:>8} {:>8}  {}\n",
        "backend", "#", "scenario", "req/s", "p50 ms", "p99 ms", "SQL/req", "notes"
    ));
    for (backend, outcomes) in backends {
        for o in outcomes {
            if let Some(reason) = &o.skipped {
                out.push_str(&format!(
                    "{backend:<8} {:>2}  {:<36} {reason}\n",
                    o.number, o.label
                ));
                continue;
            }
            let mut notes = Vec::new();
            if let Some(ratio) = o.hit_ratio {
                notes.push(format!("hit ratio {ratio:.2}"));
            }
            if o.number == 6 || o.errors > 0 {
                notes.push(format!("{} errors of {}", o.errors, o.requests));
            }
            if let Some(bytes) = o.response_bytes {
                notes.push(format!("{bytes} B"));
            }
            let line = format!(
                "{backend:<8} {:>2}  {:<36} {:>9.0} {:>8.2} {:>8.2} {:>8.2}  {}",
                o.number,
                o.label,
                o.requests_per_second,
                o.p50_ms,
                o.p99_ms,
                o.statements_per_request,
                notes.join(", ")
            );
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
    for (backend, outcomes) in backends {
        let rps = |n: u32| {
            outcomes
                .iter()
                .find(|o| o.number == n && o.skipped.is_none())
                .map(|o| o.requests_per_second)
        };
        let ratio = |a: u32, b: u32| match (rps(a), rps(b)) {
            (Some(a), Some(b)) => format!("{:.2}", a / b),
            _ => "n/a".to_owned(),
        };
        out.push_str(&format!(
            "{backend}: cached/uncached (2/1) {}   loaders/N+1 (1/3) {}   cached/ceiling (2/8) {}   compressed/plain (9/1) {}, cached (10/2) {}\n",
            ratio(2, 1),
            ratio(1, 3),
            ratio(2, 8),
            ratio(9, 1),
            ratio(10, 2)
        ));
    }
    for (backend, outcomes) in backends {
        for o in outcomes.iter().filter(|o| o.errors > 0) {
            out.push_str(&format!(
                "{backend} #{} first error: {}\n",
                o.number,
                o.first_error.as_deref().unwrap_or("?")
            ));
        }
    }
    out
}

/// The scale part as printed.
pub fn scale_lines(pages: &[PagePoint], sizes: &[SizePoint]) -> String {
    let mut out = String::from("scale (one connection, cache off):\n");
    for p in pages {
        out.push_str(&format!(
            "  page size {:>4}: p50 {:>8.2} ms  p99 {:>8.2} ms  SQL/req {:.2}\n",
            p.page_size, p.p50_ms, p.p99_ms, p.statements_per_request
        ));
    }
    for s in sizes {
        out.push_str(&format!(
            "  {:>8} profiles ({:>8} rows, {:>5.0} MB file): p50 {:>7.2} ms  p99 {:>7.2} ms  peak RSS {:>4.0} MB with cache on (end: {:.0} MB anon + {:.0} MB file-backed; cache held {:.1} of {:.0} MB), {:>4.0} MB cache off\n",
            s.profiles,
            s.rows,
            mb(s.file_bytes),
            s.p50_ms,
            s.p99_ms,
            mb(s.peak_rss_bytes),
            mb(s.rss_anon_bytes),
            mb(s.rss_file_bytes),
            mb(s.cache_stored_bytes),
            mb(s.cache_max_bytes),
            mb(s.peak_rss_cache_off_bytes)
        ));
    }
    out
}

pub fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Nested page p50 against page size (left) and against database size (right).
pub fn plot(
    path: &Path,
    profiles: u64,
    pages: &[PagePoint],
    sizes: &[SizePoint],
) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (960, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(480);
    let style = ("sans-serif", 16);

    let max_page = pages.iter().map(|p| p.p50_ms).fold(0.0, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(&left)
        .caption(
            format!(
                "nested page p50 vs page size ({}k profiles)",
                profiles / 1000
            ),
            style,
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(52)
        .build_cartesian_2d(0f64..520f64, 0f64..max_page.max(1.0))?;
    chart
        .configure_mesh()
        .light_line_style(WHITE)
        .x_desc("profiles per page (5 opportunities each)")
        .y_desc("p50 ms")
        .draw()?;
    let points: Vec<(f64, f64)> = pages
        .iter()
        .map(|p| (f64::from(p.page_size), p.p50_ms))
        .collect();
    chart.draw_series(LineSeries::new(points.clone(), BLUE.stroke_width(2)))?;
    chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, BLUE.filled())))?;

    if !sizes.is_empty() {
        let max_size = sizes.iter().map(|s| s.p50_ms).fold(0.0, f64::max) * 1.15;
        // log10 of the size on a linear axis: labels at round powers of ten.
        let log = |n: u64| (n as f64).log10();
        let lo = sizes
            .iter()
            .map(|s| log(s.profiles))
            .fold(f64::MAX, f64::min)
            - 0.3;
        let hi = sizes.iter().map(|s| log(s.profiles)).fold(0.0, f64::max) + 0.3;
        let mut chart = ChartBuilder::on(&right)
            .caption("page of 50 p50 vs database size", style)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(52)
            .build_cartesian_2d(lo..hi, 0f64..max_size.max(1.0))?;
        chart
            .configure_mesh()
            .light_line_style(WHITE)
            .x_labels(5)
            .x_desc("profiles in the database (x20 opportunities), log scale")
            .y_desc("p50 ms")
            .x_label_formatter(&|v| human(10f64.powf(*v)))
            .draw()?;
        let points: Vec<(f64, f64)> = sizes.iter().map(|s| (log(s.profiles), s.p50_ms)).collect();
        chart.draw_series(LineSeries::new(points.clone(), RED.stroke_width(2)))?;
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, RED.filled())))?;
    }
    root.present()?;
    Ok(())
}

/// 10000 as "10k", 1000000 as "1M".
fn human(n: f64) -> String {
    if n >= 999_500.0 {
        format!("{:.0}M", n / 1e6)
    } else {
        format!("{:.0}k", n / 1e3)
    }
}
