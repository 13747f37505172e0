//! `[upstream.NAME]`: the backend pools. Addresses are resolved once here; variants and
//! `[routing]` refer to pools by name, turned into an index into [`Config::upstreams`].
//!
//! [`Config::upstreams`]: crate::config::Config::upstreams

use super::values::{dur, name_ok};
use crate::config::raw::RawUpstream;
use crate::config::{Diagnostics, UpstreamSpec};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// Every `[upstream.NAME]`, in name order.
pub(super) fn compile_upstreams(
    d: &mut Diagnostics,
    raw: &BTreeMap<String, RawUpstream>,
) -> Vec<UpstreamSpec> {
    raw.iter()
        .map(|(name, u)| compile_upstream(d, name, u))
        .collect()
}

/// One `[upstream.NAME]`; a bad name is reported and kept, so variants naming it resolve.
fn compile_upstream(d: &mut Diagnostics, name: &str, u: &RawUpstream) -> UpstreamSpec {
    let path = format!("upstream.{name}");
    let name_arc = name_ok(d, &path, &Some(name.to_string()), "upstream");
    let mut addrs = Vec::new();
    match &u.addrs {
        None => d.push(&path, "missing `addrs`, e.g. addrs = [\"127.0.0.1:9001\"]"),
        Some(list) if list.is_empty() => {
            d.push(&format!("{path}.addrs"), "needs at least one `host:port`")
        }
        Some(list) => {
            for (i, a) in list.iter().enumerate() {
                match resolve_addr(a) {
                    Ok(s) => addrs.push(s),
                    Err(m) => d.push(&format!("{path}.addrs[{i}]"), m),
                }
            }
        }
    }
    let timeout = |d: &mut Diagnostics, key: &str, v: &Option<String>, default: &str| {
        dur(d, &format!("{path}.{key}"), v, default)
    };
    UpstreamSpec {
        name: name_arc.unwrap_or_else(|| Arc::from(name)),
        addrs,
        connect_timeout: timeout(d, "connect_timeout", &u.connect_timeout, "1s"),
        read_timeout: timeout(d, "read_timeout", &u.read_timeout, "30s"),
        health_check_interval: timeout(d, "health_check_interval", &u.health_check_interval, "5s"),
    }
}

/// `ip:port` as is, or `host:port` resolved now (the first address).
fn resolve_addr(a: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(s) = a.parse::<SocketAddr>() {
        return Ok(s);
    }
    if !a.contains(':') {
        return Err(format!("`{a}` needs a port, e.g. \"{a}:8000\""));
    }
    match a.to_socket_addrs() {
        Ok(mut it) => it
            .next()
            .ok_or_else(|| format!("`{a}` resolves to no address")),
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
}
