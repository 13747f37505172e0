//! Health checks of a pool's addresses: HTTP (`health_check = { path, interval, expect,
//! failures }`, over the upstream's own protocol and TLS settings) or, without one, a TCP
//! connect every `health_check_interval`. pingora's load balancer runs them and keeps
//! each address's health in its registry; the checks here decide what a pass is and name
//! the address in log lines by the `addrs` entry it came from.

use super::{Addrs, HostEntry};
use crate::config::{HttpHealthCheck as HttpCheckSpec, UpstreamSpec};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::lb::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use pingora::lb::selection::RoundRobin;
use pingora::lb::{Backend, LoadBalancer};
use pingora::upstreams::peer::HttpPeer;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Give `lb` the upstream's health check (HTTP with `health_check`, else a TCP
/// connect); returns its period.
pub(super) fn install(
    lb: &mut LoadBalancer<RoundRobin>,
    spec: &UpstreamSpec,
    template: &HttpPeer,
    hosts: Arc<[HostEntry]>,
    addrs: Arc<ArcSwap<Addrs>>,
) -> io::Result<Duration> {
    let label = Label {
        name: spec.name.clone(),
        hosts,
        addrs,
    };
    Ok(match &spec.health_check {
        Some(hc) => {
            lb.set_health_check(Box::new(HttpCheck::new(spec, hc, template, label)?));
            hc.interval
        }
        None => {
            let mut tcp = TcpHealthCheck::new();
            tcp.peer_template.options.connection_timeout = Some(spec.connect_timeout);
            lb.set_health_check(Box::new(TcpCheck { inner: tcp, label }));
            spec.health_check_interval
        }
    })
}

/// Check every address of `lb` every `every` until `stop` turns true or its sender is
/// dropped.
pub(super) fn spawn(
    lb: Arc<LoadBalancer<RoundRobin>>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        loop {
            let started = tokio::time::Instant::now();
            // Checks in parallel: a backend that hangs until the check's timeout
            // does not delay the others'.
            tokio::select! {
                _ = lb.backends().run_health_check(true) => {}
                _ = stop.changed() => return,
            }
            tokio::select! {
                _ = tokio::time::sleep_until(started + every) => {}
                _ = stop.changed() => return,
            }
        }
    });
}

/// How a health-check log line names an address.
struct Label {
    name: Arc<str>,
    hosts: Arc<[HostEntry]>,
    addrs: Arc<ArcSwap<Addrs>>,
}

impl Label {
    fn host_of(&self, target: &Backend) -> usize {
        target
            .addr
            .as_inet()
            .map_or(0, |a| self.addrs.load().host_of(*a))
    }

    fn summary(&self, target: &Backend) -> String {
        format!(
            "upstream `{}` address {} (`{}`)",
            self.name,
            target.addr,
            self.hosts[self.host_of(target)].written
        )
    }
}

/// Without an HTTP check: a TCP connect (as before), with a readable log line.
struct TcpCheck {
    inner: Box<TcpHealthCheck>,
    label: Label,
}

#[async_trait]
impl HealthCheck for TcpCheck {
    async fn check(&self, target: &Backend) -> pingora::Result<()> {
        self.inner.check(target).await
    }

    fn backend_summary(&self, target: &Backend) -> String {
        self.label.summary(target)
    }

    fn health_threshold(&self, success: bool) -> usize {
        self.inner.health_threshold(success)
    }
}

/// The HTTP check: pingora's [`HttpHealthCheck`], one per `addrs` entry, because its
/// request (the `Host`) and peer template (the SNI) are fixed per instance and both
/// depend on the entry an address came from. Each check connects afresh
/// (`reuse_connection = false`), so it also proves the backend accepts connections.
struct HttpCheck {
    /// By entry index.
    checks: Vec<HttpHealthCheck>,
    failures: usize,
    label: Label,
}

impl HttpCheck {
    fn new(
        spec: &UpstreamSpec,
        hc: &HttpCheckSpec,
        template: &HttpPeer,
        label: Label,
    ) -> io::Result<HttpCheck> {
        // A backend that hangs fails within a period (at least 1 s) rather than after
        // the whole `read_timeout`.
        let timeout = spec
            .read_timeout
            .min(hc.interval.max(Duration::from_secs(1)));
        let mut checks = Vec::with_capacity(label.hosts.len());
        for h in label.hosts.iter() {
            let mut c = HttpHealthCheck::new("localhost", spec.tls);
            let mut req = RequestHeader::build("GET", hc.path.as_bytes(), None)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
            let host = match &spec.host {
                Some(v) => req.insert_header("Host", v.clone()),
                None => req.insert_header("Host", h.authority.as_str()),
            };
            host.and_then(|_| req.insert_header("User-Agent", "abgate-health-check"))
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
            c.req = req;
            let mut peer = template.clone();
            if spec.tls && spec.sni.is_none() {
                peer.sni = h.name.clone();
            }
            peer.options.read_timeout = Some(timeout);
            c.peer_template = peer;
            c.consecutive_failure = hc.failures;
            c.consecutive_success = hc.failures;
            c.reuse_connection = false;
            let expect = hc.expect.clone();
            c.validator = Some(Box::new(move |resp: &ResponseHeader| {
                let status = resp.status.as_u16();
                if expect.contains(&status) {
                    Ok(())
                } else {
                    pingora::Error::e_explain(
                        pingora::ErrorType::CustomCode("unexpected health-check status", status),
                        format!("status {status}, expected one of {expect:?}"),
                    )
                }
            }));
            checks.push(c);
        }
        Ok(HttpCheck {
            checks,
            failures: hc.failures,
            label,
        })
    }
}

#[async_trait]
impl HealthCheck for HttpCheck {
    async fn check(&self, target: &Backend) -> pingora::Result<()> {
        self.checks[self.label.host_of(target)].check(target).await
    }

    fn backend_summary(&self, target: &Backend) -> String {
        self.label.summary(target)
    }

    /// `failures` consecutive failures take an address out; as many consecutive
    /// successes bring it back (one lucky answer does not).
    fn health_threshold(&self, _success: bool) -> usize {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{backend, http_check, spec};
    use super::super::Pool;
    use crate::config::Protocol;
    use std::net::SocketAddr;
    use std::sync::atomic::Ordering::Relaxed;

    /// A port nothing listens on.
    fn closed_port() -> SocketAddr {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    }

    #[tokio::test]
    async fn unhealthy_addresses_get_no_traffic_and_none_healthy_fails_open() {
        let live = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let live_addr = live.local_addr().unwrap().to_string();
        let dead = closed_port().to_string();
        let s = spec(
            &[&live_addr, &dead],
            &[&live_addr, &dead],
            Protocol::Http1,
            false,
        );
        let pool = Pool::new(&s).unwrap();
        // Every address starts healthy.
        assert_eq!(pool.health().iter().filter(|h| h.healthy).count(), 2);
        pool.check_now().await;
        let health = pool.health();
        assert_eq!(
            health
                .iter()
                .map(|h| (h.host.as_str(), h.healthy))
                .collect::<Vec<_>>(),
            [(live_addr.as_str(), true), (dead.as_str(), false)]
        );
        for _ in 0..10 {
            assert_eq!(pool.select().to_string(), live_addr);
        }

        // None healthy: the first address anyway.
        let (d1, d2) = (closed_port().to_string(), closed_port().to_string());
        let pool = Pool::new(&spec(&[&d1, &d2], &[&d1, &d2], Protocol::Http1, false)).unwrap();
        pool.check_now().await;
        assert!(pool.health().iter().all(|h| !h.healthy));
        for _ in 0..4 {
            assert_eq!(pool.peer()._address.as_inet().unwrap().to_string(), d1);
        }
    }

    #[tokio::test]
    async fn http_check_needs_failures_in_a_row_both_ways_and_speaks_h2c() {
        let b = backend(None).await;
        let addr = b.addr.to_string();
        let mut s = spec(&[&addr], &[&addr], Protocol::H2c, false);
        s.health_check = http_check(2);
        let pool = Pool::new(&s).unwrap();
        let healthy = || pool.health()[0].healthy;
        pool.check_now().await;
        assert!(healthy());
        b.status.store(503, Relaxed);
        pool.check_now().await;
        assert!(healthy(), "one failure is not `failures = 2`");
        pool.check_now().await;
        assert!(!healthy());
        b.status.store(200, Relaxed);
        pool.check_now().await;
        assert!(!healthy(), "one success does not bring it back");
        pool.check_now().await;
        assert!(healthy());
        // Five checks, five requests, all HTTP/2 (prior knowledge) to the address as
        // written. How many connections carried them is pingora's affair: an HTTP/2
        // connection still open from the last check may carry the next one.
        assert!((1..=5).contains(&b.hits.load(Relaxed)));
        let seen = b.seen.lock().unwrap();
        assert_eq!(seen.len(), 5);
        assert!(
            seen.iter()
                .all(|(v, host)| *v == http::Version::HTTP_2 && *host == addr),
            "{seen:?}"
        );
    }

    #[tokio::test]
    async fn http_check_sends_the_configured_host_and_expects_its_statuses() {
        let b = backend(None).await;
        let addr = b.addr.to_string();
        let mut s = spec(&[&addr], &[&addr], Protocol::Http1, false);
        s.health_check = http_check(1);
        s.health_check.as_mut().unwrap().expect = vec![204];
        s.host = Some(http::HeaderValue::from_static("model.example"));
        let pool = Pool::new(&s).unwrap();
        pool.check_now().await;
        assert!(!pool.health()[0].healthy, "200 is not in expect = [204]");
        b.status.store(204, Relaxed);
        pool.check_now().await;
        assert!(pool.health()[0].healthy);
        assert!(b
            .seen
            .lock()
            .unwrap()
            .iter()
            .all(|(_, h)| h == "model.example"));
    }
}
