//! `[upstream.NAME]`: the backend pools and how to speak to them (protocol, TLS,
//! timeouts, health checks, what a gRPC error is). Host names are resolved here to
//! every address they have (and again every `resolve_interval` by the runtime);
//! variants and `[routing]` refer to pools by name, turned into an index into
//! [`Config::upstreams`].
//!
//! [`Config::upstreams`]: crate::config::Config::upstreams

use super::tls;
use super::values::{dur, name_ok};
use crate::config::raw::{RawHealthCheck, RawUpstream};
use crate::config::{Diagnostics, HttpHealthCheck, Protocol, UpstreamSpec};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

/// The `grpc-status` values that are errors of the variant by default: the server's
/// faults (UNKNOWN, DEADLINE_EXCEEDED, INTERNAL, UNAVAILABLE, DATA_LOSS), not the
/// caller's (INVALID_ARGUMENT, NOT_FOUND, …).
pub const DEFAULT_GRPC_ERROR_CODES: [u32; 5] = [2, 4, 13, 14, 15];

/// Every `[upstream.NAME]`, in name order.
pub(super) fn compile_upstreams(
    d: &mut Diagnostics,
    raw: &BTreeMap<String, RawUpstream>,
    base: &Path,
) -> Vec<UpstreamSpec> {
    raw.iter()
        .map(|(name, u)| compile_upstream(d, name, u, base))
        .collect()
}

/// One `[upstream.NAME]`; a bad name is reported and kept, so variants naming it resolve.
fn compile_upstream(d: &mut Diagnostics, name: &str, u: &RawUpstream, base: &Path) -> UpstreamSpec {
    let path = format!("upstream.{name}");
    let name_arc = name_ok(d, &path, &Some(name.to_string()), "upstream");
    let mut addrs = Vec::new();
    let mut hosts = Vec::new();
    match &u.addrs {
        None => d.push(&path, "missing `addrs`, e.g. addrs = [\"127.0.0.1:9001\"]"),
        Some(list) if list.is_empty() => {
            d.push(&format!("{path}.addrs"), "needs at least one `host:port`")
        }
        Some(list) => {
            for (i, a) in list.iter().enumerate() {
                match resolve_addr(a) {
                    Ok(found) => {
                        hosts.push(a.clone());
                        for s in found {
                            if !addrs.contains(&s) {
                                addrs.push(s);
                            }
                        }
                    }
                    Err(m) => d.push(&format!("{path}.addrs[{i}]"), m),
                }
            }
        }
    }
    let timeout = |d: &mut Diagnostics, key: &str, v: &Option<String>, default: &str| {
        dur(d, &format!("{path}.{key}"), v, default)
    };
    let protocol = match u.protocol.as_deref() {
        None | Some("http1") => Protocol::Http1,
        Some("h2c") => Protocol::H2c,
        Some("h2") => Protocol::H2,
        Some(p) => {
            d.push(
                &format!("{path}.protocol"),
                format!("`{p}` is not a protocol; valid: http1, h2c (HTTP/2 without TLS, e.g. gRPC), h2 (HTTP/2 over TLS)"),
            );
            Protocol::Http1
        }
    };
    let tls = match (protocol, u.tls) {
        (Protocol::H2, Some(false)) => {
            d.push(
                &format!("{path}.tls"),
                "protocol = \"h2\" is HTTP/2 over TLS; remove `tls = false` or use protocol = \"h2c\"",
            );
            true
        }
        (Protocol::H2c, Some(true)) => {
            d.push(
                &format!("{path}.tls"),
                "protocol = \"h2c\" is HTTP/2 without TLS; for HTTP/2 over TLS use protocol = \"h2\"",
            );
            false
        }
        (Protocol::H2, _) => true,
        (_, t) => t.unwrap_or(false),
    };
    for (key, given) in [
        ("sni", u.sni.is_some()),
        ("ca", u.ca.is_some()),
        ("verify", u.verify.is_some()),
    ] {
        if given && !tls {
            d.push(
                &format!("{path}.{key}"),
                "applies to TLS only; add `tls = true` (or protocol = \"h2\")",
            );
        }
    }
    let ca = u.ca.as_ref().and_then(|c| {
        tls::load_ca(&tls::resolve(base, c))
            .map_err(|m| d.push(&format!("{path}.ca"), m))
            .ok()
            .map(Arc::new)
    });
    let host = u
        .host
        .as_ref()
        .and_then(|h| match http::HeaderValue::from_str(h) {
            Ok(v) if !h.is_empty() && !h.contains(char::is_whitespace) => Some(v),
            _ => {
                d.push(
                    &format!("{path}.host"),
                    format!(
                        "`{h}` is not a host name, e.g. host = \"model-b.default.example.com\""
                    ),
                );
                None
            }
        });
    if let Some(s) = &u.sni {
        if s.is_empty() || s.contains(char::is_whitespace) || s.contains(':') {
            d.push(&format!("{path}.sni"), format!("`{s}` is not a host name"));
        }
    }
    let read_timeout = timeout(d, "read_timeout", &u.read_timeout, "30s");
    // Without `idle_timeout`, one timeout bounds every silence of the backend (as
    // pingora applies it), and requests need no header watchdog (docs/protocols.md).
    let idle_timeout = match &u.idle_timeout {
        None => read_timeout,
        v => timeout(d, "idle_timeout", v, "30s"),
    };
    UpstreamSpec {
        name: name_arc.unwrap_or_else(|| Arc::from(name)),
        hosts,
        addrs,
        connect_timeout: timeout(d, "connect_timeout", &u.connect_timeout, "1s"),
        read_timeout,
        idle_timeout,
        health_check_interval: timeout(d, "health_check_interval", &u.health_check_interval, "5s"),
        health_check: u
            .health_check
            .as_ref()
            .map(|h| health_check(d, &format!("{path}.health_check"), h)),
        protocol,
        tls,
        sni: u.sni.clone(),
        ca,
        verify: u.verify.unwrap_or(true),
        host,
        grpc_error_codes: grpc_codes(d, &format!("{path}.grpc_error_codes"), &u.grpc_error_codes),
        resolve_interval: timeout(d, "resolve_interval", &u.resolve_interval, "30s"),
    }
}

/// `health_check = { path, interval, expect, failures }`.
fn health_check(d: &mut Diagnostics, path: &str, h: &RawHealthCheck) -> HttpHealthCheck {
    let p = h.path.clone().unwrap_or_else(|| "/".into());
    if !p.starts_with('/') || p.contains(char::is_whitespace) {
        d.push(
            &format!("{path}.path"),
            format!("`{p}` must be a path starting with `/`, e.g. \"/v2/health/ready\""),
        );
    }
    let mut expect = Vec::new();
    for (i, &c) in h.expect.as_deref().unwrap_or(&[200]).iter().enumerate() {
        if (100..=599).contains(&c) {
            expect.push(c as u16);
        } else {
            d.push(
                &format!("{path}.expect[{i}]"),
                format!("{c} is not an HTTP status (100–599)"),
            );
        }
    }
    if h.expect.as_ref().is_some_and(|e| e.is_empty()) {
        d.push(
            &format!("{path}.expect"),
            "needs at least one status, e.g. expect = [200]",
        );
    }
    let failures = match h.failures {
        None => 2,
        Some(f) if (1..=100).contains(&f) => f as usize,
        Some(f) => {
            d.push(
                &format!("{path}.failures"),
                format!("{f} must be between 1 and 100"),
            );
            2
        }
    };
    HttpHealthCheck {
        path: p,
        interval: dur(d, &format!("{path}.interval"), &h.interval, "5s"),
        expect,
        failures,
    }
}

/// `grpc_error_codes` as bits (gRPC defines codes 0–16).
fn grpc_codes(d: &mut Diagnostics, path: &str, codes: &Option<Vec<i64>>) -> u64 {
    let mut bits = 0u64;
    match codes {
        None => {
            for c in DEFAULT_GRPC_ERROR_CODES {
                bits |= 1 << c;
            }
        }
        Some(list) => {
            for (i, &c) in list.iter().enumerate() {
                if (1..=16).contains(&c) {
                    bits |= 1 << c;
                } else {
                    d.push(
                        &format!("{path}[{i}]"),
                        format!("{c} is not a gRPC error status (1–16; 0 is OK)"),
                    );
                }
            }
        }
    }
    bits
}

/// `ip:port` as is, or `host:port` resolved now: every address it has.
pub fn resolve_addr(a: &str) -> Result<Vec<SocketAddr>, String> {
    use std::net::ToSocketAddrs;
    if let Ok(s) = a.parse::<SocketAddr>() {
        return Ok(vec![s]);
    }
    if !a.contains(':') {
        return Err(format!("`{a}` needs a port, e.g. \"{a}:8000\""));
    }
    match a.to_socket_addrs() {
        Ok(it) => {
            let v: Vec<SocketAddr> = it.collect();
            if v.is_empty() {
                Err(format!("`{a}` resolves to no address"))
            } else {
                Ok(v)
            }
        }
        Err(e) => Err(format!("`{a}` is not a `host:port` that resolves: {e}")),
    }
}

/// Upstream names as variants and `[routing]` refer to them.
pub(super) struct UpstreamLookup<'a> {
    specs: &'a [UpstreamSpec],
    /// The valid names, for messages about an unknown one.
    valid: String,
}

impl<'a> UpstreamLookup<'a> {
    /// The lookup of the compiled `specs`.
    pub(super) fn new(specs: &'a [UpstreamSpec]) -> Self {
        let names: Vec<String> = specs.iter().map(|u| u.name.to_string()).collect();
        let valid = if names.is_empty() {
            "no [upstream.NAME] is defined; add one".to_string()
        } else {
            format!("valid: {}", names.join(", "))
        };
        Self { specs, valid }
    }

    /// What a message says about the valid names.
    pub(super) fn valid(&self) -> &str {
        &self.valid
    }

    /// Index of upstream `name`; an unknown name is recorded at `path`.
    pub(super) fn index(&self, d: &mut Diagnostics, path: &str, name: &str) -> Option<usize> {
        let i = self.specs.iter().position(|u| &*u.name == name);
        if i.is_none() {
            d.push(path, format!("unknown upstream `{name}` ({})", self.valid));
        }
        i
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::{errors, parse};
    use crate::config::Protocol;
    use std::time::Duration;

    #[test]
    fn upstreams_are_in_name_order_with_resolved_addresses_and_default_timeouts() {
        let cfg = parse(
            "[upstream.b]\naddrs = [\"127.0.0.1:2\", \"localhost:3\"]\n\
             [upstream.a]\naddrs = [\"127.0.0.1:1\"]\nread_timeout = \"2s\"\n\
             [routing]\ndefault_upstream = \"b\"\n",
        )
        .unwrap();
        let names: Vec<_> = cfg.upstreams.iter().map(|u| &*u.name).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(cfg.default_upstream, 1);
        let b = &cfg.upstreams[1];
        assert_eq!(b.addrs[0], "127.0.0.1:2".parse().unwrap());
        assert_eq!(b.addrs[1].port(), 3);
        assert_eq!(b.connect_timeout, Duration::from_secs(1));
        assert_eq!(b.read_timeout, Duration::from_secs(30));
        assert_eq!(b.health_check_interval, Duration::from_secs(5));
        assert_eq!(cfg.upstreams[0].read_timeout, Duration::from_secs(2));
    }

    #[test]
    fn bad_upstreams_are_each_reported_at_their_line() {
        let e = errors(
            "[upstream.\"bad name\"]\naddrs = [\"127.0.0.1:1\"]\n\
             [upstream.none]\nread_timeout = \"1s\"\n\
             [upstream.empty]\naddrs = []\n\
             [upstream.c]\naddrs = [\"noport\", \"127.0.0.1:1\"]\nconnect_timeout = \"0s\"\n\
             [routing]\ndefault_upstream = \"c\"\n",
        );
        let got: Vec<_> = e
            .iter()
            .map(|(l, p, m)| (*l, p.as_str(), m.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    1,
                    "upstream.bad name",
                    "`bad name` is not a valid name; use letters, digits, `_` and `-`"
                ),
                (
                    3,
                    "upstream.none",
                    "missing `addrs`, e.g. addrs = [\"127.0.0.1:9001\"]"
                ),
                (6, "upstream.empty.addrs", "needs at least one `host:port`"),
                (
                    8,
                    "upstream.c.addrs[0]",
                    "`noport` needs a port, e.g. \"noport:8000\""
                ),
                (
                    9,
                    "upstream.c.connect_timeout",
                    "`0s` must be longer than zero"
                ),
            ]
        );
    }

    #[test]
    fn protocol_tls_and_grpc_settings_have_defaults_and_are_kept_as_written() {
        let cfg = parse(
            "[upstream.a]\naddrs = [\"127.0.0.1:1\"]\n\
             [upstream.g]\naddrs = [\"127.0.0.1:2\"]\nprotocol = \"h2c\"\n\
             grpc_error_codes = [14]\nidle_timeout = \"5m\"\nhost = \"m.example\"\n\
             health_check = { path = \"/ready\", interval = \"1s\", expect = [200, 204], failures = 3 }\n\
             [upstream.t]\naddrs = [\"localhost:3\"]\nprotocol = \"h2\"\nsni = \"m.example\"\n\
             verify = false\nresolve_interval = \"10s\"\n\
             [routing]\ndefault_upstream = \"a\"\n",
        )
        .unwrap();
        let (a, g, t) = (&cfg.upstreams[0], &cfg.upstreams[1], &cfg.upstreams[2]);
        assert_eq!(
            (a.protocol, a.tls, a.verify),
            (Protocol::Http1, false, true)
        );
        assert_eq!(a.idle_timeout, a.read_timeout);
        assert_eq!(a.resolve_interval, Duration::from_secs(30));
        assert!(a.host.is_none() && a.health_check.is_none() && a.sni.is_none());
        // The default gRPC errors are the server's faults.
        assert!([2, 4, 13, 14, 15].iter().all(|&c| a.grpc_error(c)));
        assert!(![0, 1, 3, 5, 16, 99].iter().any(|&c| a.grpc_error(c)));
        assert_eq!((g.protocol, g.tls), (Protocol::H2c, false));
        assert!(g.grpc_error(14) && !g.grpc_error(2));
        assert_eq!(g.idle_timeout, Duration::from_secs(300));
        assert_eq!(g.host.as_ref().unwrap(), "m.example");
        let hc = g.health_check.as_ref().unwrap();
        assert_eq!(
            (
                hc.path.as_str(),
                hc.interval,
                hc.expect.as_slice(),
                hc.failures
            ),
            ("/ready", Duration::from_secs(1), &[200u16, 204][..], 3)
        );
        assert_eq!((t.protocol, t.tls, t.verify), (Protocol::H2, true, false));
        assert_eq!(t.sni.as_deref(), Some("m.example"));
        assert_eq!(t.hosts, ["localhost:3"]);
        assert!(!t.addrs.is_empty() && t.addrs.iter().all(|a| a.port() == 3));
        assert_eq!(t.resolve_interval, Duration::from_secs(10));
    }

    #[test]
    fn contradictory_protocol_tls_and_bad_health_or_grpc_values_are_reported() {
        let e = errors(
            "[upstream.a]\naddrs = [\"127.0.0.1:1\"]\nprotocol = \"h3\"\n\
             [upstream.b]\naddrs = [\"127.0.0.1:1\"]\nprotocol = \"h2\"\ntls = false\n\
             [upstream.c]\naddrs = [\"127.0.0.1:1\"]\nsni = \"x\"\n\
             [upstream.d]\naddrs = [\"127.0.0.1:1\"]\ntls = true\nca = \"/nonexistent/ca.pem\"\n\
             [upstream.e]\naddrs = [\"127.0.0.1:1\"]\ngrpc_error_codes = [0, 17]\n\
             health_check = { path = \"ready\", expect = [99], failures = 0 }\n\
             [routing]\ndefault_upstream = \"a\"\n",
        );
        let got: Vec<_> = e.iter().map(|(_, p, m)| (p.as_str(), m.as_str())).collect();
        assert_eq!(got[0].0, "upstream.a.protocol");
        assert!(got[0].1.contains("valid: http1, h2c"), "{got:?}");
        assert_eq!(got[1].0, "upstream.b.tls");
        assert_eq!(
            got[2],
            (
                "upstream.c.sni",
                "applies to TLS only; add `tls = true` (or protocol = \"h2\")"
            )
        );
        assert_eq!(got[3].0, "upstream.d.ca");
        assert!(
            got[3].1.contains("cannot read `/nonexistent/ca.pem`"),
            "{got:?}"
        );
        let rest: Vec<_> = got[4..].iter().map(|(p, _)| *p).collect();
        assert_eq!(
            rest,
            [
                "upstream.e.grpc_error_codes[0]",
                "upstream.e.grpc_error_codes[1]",
                "upstream.e.health_check.path",
                "upstream.e.health_check.expect[0]",
                "upstream.e.health_check.failures",
            ]
        );
    }
}
