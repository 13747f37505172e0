//! `[fleet]`: how this sidecar joins a fleet through NATS JetStream — the broker's
//! URLs, its own instance name, the stream and the key-value bucket, what it shares, and
//! how much unshipped log it may keep. Names end up in NATS subjects and keys, so they
//! are held to the characters NATS accepts everywhere.

use super::values::parse_size;
use crate::config::raw::RawFleet;
use crate::config::{Diagnostics, FleetSettings};

/// `[fleet]`, with defaults for what is left out.
pub(super) fn compile_fleet(d: &mut Diagnostics, raw: &RawFleet) -> FleetSettings {
    let url = raw
        .nats_url
        .clone()
        .unwrap_or_else(|| "nats://127.0.0.1:4222".into());
    let mut nats_urls = Vec::new();
    for u in url.split(',').map(str::trim) {
        match nats_url(u) {
            Ok(()) => nats_urls.push(u.to_string()),
            Err(m) => d.push("fleet.nats_url", m),
        }
    }
    let name = |d: &mut Diagnostics, key: &str, v: Option<&String>, default: String| {
        let v = v.cloned().unwrap_or(default);
        if v.is_empty()
            || !v
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            d.push(
                &format!("fleet.{key}"),
                format!("`{v}` is not a valid name; use letters, digits, `_` and `-` (it becomes part of NATS subjects and keys)"),
            );
        }
        v
    };
    let max_backlog = match &raw.max_backlog {
        None => 1 << 30,
        Some(v) => match parse_size(v) {
            Ok(b) if b >= 1 << 20 => b,
            Ok(b) => {
                d.push(
                    "fleet.max_backlog",
                    format!("{b} bytes is too small to ship anything; at least \"1MiB\""),
                );
                1 << 30
            }
            Err(m) => {
                d.push("fleet.max_backlog", m);
                1 << 30
            }
        },
    };
    FleetSettings {
        nats_urls,
        instance: name(d, "instance", raw.instance.as_ref(), default_instance()),
        stream: name(d, "stream", raw.stream.as_ref(), "ABGATE_EVENTS".into()),
        bucket: name(d, "bucket", raw.bucket.as_ref(), "abgate_state".into()),
        ship_events: raw.ship_events.unwrap_or(true),
        share_windows: raw.share_windows.unwrap_or(true),
        max_backlog,
    }
}

/// The default instance name: the host name and the process id (`pod-a-4711`).
fn default_instance() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "abgate".into());
    let host: String = host
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{host}-{}", std::process::id())
}

/// `nats://host:port` or `tls://host:port` (the port may be left out: 4222).
fn nats_url(u: &str) -> Result<(), String> {
    let example = "e.g. nats_url = \"nats://127.0.0.1:4222\"";
    let Some((scheme, rest)) = u.split_once("://") else {
        return Err(format!("`{u}` is not a NATS URL; {example}"));
    };
    if !matches!(scheme, "nats" | "tls") {
        return Err(format!(
            "`{u}`: the scheme must be nats:// or tls://, not {scheme}://; {example}"
        ));
    }
    let hostport = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let host = match hostport.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() => {
            p.parse::<u16>()
                .map_err(|_| format!("`{u}`: `{p}` is not a port; {example}"))?;
            h
        }
        _ => hostport,
    };
    if host.is_empty() || host.contains('/') {
        return Err(format!("`{u}` names no host; {example}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::{errors, parse, MINIMAL};

    #[test]
    fn fleet_defaults_and_values_as_written() {
        let cfg = parse(MINIMAL).unwrap();
        assert!(cfg.fleet.is_none());
        let cfg = parse(&format!("{MINIMAL}[fleet]\n")).unwrap();
        let f = cfg.fleet.unwrap();
        assert_eq!(f.nats_urls, ["nats://127.0.0.1:4222"]);
        assert_eq!(
            (f.stream.as_str(), f.bucket.as_str()),
            ("ABGATE_EVENTS", "abgate_state")
        );
        assert!(f.ship_events && f.share_windows);
        assert_eq!(f.max_backlog, 1 << 30);
        assert!(f.instance.ends_with(&format!("-{}", std::process::id())));
        let cfg = parse(&format!(
            "{MINIMAL}[fleet]\nnats_url = \"nats://a:4222, tls://user:pw@b\"\ninstance = \"pod-a\"\n\
             stream = \"EV\"\nbucket = \"st\"\nship_events = false\nshare_windows = false\n\
             max_backlog = \"64MiB\"\n"
        ))
        .unwrap();
        let f = cfg.fleet.unwrap();
        assert_eq!(f.nats_urls, ["nats://a:4222", "tls://user:pw@b"]);
        assert_eq!(f.instance, "pod-a");
        assert!(!f.ship_events && !f.share_windows);
        assert_eq!(f.max_backlog, 64 << 20);
    }

    #[test]
    fn bad_fleet_values_are_reported_at_their_line() {
        let e = errors(&format!(
            "{MINIMAL}[fleet]\nnats_url = \"http://x:4222\"\ninstance = \"pod a\"\n\
             max_backlog = \"lots\"\n"
        ));
        let keys: Vec<_> = e.iter().map(|(_, p, _)| p.as_str()).collect();
        assert_eq!(
            keys,
            ["fleet.nats_url", "fleet.instance", "fleet.max_backlog"]
        );
        assert!(e[0].2.contains("nats:// or tls://"), "{e:?}");
    }
}
