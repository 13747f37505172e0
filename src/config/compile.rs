//! Validation of a [`RawConfig`] into the immutable [`Config`].
//!
//! Everything the request path needs is precomputed here: hash seeds, bucket ranges,
//! cumulative variant thresholds, parsed header names and values, upstream indices,
//! the `layer.experiment=variant` labels. Nothing in [`Config`] changes after this.

use super::model::*;
use super::raw::*;
use super::{parse_duration, Diagnostics};
use crate::assign::hash::{seed_of, BUCKETS};
use crate::assign::identity::CookieName;
use crate::events::AssignmentNames;
use http::{HeaderName, HeaderValue};
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

fn dur(d: &mut Diagnostics, path: &str, v: &Option<String>, default: &str) -> Duration {
    let s = v.as_deref().unwrap_or(default);
    match parse_duration(s) {
        Ok(x) if x.is_zero() => {
            d.push(path, format!("`{s}` must be longer than zero"));
            parse_duration(default).unwrap_or(Duration::from_secs(1))
        }
        Ok(x) => x,
        Err(m) => {
            d.push(path, m);
            parse_duration(default).unwrap_or(Duration::from_secs(1))
        }
    }
}

fn name_ok(d: &mut Diagnostics, path: &str, v: &Option<String>, what: &str) -> Option<Arc<str>> {
    match v.as_deref() {
        None => {
            d.push(path, format!("missing: every {what} needs a `name`"));
            None
        }
        Some(n)
            if n.is_empty()
                || !n
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') =>
        {
            d.push(
                path,
                format!("`{n}` is not a valid name; use letters, digits, `_` and `-`"),
            );
            None
        }
        Some(n) => Some(Arc::from(n)),
    }
}

fn header_name(d: &mut Diagnostics, path: &str, s: &str) -> Option<HeaderName> {
    match HeaderName::from_bytes(s.as_bytes()) {
        Ok(h) => Some(h),
        Err(_) => {
            d.push(
                path,
                format!("`{s}` is not a valid HTTP header name; use letters, digits and `-`"),
            );
            None
        }
    }
}

fn share(d: &mut Diagnostics, path: &str, v: Option<f64>, what: &str) -> Option<f64> {
    match v {
        Some(x) if x.is_finite() && (0.0..=1.0).contains(&x) => Some(x),
        Some(x) => {
            d.push(
                path,
                format!("{what} {x} must be between 0 and 1 (e.g. 0.5)"),
            );
            None
        }
        None => None,
    }
}

/// Validate `raw`. Returns `Some` only if `d` received no diagnostic.
pub(super) fn compile(
    raw: RawConfig,
    file: &Path,
    version: String,
    d: &mut Diagnostics,
) -> Option<Config> {
    let base = file.parent().unwrap_or(Path::new("."));
    let resolve = |p: &str| {
        let p = PathBuf::from(p);
        if p.is_absolute() {
            p
        } else {
            base.join(p)
        }
    };

    // [server]
    let listen = raw
        .server
        .listen
        .clone()
        .unwrap_or_else(|| vec!["127.0.0.1:8080".into()]);
    if listen.is_empty() {
        d.push(
            "server.listen",
            "needs at least one address, e.g. [\"127.0.0.1:8080\"]",
        );
    }
    for (i, a) in listen.iter().enumerate() {
        if a.parse::<SocketAddr>().is_err() {
            d.push(
                &format!("server.listen[{i}]"),
                format!("`{a}` is not an `ip:port` address, e.g. \"127.0.0.1:8080\""),
            );
        }
    }
    let threads = match raw.server.threads {
        None => 2,
        Some(t) if (1..=256).contains(&t) => t as usize,
        Some(t) => {
            d.push("server.threads", format!("{t} must be between 1 and 256"));
            1
        }
    };
    let outcome_path = raw
        .server
        .outcome_path
        .clone()
        .unwrap_or_else(|| "/_abgate/outcome".into());
    if !outcome_path.starts_with('/') {
        d.push(
            "server.outcome_path",
            format!("`{outcome_path}` must start with `/`"),
        );
    }
    let server = ServerSettings {
        listen,
        threads,
        shutdown_timeout: dur(
            d,
            "server.shutdown_timeout",
            &raw.server.shutdown_timeout,
            "30s",
        ),
        debug_header: raw.server.debug_header.unwrap_or(false),
        outcome_path,
        preserve_header_case: raw.server.preserve_header_case.unwrap_or(false),
    };

    // [admin]
    let admin_listen = raw
        .admin
        .listen
        .clone()
        .unwrap_or_else(|| "127.0.0.1:9100".into());
    if admin_listen.parse::<SocketAddr>().is_err() {
        d.push(
            "admin.listen",
            format!("`{admin_listen}` is not an `ip:port` address, e.g. \"127.0.0.1:9100\""),
        );
    }
    let admin = AdminSettings {
        listen: admin_listen,
        token_env: raw
            .admin
            .token_env
            .clone()
            .unwrap_or_else(|| "ABGATE_ADMIN_TOKEN".into()),
        request_metrics: raw.admin.request_metrics.unwrap_or(true),
    };

    // [identity]
    let cookie_name_ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    let ident_header = raw
        .identity
        .header
        .as_deref()
        .and_then(|h| header_name(d, "identity.header", h));
    let cookie = raw
        .identity
        .cookie
        .clone()
        .unwrap_or_else(|| "abgate_uid".into());
    if !cookie_name_ok(&cookie) {
        d.push(
            "identity.cookie",
            format!("`{cookie}` is not a valid cookie name"),
        );
    }
    let session_cookie = raw
        .identity
        .session_cookie
        .clone()
        .unwrap_or_else(|| "abgate_sid".into());
    if !cookie_name_ok(&session_cookie) {
        d.push(
            "identity.session_cookie",
            format!("`{session_cookie}` is not a valid cookie name"),
        );
    }
    let identity = IdentitySettings {
        header: ident_header,
        cookie: CookieName::new(&cookie),
        session_cookie: CookieName::new(&session_cookie),
        mint: raw.identity.mint.unwrap_or(true),
        max_age: dur(d, "identity.max_age", &raw.identity.max_age, "365d"),
        secure: raw.identity.secure.unwrap_or(false),
    };

    // [events]
    let rotate_bytes = match raw.events.rotate_bytes {
        None => 256 * 1024 * 1024,
        Some(b) if b >= 4096 => b as u64,
        Some(b) => {
            d.push(
                "events.rotate_bytes",
                format!("{b} is too small; use at least 4096"),
            );
            4096
        }
    };
    let queue = match raw.events.queue {
        None => 65536,
        Some(q) if (1..=16_777_216).contains(&q) => q as usize,
        Some(q) => {
            d.push(
                "events.queue",
                format!("{q} must be between 1 and 16777216"),
            );
            1
        }
    };
    let events = EventSettings {
        dir: resolve(raw.events.dir.as_deref().unwrap_or("./data/events")),
        rotate_bytes,
        flush_interval: dur(
            d,
            "events.flush_interval",
            &raw.events.flush_interval,
            "200ms",
        ),
        queue,
        hash_unit_ids: raw.events.hash_unit_ids.unwrap_or(false),
        enabled: raw.events.enabled.unwrap_or(true),
        hash_key_env: raw
            .events
            .hash_key_env
            .clone()
            .unwrap_or_else(|| "ABGATE_HASH_KEY".into()),
    };
    let state_dir = resolve(raw.state.dir.as_deref().unwrap_or("./data/state"));

    // [upstream.*]
    let mut upstreams = Vec::new();
    for (name, u) in &raw.upstream {
        let path = format!("upstream.{name}");
        let name_arc = name_ok(d, &path, &Some(name.clone()), "upstream");
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
        let spec = UpstreamSpec {
            name: name_arc.unwrap_or_else(|| Arc::from(name.as_str())),
            addrs,
            connect_timeout: dur(
                d,
                &format!("{path}.connect_timeout"),
                &u.connect_timeout,
                "1s",
            ),
            read_timeout: dur(d, &format!("{path}.read_timeout"), &u.read_timeout, "30s"),
            health_check_interval: dur(
                d,
                &format!("{path}.health_check_interval"),
                &u.health_check_interval,
                "5s",
            ),
        };
        upstreams.push(spec);
    }
    let upstream_index = |n: &str| upstreams.iter().position(|u| &*u.name == n);
    let names: Vec<String> = upstreams.iter().map(|u| u.name.to_string()).collect();
    let valid_upstreams = if names.is_empty() {
        "no [upstream.NAME] is defined; add one".to_string()
    } else {
        format!("valid: {}", names.join(", "))
    };

    // [routing]
    let default_upstream = match raw
        .routing
        .as_ref()
        .and_then(|r| r.default_upstream.as_deref())
    {
        None => {
            d.push(
                "routing",
                format!(
                    "missing `[routing] default_upstream`: requests outside every experiment need a backend ({valid_upstreams})"
                ),
            );
            0
        }
        Some(n) => upstream_index(n).unwrap_or_else(|| {
            d.push(
                "routing.default_upstream",
                format!("unknown upstream `{n}` ({valid_upstreams})"),
            );
            0
        }),
    };

    // [holdout]
    let holdout = raw.holdout.as_ref().map(|h| {
        let t = share(d, "holdout.traffic", h.traffic, "holdout traffic").unwrap_or(0.0);
        if h.traffic.is_none() {
            d.push("holdout", "missing `traffic`, e.g. traffic = 0.05");
        }
        let salt = h.salt.clone().unwrap_or_else(|| "abgate-holdout".into());
        Holdout {
            threshold: (t * BUCKETS as f64).round() as u32,
            seed: seed_of(&salt),
        }
    });

    // [[metric]]
    let mut metrics: Vec<MetricDef> = Vec::new();
    for (i, m) in raw.metric.iter().enumerate() {
        let path = format!("metric[{i}]");
        let Some(name) = name_ok(d, &path, &m.name, "metric") else {
            continue;
        };
        if metrics.iter().any(|x| x.name == name) || &*name == "latency_ms" || &*name == "error" {
            d.push(
                &format!("{path}.name"),
                format!("metric `{name}` is defined twice or shadows a built-in (`latency_ms`, `error`); pick another name"),
            );
        }
        let kind = match m.kind.as_deref() {
            Some("binomial") => MetricKind::Binomial,
            Some("continuous") => MetricKind::Continuous,
            Some(k) => {
                d.push(
                    &format!("{path}.kind"),
                    format!("`{k}` is not a metric kind; valid: binomial, continuous"),
                );
                MetricKind::Continuous
            }
            None => {
                d.push(&path, "missing `kind` (binomial or continuous)");
                MetricKind::Continuous
            }
        };
        let from_response_header = m
            .from_response_header
            .as_deref()
            .and_then(|h| header_name(d, &format!("{path}.from_response_header"), h));
        metrics.push(MetricDef {
            name,
            kind,
            higher_is_better: m.higher_is_better.unwrap_or(true),
            from_response_header,
        });
    }
    let metric_names: Vec<&str> = metrics.iter().map(|m| &*m.name).collect();
    let valid_metrics = if metric_names.is_empty() {
        "no [[metric]] is declared; declare it first".to_string()
    } else {
        format!("declared: {}", metric_names.join(", "))
    };

    // [[layer]]
    let mut layers = Vec::new();
    let mut seen_layers = HashSet::new();
    let mut seen_experiments: HashSet<String> = HashSet::new();
    // For the routing-overlap check: per layer, the path prefixes its routing
    // experiments can claim (None = any path).
    let mut routing_scopes: Vec<(usize, Option<Vec<String>>)> = Vec::new();
    for (li, l) in raw.layer.iter().enumerate() {
        let lpath = format!("layer[{li}]");
        let lname = name_ok(d, &lpath, &l.name, "layer").unwrap_or_else(|| Arc::from("?"));
        if !seen_layers.insert(lname.to_string()) {
            d.push(
                &format!("{lpath}.name"),
                format!("layer `{lname}` is defined twice; layer names must be unique"),
            );
        }
        let salt = l.salt.clone().unwrap_or_else(|| lname.to_string());
        let mut experiments = Vec::new();
        let mut next_start = 0u32;
        let mut layer_unit: Option<Unit> = None;
        let mut scope: Option<Vec<String>> = Some(Vec::new());
        let mut routes = false;
        for (ei, e) in l.experiment.iter().enumerate() {
            let epath = format!("{lpath}.experiment[{ei}]");
            let ename = name_ok(d, &epath, &e.name, "experiment").unwrap_or_else(|| Arc::from("?"));
            if &*ename == "none" {
                d.push(
                    &format!("{epath}.name"),
                    "`none` is reserved (requests outside every experiment); pick another name",
                );
            }
            if !seen_experiments.insert(ename.to_string()) {
                d.push(&format!("{epath}.name"), format!("experiment `{ename}` is defined twice; experiment names must be unique across the file"));
            }
            let traffic = match e.traffic {
                None => {
                    d.push(&epath, "missing `traffic` (share of the layer, e.g. 0.5)");
                    0.0
                }
                t => share(d, &format!("{epath}.traffic"), t, "traffic").unwrap_or(0.0),
            };
            let start = match e.offset {
                None => next_start,
                o => share(d, &format!("{epath}.offset"), o, "offset")
                    .map(|o| (o * BUCKETS as f64).round() as u32)
                    .unwrap_or(next_start),
            };
            let end = start + (traffic * BUCKETS as f64).round() as u32;
            if end > BUCKETS {
                d.push(
                    &format!("{epath}.traffic"),
                    format!(
                        "experiment `{ename}` would end at {:.4} of layer `{lname}`: the experiments of a layer share at most 1.0 of its traffic; lower `traffic` or `offset`",
                        end as f64 / BUCKETS as f64
                    ),
                );
            }
            for other in &experiments {
                let o: &Experiment = other;
                if start < o.end && o.start < end {
                    d.push(
                        &format!("{epath}.traffic"),
                        format!(
                            "bucket range [{:.4}, {:.4}) overlaps experiment `{}` [{:.4}, {:.4}) in layer `{lname}`; set `offset` so the ranges are disjoint",
                            start as f64 / BUCKETS as f64,
                            end as f64 / BUCKETS as f64,
                            o.name,
                            o.start as f64 / BUCKETS as f64,
                            o.end as f64 / BUCKETS as f64
                        ),
                    );
                }
            }
            next_start = end.min(BUCKETS);
            let unit = match e.unit.as_deref().unwrap_or("user") {
                "user" => Unit::User,
                "session" => Unit::Session,
                "request" => Unit::Request,
                u if u.starts_with("header:") => header_name(d, &format!("{epath}.unit"), &u[7..])
                    .map(Unit::Header)
                    .unwrap_or(Unit::User),
                u => {
                    d.push(
                        &format!("{epath}.unit"),
                        format!(
                            "`{u}` is not a unit; valid: user, session, request, header:<name>"
                        ),
                    );
                    Unit::User
                }
            };
            match &layer_unit {
                None => layer_unit = Some(unit.clone()),
                Some(lu) if *lu != unit => d.push(
                    &format!("{epath}.unit"),
                    format!(
                        "all experiments of layer `{lname}` must share one unit (the layer hashes it to keep experiments exclusive); this one is `{}`, earlier ones `{}`; move it to another layer",
                        unit.label(),
                        lu.label()
                    ),
                ),
                _ => {}
            }
            let metric_ref = |d: &mut Diagnostics, p: &str, m: &str| -> Option<Arc<str>> {
                match metrics.iter().find(|x| &*x.name == m) {
                    Some(x) => Some(x.name.clone()),
                    None => {
                        d.push(p, format!("unknown metric `{m}` ({valid_metrics})"));
                        None
                    }
                }
            };
            let primary_metric = e
                .primary_metric
                .as_deref()
                .and_then(|m| metric_ref(d, &format!("{epath}.primary_metric"), m));
            let emetrics = e
                .metrics
                .iter()
                .enumerate()
                .filter_map(|(i, m)| metric_ref(d, &format!("{epath}.metrics[{i}]"), m))
                .collect();
            let targeting =
                compile_targeting(d, &format!("{epath}.targeting"), e.targeting.as_ref());

            // variants
            let mut variants = Vec::new();
            let mut total = 0.0;
            if e.variant.len() < 2 {
                d.push(&epath, format!("experiment `{ename}` needs at least two [[layer.experiment.variant]] (a control and a treatment)"));
            }
            let mut vnames = HashSet::new();
            let mut exp_routes = false;
            for (vi, v) in e.variant.iter().enumerate() {
                let vpath = format!("{epath}.variant[{vi}]");
                let vname =
                    name_ok(d, &vpath, &v.name, "variant").unwrap_or_else(|| Arc::from("?"));
                if !vnames.insert(vname.to_string()) {
                    d.push(
                        &format!("{vpath}.name"),
                        format!("variant `{vname}` appears twice in experiment `{ename}`"),
                    );
                }
                let weight = match v.weight {
                    None => {
                        d.push(&vpath, "missing `weight` (a positive number, e.g. 50)");
                        0.0
                    }
                    Some(w) if w.is_finite() && w > 0.0 => w,
                    Some(w) => {
                        d.push(
                            &format!("{vpath}.weight"),
                            format!("{w} must be a positive number"),
                        );
                        0.0
                    }
                };
                total += weight;
                let upstream = v.upstream.as_deref().and_then(|u| {
                    upstream_index(u).or_else(|| {
                        d.push(
                            &format!("{vpath}.upstream"),
                            format!("unknown upstream `{u}` ({valid_upstreams})"),
                        );
                        None
                    })
                });
                if v.upstream.is_some() {
                    exp_routes = true;
                }
                let mut headers = Vec::new();
                for (k, val) in &v.headers {
                    let hp = format!("{vpath}.headers.{k}");
                    let name = header_name(d, &hp, k);
                    let value = HeaderValue::from_str(val).map_err(|_| {
                        d.push(&hp, format!("`{val}` is not a valid HTTP header value (visible ASCII and spaces only)"));
                    });
                    if let (Some(n), Ok(v)) = (name, value) {
                        if n.as_str().starts_with("x-abgate-") || n == http::header::HOST {
                            d.push(
                                &hp,
                                format!(
                                    "`{n}` is managed by abgate and cannot be set by a variant"
                                ),
                            );
                        }
                        headers.push((n, v));
                    }
                }
                variants.push(Variant {
                    label: Arc::from(format!("{lname}.{ename}={vname}")),
                    name: vname,
                    weight,
                    upstream,
                    headers,
                });
            }
            let control = variants
                .iter()
                .position(|v| &*v.name == "control")
                .unwrap_or(0);
            let mut thresholds = Vec::new();
            let mut acc = 0.0;
            for v in &variants {
                acc += v.weight;
                let t = if total > 0.0 {
                    (acc / total * BUCKETS as f64).round() as u32
                } else {
                    0
                };
                thresholds.push(t);
            }
            if let Some(last) = thresholds.last_mut() {
                *last = BUCKETS;
            }
            if exp_routes {
                routes = true;
                if targeting.path_prefix.is_empty() {
                    scope = None;
                } else if let Some(s) = scope.as_mut() {
                    s.extend(targeting.path_prefix.iter().cloned());
                }
            }
            let guardrails = e
                .guardrails
                .as_ref()
                .map(|g| compile_guardrails(d, &format!("{epath}.guardrails"), g));
            let names = |v: usize, served: usize| {
                Arc::new(AssignmentNames::new(
                    lname.clone(),
                    ename.clone(),
                    variants[v].name.clone(),
                    variants[served].name.clone(),
                ))
            };
            let exposure_names = (0..variants.len())
                .map(|v| [names(v, v), names(v, control)])
                .collect();
            experiments.push(Experiment {
                seed: seed_of(e.salt.as_deref().unwrap_or(&ename)),
                name: ename,
                layer: li,
                traffic,
                start,
                end: end.min(BUCKETS),
                unit,
                primary_metric,
                metrics: emetrics,
                targeting,
                variants,
                thresholds,
                control,
                guardrails,
                exposure_names,
            });
        }
        if routes {
            routing_scopes.push((li, scope));
        }
        layers.push(Layer {
            name: lname,
            seed: seed_of(&salt),
            experiments,
        });
    }
    // At most one layer may route a given request.
    for (i, (la, sa)) in routing_scopes.iter().enumerate() {
        for (lb, sb) in &routing_scopes[i + 1..] {
            let overlap = match (sa, sb) {
                (None, _) | (_, None) => true,
                (Some(a), Some(b)) => a.iter().any(|x| {
                    b.iter()
                        .any(|y| x.starts_with(y.as_str()) || y.starts_with(x.as_str()))
                }),
            };
            if overlap {
                d.push(
                    &format!("layer[{lb}]"),
                    format!(
                        "layers `{}` and `{}` could both route the same request (both have variants with `upstream`); give their routing experiments disjoint `targeting.path_prefix`, or move routing into one layer",
                        layers[*la].name, layers[*lb].name
                    ),
                );
            }
        }
    }

    if !d.is_empty() {
        return None;
    }
    let layer_uses = |u: &Unit| {
        layers
            .iter()
            .any(|l| l.experiments.first().is_some_and(|e| &e.unit == u))
    };
    let (uses_session, uses_request_unit) =
        (layer_uses(&Unit::Session), layer_uses(&Unit::Request));
    Some(Config {
        uses_session,
        uses_request_unit,
        version,
        source: file.to_path_buf(),
        server,
        admin,
        identity,
        events,
        state_dir,
        upstreams,
        default_upstream,
        holdout,
        metrics,
        layers,
    })
}

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

fn compile_targeting(d: &mut Diagnostics, path: &str, t: Option<&RawTargeting>) -> Targeting {
    let Some(t) = t else {
        return Targeting::default();
    };
    let path_prefix: Vec<String> = t
        .path_prefix
        .clone()
        .map(|p| p.into_vec())
        .unwrap_or_default();
    for p in &path_prefix {
        if !p.starts_with('/') {
            d.push(
                &format!("{path}.path_prefix"),
                format!("`{p}` must start with `/`"),
            );
        }
    }
    let method: Vec<String> = t
        .method
        .clone()
        .map(|m| m.into_vec())
        .unwrap_or_default()
        .into_iter()
        .map(|m| m.to_ascii_uppercase())
        .collect();
    for m in &method {
        if http::Method::from_bytes(m.as_bytes()).is_err() {
            d.push(
                &format!("{path}.method"),
                format!("`{m}` is not an HTTP method"),
            );
        }
    }
    let header = t
        .header
        .iter()
        .filter_map(|(k, v)| {
            header_name(d, &format!("{path}.header.{k}"), k).map(|h| (h, v.clone().into_vec()))
        })
        .collect();
    let map = |m: &BTreeMap<String, StringOrList>| {
        m.iter()
            .map(|(k, v)| (k.clone(), v.clone().into_vec()))
            .collect()
    };
    Targeting {
        path_prefix,
        method,
        header,
        cookie: t
            .cookie
            .iter()
            .map(|(k, v)| (CookieName::new(k), v.clone().into_vec()))
            .collect(),
        query: map(&t.query),
    }
}

fn compile_guardrails(d: &mut Diagnostics, path: &str, g: &RawGuardrails) -> Guardrails {
    let min_requests = match g.min_requests {
        None => 300,
        Some(n) if n >= 1 => n as u64,
        Some(n) => {
            d.push(
                &format!("{path}.min_requests"),
                format!("{n} must be at least 1"),
            );
            1
        }
    };
    let alpha = match g.alpha {
        None => 0.01,
        Some(a) if a > 0.0 && a < 0.5 => a,
        Some(a) => {
            d.push(
                &format!("{path}.alpha"),
                format!("{a} must be between 0 and 0.5 (e.g. 0.01)"),
            );
            0.01
        }
    };
    let error_max_increase = g.error_rate.as_ref().map(|e| match e.max_increase {
        Some(x) if (0.0..1.0).contains(&x) => x,
        Some(x) => {
            d.push(
                &format!("{path}.error_rate.max_increase"),
                format!("{x} must be between 0 and 1 (an absolute increase, e.g. 0.02)"),
            );
            0.02
        }
        None => 0.02,
    });
    let latency = g.latency_p99.as_ref().map(|l| {
        let r = match l.max_ratio {
            Some(r) if r >= 1.0 && r.is_finite() => r,
            Some(r) => {
                d.push(
                    &format!("{path}.latency_p99.max_ratio"),
                    format!("{r} must be at least 1.0 (e.g. 1.5)"),
                );
                1.5
            }
            None => 1.5,
        };
        let m = match l.min_increase_ms {
            Some(m) if m >= 0.0 && m.is_finite() => m,
            Some(m) => {
                d.push(
                    &format!("{path}.latency_p99.min_increase_ms"),
                    format!("{m} must be zero or more"),
                );
                20.0
            }
            None => 20.0,
        };
        (r, m)
    });
    let action = match g.action.as_deref() {
        None | Some("rollback") => GuardAction::Rollback,
        Some("alert") => GuardAction::Alert,
        Some(a) => {
            d.push(
                &format!("{path}.action"),
                format!("`{a}` is not an action; valid: rollback, alert"),
            );
            GuardAction::Alert
        }
    };
    let check_interval = dur(
        d,
        &format!("{path}.check_interval"),
        &g.check_interval,
        "1s",
    );
    let window = dur(d, &format!("{path}.window"), &g.window, "5m");
    if window < check_interval {
        d.push(
            &format!("{path}.window"),
            "must be at least `check_interval`",
        );
    }
    let consecutive = match g.consecutive {
        None => 3,
        Some(c) if (1..=1000).contains(&c) => c as u32,
        Some(c) => {
            d.push(
                &format!("{path}.consecutive"),
                format!("{c} must be between 1 and 1000"),
            );
            3
        }
    };
    Guardrails {
        min_requests,
        check_interval,
        window,
        alpha,
        error_max_increase,
        latency,
        consecutive,
        action,
    }
}
