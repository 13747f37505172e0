//! Run: cargo run --example mock_model -- 127.0.0.1:9001 model_a 5 0.0
//!
//! A mock model server (arguments: listen address, name, latency in ms, error rate).
//! It answers every request with JSON echoing what it received, including
//! `x-abgate-assignments`; the same server backs the integration tests and `abgate demo`.

use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = abgate::mock::MockOptions {
        listen: args
            .first()
            .cloned()
            .unwrap_or_else(|| "127.0.0.1:9001".into()),
        name: args.get(1).cloned().unwrap_or_else(|| "mock".into()),
        latency: Duration::from_millis(args.get(2).and_then(|s| s.parse().ok()).unwrap_or(0)),
        error_rate: args.get(3).and_then(|s| s.parse().ok()).unwrap_or(0.0),
        headers: vec![("x-tokens-generated".into(), "128".into())],
        ..Default::default()
    };
    match abgate::mock::MockServer::start(opts) {
        Ok(m) => {
            println!("mock model server on {}", m.addr);
            loop {
                std::thread::park();
            }
        }
        Err(e) => {
            eprintln!("mock_model: {e}");
            std::process::exit(2);
        }
    }
}
