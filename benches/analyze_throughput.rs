//! Run: cargo bench --bench analyze_throughput [-- LINES]
//!
//! Writes a synthetic event log (default 2,000,000 lines: exposures and outcomes of
//! 200,000 units in 2 experiments) to `target/bench-events/`, then times
//! `abgate::analyze::analyze` on it single-threaded and prints lines per second and the
//! peak RSS. `benches/analyze_pandas.py` does the same analysis with pandas + scipy on the
//! same file for comparison.

use std::fmt::Write as _;

// The same allocator as the `abgate` binary.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: abgate_alloc::MiMalloc = abgate_alloc::MiMalloc;
use std::io::Write as _;
use std::time::Instant;

const CONFIG: &str = r#"[upstream.a]
addrs = ["127.0.0.1:1"]
[routing]
default_upstream = "a"
[[metric]]
name = "conversion"
kind = "binomial"
[[metric]]
name = "revenue"
kind = "continuous"
[[layer]]
name = "model"
  [[layer.experiment]]
  name = "ranker_v2"
  traffic = 1.0
  primary_metric = "conversion"
  metrics = ["revenue"]
    [[layer.experiment.variant]]
    name = "control"
    weight = 1
    [[layer.experiment.variant]]
    name = "treatment"
    weight = 1
[[layer]]
name = "prompt"
  [[layer.experiment]]
  name = "system_prompt"
  traffic = 1.0
  primary_metric = "conversion"
    [[layer.experiment.variant]]
    name = "control"
    weight = 1
    [[layer.experiment.variant]]
    name = "concise"
    weight = 1
"#;

fn main() {
    let lines: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-events");
    std::fs::create_dir_all(&dir).unwrap();
    let cfg_path = dir.join("abgate.toml");
    std::fs::write(&cfg_path, CONFIG).unwrap();
    let log = dir.join(format!("bench-{lines}.jsonl"));
    if !log.exists() {
        eprintln!("writing {lines} synthetic lines to {}", log.display());
        let mut f = std::io::BufWriter::new(std::fs::File::create(&log).unwrap());
        let mut x: u64 = 12345;
        let mut rnd = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 11) as f64 / (1u64 << 53) as f64
        };
        let units = lines / 10;
        let mut s = String::with_capacity(1024);
        let mut written = 0;
        while written < lines {
            let u = written / 10 % units.max(1);
            let v1 = if u.is_multiple_of(2) {
                "control"
            } else {
                "treatment"
            };
            let v2 = if (u / 2).is_multiple_of(2) {
                "control"
            } else {
                "concise"
            };
            s.clear();
            // one hour of traffic, every line a later microsecond (as abgate writes them)
            let micros = written as u64 * 3_600_000_000 / lines as u64;
            let ts = format!(
                "2026-11-23T02:{:02}:{:02}.{:06}Z",
                micros / 60_000_000,
                micros / 1_000_000 % 60,
                micros % 1_000_000
            );
            if rnd() < 0.9 {
                let _ = writeln!(
                    s,
                    r#"{{"type":"exposure","ts":"{ts}","request_id":"01M834KJ36J9JTBGECVT6VKNS6","unit":"user","unit_id":"user-{u}","assignments":[{{"layer":"model","experiment":"ranker_v2","variant":"{v1}","served":"{v1}"}},{{"layer":"prompt","experiment":"system_prompt","variant":"{v2}","served":"{v2}"}}],"holdout":false,"upstream":"model_a","status":200,"latency_ms":{:.3},"error":null,"config_version":"0e269387a367"}}"#,
                    10.0 + 5.0 * rnd()
                );
            } else {
                let metric = if rnd() < 0.5 { "conversion" } else { "revenue" };
                let _ = writeln!(
                    s,
                    r#"{{"type":"outcome","ts":"{ts}","unit_id":"user-{u}","metric":"{metric}","value":{:.2},"source":"api"}}"#,
                    if metric == "conversion" {
                        1.0
                    } else {
                        20.0 * rnd()
                    }
                );
            }
            f.write_all(s.as_bytes()).unwrap();
            written += 1;
        }
        f.flush().unwrap();
    }
    let cfg = abgate::config::load_file(&cfg_path).unwrap();
    let start = Instant::now();
    let report = abgate::analyze::analyze(
        &cfg,
        std::slice::from_ref(&log),
        &Default::default(),
        |_| {},
        |w| eprintln!("{w}"),
    )
    .unwrap();
    let secs = start.elapsed().as_secs_f64();
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string())
        })
        .unwrap_or_default();
    println!(
        "analyze: {} lines in {secs:.2}s = {:.0} lines/s single-threaded; peak RSS {rss} kB; {} experiments, verdicts {:?}",
        report.read.lines,
        report.read.lines as f64 / secs,
        report.experiments.len(),
        report.experiments.iter().map(|e| e.verdict).collect::<Vec<_>>()
    );
    println!("file: {}", log.display());
}
