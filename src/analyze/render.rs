//! Output formats of `abgate analyze`: an aligned terminal table, the stable JSON
//! described in `docs/analysis.md`, and one self-contained HTML file (inline SVG, no external assets).
//! A bandit experiment's section is rendered by `bandit_render`.

use super::shadow::ShadowReport;
use super::verdict::SRM_THRESHOLD;
use super::{Comparison, ExperimentReport, Report};
use std::fmt::Write;

pub(super) fn num(x: f64, digits: usize) -> String {
    if x.is_finite() {
        format!("{x:.digits$}")
    } else {
        "-".into()
    }
}

/// Line colours of the report's charts, one per variant (or arm), in order.
pub(super) const COLORS: [&str; 6] = [
    "#0969da", "#bf3989", "#1a7f37", "#9a6700", "#8250df", "#cf222e",
];

fn pct(x: f64) -> String {
    if x.is_finite() {
        format!("{:+.2}%", 100.0 * x)
    } else {
        "-".into()
    }
}

/// A p-value for reading: 4 decimals, scientific below 0.0001, and `< 1e-300` for a
/// zero (a p-value that underflowed, or the limit of a test on constant groups), which
/// nobody should read as an exact 0.
pub(super) fn p(x: f64) -> String {
    if !x.is_finite() {
        "-".into()
    } else if x < 1e-300 {
        "< 1e-300".into()
    } else if x < 0.0001 {
        format!("{x:.1e}")
    } else {
        format!("{x:.4}")
    }
}

/// The JSON report (the schema of `docs/analysis.md`; extra fields may be added, these stay).
pub fn json(r: &Report) -> String {
    let v = serde_json::json!({
        "experiments": r.experiments,
        "read": r.read,
        "confidence": r.confidence,
    });
    serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
}

/// The terminal table. Significant results (p < α) are marked `*`.
pub fn table(r: &Report) -> String {
    let alpha = 1.0 - r.confidence;
    let mut s = String::new();
    for e in &r.experiments {
        let units: Vec<String> = e
            .variants
            .iter()
            .map(|v| format!("{v}={}", e.units.get(v).copied().unwrap_or(0)))
            .collect();
        let _ = writeln!(s, "experiment {} (layer {})", e.experiment, e.layer);
        if let Some(b) = &e.bandit {
            super::bandit_render::table(&mut s, e, b, r.confidence);
            s.push('\n');
            continue;
        }
        let _ = writeln!(
            s,
            "  units: {}   SRM p={}{}   mixed (excluded): {}",
            units.join(" "),
            p(e.srm_p_value),
            if e.srm_p_value < SRM_THRESHOLD {
                " MISMATCH"
            } else {
                ""
            },
            e.mixed_units
        );
        let _ = writeln!(s, "  verdict: {} — {}", e.verdict.to_uppercase(), e.reason);
        let _ = writeln!(
            s,
            "  {:<14} {:<12} {:>11} {:>11} {:>9} {:>20} {:>9} {:>9} {:>9} {:>8}",
            "metric",
            "variant",
            "control",
            "treatment",
            "rel lift",
            "rel CI",
            "p",
            "p holm",
            "seq p",
            "P(better)"
        );
        for c in &e.comparisons {
            let sig = if c.p_value < alpha { "*" } else { " " };
            let _ = writeln!(
                s,
                "{sig} {:<14} {:<12} {:>11} {:>11} {:>9} {:>20} {:>9} {:>9} {:>9} {:>8}",
                c.metric,
                c.variant,
                num(c.control.mean, 4),
                num(c.treatment.mean, 4),
                pct(c.rel_lift),
                format!("[{}, {}]", pct(c.rel_ci[0]), pct(c.rel_ci[1])),
                p(c.p_value),
                p(c.p_value_holm),
                p(c.seq_p_value),
                num(c.prob_better, 3)
            );
            if let Some(cu) = &c.cuped {
                let _ = writeln!(
                    s,
                    "    CUPED: θ={} variance −{:.0}% lift {} [{}, {}] p={}",
                    num(cu.theta, 3),
                    100.0 * cu.variance_reduction,
                    num(cu.abs_lift, 4),
                    num(cu.abs_ci[0], 4),
                    num(cu.abs_ci[1], 4),
                    p(cu.p_value)
                );
            }
        }
        for sh in &e.shadow {
            shadow_table(&mut s, sh, r.confidence);
        }
        s.push('\n');
    }
    let duplicates = match r.read.duplicates {
        0 => String::new(),
        n => format!(", {n} duplicates counted once"),
    };
    let _ = writeln!(
        s,
        "read {} lines from {} files ({} exposures, {} outcomes, {} skipped{duplicates}); * = p < {alpha:.3}",
        r.read.lines, r.read.files, r.read.exposures, r.read.outcomes, r.read.skipped
    );
    s
}

fn opt_ms(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), |v| format!("{v:.1} ms"))
}

fn opt_ratio(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), |v| format!("{v:.2}×"))
}

/// The shadow lines of one variant: what its copies found.
fn shadow_table(s: &mut String, sh: &ShadowReport, confidence: f64) {
    let rate = match (sh.mismatch_rate, sh.mismatch_ci) {
        (Some(r), Some([lo, hi])) => format!(
            "{:.2}% [{:.2}%, {:.2}%] ({:.0}% CI)",
            100.0 * r,
            100.0 * lo,
            100.0 * hi,
            100.0 * confidence
        ),
        _ => "-".into(),
    };
    let _ = writeln!(
        s,
        "  shadow {} → {}: {} copies, {} compared, {} mismatches, {} errors, {} skipped",
        sh.variant, sh.upstream, sh.copies, sh.compared, sh.mismatches, sh.errors, sh.skipped
    );
    let _ = writeln!(s, "    mismatch rate: {rate}");
    if !sh.reasons.is_empty() {
        let reasons: Vec<String> = sh.reasons.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(s, "    skipped/failed: {}", reasons.join(" "));
    }
    for pc in &sh.top_pointers {
        let name = if pc.pointer.is_empty() {
            "(whole body)"
        } else {
            &pc.pointer
        };
        let _ = writeln!(
            s,
            "    differs at {name}: {} ({:.0}% of mismatches)",
            pc.mismatches,
            100.0 * pc.share_of_mismatches
        );
    }
    let cells: Vec<String> = sh
        .statuses
        .iter()
        .map(|c| format!("{}→{}: {}", c.primary, c.shadow, c.count))
        .collect();
    if !cells.is_empty() {
        let _ = writeln!(s, "    status (served→shadow): {}", cells.join("  "));
    }
    let l = &sh.latency_ms;
    let _ = writeln!(
        s,
        "    latency p50 {} vs {} ({}), p99 {} vs {} ({})",
        opt_ms(l.primary_p50),
        opt_ms(l.shadow_p50),
        opt_ratio(l.ratio_p50),
        opt_ms(l.primary_p99),
        opt_ms(l.shadow_p99),
        opt_ratio(l.ratio_p99)
    );
}

/// The HTML shadow section of one variant.
fn shadow_html(s: &mut String, sh: &ShadowReport) {
    let _ = write!(
        s,
        "<h3>Shadow: {} → {}</h3><p>{} copies: {} compared, {} mismatches, {} errors, {} skipped. Mismatch rate {}{}.</p>",
        esc(&sh.variant),
        esc(&sh.upstream),
        sh.copies,
        sh.compared,
        sh.mismatches,
        sh.errors,
        sh.skipped,
        sh.mismatch_rate.map_or_else(|| "-".into(), |r| format!("{:.2}%", 100.0 * r)),
        sh.mismatch_ci.map_or_else(String::new, |[lo, hi]| format!(
            " [{:.2}%, {:.2}%]",
            100.0 * lo,
            100.0 * hi
        )),
    );
    s.push_str("<table><tr><th>pointer</th><th>mismatches</th><th>share</th></tr>");
    for pc in &sh.top_pointers {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{:.1}%</td></tr>",
            if pc.pointer.is_empty() {
                "(whole body)".into()
            } else {
                esc(&pc.pointer)
            },
            pc.mismatches,
            100.0 * pc.share_of_mismatches
        );
    }
    s.push_str(
        "</table><table><tr><th>served status</th><th>shadow status</th><th>pairs</th></tr>",
    );
    for c in &sh.statuses {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            c.primary, c.shadow, c.count
        );
    }
    let l = &sh.latency_ms;
    let _ = write!(
        s,
        "</table><p>Latency p50 {} (served) vs {} (shadow), ratio {}; p99 {} vs {}, ratio {}.</p>",
        opt_ms(l.primary_p50),
        opt_ms(l.shadow_p50),
        opt_ratio(l.ratio_p50),
        opt_ms(l.primary_p99),
        opt_ms(l.shadow_p99),
        opt_ratio(l.ratio_p99)
    );
}

pub(super) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The forest plot of relative lifts: one row per comparison — its name on the left, the
/// interval and the point in the middle on an axis with a labelled zero and a few round
/// ticks, the lift, interval and p-value as text on the right — coloured green (better,
/// p < 0.05), red (worse, p < 0.05) or grey.
fn forest(cs: &[Comparison]) -> String {
    let rows: Vec<&Comparison> = cs
        .iter()
        .filter(|c| c.rel_lift.is_finite() && c.rel_ci[0].is_finite() && c.rel_ci[1].is_finite())
        .collect();
    if rows.is_empty() {
        return "<p>No relative lifts to plot.</p>".into();
    }
    let lo = rows.iter().map(|c| c.rel_ci[0]).fold(0.0f64, f64::min);
    let hi = rows.iter().map(|c| c.rel_ci[1]).fold(0.0f64, f64::max);
    let ticks = ticks(lo, hi);
    let (lo, hi) = (ticks[0].min(lo), ticks[ticks.len() - 1].max(hi));
    let (left, w, right, h) = (190.0, 380.0, 320.0, 26.0);
    let x = |v: f64| left + (v - lo) / (hi - lo).max(1e-12) * w;
    let height = rows.len() as f64 * h + 34.0;
    let axis = height - 22.0;
    let mut s = format!("<svg width=\"{}\" height=\"{height}\" xmlns=\"http://www.w3.org/2000/svg\" font-family=\"sans-serif\" font-size=\"12\">", left + w + right);
    for (i, _) in rows.iter().enumerate().filter(|(i, _)| i % 2 == 0) {
        let _ = write!(
            s,
            "<rect x=\"0\" y=\"{:.1}\" width=\"{}\" height=\"{h}\" fill=\"#f6f8fa\"/>",
            i as f64 * h + 2.0,
            left + w + right
        );
    }
    for &t in &ticks {
        let (stroke, dash) = if t == 0.0 {
            ("#57606a", " stroke-dasharray=\"4,3\"")
        } else {
            ("#d0d7de", "")
        };
        let _ = write!(
            s,
            "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"2\" y2=\"{axis:.1}\" stroke=\"{stroke}\"{dash}/><text x=\"{0:.1}\" y=\"{1:.1}\" text-anchor=\"middle\" fill=\"#57606a\">{2}</text>",
            x(t),
            axis + 14.0,
            tick_label(t, &ticks)
        );
    }
    for (i, c) in rows.iter().enumerate() {
        let y = i as f64 * h + 2.0 + h / 2.0;
        let better = if c.higher_is_better {
            c.abs_lift > 0.0
        } else {
            c.abs_lift < 0.0
        };
        let color = if c.p_value >= 0.05 {
            "#57606a"
        } else if better {
            "#1a7f37"
        } else {
            "#cf222e"
        };
        let _ = write!(
            s,
            "<text x=\"6\" y=\"{:.1}\">{} · {}</text><line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"{color}\" stroke-width=\"2\"/><circle cx=\"{:.1}\" cy=\"{y:.1}\" r=\"4\" fill=\"{color}\"/><text x=\"{:.1}\" y=\"{:.1}\" fill=\"{color}\">{} [{}, {}] p={}</text>",
            y + 4.0,
            esc(&c.metric),
            esc(&c.variant),
            x(c.rel_ci[0]),
            x(c.rel_ci[1]),
            x(c.rel_lift),
            left + w + 10.0,
            y + 4.0,
            pct(c.rel_lift),
            pct(c.rel_ci[0]),
            pct(c.rel_ci[1]),
            esc(&p(c.p_value))
        );
    }
    s.push_str("</svg>");
    s
}

/// Round tick values covering [lo, hi] (which contains 0): a step of 1, 2, 2.5 or 5 × 10^k
/// giving at most 8 intervals, so 0 is always a tick.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(1e-9);
    let base = 10f64.powf((span / 8.0).log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * base)
        .find(|st| span / st <= 8.0)
        .unwrap_or(10.0 * base);
    let (first, last) = ((lo / step).floor() as i64, (hi / step).ceil() as i64);
    (first..=last).map(|k| k as f64 * step).collect()
}

/// A tick as a percentage, with as many decimals as the step needs (`+2.5%`, `-10%`).
fn tick_label(t: f64, ticks: &[f64]) -> String {
    if t == 0.0 {
        return "0".into();
    }
    let step = 100.0 * (ticks.get(1).copied().unwrap_or(1.0) - ticks[0]).abs();
    let mut decimals = 0;
    while decimals < 6 {
        let scaled = step * 10f64.powi(decimals as i32);
        if (scaled.round() - scaled).abs() < 1e-6 * scaled.max(1.0) {
            break;
        }
        decimals += 1;
    }
    format!("{:+.decimals$}%", 100.0 * t)
}

/// Cumulative units per variant over time, one polyline per variant, with the bin times
/// of the ends and the middle under the axis and the largest count beside it.
fn over_time(e: &ExperimentReport) -> String {
    let pts = &e.units_over_time;
    if pts.len() < 2 {
        return "<p>All units arrived within one second; no time series to draw.</p>".into();
    }
    let max = pts
        .iter()
        .flat_map(|p| p.units.iter().copied())
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let (left, w, h) = (50.0, 600.0, 180.0);
    let colors = COLORS;
    let x = |i: usize| left + i as f64 / (pts.len() - 1) as f64 * w;
    let mut s = format!("<svg width=\"{}\" height=\"{}\" xmlns=\"http://www.w3.org/2000/svg\" font-family=\"sans-serif\" font-size=\"12\">", left + w + 140.0, h + 30.0);
    let _ = write!(
        s,
        "<line x1=\"{left}\" x2=\"{left}\" y1=\"5\" y2=\"{0}\" stroke=\"#d0d7de\"/><line x1=\"{left}\" x2=\"{1}\" y1=\"{0}\" y2=\"{0}\" stroke=\"#d0d7de\"/><text x=\"{2}\" y=\"14\" text-anchor=\"end\" fill=\"#57606a\">{3}</text><text x=\"{2}\" y=\"{0}\" text-anchor=\"end\" fill=\"#57606a\">0</text>",
        h + 5.0,
        left + w,
        left - 6.0,
        max
    );
    for (vi, v) in e.variants.iter().enumerate() {
        let path: Vec<String> = pts
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{:.1},{:.1}", x(i), h - p.units[vi] as f64 / max * h + 5.0))
            .collect();
        let c = colors[vi % colors.len()];
        let _ = write!(
            s,
            "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"2\" points=\"{}\"/><text x=\"{}\" y=\"{}\" fill=\"{c}\">{}</text>",
            path.join(" "),
            left + w + 8.0,
            15.0 + 16.0 * vi as f64,
            esc(v)
        );
    }
    for (i, anchor) in [
        (0, "start"),
        ((pts.len() - 1) / 2, "middle"),
        (pts.len() - 1, "end"),
    ] {
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"{anchor}\" fill=\"#57606a\">{}</text>",
            x(i),
            h + 25.0,
            esc(&pts[i].time.replace('T', " "))
        );
    }
    s.push_str("</svg>");
    s
}

/// One self-contained HTML file.
pub fn html(r: &Report) -> String {
    let mut s = String::from("<!doctype html><html><head><meta charset=\"utf-8\"><title>abgate experiment report</title><style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#1f2328}table{border-collapse:collapse;font-size:13px}td,th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}td:first-child,th:first-child,td:nth-child(2){text-align:left}.ship{color:#1a7f37}.no_ship,.invalid{color:#cf222e}.keep_running{color:#9a6700}</style></head><body><h1>Experiment report</h1>");
    let _ = write!(
        s,
        "<p>{} lines from {} files: {} exposures, {} outcomes, {} skipped. Confidence {}.</p>",
        r.read.lines, r.read.files, r.read.exposures, r.read.outcomes, r.read.skipped, r.confidence
    );
    for e in &r.experiments {
        let _ = write!(
            s,
            "<h2>{} <small>(layer {})</small></h2>",
            esc(&e.experiment),
            esc(&e.layer)
        );
        let _ = write!(
            s,
            "<p class=\"{}\"><b>{}</b> — {}</p>",
            e.verdict,
            e.verdict.to_uppercase(),
            esc(&e.reason)
        );
        if let Some(b) = &e.bandit {
            super::bandit_render::html(&mut s, e, b, r.confidence);
            continue;
        }
        let units: Vec<String> = e
            .variants
            .iter()
            .zip(&e.weights)
            .map(|(v, w)| {
                format!(
                    "{}: {} units (weight {w})",
                    esc(v),
                    e.units.get(v).copied().unwrap_or(0)
                )
            })
            .collect();
        let _ = write!(
            s,
            "<h3>Sample ratio check</h3><p>{}. Chi-square p = {}{}. Units seen in two variants (excluded): {}.</p>",
            units.join("; "),
            p(e.srm_p_value),
            if e.srm_p_value.is_nan() { " — not computed (see the reason above)" } else if e.srm_p_value < SRM_THRESHOLD { " — <b class=\"invalid\">mismatch: results are not trustworthy</b>" } else { " — consistent with the weights" },
            e.mixed_units
        );
        let _ = write!(
            s,
            "<h3>Relative lift with {}% CI</h3>{}",
            100.0 * r.confidence,
            forest(&e.comparisons)
        );
        s.push_str("<table><tr><th>metric</th><th>variant</th><th>control</th><th>treatment</th><th>abs lift</th><th>rel lift</th><th>p</th><th>p Holm</th><th>p BH</th><th>seq p</th><th>P(better)</th><th>CUPED p</th></tr>");
        for c in &e.comparisons {
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&c.metric),
                esc(&c.variant),
                num(c.control.mean, 4),
                num(c.treatment.mean, 4),
                num(c.abs_lift, 4),
                pct(c.rel_lift),
                p(c.p_value),
                p(c.p_value_holm),
                p(c.p_value_bh),
                p(c.seq_p_value),
                num(c.prob_better, 3),
                c.cuped.as_ref().map(|x| p(x.p_value)).unwrap_or_else(|| "-".into())
            );
        }
        s.push_str("</table>");
        let _ = write!(
            s,
            "<h3>Units over time (cumulative, by first exposure)</h3>{}",
            over_time(e)
        );
        for sh in &e.shadow {
            shadow_html(&mut s, sh);
        }
    }
    s.push_str("</body></html>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_p_value_is_not_printed_as_zero() {
        assert_eq!(p(0.0), "< 1e-300");
        assert_eq!(p(2.9e-7), "2.9e-7");
        assert_eq!(p(0.0123), "0.0123");
        assert_eq!(p(f64::NAN), "-");
    }

    #[test]
    fn forest_ticks_are_round_and_include_zero() {
        let t = ticks(-0.0244, 0.4218);
        assert!(t.contains(&0.0), "{t:?}");
        assert!(t.len() >= 4 && t.len() <= 10, "{t:?}");
        assert!(t[0] <= -0.0244 && *t.last().unwrap() >= 0.4218);
        let labels: Vec<String> = t.iter().map(|&x| tick_label(x, &t)).collect();
        assert_eq!(labels[..3], ["-10%", "0", "+10%"], "{labels:?}");
        let t = ticks(-0.0013, 0.0011);
        let labels: Vec<String> = t.iter().map(|&x| tick_label(x, &t)).collect();
        assert!(
            labels.contains(&"0".to_string()) && labels.iter().all(|l| l.len() <= 7),
            "{labels:?}"
        );
    }
}
