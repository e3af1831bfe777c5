//! Charts as inline SVG, drawn on the server: no script, no chart library, readable without
//! either. Colours come from CSS classes, so the dark and light themes both apply.

use super::html::esc;
use std::fmt::Write as _;

/// Series colours (`.c0` .. `.c8` in console.css, and the grey `.cother`). More series than
/// this would repeat colours and make the chart lie at a glance, so the smallest share one
/// grey "other" whose tooltip names them.
const PALETTE: usize = 10;
const OTHER: &str = "other";

/// Stacked columns: one per label, one segment per series, with a legend that gives each
/// series' total. Series are stacked in the same order in every column, largest at the bottom.
pub fn stacked(title: &str, columns: &[(String, Vec<(String, i64)>)]) -> String {
    if columns.is_empty() {
        return "<p class=\"muted\">No alerts yet.</p>".into();
    }
    let mut totals: Vec<(String, i64)> = Vec::new();
    for (_, segs) in columns {
        for (s, v) in segs {
            match totals.iter_mut().find(|(x, _)| x == s) {
                Some((_, t)) => *t += v,
                None => totals.push((s.clone(), *v)),
            }
        }
    }
    totals.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    // Slots 0..named have colours of their own; a slot after them is "other". Known by
    // position, not by name: a category may itself be called "other".
    let named = if totals.len() > PALETTE {
        PALETTE - 1
    } else {
        totals.len()
    };
    let mut merged = String::new();
    if named < totals.len() {
        let rest = totals.split_off(named);
        merged = rest
            .iter()
            .map(|(s, v)| format!("{} {v}", spaced(s)))
            .collect::<Vec<_>>()
            .join(", ");
        totals.push((OTHER.into(), rest.iter().map(|(_, v)| v).sum()));
    }
    let slot = |s: &str| {
        totals[..named]
            .iter()
            .position(|(x, _)| x == s)
            .unwrap_or(named)
    };
    let class = |k: usize| {
        if k < named {
            format!("c{k}")
        } else {
            "cother".to_owned()
        }
    };
    let max = columns
        .iter()
        .map(|(_, s)| s.iter().map(|(_, v)| *v).sum::<i64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let (w, h, left, bottom) = (640.0, 220.0, 36.0, 28.0);
    let plot_h = h - bottom - 8.0;
    let n = columns.len() as f64;
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
        let mut stack = vec![0i64; totals.len()];
        for (s, v) in segs {
            stack[slot(s)] += v;
        }
        let mut y = 8.0 + plot_h;
        for (k, v) in stack.iter().enumerate().filter(|(_, v)| **v > 0) {
            let hh = *v as f64 / max as f64 * plot_h;
            y -= hh;
            let _ = write!(
                svg,
                "<rect class=\"{}\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bar:.1}\" height=\"{hh:.1}\"><title>{} {}: {v}</title></rect>",
                class(k),
                esc(label),
                esc(&totals[k].0)
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
    for (k, (s, total)) in totals.iter().enumerate() {
        let _ = write!(
            legend,
            "<li{}><span class=\"swatch {}\"></span>{} <span class=\"muted\">{total}</span></li>",
            if k == named {
                format!(" title=\"{}\"", esc(&merged))
            } else {
                String::new()
            },
            class(k),
            esc(&spaced(s))
        );
    }
    legend.push_str("</ul>");
    svg + &legend
}

/// A category as people read it: `break_glass` → "break glass".
fn spaced(category: &str) -> String {
    category.replace('_', " ")
}

/// Horizontal bars with their values, largest first as given, all in one colour: the length
/// is the message, a colour per row would suggest categories that are not there.
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
             <rect class=\"c0\" x=\"{label_w}\" y=\"{y:.1}\" width=\"{bw:.1}\" height=\"{:.1}\"/>\
             <text class=\"value\" x=\"{:.1}\" y=\"{:.1}\">{shown}{}</text>",
            label_w - 6.0,
            y + 14.0,
            esc(label),
            row - 6.0,
            label_w + bw + 6.0,
            y + 14.0,
            esc(unit)
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(label: &str, segs: &[(&str, i64)]) -> (String, Vec<(String, i64)>) {
        (
            label.into(),
            segs.iter().map(|(s, v)| (s.to_string(), *v)).collect(),
        )
    }

    #[test]
    fn many_series_keep_distinct_colours_and_merge_the_smallest() {
        let names: Vec<String> = (0..14).map(|i| format!("cat{i:02}")).collect();
        // cat00 is the largest, cat13 the smallest.
        let segs: Vec<(&str, i64)> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), 100 - i as i64))
            .collect();
        let svg = stacked("t", &[day("2026-12-01", &segs), day("2026-12-02", &segs)]);
        // Nine named series and "other" in the legend, each with its total; "other" names
        // what it holds.
        assert_eq!(
            svg.matches("<li>").count() + svg.matches("<li title").count(),
            PALETTE
        );
        assert!(svg.contains("cat00 <span class=\"muted\">200</span>"));
        assert!(svg.contains("cat08 <span class=\"muted\">184</span>"));
        assert!(!svg.contains("cat09 <span"));
        let other: i64 = (9..14).map(|i| 2 * (100 - i)).sum();
        assert!(svg.contains(&format!("other <span class=\"muted\">{other}</span>")));
        assert!(svg.contains("title=\"cat09 182, cat10 180, cat11 178, cat12 176, cat13 174\""));
        // No colour is used by two series.
        for k in 0..PALETTE - 1 {
            let rects = svg.matches(&format!("<rect class=\"c{k}\"")).count();
            assert_eq!(rects, 2, "c{k}");
        }
        assert_eq!(svg.matches("<rect class=\"cother\"").count(), 2);
        assert!(svg.contains("12-01 other: ") && svg.contains("12-02 cat00: 100"));
    }

    #[test]
    fn same_series_same_colour_in_every_column() {
        let svg = stacked(
            "t",
            &[
                day("2026-12-01", &[("vip", 1), ("family", 5)]),
                day("2026-12-02", &[("family", 2), ("vip", 9)]),
            ],
        );
        // family (7) is smaller than vip (10): vip is c0 in both columns.
        assert!(svg.contains("class=\"c0\" x=\"") && svg.contains("12-01 vip: 1"));
        let vip: Vec<_> = svg.match_indices("vip: ").collect();
        assert_eq!(vip.len(), 2);
        for (i, _) in vip {
            let rect = svg[..i].rfind("<rect class=\"").unwrap();
            assert!(svg[rect..].starts_with("<rect class=\"c0\""));
        }
        assert_eq!(stacked("t", &[]), "<p class=\"muted\">No alerts yet.</p>");
    }

    #[test]
    fn a_category_called_other_keeps_its_colour_when_nothing_is_merged() {
        let svg = stacked("t", &[day("2026-12-01", &[("other", 3), ("vip", 1)])]);
        assert!(svg.contains("<rect class=\"c0\"") && svg.contains("12-01 other: 3"));
        assert!(!svg.contains("cother") && !svg.contains("<li title"));
    }
}
