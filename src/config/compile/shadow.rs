//! `[layer.experiment.variant.shadow]`: the candidate upstream, the copied share and
//! methods, the limits on what copies may cost (body and response sizes, copies in
//! flight, timeout) and the comparison settings (ignored JSON pointers, float tolerance).

use super::upstreams::UpstreamLookup;
use super::values::{dur, parse_size};
use crate::config::raw::RawShadow;
use crate::config::{Diagnostics, Shadow, ShadowCompare};
use crate::hash::seed_of;
use http::Method;

/// Default `max_body_bytes` and `max_response_bytes`: 1 MiB.
const DEFAULT_BYTES: u64 = 1 << 20;
/// The largest `max_body_bytes` / `max_response_bytes`: 64 MiB (each copy in flight may
/// hold one request body and two responses of this size).
const MAX_BYTES: u64 = 64 << 20;
/// Default `max_in_flight`.
const DEFAULT_IN_FLIGHT: i64 = 32;
/// The largest `max_in_flight`.
const MAX_IN_FLIGHT: i64 = 10_000;

/// The shadow of variant `label` (`layer.experiment=variant`) at `path`; `None` (after
/// recording why) when its upstream or share is missing or invalid.
pub(super) fn compile_shadow(
    d: &mut Diagnostics,
    path: &str,
    label: &str,
    raw: &RawShadow,
    upstreams: &UpstreamLookup<'_>,
) -> Option<Shadow> {
    let upstream = match raw.upstream.as_deref() {
        Some(u) => upstreams.index(d, &format!("{path}.upstream"), u),
        None => {
            d.push(
                path,
                "missing `upstream`: the upstream that receives the copies (an [upstream.NAME])",
            );
            None
        }
    };
    let share = share(d, &format!("{path}.share"), raw.share, path);
    let methods = methods(d, &format!("{path}.methods"), raw.methods.as_deref());
    let max_body_bytes = bytes(d, &format!("{path}.max_body_bytes"), &raw.max_body_bytes);
    let max_response_bytes = bytes(
        d,
        &format!("{path}.max_response_bytes"),
        &raw.max_response_bytes,
    );
    let max_in_flight = in_flight(d, &format!("{path}.max_in_flight"), raw.max_in_flight);
    let timeout = dur(d, &format!("{path}.timeout"), &raw.timeout, "10s");
    let compare = compare(d, &format!("{path}.compare"), raw);
    Some(Shadow {
        upstream: upstream?,
        share: share?,
        seed: seed_of(&format!("shadow:{label}")),
        methods,
        max_body_bytes,
        max_response_bytes,
        max_in_flight,
        timeout,
        compare,
    })
}

/// `share`: required, in (0, 1].
fn share(d: &mut Diagnostics, path: &str, v: Option<f64>, table: &str) -> Option<f64> {
    match v {
        Some(x) if x.is_finite() && x > 0.0 && x <= 1.0 => Some(x),
        Some(x) => {
            d.push(path, format!("share {x} must be above 0 and at most 1 (e.g. 0.1 copies 10% of the variant's requests)"));
            None
        }
        None => {
            d.push(table, "missing `share`: the share of the variant's requests copied, above 0 and at most 1 (e.g. 0.1)");
            None
        }
    }
}

/// `methods`: HTTP method tokens, upper-cased; `["POST"]` when absent.
fn methods(d: &mut Diagnostics, path: &str, v: Option<&[String]>) -> Vec<Method> {
    let Some(list) = v else {
        return vec![Method::POST];
    };
    if list.is_empty() {
        d.push(
            path,
            "an empty list copies nothing; list methods (e.g. [\"POST\"]) or remove the shadow",
        );
    }
    let mut out = Vec::new();
    for (i, m) in list.iter().enumerate() {
        let upper = m.to_ascii_uppercase();
        match Method::from_bytes(upper.as_bytes()) {
            Ok(method) if !upper.is_empty() => out.push(method),
            _ => d.push(
                &format!("{path}[{i}]"),
                format!("`{m}` is not an HTTP method (e.g. \"POST\", \"GET\")"),
            ),
        }
    }
    out
}

/// A size in (0, 64 MiB], 1 MiB when absent.
fn bytes(d: &mut Diagnostics, path: &str, v: &Option<toml::Value>) -> u64 {
    let Some(v) = v else {
        return DEFAULT_BYTES;
    };
    match parse_size(v) {
        Ok(b) if (1..=MAX_BYTES).contains(&b) => b,
        Ok(b) => {
            d.push(
                path,
                format!("{b} bytes is out of range: above 0 and at most \"64MiB\""),
            );
            DEFAULT_BYTES
        }
        Err(m) => {
            d.push(path, m);
            DEFAULT_BYTES
        }
    }
}

/// `max_in_flight` in [1, 10000], 32 when absent.
fn in_flight(d: &mut Diagnostics, path: &str, v: Option<i64>) -> usize {
    match v {
        None => DEFAULT_IN_FLIGHT as usize,
        Some(n) if (1..=MAX_IN_FLIGHT).contains(&n) => n as usize,
        Some(n) => {
            d.push(
                path,
                format!("{n} is out of range: between 1 and {MAX_IN_FLIGHT}"),
            );
            DEFAULT_IN_FLIGHT as usize
        }
    }
}

/// `compare`: well-formed JSON pointers, a finite tolerance ≥ 0.
fn compare(d: &mut Diagnostics, path: &str, raw: &RawShadow) -> ShadowCompare {
    let Some(c) = &raw.compare else {
        return ShadowCompare::default();
    };
    for (i, p) in c.json_ignore.iter().enumerate() {
        if let Err(why) = check_pointer(p) {
            d.push(&format!("{path}.json_ignore[{i}]"), why);
        }
    }
    let float_tolerance = match c.float_tolerance {
        None => 0.0,
        Some(t) if t.is_finite() && t >= 0.0 => t,
        Some(t) => {
            d.push(
                &format!("{path}.float_tolerance"),
                format!("{t} must be a number of at least 0 (e.g. 1e-6)"),
            );
            0.0
        }
    };
    ShadowCompare {
        json_ignore: c.json_ignore.clone(),
        float_tolerance,
    }
}

/// A JSON pointer as RFC 6901 writes it: empty (the whole document) or `/`-separated
/// tokens where `~` is only `~0` (`~`) or `~1` (`/`).
fn check_pointer(p: &str) -> Result<(), String> {
    if !p.is_empty() && !p.starts_with('/') {
        return Err(format!(
            "`{p}` is not a JSON pointer: it must start with `/` (e.g. \"/id\", \"/choices/0/created\")"
        ));
    }
    let b = p.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        if c == b'~' && !matches!(b.get(i + 1), Some(b'0' | b'1')) {
            return Err(format!(
                "`{p}` is not a JSON pointer: `~` must be written `~0`, and `/` inside a key `~1`"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::{errors, parse, MINIMAL};
    use http::Method;
    use std::time::Duration;

    fn with_shadow(shadow: &str) -> String {
        format!(
            "{MINIMAL}[upstream.c]\naddrs = [\"127.0.0.1:3\"]\n[[layer]]\nname = \"l\"\n\
             [[layer.experiment]]\nname = \"e\"\ntraffic = 1.0\n\
             [[layer.experiment.variant]]\nname = \"control\"\nweight = 1\n\
             [[layer.experiment.variant]]\nname = \"t\"\nweight = 1\n\
             [layer.experiment.variant.shadow]\n{shadow}"
        )
    }

    #[test]
    fn a_shadow_gets_its_upstream_defaults_and_compare_settings() {
        let cfg = parse(&with_shadow(
            "upstream = \"c\"\nshare = 0.1\n\
             compare = { json_ignore = [\"/id\", \"/a~1b\"], float_tolerance = 1e-6 }\n",
        ))
        .unwrap();
        let e = &cfg.layers[0].experiments[0];
        assert!(e.variants[0].shadow.is_none());
        let s = e.variants[1].shadow.as_ref().unwrap();
        assert_eq!(s.upstream, 1);
        assert_eq!(s.share, 0.1);
        assert_eq!(s.methods, [Method::POST]);
        assert_eq!((s.max_body_bytes, s.max_response_bytes), (1 << 20, 1 << 20));
        assert_eq!(s.max_in_flight, 32);
        assert_eq!(s.timeout, Duration::from_secs(10));
        assert_eq!(s.compare.json_ignore, ["/id", "/a~1b"]);
        assert_eq!(s.compare.float_tolerance, 1e-6);
    }

    #[test]
    fn explicit_limits_and_methods_are_read() {
        let cfg = parse(&with_shadow(
            "upstream = \"c\"\nshare = 1\nmethods = [\"post\", \"GET\"]\n\
             max_body_bytes = \"2KiB\"\nmax_response_bytes = 4096\nmax_in_flight = 2\n\
             timeout = \"250ms\"\n",
        ))
        .unwrap();
        let s = cfg.layers[0].experiments[0].variants[1]
            .shadow
            .as_ref()
            .unwrap();
        assert_eq!(s.methods, [Method::POST, Method::GET]);
        assert_eq!((s.max_body_bytes, s.max_response_bytes), (2048, 4096));
        assert_eq!(s.max_in_flight, 2);
        assert_eq!(s.timeout, Duration::from_millis(250));
        assert!(s.selects(u64::MAX), "share 1 copies every request");
    }

    #[test]
    fn every_bad_value_is_reported_at_its_line_with_what_is_valid() {
        let e = errors(&with_shadow(
            "upstream = \"zz\"\nshare = 0\nmethods = [\"P OST\"]\nmax_body_bytes = 0\n\
             max_response_bytes = \"1TiB\"\nmax_in_flight = 0\ntimeout = \"0s\"\n\
             compare = { json_ignore = [\"id\", \"/a~2\"], float_tolerance = -1 }\n",
        ));
        let got: Vec<_> = e
            .iter()
            .map(|(l, p, m)| (*l, p.as_str(), m.as_str()))
            .collect();
        let p = "layer[0].experiment[0].variant[1].shadow";
        assert_eq!(
            got,
            [
                (19, &*format!("{p}.upstream"), "unknown upstream `zz` (valid: a, c)"),
                (20, &*format!("{p}.share"), "share 0 must be above 0 and at most 1 (e.g. 0.1 copies 10% of the variant's requests)"),
                (21, &*format!("{p}.methods[0]"), "`P OST` is not an HTTP method (e.g. \"POST\", \"GET\")"),
                (22, &*format!("{p}.max_body_bytes"), "0 bytes is out of range: above 0 and at most \"64MiB\""),
                (23, &*format!("{p}.max_response_bytes"), "1099511627776 bytes is out of range: above 0 and at most \"64MiB\""),
                (24, &*format!("{p}.max_in_flight"), "0 is out of range: between 1 and 10000"),
                (25, &*format!("{p}.timeout"), "`0s` must be longer than zero"),
                (26, &*format!("{p}.compare.json_ignore[0]"), "`id` is not a JSON pointer: it must start with `/` (e.g. \"/id\", \"/choices/0/created\")"),
                (26, &*format!("{p}.compare.json_ignore[1]"), "`/a~2` is not a JSON pointer: `~` must be written `~0`, and `/` inside a key `~1`"),
                (26, &*format!("{p}.compare.float_tolerance"), "-1 must be a number of at least 0 (e.g. 1e-6)"),
            ]
        );
    }

    #[test]
    fn a_shadow_without_upstream_or_share_and_unknown_keys_are_reported() {
        let e = errors(&with_shadow("methods = []\nsamples = 3\n"));
        let msgs: Vec<_> = e.iter().map(|(_, p, m)| format!("{p}: {m}")).collect();
        let p = "layer[0].experiment[0].variant[1].shadow";
        assert!(
            msgs.iter()
                .any(|m| m.starts_with(&format!("{p}: missing `upstream`"))),
            "{msgs:?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.starts_with(&format!("{p}: missing `share`"))),
            "{msgs:?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.starts_with(&format!("{p}.methods: an empty list"))),
            "{msgs:?}"
        );
        assert!(msgs.iter().any(|m| m.contains("samples")), "{msgs:?}");
    }

    #[test]
    fn the_copied_share_is_close_to_share_over_many_ids() {
        let cfg = parse(&with_shadow("upstream = \"c\"\nshare = 0.1\n")).unwrap();
        let s = cfg.layers[0].experiments[0].variants[1]
            .shadow
            .as_ref()
            .unwrap();
        let n = 100_000u64;
        let hits = (0..n)
            .filter(|i| {
                s.selects(xxhash_rust::xxh3::xxh3_64_with_seed(
                    &i.to_le_bytes(),
                    s.seed,
                ))
            })
            .count() as f64;
        // 10% of 100k: sd = sqrt(100000 · 0.1 · 0.9) ≈ 95; ±6 sd.
        assert!((hits - 10_000.0).abs() < 570.0, "{hits}");
    }
}
