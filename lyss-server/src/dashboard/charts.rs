//! Bar charts drawn on the server as inline SVG: no script, no front-end build.

use maud::{Markup, html};

/// One stacked series of a chart.
pub struct Series {
    pub label: &'static str,
    /// CSS class that colours it.
    pub class: &'static str,
    pub values: Vec<f64>,
}

const W: f64 = 640.0;
const H: f64 = 170.0;
const LEFT: f64 = 56.0;
const BOTTOM: f64 = 22.0;
const TOP: f64 = 8.0;

/// Stacked bars, one per label (day), each series on top of the previous; `fmt` writes values.
pub fn bars(
    title: &str,
    labels: &[String],
    series: &[Series],
    fmt: &dyn Fn(f64) -> String,
) -> Markup {
    let n = labels.len().max(1);
    let totals: Vec<f64> = (0..n)
        .map(|i| {
            series
                .iter()
                .map(|s| s.values.get(i).copied().unwrap_or(0.0))
                .sum()
        })
        .collect();
    let max = totals.iter().copied().fold(0.0, f64::max);
    let scale = if max > 0.0 {
        (H - BOTTOM - TOP) / max
    } else {
        0.0
    };
    let slot = (W - LEFT) / n as f64;
    let bar = (slot * 0.7).max(1.0);
    let total: f64 = totals.iter().sum();
    // (class, tooltip, x, y, height) of every drawn bar segment, bottom up.
    let mut rects = Vec::new();
    for i in 0..n {
        let x = LEFT + i as f64 * slot + (slot - bar) / 2.0;
        let mut y = H - BOTTOM;
        for s in series {
            let v = s.values.get(i).copied().unwrap_or(0.0);
            let h = v * scale;
            if h > 0.0 {
                y -= h;
                let tip = format!(
                    "{} {}: {}",
                    labels.get(i).map_or("", String::as_str),
                    s.label,
                    fmt(v)
                );
                rects.push((s.class, tip, x, y, h));
            }
        }
    }
    html! {
        figure.chart {
            figcaption { (title) " — " span.total { (fmt(total)) } }
            svg viewBox=(format!("0 0 {W} {H}")) role="img" aria-label=(title) {
                line.axis x1=(LEFT) y1=(H - BOTTOM) x2=(W) y2=(H - BOTTOM) {}
                text.tick x=(LEFT - 6.0) y=(TOP + 8.0) text-anchor="end" { (fmt(max)) }
                text.tick x=(LEFT - 6.0) y=(H - BOTTOM) text-anchor="end" { "0" }
                @for (class, tip, x, y, h) in &rects {
                    rect class=(class) x=(format!("{x:.1}")) y=(format!("{y:.1}"))
                        width=(format!("{bar:.1}")) height=(format!("{h:.1}")) {
                        title { (tip) }
                    }
                }
                @for i in [0, n / 2, n - 1] {
                    @if let Some(l) = labels.get(i) {
                        text.tick x=(format!("{:.1}", LEFT + i as f64 * slot + slot / 2.0)) y=(H - 6.0) text-anchor="middle" { (l) }
                    }
                }
            }
            @if series.len() > 1 {
                p.legend {
                    @for s in series {
                        span class=(format!("key {}", s.class)) {} (s.label) " "
                    }
                }
            }
        }
    }
}
