//! Re-resolution of a pool's host names: every `resolve_interval` each host name of
//! `addrs` is resolved again (with [`Resolve`]: the system's resolver, or a fake in
//! tests) and every address it has is used; a failed resolution keeps the previous
//! addresses and warns once per failure streak. New addresses reach the load balancer
//! through the pool's service discovery.

use super::{Addrs, HostEntry};
use crate::config::UpstreamSpec;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::lb::selection::RoundRobin;
use pingora::lb::LoadBalancer;
use std::collections::BTreeSet;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Longest wait for one name's resolution (shorter if `resolve_interval` is).
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Resolves `host:port` to addresses: the system's resolver, or a fake in tests.
#[async_trait]
pub trait Resolve: Send + Sync + 'static {
    /// Every address `host_port` has now.
    async fn resolve(&self, host_port: &str) -> io::Result<Vec<SocketAddr>>;
}

/// The system's resolver (`getaddrinfo` on tokio's blocking pool).
pub struct SystemResolver;

#[async_trait]
impl Resolve for SystemResolver {
    async fn resolve(&self, host_port: &str) -> io::Result<Vec<SocketAddr>> {
        Ok(tokio::net::lookup_host(host_port).await?.collect())
    }
}

/// Re-resolution of a pool's host names.
pub(super) struct Resolution {
    name: Arc<str>,
    hosts: Arc<[HostEntry]>,
    addrs: Arc<ArcSwap<Addrs>>,
    lb: Arc<LoadBalancer<RoundRobin>>,
    resolver: Arc<dyn Resolve>,
    /// Per entry: its last resolution failed (one WARN per failure streak).
    failing: Vec<AtomicBool>,
    timeout: Duration,
}

impl Resolution {
    pub(super) fn new(
        spec: &UpstreamSpec,
        hosts: Arc<[HostEntry]>,
        addrs: Arc<ArcSwap<Addrs>>,
        lb: Arc<LoadBalancer<RoundRobin>>,
        resolver: Arc<dyn Resolve>,
    ) -> Resolution {
        Resolution {
            name: spec.name.clone(),
            failing: hosts.iter().map(|_| AtomicBool::new(false)).collect(),
            hosts,
            addrs,
            lb,
            resolver,
            timeout: RESOLVE_TIMEOUT.min(spec.resolve_interval),
        }
    }

    /// Resolve every host name once every `every` (the first time at once with
    /// `at_once`, else after `every`) until `stop` turns true or its sender is dropped.
    /// Its own task: a slow resolver never delays a health check.
    pub(super) fn spawn(
        self: &Arc<Self>,
        every: Duration,
        at_once: bool,
        mut stop: watch::Receiver<bool>,
    ) {
        let r = self.clone();
        let first = if at_once { Duration::ZERO } else { every };
        tokio::spawn(async move {
            let mut next = tokio::time::Instant::now() + first;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(next) => {}
                    _ = stop.changed() => return,
                }
                tokio::select! {
                    _ = r.round() => {}
                    _ = stop.changed() => return,
                }
                next = tokio::time::Instant::now() + every;
            }
        });
    }

    /// Resolve every host name once; use every address found. A name that fails (or
    /// has no address) keeps its previous addresses.
    pub(super) async fn round(&self) {
        let cur = self.addrs.load_full();
        let mut by_host = cur.by_host.clone();
        for (i, h) in self.hosts.iter().enumerate() {
            if h.literal.is_some() {
                continue;
            }
            let got = tokio::time::timeout(self.timeout, self.resolver.resolve(&h.written)).await;
            let found = match got {
                Ok(Ok(v)) if !v.is_empty() => Ok(v),
                Ok(Ok(_)) => Err("no address".to_string()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer within {:?}", self.timeout)),
            };
            match found {
                Ok(mut v) => {
                    let mut seen = BTreeSet::new();
                    v.retain(|a| seen.insert(*a));
                    if self.failing[i].swap(false, Relaxed) {
                        tracing::info!(
                            "upstream `{}`: `{}` resolves again: {v:?}",
                            self.name,
                            h.written
                        );
                    }
                    by_host[i] = v;
                }
                Err(why) => {
                    if !self.failing[i].swap(true, Relaxed) {
                        tracing::warn!(
                            "upstream `{}`: cannot resolve `{}` ({why}); keeping its previous addresses {:?} (logged once until it resolves again)",
                            self.name,
                            h.written,
                            by_host[i]
                        );
                    }
                }
            }
        }
        let next = Addrs::from_by_host(by_host);
        if next.list.is_empty() || next == *cur {
            return;
        }
        if next.set() != cur.set() {
            let list: Vec<SocketAddr> = next.list.iter().map(|&(a, _)| a).collect();
            tracing::info!("upstream `{}`: addresses now {list:?}", self.name);
        }
        self.addrs.store(Arc::new(next));
        // The discovery reads the addresses just stored.
        if let Err(e) = self.lb.update().await {
            tracing::warn!("upstream `{}`: updating the pool failed: {e}", self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{a, spec};
    use super::super::Pool;
    use super::*;
    use crate::config::Protocol;
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// Answers set by the test; `None` fails.
    #[derive(Default)]
    struct FakeResolver {
        answers: Mutex<HashMap<String, Option<Vec<SocketAddr>>>>,
        calls: Mutex<Vec<String>>,
    }

    impl FakeResolver {
        fn set(&self, host: &str, answer: Option<&[&str]>) {
            let v = answer.map(|l| l.iter().map(|s| a(s)).collect());
            self.answers.lock().unwrap().insert(host.to_string(), v);
        }
    }

    #[async_trait]
    impl Resolve for FakeResolver {
        async fn resolve(&self, host_port: &str) -> io::Result<Vec<SocketAddr>> {
            self.calls.lock().unwrap().push(host_port.to_string());
            match self.answers.lock().unwrap().get(host_port) {
                Some(Some(v)) => Ok(v.clone()),
                _ => Err(io::Error::other("NXDOMAIN (fake)")),
            }
        }
    }

    /// (address, SNI) of `n` peers.
    fn used(pool: &Pool, n: usize) -> BTreeSet<(String, String)> {
        (0..n)
            .map(|_| {
                let p = pool.peer();
                (p._address.as_inet().unwrap().to_string(), p.sni.clone())
            })
            .collect()
    }

    fn pairs(l: &[(&str, &str)]) -> BTreeSet<(String, String)> {
        l.iter()
            .map(|(x, y)| (x.to_string(), y.to_string()))
            .collect()
    }

    #[tokio::test]
    async fn re_resolution_uses_every_new_address_and_keeps_the_old_on_failure() {
        let r = Arc::new(FakeResolver::default());
        let s = spec(
            &["svc.test:8000", "10.9.9.9:8000"],
            &["10.0.0.1:8000", "10.9.9.9:8000"],
            Protocol::Http1,
            true,
        );
        let pool = Pool::with_resolver(&s, r.clone()).unwrap();
        assert_eq!(
            used(&pool, 8),
            pairs(&[("10.0.0.1:8000", "svc.test"), ("10.9.9.9:8000", "10.9.9.9")])
        );

        // The name now has two other addresses: both are used, the old one no more.
        r.set("svc.test:8000", Some(&["10.0.0.2:8000", "10.0.0.3:8000"]));
        pool.resolve_now().await;
        assert_eq!(
            used(&pool, 12),
            pairs(&[
                ("10.0.0.2:8000", "svc.test"),
                ("10.0.0.3:8000", "svc.test"),
                ("10.9.9.9:8000", "10.9.9.9"),
            ])
        );
        let health = pool.health();
        assert_eq!(health.len(), 3);
        assert!(health.iter().all(|h| h.healthy));
        assert_eq!(health[0].host, "svc.test:8000");
        assert_eq!(health[2].host, "10.9.9.9:8000");
        // IP literals are never resolved.
        assert_eq!(*r.calls.lock().unwrap(), ["svc.test:8000"]);

        // A failed resolution keeps the previous addresses (and warns once per streak).
        r.set("svc.test:8000", None);
        pool.resolve_now().await;
        assert!(pool.resolution.failing[0].load(Relaxed));
        pool.resolve_now().await;
        assert_eq!(used(&pool, 12).len(), 3);
        assert_eq!(pool.health().len(), 3);

        // It resolves again, to one address.
        r.set("svc.test:8000", Some(&["10.0.0.4:8000"]));
        pool.resolve_now().await;
        assert!(!pool.resolution.failing[0].load(Relaxed));
        assert_eq!(
            used(&pool, 8),
            pairs(&[("10.0.0.4:8000", "svc.test"), ("10.9.9.9:8000", "10.9.9.9")])
        );
        assert_eq!(r.calls.lock().unwrap().len(), 4);
    }
}
