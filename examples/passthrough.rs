//! Run: cargo run --release --example passthrough -- 127.0.0.1:8081 127.0.0.1:9001
//!
//! A bare pingora 0.9 HTTP passthrough with one worker thread: it forwards every request
//! to one backend and does nothing else. It is the floor of any pingora-based proxy and
//! the reference (`pingora_pass`) of the load benchmark in `benches/proxy-load.sh`.
//! Built with the default features it uses mimalloc, like abgate; with
//! `--no-default-features` both use the system allocator. With `PASS_H2C=1` it also
//! accepts HTTP/2 with prior knowledge (h2c) on its listener, as abgate does: the
//! reference of the benchmark's h2c rows.

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::proxy::{http_proxy_service, ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use pingora::upstreams::peer::HttpPeer;
use std::net::SocketAddr;
use std::sync::Arc;

#[cfg(all(feature = "mimalloc", not(feature = "jemalloc")))]
#[global_allocator]
static GLOBAL: abgate_alloc::MiMalloc = abgate_alloc::MiMalloc;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

struct Pass {
    backend: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Pass {
    type CTX = ();
    fn new_ctx(&self) {}
    async fn upstream_peer(&self, _s: &mut Session, _c: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.backend, false, String::new())))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let listen = args
        .first()
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:8081".into());
    let backend: SocketAddr = args
        .get(1)
        .map(|s| s.as_str())
        .unwrap_or("127.0.0.1:9001")
        .parse()
        .expect("backend must be ip:port");
    let conf = ServerConf {
        threads: 1,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(0),
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    let conf: Arc<ServerConf> = server.configuration.clone();
    let mut svc = http_proxy_service(&conf, Pass { backend });
    if std::env::var("PASS_H2C").is_ok_and(|v| v == "1") {
        if let Some(logic) = svc.app_logic_mut() {
            let mut options = pingora::apps::HttpServerOptions::default();
            options.h2c = true;
            logic.server_options = Some(options);
        }
    }
    svc.add_tcp(&listen);
    server.add_service(svc);
    println!("passthrough on {listen} -> {backend}");
    server.run_forever();
}
