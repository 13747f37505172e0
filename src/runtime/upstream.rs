//! Upstream pools: round-robin over `addrs` with TCP health checks (pingora's load
//! balancer), one pool per `[upstream.NAME]` of a config generation.

use crate::config::UpstreamSpec;
use pingora::lb::{health_check::TcpHealthCheck, selection::RoundRobin, LoadBalancer};
use pingora::services::background::BackgroundService;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;

/// A pool of one config generation.
pub struct Pool {
    /// The spec it was built from.
    pub spec: UpstreamSpec,
    lb: Arc<LoadBalancer<RoundRobin>>,
}

impl Pool {
    /// Build a pool; health checks start with [`Pool::spawn_health_checks`].
    pub fn new(spec: &UpstreamSpec) -> std::io::Result<Pool> {
        let mut lb =
            LoadBalancer::<RoundRobin>::try_from_iter(spec.addrs.iter().map(|a| a.to_string()))?;
        let mut hc = TcpHealthCheck::new();
        hc.peer_template.options.connection_timeout = Some(spec.connect_timeout);
        lb.set_health_check(hc);
        lb.health_check_frequency = Some(spec.health_check_interval);
        Ok(Pool {
            spec: spec.clone(),
            lb: Arc::new(lb),
        })
    }

    /// Run health checks until `stop` turns true (the generation is replaced or the
    /// process stops). Needs a tokio runtime.
    pub fn spawn_health_checks(&self, stop: watch::Receiver<bool>) {
        let lb = self.lb.clone();
        tokio::spawn(async move { lb.start(stop).await });
    }

    /// A peer for the next request (provisional: the upstream-pools work replaces it).
    pub fn peer(&self) -> Box<pingora::upstreams::peer::HttpPeer> {
        use crate::config::Protocol;
        let sni = self.spec.sni.clone().unwrap_or_else(|| {
            self.spec
                .hosts
                .first()
                .and_then(|h| {
                    h.rsplit_once(':')
                        .map(|(h, _)| h.trim_matches(['[', ']']).to_string())
                })
                .unwrap_or_default()
        });
        let mut peer = pingora::upstreams::peer::HttpPeer::new(self.select(), self.spec.tls, sni);
        match self.spec.protocol {
            Protocol::Http1 => peer.options.set_http_version(1, 1),
            Protocol::H2c | Protocol::H2 => peer.options.set_http_version(2, 2),
        }
        peer.options.verify_cert = self.spec.verify;
        peer.options.verify_hostname = self.spec.verify;
        peer.options.connection_timeout = Some(self.spec.connect_timeout);
        peer.options.read_timeout = Some(self.spec.per_read_timeout());
        Box::new(peer)
    }

    /// The next address, round-robin over healthy ones; if none is healthy, the first
    /// address anyway (fail open: the request then fails and is counted, rather than
    /// being refused without a try).
    ///
    /// Hot path: called once per request (and per retry).
    #[inline]
    pub fn select(&self) -> SocketAddr {
        // One address: it is tried whatever its health (fail open), so there is nothing
        // to select.
        if let [only] = self.spec.addrs[..] {
            return only;
        }
        match self.lb.select(b"", 256) {
            Some(b) => match b.addr.as_inet() {
                Some(a) => *a,
                None => self.spec.addrs[0],
            },
            None => self.spec.addrs[0],
        }
    }
}
