//! What each fuzz target feeds to abgate and what it asserts about the answer: one
//! function per target, which panics when an invariant breaks. The targets in
//! `fuzz/fuzz_targets/` call them with libFuzzer's inputs; `tests/fuzz_corpora.rs`
//! includes this file by path and calls them with every file of `fuzz/corpus/<target>/`,
//! so CI replays the corpora on stable Rust with the same checks.
//!
//! Everything it calls is abgate's public API (the analysis line scanner is public but
//! hidden from the docs for this).

use abgate::analyze::scan;
use abgate::assign::identity::{self, CookieName, InvalidSource, Lookup};
use abgate::assign::{Assignments, RequestView, UnitIds};
use abgate::config::{Config, ConfigError, IdentitySettings};
use abgate::hash::BUCKETS;
use abgate::proxy::outcome::{parse_outcomes, OUTCOME_BODY_LIMIT};
use http::header::{HeaderMap, HeaderName, HeaderValue, COOKIE};
use serde_json::Value;
use std::path::Path;
use std::sync::OnceLock;

/// Where the configs of the targets claim to live: relative paths in a fuzzed config
/// (event and state directories, PEM files) resolve under a directory that does not exist.
const CONFIG_PATH: &str = "/nonexistent/abgate-fuzz/abgate.toml";

/// The smallest valid config (one upstream, the default route) plus what a target needs.
fn compiled(extra: &str) -> Config {
    let text = format!(
        "[upstream.a]\naddrs = [\"127.0.0.1:1\"]\n[routing]\ndefault_upstream = \"a\"\n{extra}"
    );
    abgate::config::parse_str(&text, Path::new(CONFIG_PATH))
        .unwrap_or_else(|e| panic!("the fixed config of a fuzz target is invalid: {e}"))
}

// ---------------------------------------------------------------------------------------
// identity

/// The trusted header of the identity target's config.
const TRUSTED_HEADER: &str = "x-user-id";

fn identity_settings() -> &'static IdentitySettings {
    static SETTINGS: OnceLock<IdentitySettings> = OnceLock::new();
    SETTINGS.get_or_init(|| compiled("[identity]\nheader = \"x-user-id\"\n").identity)
}

/// The identity of a request: the trusted header, the identity cookie (any number of
/// `Cookie` headers) and the lookup the proxy makes of both.
///
/// Input: the cookie name on the first line (a name the config accepts, an RFC 6265
/// token; anything else means `abgate_uid`), then one request header per line,
/// `name: value` (lines that are not a valid header are skipped).
///
/// Checks: `identity::cookie` (a substring search, built for the hot path) answers
/// exactly what a plain split of every header at `;` answers; a found cookie value is
/// 1 to 256 RFC 6265 cookie-octets and reads back from the `Cookie` pair abgate would
/// set; a trusted-header id is the trimmed header, 1 to 256 bytes of UTF-8 without
/// control characters; `user_id` prefers the header, falls back to the cookie and
/// reports exactly the malformed sources it skipped.
pub fn identity(data: &[u8]) {
    let mut lines = data.split(|&b| b == b'\n');
    let name = lines
        .next()
        .and_then(|n| std::str::from_utf8(n).ok())
        .filter(|n| is_token(n))
        .unwrap_or("abgate_uid");
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let value = &line[colon + 1..];
        let value = value.strip_prefix(b" ").unwrap_or(value);
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(value),
        ) {
            headers.append(n, v);
        }
    }

    let mut settings = identity_settings().clone();
    settings.cookie = CookieName::new(name);
    let cookie = identity::cookie(&headers, &settings.cookie);
    assert_eq!(
        cookie,
        cookie_by_split(&headers, name),
        "cookie {name:?} in {headers:?}"
    );
    if let Lookup::Found(v) = cookie {
        assert!(
            !v.is_empty() && v.len() <= identity::MAX_ID_LEN && v.bytes().all(cookie_octet),
            "cookie value {v:?}"
        );
        let mut again = HeaderMap::new();
        again.append(
            COOKIE,
            HeaderValue::from_str(&format!("{name}={v}")).unwrap(),
        );
        assert_eq!(identity::cookie(&again, &settings.cookie), Lookup::Found(v));
    }

    let trusted = settings.header.as_ref().expect("the config names a header");
    assert_eq!(trusted.as_str(), TRUSTED_HEADER);
    let header = identity::header_value(&headers, trusted);
    match (header, headers.get(trusted)) {
        (Lookup::Absent, None) => {}
        (Lookup::Found(v), Some(raw)) => {
            assert_eq!(v.as_bytes(), raw.as_bytes().trim_ascii(), "header {raw:?}");
            assert!(is_id(v), "header id {v:?}");
        }
        (Lookup::Invalid, Some(raw)) => {
            let ok = std::str::from_utf8(raw.as_bytes().trim_ascii()).is_ok_and(is_id);
            assert!(!ok, "a valid header id was refused: {raw:?}");
        }
        (h, raw) => panic!("header lookup {h:?} for {raw:?}"),
    }

    let mut invalid = Vec::new();
    let user = identity::user_id(&settings, &headers, |s| invalid.push(s));
    let (expected, mut expected_invalid) = match header {
        Lookup::Found(v) => (Some(v), vec![]),
        Lookup::Invalid => (None, vec![InvalidSource::Header]),
        Lookup::Absent => (None, vec![]),
    };
    // The cookie is looked at only when the header gave no id.
    let expected = match (expected, cookie) {
        (Some(v), _) => Some(v),
        (None, Lookup::Found(v)) => Some(v),
        (None, Lookup::Invalid) => {
            expected_invalid.push(InvalidSource::Cookie);
            None
        }
        (None, Lookup::Absent) => None,
    };
    assert_eq!(user, expected);
    assert_eq!(invalid, expected_invalid);
}

/// A cookie name as the config accepts it (RFC 6265 token).
fn is_token(n: &str) -> bool {
    !n.is_empty()
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// RFC 6265 cookie-octet.
fn cookie_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E)
}

/// A unit id as documented, from any source (header, cookie, outcome): the one rule of
/// [`printable_id`].
fn is_id(v: &str) -> bool {
    printable_id(v)
}

/// The identity cookie the slow, obvious way: split every `Cookie` header at `;`; the
/// first pair named `name` with a valid value wins; a named pair with a bad value makes
/// the cookie invalid unless a valid one follows.
fn cookie_by_split<'a>(headers: &'a HeaderMap, name: &str) -> Lookup<'a> {
    let mut result = Lookup::Absent;
    for h in headers.get_all(COOKIE) {
        for pair in h.as_bytes().split(|&b| b == b';') {
            let Some(rest) = pair.trim_ascii().strip_prefix(name.as_bytes()) else {
                continue;
            };
            let Some(value) = rest.trim_ascii_start().strip_prefix(b"=") else {
                continue;
            };
            let mut v = value.trim_ascii();
            if v.len() >= 2 && v.starts_with(b"\"") && v.ends_with(b"\"") {
                v = &v[1..v.len() - 1];
            }
            if !v.is_empty()
                && v.len() <= identity::MAX_ID_LEN
                && v.iter().all(|&b| cookie_octet(b))
            {
                return Lookup::Found(std::str::from_utf8(v).expect("cookie-octets are ASCII"));
            }
            result = Lookup::Invalid;
        }
    }
    result
}

// ---------------------------------------------------------------------------------------
// outcome

/// The identity of the outcome request, when the target gives it one.
const REQUEST_IDENTITY: &str = "u-request";

fn outcome_config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        compiled(
            "[[metric]]\nname = \"conversion\"\nkind = \"binomial\"\n\
             [[metric]]\nname = \"revenue\"\nkind = \"continuous\"\n",
        )
    })
}

/// An outcome API body (`POST /_abgate/outcome`), validated by `parse_outcomes` for a
/// config with the metrics `conversion` and `revenue`, once for a request without an
/// identity and once for a request with one.
///
/// Input: the body (over the 64 KiB limit it is skipped: the endpoint answers 413
/// before parsing).
///
/// Checks: an accepted body is a JSON object or a non-empty array, with one item per
/// element in order, each naming a declared metric, with the body's finite value, and a
/// unit id that is the item's own (1 to 256 bytes, no control character, C1 included,
/// no U+2028/U+2029) or, when it has none, the request's identity; a refused item's
/// index is an index of the body; the identity only fills in missing unit ids (what is
/// accepted without it is accepted the same with it; with it, a body fails no earlier).
pub fn outcome(body: &[u8]) {
    if body.len() > OUTCOME_BODY_LIMIT {
        return;
    }
    let cfg = outcome_config();
    let json = serde_json::from_slice::<Value>(body).ok();
    let items: Option<Vec<&Value>> = match &json {
        Some(Value::Array(a)) => Some(a.iter().collect()),
        Some(v @ Value::Object(_)) => Some(vec![v]),
        _ => None,
    };
    let anonymous = parse_outcomes(body, cfg, None);
    let identified = parse_outcomes(body, cfg, Some(REQUEST_IDENTITY));
    for (result, identity) in [(&anonymous, None), (&identified, Some(REQUEST_IDENTITY))] {
        match result {
            Ok(out) => {
                let items = items
                    .as_ref()
                    .expect("accepted a body that is not an object or array");
                assert!(!out.is_empty());
                assert_eq!(out.len(), items.len());
                for (o, item) in out.iter().zip(items) {
                    assert!(o.metric < cfg.metrics.len());
                    assert_eq!(item["metric"].as_str(), Some(&*cfg.metrics[o.metric].name));
                    assert!(o.value.is_finite());
                    assert_eq!(item["value"].as_f64(), Some(o.value));
                    match item.get("unit_id") {
                        None | Some(Value::Null) => assert_eq!(Some(&*o.unit_id), identity),
                        Some(v) => assert_eq!(v.as_str(), Some(&*o.unit_id)),
                    }
                    assert!(printable_id(&o.unit_id), "accepted unit id {:?}", o.unit_id);
                }
            }
            Err((message, item)) => {
                assert!(!message.is_empty());
                if let Some(i) = item {
                    let items = items
                        .as_ref()
                        .expect("blamed an item of a body without items");
                    assert!(*i < items.len(), "item {i} of {}", items.len());
                }
            }
        }
    }
    if let Ok(out) = &anonymous {
        assert_eq!(identified.as_ref().ok(), Some(out));
    }
    if let Err((_, Some(i))) = &identified {
        assert!(
            matches!(&anonymous, Err((_, Some(j))) if j <= i),
            "{anonymous:?} vs {identified:?}"
        );
    }
}

/// What the docs say a unit id is: 1 to 256 bytes of printable UTF-8 (no C0 or C1
/// control, DEL, U+2028 or U+2029).
fn printable_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= identity::MAX_ID_LEN
        && s.chars()
            .all(|c| !c.is_control() && c != '\u{2028}' && c != '\u{2029}')
}

// ---------------------------------------------------------------------------------------
// config

/// A config file through the loader (`abgate::config::parse_str`: `abgate check`,
/// start-up and every reload).
///
/// Input: the file's text (not UTF-8: skipped, `load_file` refuses it before parsing; an
/// upstream address that would need a DNS look-up: skipped, the fuzzer stays offline).
///
/// Checks, for a refused file: at least one diagnostic, each with a non-empty message
/// and a line (when it has one) within the file, in file order (unlocated ones last);
/// the error renders with its count. For an accepted file: its version is the text's;
/// the compiled form is consistent (the default upstream and every variant's upstream
/// exist; experiments own disjoint bucket ranges within `0..BUCKETS`; thresholds rise to
/// `BUCKETS`, one per variant; control is a variant); assigning a few units never
/// panics and yields at most one assignment per layer, each naming an existing
/// experiment and variant.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if resolves_host_names(text) {
        return;
    }
    let path = Path::new(CONFIG_PATH);
    match abgate::config::parse_str(text, path) {
        Ok(cfg) => {
            assert_eq!(cfg.version, abgate::config::config_version(text));
            config_is_consistent(&cfg);
            assignments_are_consistent(&cfg);
        }
        Err(e) => errors_are_located(text, path, &e),
    }
}

/// Whether an `[upstream.*] addrs` entry of `text` is a `host:port` that the loader
/// would resolve (a name rather than an IP address).
fn resolves_host_names(text: &str) -> bool {
    // Text that is not TOML never gets as far as the upstreams.
    let Ok(doc) = toml::from_str::<toml::Table>(text) else {
        return false;
    };
    let Some(toml::Value::Table(upstreams)) = doc.get("upstream") else {
        return false;
    };
    upstreams
        .values()
        .filter_map(|u| u.get("addrs")?.as_array())
        .flatten()
        .filter_map(toml::Value::as_str)
        .any(|a| {
            a.parse::<std::net::SocketAddr>().is_err()
                && a.rsplit_once(':')
                    .is_some_and(|(_, port)| port.parse::<u16>().is_ok())
        })
}

fn errors_are_located(text: &str, path: &Path, e: &ConfigError) {
    assert_eq!(e.file, path);
    assert!(!e.diagnostics.is_empty(), "refused with no diagnostic");
    let lines = text.bytes().filter(|&b| b == b'\n').count() + 1;
    for d in &e.diagnostics {
        assert!(!d.message.trim().is_empty(), "empty message: {d:?}");
        if let Some(line) = d.line {
            assert!((1..=lines).contains(&line), "line {line} of {lines}: {d:?}");
        }
    }
    let order = |d: &abgate::config::Diagnostic| d.line.unwrap_or(usize::MAX);
    assert!(
        e.diagnostics
            .windows(2)
            .all(|w| order(&w[0]) <= order(&w[1])),
        "not in file order: {:?}",
        e.diagnostics
    );
    let n = e.diagnostics.len();
    let shown = e.to_string();
    let plural = if n == 1 { "" } else { "s" };
    assert!(
        shown.contains(&format!(": {n} error{plural} in config")),
        "{shown}"
    );
}

fn config_is_consistent(cfg: &Config) {
    assert!(cfg.default_upstream < cfg.upstreams.len());
    for layer in &cfg.layers {
        let mut ranges: Vec<(u32, u32)> = Vec::new();
        for e in &layer.experiments {
            assert!(
                e.start <= e.end && e.end <= BUCKETS,
                "{}: {}..{}",
                e.name,
                e.start,
                e.end
            );
            for &(s, end) in &ranges {
                assert!(
                    e.end <= s || end <= e.start || e.start == e.end || s == end,
                    "{} overlaps",
                    e.name
                );
            }
            ranges.push((e.start, e.end));
            assert!(!e.variants.is_empty());
            assert_eq!(e.thresholds.len(), e.variants.len());
            assert!(
                e.thresholds.windows(2).all(|w| w[0] <= w[1]),
                "{:?}",
                e.thresholds
            );
            assert_eq!(e.thresholds.last(), Some(&BUCKETS));
            assert!(e.control < e.variants.len());
            for v in &e.variants {
                assert!(v.upstream.is_none_or(|u| u < cfg.upstreams.len()));
            }
        }
    }
}

fn assignments_are_consistent(cfg: &Config) {
    let mut headers = HeaderMap::new();
    headers.insert(TRUSTED_HEADER, HeaderValue::from_static("u-1"));
    headers.insert("x-platform", HeaderValue::from_static("ios"));
    headers.insert("x-tenant", HeaderValue::from_static("tenant-9"));
    let req = RequestView {
        method: "POST",
        path: "/v1/chat/completions",
        query: Some("stream=true"),
        headers: &headers,
    };
    for user in ["u-1", "Dj2V8C5crrw3a7G6dHZD3Q", "user-1234567"] {
        let ids = UnitIds {
            user: Some(user),
            session: Some("s-1"),
            request: Some("01M834KJ36J9JTBGECVT6VKNS6"),
        };
        let mut out = Assignments::new();
        let held_out = abgate::assign::assign(cfg, &ids, &req, &mut out);
        assert!(!held_out || out.is_empty());
        assert!(out.windows(2).all(|w| w[0].layer < w[1].layer), "{out:?}");
        for a in &out {
            let layer = &cfg.layers[a.layer as usize];
            let exp = &layer.experiments[a.experiment as usize];
            assert!((a.variant as usize) < exp.variants.len());
            assert!(!a.forced);
        }
    }
}

// ---------------------------------------------------------------------------------------
// analyze_line

/// Event lines as `abgate analyze` reads them (`scan::parse`: a fast scanner that hands
/// whatever it is unsure of to `serde_json`).
///
/// Input: an event log excerpt; each `\n`-separated line is one input.
///
/// Checks: the fast path never answers differently from `serde_json` alone: a line is
/// read by both or refused by both, and read as the same fields. (serde does not check
/// that the strings it skips are UTF-8, so neither does the analysis.)
pub fn analyze_line(data: &[u8]) {
    for line in data.split(|&b| b == b'\n') {
        let mut fast = scan::Line::empty();
        let read = scan::parse(line, &mut fast);
        let by_serde = serde_json::from_slice::<scan::Line>(line);
        match (read, by_serde) {
            (Ok(()), Ok(slow)) => assert_eq!(fast, slow, "{}", String::from_utf8_lossy(line)),
            (Err(_), Err(_)) => {}
            (Ok(()), Err(e)) => panic!(
                "read a line serde refuses ({e}): {}",
                String::from_utf8_lossy(line)
            ),
            (Err(e), Ok(_)) => panic!(
                "refused a line serde reads ({e}): {}",
                String::from_utf8_lossy(line)
            ),
        }
    }
}
