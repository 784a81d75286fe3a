//! The throughput chart: inline SVG built on the server from numbers only,
//! so it needs no script and holds no user text.

use std::fmt::Write;

use offload::admin::ThroughputPoint;

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 180.0;
const LEFT: f64 = 44.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;

/// Stacked bars per minute: completed (green) under discarded (red).
pub(crate) fn throughput_svg(points: &[ThroughputPoint]) -> String {
    let completed: i64 = points.iter().map(|p| p.completed).sum();
    let discarded: i64 = points.iter().map(|p| p.discarded).sum();
    let peak = points
        .iter()
        .map(|p| p.completed + p.discarded)
        .max()
        .unwrap_or(0);
    let top = nice_ceiling(peak);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let n = points.len().max(1) as f64;
    let slot = plot_w / n;
    let bar = (slot * 0.8).max(1.0);

    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="chart-title chart-desc" xmlns="http://www.w3.org/2000/svg">"#
    );
    let _ = write!(
        svg,
        r#"<title id="chart-title">Jobs finished per minute, last {} minutes</title><desc id="chart-desc">{completed} completed and {discarded} discarded in the last {} minutes; busiest minute {peak}.</desc>"#,
        points.len(),
        points.len()
    );
    for step in 0..=4 {
        let value = top * step / 4;
        let y = TOP + plot_h - plot_h * value as f64 / top as f64;
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#d0d7de" stroke-width="1"/><text x="{}" y="{:.1}" text-anchor="end" font-size="11" fill="#3d4852">{value}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0
        );
    }
    for (i, point) in points.iter().enumerate() {
        let x = LEFT + slot * i as f64 + (slot - bar) / 2.0;
        let done_h = plot_h * point.completed as f64 / top as f64;
        let fail_h = plot_h * point.discarded as f64 / top as f64;
        let base = TOP + plot_h;
        let label = point.minute.format("%H:%M");
        if point.completed > 0 {
            let _ = write!(
                svg,
                r##"<rect x="{x:.1}" y="{:.1}" width="{bar:.1}" height="{done_h:.1}" fill="#1a7f37"><title>{label} UTC: {} completed</title></rect>"##,
                base - done_h,
                point.completed
            );
        }
        if point.discarded > 0 {
            let _ = write!(
                svg,
                r##"<rect x="{x:.1}" y="{:.1}" width="{bar:.1}" height="{fail_h:.1}" fill="#cf222e"><title>{label} UTC: {} discarded</title></rect>"##,
                base - done_h - fail_h,
                point.discarded
            );
        }
    }
    let ticks = [
        0usize,
        points.len() / 4,
        points.len() / 2,
        points.len() * 3 / 4,
    ];
    let last = points.len().saturating_sub(1);
    for i in ticks.into_iter().chain(std::iter::once(last)) {
        if let Some(point) = points.get(i) {
            // The last label ends at the plot's edge instead of overflowing it.
            let (x, anchor) = if i == last && i > 0 {
                (WIDTH - RIGHT, "end")
            } else {
                (LEFT + slot * i as f64 + slot / 2.0, "middle")
            };
            let _ = write!(
                svg,
                r##"<text x="{x:.1}" y="{:.1}" text-anchor="{anchor}" font-size="11" fill="#3d4852">{}</text>"##,
                HEIGHT - 8.0,
                point.minute.format("%H:%M")
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

/// The smallest of 4, 8, 20, 40, 80, 200, ... at least `peak`, so the
/// axis has round labels in quarters.
fn nice_ceiling(peak: i64) -> i64 {
    let mut magnitude = 1;
    loop {
        for step in [4, 8, 20, 40] {
            if peak <= step * magnitude {
                return step * magnitude;
            }
        }
        magnitude = magnitude.saturating_mul(10);
        if magnitude > i64::MAX / 100 {
            return peak.max(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    #[test]
    fn axis_top_is_round_and_covers_peak() {
        assert_eq!(nice_ceiling(0), 4);
        assert_eq!(nice_ceiling(5), 8);
        assert_eq!(nice_ceiling(33), 40);
        assert_eq!(nice_ceiling(41), 80);
        assert_eq!(nice_ceiling(1234), 2000);
    }

    #[test]
    fn chart_describes_totals() {
        let points = vec![
            ThroughputPoint {
                minute: Utc::now(),
                completed: 3,
                discarded: 1,
            },
            ThroughputPoint {
                minute: Utc::now(),
                completed: 2,
                discarded: 0,
            },
        ];
        let svg = throughput_svg(&points);
        assert!(svg.contains("5 completed and 1 discarded"));
        assert_eq!(svg.matches("<rect").count(), 3);
    }
}
