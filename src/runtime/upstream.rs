//! Upstream pools: one per `[upstream.NAME]` of a config generation. A pool picks an
//! address round-robin among the healthy ones (pingora's load balancer) and builds the
//! peer the proxy connects to: protocol, TLS, SNI, trusted roots, timeouts.
//!
//! Beside the request path, per pool (stopped when the generation is replaced):
//! - health checks (`health`): HTTP (`health_check = { path, interval, expect,
//!   failures }`, over the upstream's own protocol and TLS settings) or, without one, a
//!   TCP connect every `health_check_interval`;
//! - re-resolution (`resolve`): every `resolve_interval` each host name of `addrs` is
//!   resolved again and every address it has is used; a failed resolution keeps the
//!   previous addresses.
//!
//! Health lives in pingora's health registry; [`Pool::health`] reads it for the admin API
//! and the `abgate_upstream_healthy` gauge.

mod health;
mod resolve;
#[cfg(test)]
mod test_support;

pub use resolve::{Resolve, SystemResolver};

use crate::config::{Protocol, UpstreamSpec};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::lb::discovery::ServiceDiscovery;
use pingora::lb::selection::RoundRobin;
use pingora::lb::{Backend, Backends, Extensions, LoadBalancer};
use pingora::protocols::l4::socket::SocketAddr as PeerAddr;
use pingora::protocols::tls::CaType;
use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::{parse_x509, WrappedX509};
use resolve::Resolution;
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// One address of a pool and its health, for the admin API and the gauge.
#[derive(Debug, Clone, PartialEq)]
pub struct AddrHealth {
    /// The resolved address.
    pub addr: SocketAddr,
    /// The `addrs` entry it came from, as written (`host:port`).
    pub host: String,
    /// Passing its health check (an address starts healthy).
    pub healthy: bool,
}

/// A pool of one config generation.
pub struct Pool {
    /// The spec it was built from.
    pub spec: UpstreamSpec,
    lb: Arc<LoadBalancer<RoundRobin>>,
    /// The addresses in use (shared with the discovery, the checks and re-resolution).
    addrs: Arc<ArcSwap<Addrs>>,
    hosts: Arc<[HostEntry]>,
    /// The peer without its address: protocol, TLS, CA, timeouts (and the SNI when it
    /// is the same for every address).
    template: HttpPeer,
    /// The template's SNI is every address's (no TLS, `sni` set, or a single host name).
    fixed_sni: bool,
    resolution: Arc<Resolution>,
    /// Health-check period.
    check_interval: Duration,
    /// Which address belongs to which host name was guessed at load (two names on one
    /// port): resolve at once instead of after `resolve_interval`.
    resolve_at_start: bool,
}

impl Pool {
    /// Build a pool with the system's resolver; background tasks start with
    /// [`Pool::spawn_background`]. Logs a WARN if the upstream does not verify its
    /// backend's certificate (so on every start and reload).
    pub fn new(spec: &UpstreamSpec) -> io::Result<Pool> {
        Self::with_resolver(spec, Arc::new(SystemResolver))
    }

    /// [`Pool::new`] with another resolver for re-resolution.
    pub fn with_resolver(spec: &UpstreamSpec, resolver: Arc<dyn Resolve>) -> io::Result<Pool> {
        if spec.addrs.is_empty() || spec.hosts.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("upstream `{}` has no address", spec.name),
            ));
        }
        let hosts: Arc<[HostEntry]> = spec
            .hosts
            .iter()
            .map(|h| HostEntry::parse(h, spec.tls))
            .collect();
        let (initial, ambiguous) = attribute(&spec.addrs, &hosts);
        let addrs = Arc::new(ArcSwap::from_pointee(initial));
        let fixed = fixed_sni(spec, &hosts);
        let template = template(spec, fixed.unwrap_or_default())?;
        let fixed_sni = fixed.is_some();
        let mut lb = LoadBalancer::<RoundRobin>::from_backends(Backends::new(Box::new(Discovery(
            addrs.clone(),
        ))));
        let check_interval =
            health::install(&mut lb, spec, &template, hosts.clone(), addrs.clone())?;
        // The discovery answers from memory: the first update completes in one poll.
        poll_once(lb.update())
            .ok_or_else(|| io::Error::other("the upstream discovery did not answer at once"))?
            .map_err(|e| io::Error::other(e.to_string()))?;
        let lb = Arc::new(lb);
        if spec.tls && !spec.verify {
            tracing::warn!(
                "upstream `{}`: verify = false: its backends' TLS certificates are not checked, so anyone on the network path can impersonate them",
                spec.name
            );
        }
        let resolution = Arc::new(Resolution::new(
            spec,
            hosts.clone(),
            addrs.clone(),
            lb.clone(),
            resolver,
        ));
        Ok(Pool {
            spec: spec.clone(),
            lb,
            addrs,
            hosts,
            fixed_sni,
            template,
            resolution,
            check_interval,
            resolve_at_start: ambiguous,
        })
    }

    /// Run health checks (and re-resolution, if an address is a host name) until `stop`
    /// turns true or its sender is dropped (the generation is replaced or the process
    /// stops). Needs a tokio runtime.
    pub fn spawn_background(&self, stop: watch::Receiver<bool>) {
        health::spawn(self.lb.clone(), self.check_interval, stop.clone());
        if self.hosts.iter().all(|h| h.literal.is_some()) {
            return;
        }
        self.resolution
            .spawn(self.spec.resolve_interval, self.resolve_at_start, stop);
    }

    /// The peer for the next try: the next address round-robin among the healthy ones
    /// (if none is healthy, the first address anyway: fail open, so the request fails
    /// and is counted rather than being refused without a try), with the upstream's
    /// protocol, TLS, SNI (configured, else the host name of that address's entry, an IP
    /// literal's IP), trusted roots, certificate checks, connect timeout, and
    /// `idle_timeout` as the per-read timeout (the proxy bounds the wait for the
    /// response header with `read_timeout` itself).
    ///
    /// Hot path: called once per request and per retry; one `Box` and, for TLS with
    /// several host names, the SNI string.
    #[inline]
    pub fn peer(&self) -> Box<HttpPeer> {
        let addrs = self.addrs.load();
        let addr = self.pick(&addrs);
        let mut peer = Box::new(self.template.clone());
        peer._address = PeerAddr::Inet(addr);
        if !self.fixed_sni {
            peer.sni = self.hosts[addrs.host_of(addr)].name.clone();
        }
        peer
    }

    /// The next address as [`Pool::peer`] picks it.
    #[inline]
    pub fn select(&self) -> SocketAddr {
        self.pick(&self.addrs.load())
    }

    #[inline]
    fn pick(&self, addrs: &Addrs) -> SocketAddr {
        let first = addrs.list[0].0;
        // One address: it is tried whatever its health (fail open), so there is nothing
        // to select.
        if addrs.list.len() == 1 {
            return first;
        }
        self.lb
            .select(b"", 256)
            .and_then(|b| b.addr.as_inet().copied())
            .unwrap_or(first)
    }

    /// Every address in use, with its health.
    pub fn health(&self) -> Vec<AddrHealth> {
        let addrs = self.addrs.load();
        let backends = self.lb.backends();
        addrs
            .list
            .iter()
            .map(|&(addr, h)| AddrHealth {
                addr,
                host: self.hosts[h].written.clone(),
                healthy: backends.ready(&backend(addr)),
            })
            .collect()
    }

    /// The upstream's protocol as the config writes it.
    pub fn protocol(&self) -> &'static str {
        match self.spec.protocol {
            Protocol::Http1 => "http1",
            Protocol::H2c => "h2c",
            Protocol::H2 => "h2",
        }
    }

    /// One health-check pass over every address now (the background task does this
    /// every period).
    pub async fn check_now(&self) {
        self.lb.backends().run_health_check(true).await;
    }

    /// Resolve every host name once now (the background task does this every
    /// `resolve_interval`).
    pub async fn resolve_now(&self) {
        self.resolution.round().await;
    }
}

/// One entry of `addrs`.
struct HostEntry {
    /// As written (`host:port`).
    written: String,
    /// The host part without brackets: the default SNI (an IP literal's IP).
    name: String,
    /// `Host` of health checks: the entry, without the port when it is the scheme's
    /// default (as a browser or curl sends it).
    authority: String,
    /// The port written.
    port: u16,
    /// An IP literal needs no resolution.
    literal: Option<SocketAddr>,
}

impl HostEntry {
    fn parse(written: &str, tls: bool) -> HostEntry {
        let literal = written.parse::<SocketAddr>().ok();
        let (host, port) = match written.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().unwrap_or(0)),
            None => (written, 0),
        };
        let name = match literal {
            Some(a) => a.ip().to_string(),
            None => host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
        };
        let default_port = if tls { 443 } else { 80 };
        HostEntry {
            written: written.to_string(),
            name,
            authority: if port == default_port { host } else { written }.to_string(),
            port,
            literal,
        }
    }
}

/// The addresses in use and the entry each came from.
#[derive(Debug, Clone, PartialEq)]
struct Addrs {
    /// (address, index of its entry): distinct, in entry order; never empty.
    list: Vec<(SocketAddr, usize)>,
    /// What each entry resolved to last (kept when a resolution fails).
    by_host: Vec<Vec<SocketAddr>>,
}

impl Addrs {
    fn from_by_host(by_host: Vec<Vec<SocketAddr>>) -> Addrs {
        let mut list: Vec<(SocketAddr, usize)> = Vec::new();
        for (i, found) in by_host.iter().enumerate() {
            for &a in found {
                if !list.iter().any(|&(b, _)| b == a) {
                    list.push((a, i));
                }
            }
        }
        Addrs { list, by_host }
    }

    /// The entry of `addr` (the first entry for an address no longer listed).
    #[inline]
    fn host_of(&self, addr: SocketAddr) -> usize {
        self.list
            .iter()
            .find(|&&(a, _)| a == addr)
            .map_or(0, |&(_, h)| h)
    }

    fn set(&self) -> BTreeSet<SocketAddr> {
        self.list.iter().map(|&(a, _)| a).collect()
    }
}

/// The config's resolved addresses by entry. The config keeps one flat list, so an
/// address is given to its IP literal entry, else to the first host name with its port;
/// `true` when two host names share that port (the guess may be wrong until the first
/// re-resolution).
fn attribute(addrs: &[SocketAddr], hosts: &[HostEntry]) -> (Addrs, bool) {
    let mut by_host = vec![Vec::new(); hosts.len()];
    let mut ambiguous = false;
    for &a in addrs {
        let i = hosts
            .iter()
            .position(|h| h.literal == Some(a))
            .unwrap_or_else(|| {
                let mut named = hosts
                    .iter()
                    .enumerate()
                    .filter(|(_, h)| h.literal.is_none() && h.port == a.port())
                    .map(|(i, _)| i);
                let first = named.next();
                ambiguous |= named.next().is_some();
                first
                    .or_else(|| hosts.iter().position(|h| h.literal.is_none()))
                    .unwrap_or(0)
            });
        by_host[i].push(a);
    }
    (Addrs::from_by_host(by_host), ambiguous)
}

/// The SNI every address shares, if it is one: none without TLS, the configured one, or
/// the host name when every entry has the same.
fn fixed_sni<'a>(spec: &'a UpstreamSpec, hosts: &'a [HostEntry]) -> Option<&'a str> {
    if !spec.tls {
        return Some("");
    }
    if let Some(s) = &spec.sni {
        return Some(s);
    }
    let first = &hosts[0].name;
    hosts.iter().all(|h| h.name == *first).then_some(first)
}

/// Concurrent streams abgate opens on one HTTP/2 backend connection (100 is the
/// minimum RFC 9113 recommends a server allow).
const H2_STREAMS: usize = 100;

/// Everything of the peer that does not depend on the address.
fn template(spec: &UpstreamSpec, sni: &str) -> io::Result<HttpPeer> {
    let mut peer = HttpPeer::new(spec.addrs[0], spec.tls, sni.to_string());
    let o = &mut peer.options;
    o.connection_timeout = Some(spec.connect_timeout);
    // pingora applies it to each read: the longer of `read_timeout` and
    // `idle_timeout`; the proxy's watchdog enforces the shorter one on HTTP/1.x
    // backends (src/proxy/deadline.rs).
    o.read_timeout = Some(spec.per_read_timeout());
    // With rustls, pingora honours `verify_cert = false` only on a per-peer client
    // config, which it builds when the peer has an ALPN (an `HttpPeer` always has) or a
    // CA. The SNI is never empty with TLS (an IP literal's is its IP), since an empty
    // SNI turns verification off.
    o.verify_cert = spec.verify;
    o.verify_hostname = spec.verify;
    match spec.protocol {
        Protocol::Http1 => o.set_http_version(1, 1),
        // Without TLS pingora speaks HTTP/2 with prior knowledge when the minimum
        // version is 2 (h2c); with TLS it offers ALPN `h2` only.
        Protocol::H2c | Protocol::H2 => {
            o.set_http_version(2, 2);
            // Multiplex: up to 100 concurrent streams per backend connection (pingora's
            // default is one, which opens a connection per request in flight).
            o.max_h2_streams = H2_STREAMS;
        }
    }
    if let Some(der) = &spec.ca {
        o.ca = Some(ca_of(der)?);
    }
    // pingora's connection reuse key has neither the CA nor the protocol: keep
    // connections apart by both, so two upstreams on one address never share one made
    // with the other's settings.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (spec.protocol as u8).hash(&mut h);
    spec.ca.as_deref().hash(&mut h);
    peer.group_key = h.finish();
    Ok(peer)
}

/// The trusted roots as pingora holds them. The config checked that rustls accepts each
/// one; pingora's parser panics on what it cannot read, so that becomes an error here.
fn ca_of(der: &[Vec<u8>]) -> io::Result<Arc<CaType>> {
    std::panic::catch_unwind(|| {
        der.iter()
            .map(|d| WrappedX509::new(d.clone(), parse_x509))
            .collect::<Vec<_>>()
    })
    .map(Arc::from)
    .map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "a certificate of `ca` cannot be parsed",
        )
    })
}

fn backend(addr: SocketAddr) -> Backend {
    Backend {
        addr: PeerAddr::Inet(addr),
        weight: 1,
        ext: Extensions::new(),
    }
}

/// Poll `f` once; `None` if it is not ready.
fn poll_once<F: Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

/// pingora's service discovery over the pool's current addresses (re-resolution
/// changes them, then asks the load balancer to update).
struct Discovery(Arc<ArcSwap<Addrs>>);

#[async_trait]
impl ServiceDiscovery for Discovery {
    async fn discover(&self) -> pingora::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let addrs = self.0.load();
        Ok((
            addrs.list.iter().map(|&(a, _)| backend(a)).collect(),
            HashMap::new(),
        ))
    }
}

#[cfg(test)]
mod tests;
