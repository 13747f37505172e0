//! Command-line interface: argument definitions and the command handlers. `anyhow`
//! lives here only; library modules return their own error types.

use crate::assign::{self, hash, RequestView, UnitIds};
use crate::config;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

mod analyze;

/// abgate — a reverse-proxy sidecar for online experiments on ML model endpoints.
///
/// It identifies each request's unit, assigns it to variants across orthogonal layers
/// (xxHash3), routes it to the variant's model backend, logs exposures and outcomes,
/// exports Prometheus metrics and rolls a regressing variant back to control.
///
/// Start with `abgate demo`, then read configs/demo.toml.
#[derive(Debug, Parser)]
#[command(name = "abgate", version, propagate_version = true)]
pub struct Cli {
    /// Log filter (also RUST_LOG), e.g. `info`, `abgate=debug`.
    #[arg(long, global = true, default_value = "info")]
    pub log: String,
    #[command(subcommand)]
    /// What to do.
    pub command: Command,
}

/// Output formats of `analyze`.
#[derive(Debug, Clone, Copy, clap::ValueEnum, PartialEq, Eq)]
pub enum Format {
    /// Aligned text for a terminal.
    Table,
    /// One JSON object (its fields are a contract: docs/analysis.md).
    Json,
    /// One self-contained HTML file.
    Html,
}

/// The engines `analyze --emit-sql` writes SQL for.
#[derive(Debug, Clone, Copy, clap::ValueEnum, PartialEq, Eq)]
pub enum SqlEngine {
    /// DuckDB.
    Duckdb,
    /// Spark SQL (3.2 or later).
    Spark,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy and the admin API until SIGTERM/SIGINT.
    ///
    /// Reloads the config when the file changes, on SIGHUP, and on POST /admin/reload;
    /// an invalid config is rejected and the old one keeps serving. Prints one line with
    /// the bound addresses once ready (port 0 in the config picks a free port).
    Serve {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a config file; prints every error with file, line and key path.
    ///
    /// Exit 0 when valid, 1 otherwise.
    Check {
        /// The TOML config file.
        file: PathBuf,
    },
    /// Print a unit's assignment in every layer, exactly as the proxy would make it.
    ///
    /// Example: abgate assign --config configs/demo.toml --unit u-123 --header x-platform=ios --path /v1/chat
    Assign {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
        /// The unit id (the value of the identity header or cookie).
        #[arg(long)]
        unit: String,
        /// A request header `name=value` (targeting, header units); repeatable.
        #[arg(long = "header", value_name = "K=V")]
        headers: Vec<String>,
        /// Request path (targeting).
        #[arg(long, default_value = "/")]
        path: String,
        /// Request method (targeting).
        #[arg(long, default_value = "GET")]
        method: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Analyze event logs: per experiment, each treatment against control on every metric.
    ///
    /// Reads a file, a directory of rotated files (in time order) or several; aggregates
    /// per unit (outcomes count only after the unit's first exposure), then compares:
    /// lift with CI, p-values (Welch / pooled z), Holm and BH adjustments, always-valid
    /// p-value and confidence sequence, Bayesian probability to beat control and expected
    /// loss, CUPED with --covariates, and an SRM check. Ends with a verdict per experiment.
    ///
    /// Logs too large for one machine: --emit-sql prints a query that makes DuckDB or
    /// Spark compute the per-variant sufficient statistics; save its result as CSV and
    /// read it with --summary for the same report (docs/analysis.md, "Scale-out analysis").
    ///
    /// Example: abgate analyze --config configs/demo.toml --events data/events --format html --out report.html
    ///
    /// Scale-out example, the query: abgate analyze --config configs/demo.toml --events 'logs/*.jsonl' --covariates cov.csv --emit-sql duckdb > stats.sql
    ///
    /// … run by the engine: duckdb -c "COPY ($(cat stats.sql)) TO 'stats.csv' (HEADER)"
    ///
    /// … and its result: abgate analyze --config configs/demo.toml --summary stats.csv --format json
    Analyze {
        /// The config the events were produced with.
        #[arg(long, short)]
        config: PathBuf,
        /// Event files or directories; repeatable. With --emit-sql also globs and URLs
        /// the engine reads (`s3://bucket/events/*.jsonl`), or Parquet files.
        #[arg(long, num_args = 1.., required_unless_present = "summary")]
        events: Vec<PathBuf>,
        /// Pre-experiment covariate per unit, CSV `unit_id,value` (enables CUPED). With
        /// --emit-sql, the path the engine reads.
        #[arg(long)]
        covariates: Option<PathBuf>,
        /// Print the SQL query (DuckDB or Spark SQL) that computes the sufficient
        /// statistics of the events, instead of analyzing them here.
        /// Example: --emit-sql duckdb
        #[arg(long, value_enum, value_name = "ENGINE", conflicts_with = "summary")]
        emit_sql: Option<SqlEngine>,
        /// Report from the result of the --emit-sql query saved as CSV with a header,
        /// instead of from events. Example: --summary stats.csv
        #[arg(long, value_name = "CSV", conflicts_with_all = ["events", "covariates"])]
        summary: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Write to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Confidence level of intervals (α = 1 − confidence).
        #[arg(long, default_value_t = 0.95)]
        confidence: f64,
        /// mSPRT tuning parameter of the always-valid p-value.
        #[arg(long, default_value_t = crate::stats::MSPRT_TUNING)]
        tuning: f64,
    },
    /// Sample size per variant and duration for a two-sided test.
    ///
    /// Binomial: --baseline is the control rate (e.g. 0.10). Continuous: add --sd; then
    /// --baseline is the control mean. --mde is relative (0.05 = +5%).
    ///
    /// Example: abgate power --baseline 0.10 --mde 0.05 --daily 20000
    Power {
        /// Control conversion rate (binomial) or mean (with --sd).
        #[arg(long)]
        baseline: f64,
        /// Minimum detectable effect, relative to the baseline.
        #[arg(long)]
        mde: f64,
        /// Standard deviation per unit (continuous metric).
        #[arg(long)]
        sd: Option<f64>,
        /// Significance level (two-sided).
        #[arg(long, default_value_t = 0.05)]
        alpha: f64,
        /// Power.
        #[arg(long, default_value_t = 0.8)]
        power: f64,
        /// Treatment units per control unit.
        #[arg(long, default_value_t = 1.0)]
        ratio: f64,
        /// Units entering the experiment per day (all variants together).
        #[arg(long)]
        daily: Option<f64>,
    },
    /// Start two mock model backends and the proxy on free loopback ports, send traffic
    /// from synthetic users, and print the observed split next to the configured weights.
    Demo {
        /// The config to demo (upstream addresses are replaced by the mock backends).
        #[arg(long, default_value = "configs/demo.toml")]
        config: PathBuf,
        /// Synthetic users.
        #[arg(long, default_value_t = 2000)]
        users: usize,
        /// Requests per user.
        #[arg(long, default_value_t = 3)]
        requests_per_user: usize,
    },
    /// Run a mock model server (for trying abgate by hand).
    ///
    /// It answers any path with JSON echoing the request, over HTTP/1.1 and h2c on one
    /// port. Query parameters pick a behaviour per request: `status=CODE`,
    /// `stall_ms=N` (delay the header), `stream=N&interval_ms=M` (N server-sent events,
    /// one every M ms) and `fail_after=K` (abort that stream after K events). A
    /// WebSocket upgrade gets an echo server.
    MockModel {
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:9001")]
        listen: String,
        /// Name echoed in responses (`x-backend` metadata with --grpc).
        #[arg(long, default_value = "mock")]
        name: String,
        /// Added latency, e.g. 20ms (HTTP only).
        #[arg(long, default_value = "0ms", conflicts_with = "grpc")]
        latency: String,
        /// Share of requests answered 500 (HTTP only).
        #[arg(long, default_value_t = 0.0, conflicts_with = "grpc")]
        error_rate: f64,
        /// Extra response header `name=value`; repeatable (HTTP only).
        #[arg(long = "header", value_name = "K=V", conflicts_with = "grpc")]
        headers: Vec<String>,
        /// Serve gRPC instead: the standard health service (`grpc.health.v1.Health`,
        /// Check and Watch) over h2c, or TLS with --tls-cert.
        #[arg(long)]
        grpc: bool,
        /// Serve TLS with this PEM certificate chain (needs --tls-key); HTTP offers ALPN
        /// h2 and http/1.1.
        #[arg(long, value_name = "PEM", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The PEM private key of --tls-cert.
        #[arg(long, value_name = "PEM", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
}

fn init_logs(filter: &str) {
    let env = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(env)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// Run a parsed command; returns the exit code.
pub fn run(cli: Cli) -> i32 {
    // The demo runs the proxy in process: its info lines would bury the demo's output.
    let quiet_demo = matches!(cli.command, Command::Demo { .. }) && cli.log == "info";
    init_logs(if quiet_demo { "warn" } else { &cli.log });
    match cli.command {
        Command::Serve { config } => match crate::server::serve(&config) {
            Ok(()) => 0,
            Err(crate::server::ServeError::Invalid(m)) => {
                eprintln!("abgate serve: {m}");
                1
            }
            Err(crate::server::ServeError::Runtime(m)) => {
                eprintln!("abgate serve: {m}");
                2
            }
        },
        Command::Check { file } => match config::load_file(&file) {
            Ok(cfg) => {
                let exps: usize = cfg.layers.iter().map(|l| l.experiments.len()).sum();
                println!(
                    "{}: ok (version {}; {} layers, {} experiments, {} upstreams, {} metrics)",
                    file.display(),
                    cfg.version,
                    cfg.layers.len(),
                    exps,
                    cfg.upstreams.len(),
                    cfg.metrics.len()
                );
                0
            }
            Err(e) => {
                eprint!("{e}");
                1
            }
        },
        Command::Assign {
            config,
            unit,
            headers,
            path,
            method,
            json,
        } => match assign_cmd(&config, &unit, &headers, &path, &method, json) {
            Ok(s) => {
                print!("{s}");
                0
            }
            Err(e) => {
                eprintln!("abgate assign: {e:#}");
                1
            }
        },
        Command::Analyze {
            config,
            events,
            covariates,
            emit_sql,
            summary,
            format,
            out,
            confidence,
            tuning,
        } => {
            let args = analyze::Args {
                config,
                events,
                covariates,
                emit_sql,
                summary,
                format,
                out,
                confidence,
                tuning,
            };
            match analyze::run(&args) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("abgate analyze: {e:#}");
                    1
                }
            }
        }
        Command::Power {
            baseline,
            mde,
            sd,
            alpha,
            power,
            ratio,
            daily,
        } => match power_cmd(baseline, mde, sd, alpha, power, ratio, daily) {
            Ok(s) => {
                print!("{s}");
                0
            }
            Err(e) => {
                eprintln!("abgate power: {e}");
                1
            }
        },
        Command::Demo {
            config,
            users,
            requests_per_user,
        } => match crate::demo::run(&config, users, requests_per_user) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("abgate demo: {e:#}");
                2
            }
        },
        Command::MockModel {
            listen,
            name,
            latency,
            error_rate,
            headers,
            grpc,
            tls_cert,
            tls_key,
        } => {
            let tls = match (tls_cert, tls_key) {
                (Some(cert), Some(key)) => Some(crate::mock::TlsFiles { cert, key }),
                _ => None,
            };
            if grpc {
                let opts = crate::mock::grpc::MockGrpcOptions { name, listen, tls };
                return match crate::mock::MockGrpcServer::start(opts) {
                    Ok(m) => {
                        println!("mock gRPC server on {}", m.addr);
                        loop {
                            std::thread::park();
                        }
                    }
                    Err(e) => {
                        eprintln!("abgate mock-model: {e}");
                        2
                    }
                };
            }
            let latency = match config::parse_duration(&latency) {
                Ok(d) => d,
                Err(m) => {
                    eprintln!("abgate mock-model: --latency: {m}");
                    return 1;
                }
            };
            let mut hs = Vec::new();
            for h in headers {
                match h.split_once('=') {
                    Some((k, v)) => hs.push((k.to_string(), v.to_string())),
                    None => {
                        eprintln!("abgate mock-model: --header `{h}` must be name=value");
                        return 1;
                    }
                }
            }
            let opts = crate::mock::MockOptions {
                name,
                latency,
                error_rate,
                headers: hs,
                header_spread: 0.0,
                listen,
                tls,
                label_flip: None,
            };
            match crate::mock::MockServer::start(opts) {
                Ok(m) => {
                    println!("mock model server on {}", m.addr);
                    loop {
                        std::thread::park();
                    }
                }
                Err(e) => {
                    eprintln!("abgate mock-model: {e}");
                    2
                }
            }
        }
    }
}

fn assign_cmd(
    path: &std::path::Path,
    unit: &str,
    headers: &[String],
    req_path: &str,
    method: &str,
    json: bool,
) -> anyhow::Result<String> {
    use anyhow::Context;
    let cfg = config::load_file(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut hm = http::HeaderMap::new();
    for h in headers {
        let (k, v) = h
            .split_once('=')
            .with_context(|| format!("--header `{h}` must be name=value"))?;
        hm.append(
            http::HeaderName::from_bytes(k.trim().as_bytes())
                .with_context(|| format!("`{k}` is not a header name"))?,
            http::HeaderValue::from_str(v.trim())
                .with_context(|| format!("`{v}` is not a header value"))?,
        );
    }
    let (p, q) = match req_path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (req_path, None),
    };
    let method = method.to_ascii_uppercase();
    let view = RequestView {
        method: &method,
        path: p,
        query: q,
        headers: &hm,
    };
    // session/request units: the given unit id stands for them too, so QA can look them up.
    let ids = UnitIds {
        user: Some(unit),
        session: Some(unit),
        request: Some(unit),
    };
    let mut out = assign::Assignments::new();
    // Bandit tables and ramp steps as the state directory holds them, as served.
    let saved = crate::guard::saved::Saved::read(&cfg);
    let holdout = assign::assign_with(&cfg, &saved, &ids, &view, &mut out);
    let mut rows = Vec::new();
    for (li, layer) in cfg.layers.iter().enumerate() {
        let unit_id = layer
            .experiments
            .first()
            .and_then(|e| ids.get(&e.unit, &view));
        let bucket = unit_id.map(|u| hash::bucket(layer.seed, u.as_bytes()));
        let a = out.iter().find(|a| a.layer as usize == li);
        let (experiment, variant, note) = match a {
            Some(a) => {
                let e = &layer.experiments[a.experiment as usize];
                (
                    Some(e.name.to_string()),
                    Some(e.variants[a.variant as usize].name.to_string()),
                    String::new(),
                )
            }
            None if holdout => (None, None, "held out (global holdout)".to_string()),
            None => {
                let why = match (bucket, unit_id) {
                    (_, None) => "no unit id for this layer's unit".to_string(),
                    (Some(b), _) => {
                        let found = layer
                            .experiments
                            .iter()
                            .enumerate()
                            .find(|(_, e)| e.start <= b && b < e.end);
                        match found {
                            Some((ei, e)) if !assign::LiveState::serves(&saved, li, ei, b) => {
                                format!(
                                    "in `{}`'s range but outside the part its ramp serves now",
                                    e.name
                                )
                            }
                            Some((_, e)) => {
                                format!("in `{}`'s range but targeting does not match", e.name)
                            }
                            None => "bucket outside every experiment".to_string(),
                        }
                    }
                    _ => String::new(),
                };
                (None, None, why)
            }
        };
        rows.push((layer.name.to_string(), bucket, experiment, variant, note));
    }
    if json {
        let v = serde_json::json!({
            "unit": unit,
            "holdout": holdout,
            "layers": rows.iter().map(|(l, b, e, v, n)| serde_json::json!({
                "layer": l, "bucket": b, "experiment": e, "variant": v, "note": if n.is_empty() { None } else { Some(n) }
            })).collect::<Vec<_>>(),
        });
        return Ok(format!("{v}\n"));
    }
    let mut s = format!(
        "unit {unit}{}\n",
        if holdout {
            " (in the global holdout: defaults everywhere)"
        } else {
            ""
        }
    );
    for (l, b, e, v, n) in rows {
        let b = b.map(|b| b.to_string()).unwrap_or_else(|| "-".into());
        match (e, v) {
            (Some(e), Some(v)) => {
                s.push_str(&format!("  layer {l:<16} bucket {b:>5}  {e} = {v}\n"))
            }
            _ => s.push_str(&format!("  layer {l:<16} bucket {b:>5}  (none: {n})\n")),
        }
    }
    Ok(s)
}

fn power_cmd(
    baseline: f64,
    mde: f64,
    sd: Option<f64>,
    alpha: f64,
    power: f64,
    ratio: f64,
    daily: Option<f64>,
) -> Result<String, String> {
    if !in_unit_interval(alpha) || !in_unit_interval(power) {
        return Err("--alpha and --power must be between 0 and 1".into());
    }
    if !(ratio > 0.0) || !mde.is_finite() || mde == 0.0 {
        return Err("--ratio must be positive and --mde non-zero (e.g. 0.05 for +5%)".into());
    }
    let (vc, vt, delta, kind) = match sd {
        Some(sd) if sd > 0.0 => (sd * sd, sd * sd, baseline * mde, "continuous"),
        Some(_) => return Err("--sd must be positive".into()),
        None => {
            let p2 = baseline * (1.0 + mde);
            if !in_unit_interval(baseline) || !in_unit_interval(p2) {
                return Err(format!("--baseline {baseline} with --mde {mde} gives a rate outside (0, 1); for a continuous metric pass --sd"));
            }
            (
                baseline * (1.0 - baseline),
                p2 * (1.0 - p2),
                p2 - baseline,
                "binomial",
            )
        }
    };
    let r = crate::stats::sample_size(vc, vt, delta, alpha, power, ratio);
    let (nc, nt) = (r.n_control.ceil(), r.n_treatment.ceil());
    let mut s = format!(
        "{kind} metric, baseline {baseline}, MDE {:+.2}% (absolute {delta:.6}), alpha {alpha} two-sided, power {power}, ratio {ratio}\n\
         units per variant: control {nc:.0}, treatment {nt:.0} (total {:.0})\n",
        100.0 * mde,
        nc + nt
    );
    if let Some(d) = daily {
        if d > 0.0 {
            s.push_str(&format!(
                "duration at {d} units/day: {:.1} days\n",
                (nc + nt) / d
            ));
        }
    }
    Ok(s)
}

/// Strictly between 0 and 1 (false for NaN).
fn in_unit_interval(x: f64) -> bool {
    x > 0.0 && x < 1.0
}
