//! The bandit section in the table and HTML formats of `abgate analyze` (the JSON format
//! serialises [`BanditReport`] as it is): per arm the period-weighted estimates and
//! P(best), the SRM check by period, and the weight history — in HTML a step chart of
//! the shares served over time, one line per arm.

use super::bandit::BanditReport;
use super::render::{esc, num, p};
use super::verdict::SRM_THRESHOLD;
use super::ExperimentReport;
use std::fmt::Write;

use super::render::COLORS;

fn interval(ci: [f64; 2]) -> String {
    format!("[{}, {}]", num(ci[0], 4), num(ci[1], 4))
}

fn shares(w: Option<&Vec<f64>>) -> String {
    w.map_or_else(
        || "-".into(),
        |w| {
            w.iter()
                .map(|x| format!("{x:.3}"))
                .collect::<Vec<_>>()
                .join(" ")
        },
    )
}

fn srm_line(b: &BanditReport) -> String {
    let s = &b.srm;
    let p_text = match s.p_value {
        Some(x) => format!(
            "p={}{} (chi-square {:.2}, df {}, {} periods)",
            p(x),
            if x < SRM_THRESHOLD { " MISMATCH" } else { "" },
            s.chi_square,
            s.df,
            s.periods_tested
        ),
        None => "skipped".into(),
    };
    match &s.note {
        Some(n) => format!("{p_text}: {n}"),
        None => p_text,
    }
}

/// The table lines of a bandit experiment (instead of the fixed-experiment comparison).
pub(super) fn table(s: &mut String, e: &ExperimentReport, b: &BanditReport, confidence: f64) {
    let _ = writeln!(
        s,
        "  bandit on {} ({}): {} units, {} moved arm (kept in their first arm, outcomes until the move), {} without a period",
        b.reward, b.kind, b.units, b.moved_units, b.units_without_period
    );
    let _ = writeln!(s, "  SRM by period: {}", srm_line(b));
    let _ = writeln!(s, "    rule: {}", b.srm.rule);
    let _ = writeln!(s, "  verdict: {} — {}", e.verdict.to_uppercase(), e.reason);
    let _ = writeln!(
        s,
        "  {:<14} {:<12} {:>8} {:>7} {:>11} {:>24} {:>9}",
        "metric",
        "arm",
        "units",
        "moved",
        "mean",
        format!("{:.0}% CI (period-weighted)", 100.0 * confidence),
        "P(best)"
    );
    for m in 0..b.arms.first().map_or(0, |a| a.metrics.len()) {
        for a in &b.arms {
            let am = &a.metrics[m];
            let pb = if am.metric == b.reward {
                num(a.prob_best, 3)
            } else {
                String::new()
            };
            let _ = writeln!(
                s,
                "  {:<14} {:<12} {:>8} {:>7} {:>11} {:>24} {:>9}",
                am.metric,
                a.variant,
                a.units,
                a.moved_units,
                num(am.mean, 4),
                interval(am.ci),
                pb
            );
        }
    }
    if !b.weight_history {
        let _ = writeln!(
            s,
            "  weight history: missing (no `bandit` records in the logs)"
        );
    }
    let _ = writeln!(
        s,
        "  {:>6} {:<24} {:<8} {:<28} units first seen",
        "period", "start", "explore", "shares served"
    );
    for per in &b.periods {
        let units: Vec<String> = per.units.iter().map(u64::to_string).collect();
        let _ = writeln!(
            s,
            "  {:>6} {:<24} {:<8} {:<28} {}",
            per.period,
            per.start.as_deref().unwrap_or("-"),
            per.explore.map_or("-", |x| if x { "yes" } else { "no" }),
            shares(per.weights.as_ref()),
            units.join(" ")
        );
    }
}

/// The HTML of a bandit experiment (instead of the fixed-experiment comparison).
pub(super) fn html(s: &mut String, e: &ExperimentReport, b: &BanditReport, confidence: f64) {
    let _ = write!(
        s,
        "<h3>Bandit on {} ({})</h3><p>{} units; {} moved arm (kept in their first arm, outcomes until the move); {} without a period.</p>",
        esc(&b.reward),
        b.kind,
        b.units,
        b.moved_units,
        b.units_without_period
    );
    let _ = write!(
        s,
        "<h3>Sample ratio check by period</h3><p>{}.{} Rule: {}.</p>",
        esc(&srm_line(b)),
        if b.srm.p_value.is_some_and(|x| x < SRM_THRESHOLD) {
            " <b class=\"invalid\">mismatch: results are not trustworthy</b>"
        } else {
            ""
        },
        esc(b.srm.rule)
    );
    let _ = write!(
        s,
        "<h3>Arms (period-weighted, {:.0}% CI)</h3><table><tr><th>metric</th><th>arm</th><th>units</th><th>moved</th><th>mean</th><th>CI</th><th>P(best)</th></tr>",
        100.0 * confidence
    );
    for m in 0..b.arms.first().map_or(0, |a| a.metrics.len()) {
        for a in &b.arms {
            let am = &a.metrics[m];
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&am.metric),
                esc(&a.variant),
                a.units,
                a.moved_units,
                num(am.mean, 4),
                interval(am.ci),
                if am.metric == b.reward { num(a.prob_best, 3) } else { String::new() }
            );
        }
    }
    s.push_str("</table><h3>Weights over time (shares served)</h3>");
    s.push_str(&weights_chart(e, b));
    s.push_str("<table><tr><th>period</th><th>start</th><th>explore</th><th>shares served</th><th>units first seen</th></tr>");
    for per in &b.periods {
        let units: Vec<String> = per.units.iter().map(u64::to_string).collect();
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            per.period,
            esc(per.start.as_deref().unwrap_or("-")),
            per.explore.map_or("-", |x| if x { "yes" } else { "no" }),
            shares(per.weights.as_ref()),
            units.join(" ")
        );
    }
    s.push_str("</table>");
}

/// The shares served over time: an SVG step chart, one line per arm, from the periods
/// that have a `bandit` record (a share holds from its period's start to the next one;
/// the last holds for the median period length).
fn weights_chart(e: &ExperimentReport, b: &BanditReport) -> String {
    let mut pts: Vec<(u64, &Vec<f64>)> = b
        .periods
        .iter()
        .filter_map(|p| Some((p.start_unix_ms?, p.weights.as_ref()?)))
        .collect();
    // In time order (a sidecar's own period 0 may have started after the fleet's next).
    pts.sort_by_key(|p| p.0);
    if pts.is_empty() {
        return "<p>No weight history in the logs (no <code>bandit</code> records): no chart.</p>"
            .into();
    }
    let mut lengths: Vec<u64> = pts
        .windows(2)
        .map(|w| w[1].0.saturating_sub(w[0].0))
        .collect();
    lengths.sort_unstable();
    let last = lengths
        .get(lengths.len() / 2)
        .copied()
        .unwrap_or(1000)
        .max(1);
    let (t0, t1) = (pts[0].0, pts[pts.len() - 1].0 + last);
    let (left, w, h, top) = (50.0, 600.0, 180.0, 8.0);
    let x = |t: u64| left + (t.saturating_sub(t0)) as f64 / t1.saturating_sub(t0).max(1) as f64 * w;
    let y = |share: f64| top + (1.0 - share.clamp(0.0, 1.0)) * h;
    let mut s = format!(
        "<svg class=\"bandit-weights\" width=\"{}\" height=\"{}\" xmlns=\"http://www.w3.org/2000/svg\" font-family=\"sans-serif\" font-size=\"12\">",
        left + w + 140.0,
        h + top + 24.0
    );
    for tick in [0.0, 0.5, 1.0] {
        let _ = write!(
            s,
            "<line x1=\"{left}\" x2=\"{0:.1}\" y1=\"{1:.1}\" y2=\"{1:.1}\" stroke=\"#d0d7de\"/><text x=\"{2:.1}\" y=\"{3:.1}\" text-anchor=\"end\" fill=\"#57606a\">{tick}</text>",
            left + w,
            y(tick),
            left - 6.0,
            y(tick) + 4.0
        );
    }
    for (a, name) in e.variants.iter().enumerate() {
        let mut d = String::new();
        for (i, (t, shares)) in pts.iter().enumerate() {
            let v = y(shares.get(a).copied().unwrap_or(0.0));
            if i == 0 {
                let _ = write!(d, "M{:.1},{v:.1}", x(*t));
            } else {
                let _ = write!(d, " H{:.1} V{v:.1}", x(*t));
            }
        }
        let _ = write!(d, " H{:.1}", x(t1));
        let c = COLORS[a % COLORS.len()];
        // earlier arms drawn wider, so arms with equal shares all stay visible
        let width = 2.0 + 1.5 * (e.variants.len() - 1 - a).min(4) as f64;
        let _ = write!(
            s,
            "<path fill=\"none\" stroke=\"{c}\" stroke-width=\"{width}\" d=\"{d}\"/><text x=\"{:.1}\" y=\"{:.1}\" fill=\"{c}\">{}</text>",
            left + w + 8.0,
            top + 10.0 + 16.0 * a as f64,
            esc(name)
        );
    }
    let label = |t: u64| {
        humantime::format_rfc3339_seconds(
            std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(t),
        )
        .to_string()
        .replace('T', " ")
    };
    let _ = write!(
        s,
        "<text x=\"{left}\" y=\"{0:.1}\" fill=\"#57606a\">{1}</text><text x=\"{2:.1}\" y=\"{0:.1}\" text-anchor=\"end\" fill=\"#57606a\">{3}</text></svg>",
        h + top + 20.0,
        label(t0),
        left + w,
        label(t1)
    );
    s
}
