//! The README's demo, run as a newcomer runs it (smaller): it exits 0, reports both
//! experiments, and its synthetic outcomes are noisy like real ones, so the report
//! teaches how to read a real one: the `tokens` lift has an interval of real width (a
//! constant per variant once gave `[+20%, +20%]`, p = 0).

use std::process::Command;

#[test]
fn the_demo_runs_and_its_tokens_outcome_has_a_real_interval() {
    let out = Command::new(env!("CARGO_BIN_EXE_abgate"))
        .args(["demo", "--users", "300", "--requests-per-user", "3"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let err = String::from_utf8_lossy(&out.stderr);
    // The demo keeps its event log for the `next:` hint; this test removes it.
    if let Some(dir) = text
        .split_whitespace()
        .find(|w| w.contains("abgate-demo-") && w.ends_with("/events"))
    {
        let _ = std::fs::remove_dir_all(std::path::Path::new(dir).parent().unwrap());
    }
    assert!(out.status.success(), "{text}\n{err}");
    assert!(text.contains("experiment ranker_v2"), "{text}");
    assert!(text.contains("experiment system_prompt"), "{text}");
    assert!(text.contains("900 exposures"), "{text}");
    let row = text
        .lines()
        .find(|l| l.trim_start_matches(['*', ' ']).starts_with("tokens"))
        .unwrap_or_else(|| panic!("no tokens row: {text}"));
    // `… +13.88%    [+0.13%, +27.64%]    0.0387 …`
    let ci = &row[row.find('[').unwrap() + 1..row.find(']').unwrap()];
    let bounds: Vec<f64> = ci
        .split(',')
        .map(|b| b.trim().trim_end_matches('%').parse().unwrap())
        .collect();
    let width = bounds[1] - bounds[0];
    assert!(
        (5.0..100.0).contains(&width),
        "a noisy outcome of 300 units gives an interval tens of points wide, not {width}: {row}"
    );
}
