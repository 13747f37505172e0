//! Command-line interface: argument definitions and the command handlers. `anyhow`
//! lives here only; library modules return their own error types.

use crate::assign::{self, hash, RequestView, UnitIds};
use crate::config;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

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
    MockModel {
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:9001")]
        listen: String,
        /// Name echoed in responses.
        #[arg(long, default_value = "mock")]
        name: String,
        /// Added latency, e.g. 20ms.
        #[arg(long, default_value = "0ms")]
        latency: String,
        /// Share of requests answered 500.
        #[arg(long, default_value_t = 0.0)]
        error_rate: f64,
        /// Extra response header `name=value`; repeatable.
        #[arg(long = "header", value_name = "K=V")]
        headers: Vec<String>,
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
    init_logs(&cli.log);
    match cli.command {
        Command::Serve { config } => match crate::proxy::serve::serve(&config) {
            Ok(()) => 0,
            Err(crate::proxy::serve::ServeError::Invalid(m)) => {
                eprintln!("abgate serve: {m}");
                1
            }
            Err(crate::proxy::serve::ServeError::Runtime(m)) => {
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
        } => {
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
                listen,
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
    let holdout = assign::assign(&cfg, &ids, &view, &mut out);
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
                        match layer.experiments.iter().find(|e| e.start <= b && b < e.end) {
                            Some(e) => {
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
