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
            out.push_str(&format!(
                "{backend:<8} {:>2}  {:<36} {:>9.0} {:>8.2} {:>8.2} {:>8.2}  {}\n",
                o.number,
                o.label,
                o.requests_per_second,
                o.p50_ms,
                o.p99_ms,
                o.statements_per_request,
                notes.join(", ")
            ));
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
            "{backend}: cached/uncached (2/1) {}   loaders/N+1 (1/3) {}   cached/ceiling (2/8) {}\n",
            ratio(2, 1),
            ratio(1, 3),
            ratio(2, 8)
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
            "  {:>8} profiles ({:>9} rows, {:>6.0} MB file): p50 {:>7.2} ms  p99 {:>7.2} ms  peak RSS {:>5.0} MB with cache ({:.0} of {:.0} MB held, {} entries), {:>5.0} MB without\n",
            s.profiles,
            s.rows,
            mb(s.file_bytes),
            s.p50_ms,
            s.p99_ms,
            mb(s.peak_rss_bytes),
            mb(s.cache_stored_bytes),
            mb(s.cache_max_bytes),
            s.cache_entries,
            mb(s.peak_rss_cache_off_bytes)
        ));
    }
    out
}

pub fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Nested page p50 against page size (left) and against database size (right).
pub fn plot(path: &Path, pages: &[PagePoint], sizes: &[SizePoint]) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (960, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(480);
    let style = ("sans-serif", 16);

    let max_page = pages.iter().map(|p| p.p50_ms).fold(0.0, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(&left)
        .caption("nested page p50 vs page size (10k profiles)", style)
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(52)
        .build_cartesian_2d(0f64..520f64, 0f64..max_page.max(1.0))?;
    chart
        .configure_mesh()
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
        let lo = sizes.iter().map(|s| s.profiles).min().unwrap_or(10_000) as f64 / 2.0;
        let hi = sizes.iter().map(|s| s.profiles).max().unwrap_or(1_000_000) as f64 * 2.0;
        let mut chart = ChartBuilder::on(&right)
            .caption("page of 50 p50 vs database size", style)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(52)
            .build_cartesian_2d((lo..hi).log_scale(), 0f64..max_size.max(1.0))?;
        chart
            .configure_mesh()
            .x_desc("profiles in the database (x20 opportunities)")
            .y_desc("p50 ms")
            .x_label_formatter(&|v| format!("{}k", (*v / 1000.0).round()))
            .draw()?;
        let points: Vec<(f64, f64)> = sizes
            .iter()
            .map(|s| (s.profiles as f64, s.p50_ms))
            .collect();
        chart.draw_series(LineSeries::new(points.clone(), RED.stroke_width(2)))?;
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, RED.filled())))?;
    }
    root.present()?;
    Ok(())
}
