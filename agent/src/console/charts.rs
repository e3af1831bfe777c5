//! Charts as inline SVG, drawn on the server: no script, no chart library, readable without
//! either. Colours come from CSS classes, so the dark and light themes both apply.

use super::html::esc;
use std::fmt::Write as _;

/// Series colours (`.c0` .. `.c7` in console.css).
const PALETTE: usize = 8;

/// Stacked columns: one per label, one segment per series, with a legend.
pub fn stacked(title: &str, columns: &[(String, Vec<(String, i64)>)]) -> String {
    let mut series: Vec<String> = Vec::new();
    for (_, segs) in columns {
        for (s, _) in segs {
            if !series.contains(s) {
                series.push(s.clone());
            }
        }
    }
    series.sort();
    let max = columns
        .iter()
        .map(|(_, s)| s.iter().map(|(_, v)| *v).sum::<i64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let (w, h, left, bottom) = (640.0, 220.0, 36.0, 28.0);
    let plot_h = h - bottom - 8.0;
    let n = columns.len().max(1) as f64;
    let step = (w - left - 8.0) / n;
    // Narrow columns even when there are few days: a single wide block reads as a total.
    let bar = (step * 0.7).clamp(2.0, 48.0);
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"{}\">",
        esc(title)
    );
    let _ = write!(
        svg,
        "<text class=\"axis\" x=\"{}\" y=\"14\" text-anchor=\"end\">{max}</text>\
         <line class=\"grid\" x1=\"{left}\" x2=\"{}\" y1=\"8\" y2=\"8\"/>\
         <line class=\"grid\" x1=\"{left}\" x2=\"{}\" y1=\"{}\" y2=\"{}\"/>",
        left - 4.0,
        w - 8.0,
        w - 8.0,
        8.0 + plot_h,
        8.0 + plot_h
    );
    for (i, (label, segs)) in columns.iter().enumerate() {
        let x = left + i as f64 * step + (step - bar) / 2.0;
        let mut y = 8.0 + plot_h;
        for (s, v) in segs {
            let k = series.iter().position(|x| x == s).unwrap_or(0) % PALETTE;
            let hh = *v as f64 / max as f64 * plot_h;
            y -= hh;
            let _ = write!(
                svg,
                "<rect class=\"c{k}\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bar:.1}\" height=\"{hh:.1}\"><title>{} {}: {v}</title></rect>",
                esc(label),
                esc(s)
            );
        }
        // Every label when few, else every few.
        let every = (columns.len() / 10).max(1);
        if i % every == 0 {
            let _ = write!(
                svg,
                "<text class=\"axis\" x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                x + bar / 2.0,
                h - 10.0,
                esc(label.get(5..).unwrap_or(label))
            );
        }
    }
    svg.push_str("</svg>");
    let mut legend = String::from("<ul class=\"legend\">");
    for (k, s) in series.iter().enumerate() {
        let _ = write!(
            legend,
            "<li><span class=\"swatch c{}\"></span>{}</li>",
            k % PALETTE,
            esc(&s.replace('_', " "))
        );
    }
    legend.push_str("</ul>");
    if columns.is_empty() {
        return "<p class=\"muted\">No alerts yet.</p>".into();
    }
    svg + &legend
}

/// Horizontal bars with their values, largest first as given.
pub fn bars(title: &str, items: &[(String, f64)], unit: &str) -> String {
    if items.is_empty() {
        return "<p class=\"muted\">Nothing to show yet.</p>".into();
    }
    let max = items.iter().map(|(_, v)| *v).fold(0.0, f64::max).max(1e-9);
    let row = 22.0;
    let (w, label_w) = (640.0, 200.0);
    let h = row * items.len() as f64 + 4.0;
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"{}\">",
        esc(title)
    );
    for (i, (label, v)) in items.iter().enumerate() {
        let y = i as f64 * row + 2.0;
        let bw = v / max * (w - label_w - 90.0);
        let shown = if v.fract() == 0.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.2}")
        };
        let _ = write!(
            svg,
            "<text class=\"axis\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\
             <rect class=\"c{}\" x=\"{label_w}\" y=\"{y:.1}\" width=\"{bw:.1}\" height=\"{:.1}\"/>\
             <text class=\"value\" x=\"{:.1}\" y=\"{:.1}\">{shown}{}</text>",
            label_w - 6.0,
            y + 14.0,
            esc(label),
            i % PALETTE,
            row - 6.0,
            label_w + bw + 6.0,
            y + 14.0,
            esc(unit)
        );
    }
    svg.push_str("</svg>");
    svg
}
