//! `abgate demo`: two mock model backends, the proxy (in this process) on free
//! loopback ports with the demo config, traffic from synthetic users, and a summary of
//! the observed split next to the configured weights.

use anyhow::{Context, Result};
use std::path::Path;
use std::time::{Duration, Instant};

/// Run the demo.
pub fn run(config: &Path, users: usize, per_user: usize) -> Result<()> {
    // The demo needs no admin mutations, but a server without a token warns about it;
    // set one before any thread starts (so nothing reads the environment concurrently).
    if std::env::var_os("ABGATE_ADMIN_TOKEN").is_none() {
        std::env::set_var("ABGATE_ADMIN_TOKEN", "demo-token");
    }
    let text = std::fs::read_to_string(config).with_context(|| {
        format!(
            "cannot read {} (run the demo from the repository root, or pass --config)",
            config.display()
        )
    })?;
    let cfg = crate::config::parse_str(&text, config).map_err(|e| anyhow::anyhow!("{e}"))?;

    // One mock per upstream: the first fast, the others a little slower.
    let mut mocks = Vec::new();
    let mut doc: toml_edit::DocumentMut = text.parse().context("demo config is not TOML")?;
    for (i, u) in cfg.upstreams.iter().enumerate() {
        let m = crate::mock::MockServer::builder()
            .name(&u.name)
            .latency(Duration::from_millis(2 + 3 * i as u64))
            .header("x-tokens-generated", &format!("{}", 100 + 20 * i))
            // tokens per response vary (about ±50%), as real generations do
            .header_spread(0.5)
            .start()
            .context("cannot start a mock backend")?;
        let mut arr = toml_edit::Array::new();
        arr.push(m.addr.to_string());
        doc["upstream"][&*u.name]["addrs"] = toml_edit::value(arr);
        mocks.push(m);
    }
    let dir = tempdir()?;
    let mut listen = toml_edit::Array::new();
    listen.push("127.0.0.1:0");
    doc["server"]["listen"] = toml_edit::value(listen);
    doc["admin"]["listen"] = toml_edit::value("127.0.0.1:0");
    doc["events"]["dir"] = toml_edit::value(dir.join("events").display().to_string());
    doc["state"]["dir"] = toml_edit::value(dir.join("state").display().to_string());
    let run_cfg = dir.join("demo.toml");
    std::fs::write(&run_cfg, doc.to_string())?;

    eprintln!(
        "abgate demo: started {} mock backends; starting the proxy…",
        mocks.len()
    );
    // The proxy runs in this process, on a runtime of its own (the traffic below is
    // plain blocking HTTP from this thread).
    let run_config = crate::config::load_file(&run_cfg).map_err(|e| anyhow::anyhow!("{e}"))?;
    let listeners = crate::server::Listeners::bind(&run_config)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(run_config.server.threads.max(1))
        .enable_all()
        .build()
        .context("cannot start the proxy's runtime")?;
    let running = rt.block_on(crate::server::start(run_config, run_cfg.clone(), listeners))?;
    let (proxy, admin) = (running.proxy_addrs[0], running.admin_addr);

    let total = users * per_user;
    let pb = indicatif::ProgressBar::new(total as u64);
    pb.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} requests {per_sec} {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build();
    let start = Instant::now();
    let mut failures = 0;
    let platforms = ["ios", "android", "web"];
    for u in 0..users {
        for r in 0..per_user {
            let path = if r % 2 == 0 { "/v1/chat" } else { "/v1/embed" };
            let res = agent
                .post(&format!("http://{proxy}{path}"))
                .set(
                    "cookie",
                    &format!("_ga=GA1.2.{u}; abgate_uid=demo-user-{u}; theme=dark"),
                )
                .set("x-platform", platforms[u % 3])
                .send_string("{\"prompt\":\"hello\"}");
            if res.is_err() {
                failures += 1;
            }
            pb.inc(1);
        }
        if u % 10 == 0 {
            // one conversion outcome for a third of the users
            if u % 3 == 0 {
                let _ = agent
                    .post(&format!("http://{proxy}/_abgate/outcome"))
                    .set("cookie", &format!("abgate_uid=demo-user-{u}"))
                    .send_string("{\"metric\":\"conversion\",\"value\":1}");
            }
        }
    }
    pb.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();

    let exps: serde_json::Value = agent
        .get(&format!("http://{admin}/admin/experiments"))
        .call()
        .context("admin API did not answer")?
        .into_json()?;
    println!(
        "\nabgate demo: {total} requests from {users} users in {secs:.1}s ({:.0} req/s), {failures} failed\n",
        total as f64 / secs
    );
    println!("live split of units per variant (from the admin API):\n");
    println!(
        "{:<18} {:<12} {:>8} {:>9} {:>9} {:>9} {:>9}",
        "experiment", "variant", "weight", "expected", "observed", "p50 ms", "p99 ms"
    );
    for e in exps["experiments"].as_array().into_iter().flatten() {
        let vs = e["variants"].as_array().cloned().unwrap_or_default();
        let wsum: f64 = vs.iter().map(|v| v["weight"].as_f64().unwrap_or(0.0)).sum();
        let nsum: f64 = vs.iter().map(|v| v["units"].as_f64().unwrap_or(0.0)).sum();
        for v in &vs {
            let w = v["weight"].as_f64().unwrap_or(0.0);
            let n = v["units"].as_f64().unwrap_or(0.0);
            let fmt_ms = |x: &serde_json::Value| {
                x.as_f64()
                    .map(|m| format!("{m:.1}"))
                    .unwrap_or_else(|| "-".into())
            };
            println!(
                "{:<18} {:<12} {:>8} {:>8.1}% {:>8.1}% {:>9} {:>9}",
                e["name"].as_str().unwrap_or(""),
                v["name"].as_str().unwrap_or(""),
                w,
                100.0 * w / wsum.max(1e-9),
                100.0 * n / nsum.max(1.0),
                fmt_ms(&v["window"]["p50_ms"]),
                fmt_ms(&v["window"]["p99_ms"]),
            );
        }
        println!(
            "{:<18} traffic {:.0}% of layer `{}`; {:.0} units; state {}\n",
            "",
            100.0 * e["traffic"].as_f64().unwrap_or(0.0),
            e["layer"].as_str().unwrap_or(""),
            nsum,
            e["state"].as_str().unwrap_or("")
        );
    }
    for m in &mocks {
        println!("backend {:<10} received {} requests", m.addr, m.requests());
    }
    // Stop the proxy cleanly (every exposure on disk) and show where the events went.
    rt.block_on(running.stop());
    let (events, _) = crate::events::reader::read_values(&dir.join("events")).unwrap_or_default();
    let exposures = events.iter().filter(|e| e["type"] == "exposure").count();
    let outcomes = events.iter().filter(|e| e["type"] == "outcome").count();
    println!(
        "\nevent log: {exposures} exposures and {outcomes} outcomes in {}",
        dir.join("events").display()
    );
    // The offline analysis of what was just logged.
    if let Ok(report) = crate::analyze::analyze(
        &cfg,
        &[dir.join("events")],
        &Default::default(),
        |_| {},
        |_| {},
    ) {
        println!("\n`abgate analyze` of this event log (units, SRM, verdicts):\n");
        print!("{}", crate::analyze::render::table(&report));
    }
    println!(
        "\nnext: `abgate analyze --config {} --events {} --format html --out report.html`, or `abgate assign --config {} --unit demo-user-1`",
        config.display(),
        dir.join("events").display(),
        config.display()
    );
    Ok(())
}

/// Parse `abgate serve`'s ready line into (proxy address, admin address).
pub fn parse_ready_line(line: &str) -> Option<(String, String)> {
    let proxy = line
        .split("proxy on ")
        .nth(1)?
        .split([';', ','])
        .next()?
        .trim()
        .to_string();
    let admin = line.split("admin on ").nth(1)?.trim().to_string();
    Some((proxy, admin))
}

/// The first TLS listener's address on `abgate serve`'s ready line, if it has one.
pub fn parse_ready_tls(line: &str) -> Option<String> {
    let tls = line.split("tls on ").nth(1)?.split([';', ',']).next()?;
    Some(tls.trim().to_string())
}

fn tempdir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("abgate-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
