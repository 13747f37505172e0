//! Run: cargo bench --bench hot_paths
//!
//! Criterion benchmarks of the functions on the request path, with realistic inputs: a
//! real Cookie header, 10 layers, a 200-byte exposure.

use abgate::assign::{self, identity, Assignments, RequestView, UnitIds};
use abgate::events::{
    AssignmentNames, Event, EventWriter, Exposure, ExposureAssignment, RequestId,
};
use abgate::guard::window::Window;
use config::{ExperimentSpec, LayerSpec, TestConfig};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

// The tests' config builder (self-contained, so a bench can include it).
#[allow(dead_code)]
#[path = "../tests/common/config.rs"]
mod config;

const COOKIE: &str = "_ga=GA1.2.1234567890.1700000000; _gid=GA1.2.987654321.1700000000; session_pref=dark; \
locale=en-US; consent=analytics%3Dtrue%26ads%3Dfalse; csrftoken=Zm9vYmFyYmF6cXV4cXV1eHF1dXgxMjM0NTY3ODkw; \
abgate_uid=Dj2V8C5crrw3a7G6dHZD3Q; _fbp=fb.1.1700000000000.1234567890; recent=a%2Cb%2Cc";

/// Ten layers of two experiments on half the traffic each, with 2 to 4 variants that add
/// a header; layer 0 routes `/v1/` requests between upstreams `a` and `b`.
fn ten_layer_config() -> abgate::config::Config {
    let mut config = TestConfig::bare()
        .upstream("a", &["127.0.0.1:1"])
        .upstream("b", &["127.0.0.1:2"]);
    for l in 0..10 {
        let mut layer = LayerSpec::new(&format!("layer{l}"));
        for e in 0..2 {
            let mut exp = ExperimentSpec::new(&format!("exp{l}_{e}"), 0.5);
            if l == 0 {
                exp = exp.targeting("path_prefix = \"/v1/\"");
            }
            for v in 0..(2 + (l % 3)) {
                let upstream = (l == 0).then_some(if v == 0 { "a" } else { "b" });
                let value = v.to_string();
                exp = exp.variant_with(&format!("v{v}"), 1.0, upstream, &[("x-v", &value)]);
            }
            layer = layer.experiment(exp);
        }
        config = config.layer(layer);
    }
    config.parse()
}

/// What the request path clones from the compiled config (made once, as there).
struct Compiled {
    names: Arc<AssignmentNames>,
    upstream: Arc<str>,
    version: Arc<str>,
}

fn compiled() -> Compiled {
    Compiled {
        names: Arc::new(AssignmentNames::new(
            "model".into(),
            "ranker_v2".into(),
            "treatment".into(),
            "treatment".into(),
        )),
        upstream: "model_b".into(),
        version: "0e269387a367".into(),
    }
}

fn exposure(c: &Compiled) -> Event {
    Event::Exposure(Box::new(Exposure {
        ts: SystemTime::now(),
        request_id: RequestId::new(SystemTime::now()),
        unit: "user",
        unit_id: Some("Dj2V8C5crrw3a7G6dHZD3Q".into()),
        assignments: smallvec::smallvec![ExposureAssignment {
            names: c.names.clone(),
            unit: None,
            unit_id: None,
            forced: false,
            bandit_period: None,
        }],
        holdout: false,
        upstream: c.upstream.clone(),
        status: 200,
        latency_ms: 12.4,
        ttfb_ms: 3.1,
        error: None,
        grpc_status: None,
        config_version: c.version.clone(),
    }))
}

fn benches(c: &mut Criterion) {
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::COOKIE, COOKIE.parse().unwrap());
    headers.insert("x-platform", "ios".parse().unwrap());
    let cfg = ten_layer_config();

    let uid_cookie = identity::CookieName::new("abgate_uid");
    c.bench_function("identity_from_cookie_header", |b| {
        b.iter(|| identity::cookie(black_box(&headers), black_box(&uid_cookie)))
    });

    c.bench_function("assign_10_layers", |b| {
        let view = RequestView {
            method: "POST",
            path: "/v1/chat",
            query: None,
            headers: &headers,
        };
        let ids = UnitIds {
            user: Some("Dj2V8C5crrw3a7G6dHZD3Q"),
            session: None,
            request: None,
        };
        b.iter(|| {
            let mut out = Assignments::new();
            assign::assign(black_box(&cfg), &ids, &view, &mut out);
            out
        })
    });

    c.bench_function("identity_plus_assign_10_layers", |b| {
        let view = RequestView {
            method: "POST",
            path: "/v1/chat",
            query: None,
            headers: &headers,
        };
        b.iter(|| {
            let user = match identity::cookie(black_box(&headers), &uid_cookie) {
                identity::Lookup::Found(u) => Some(u),
                _ => None,
            };
            let ids = UnitIds {
                user,
                session: None,
                request: None,
            };
            let mut out = Assignments::new();
            assign::assign(black_box(&cfg), &ids, &view, &mut out);
            out
        })
    });

    let w = Window::new(300_000);
    let mut t = 0u64;
    c.bench_function("guardrail_window_record", |b| {
        b.iter(|| {
            t += 1;
            w.record(
                black_box(t / 64),
                black_box(12_345),
                black_box(t.is_multiple_of(31)),
            )
        })
    });

    // The metric updates a request in 3 experiments makes (the families of docs/operations.md, handles
    // pre-resolved at config load as in the proxy).
    let metrics = abgate::metrics::Metrics::new();
    let handles: Vec<_> = (0..3)
        .map(|i| metrics.variant(&format!("exp{i}"), "treatment"))
        .collect();
    c.bench_function("request_metrics_3_experiments", |b| {
        b.iter(|| {
            metrics.proxied_by_class[1].inc();
            for h in &handles {
                h.requests[1].inc();
                h.duration.observe(black_box(0.0123));
                h.exposures.inc();
            }
        })
    });

    // What the request path pays for event logging: build the exposure and queue it.
    let dir = tempfile::tempdir().unwrap();
    let writer = EventWriter::start(abgate::events::writer::WriterOptions {
        dir: dir.path().to_path_buf(),
        rotate_bytes: 1 << 30,
        flush_interval: Duration::from_millis(50),
        queue: 1 << 20,
        hash_key: None,
        instance: None,
    })
    .unwrap();
    let sink = writer.sink();
    let made = compiled();
    c.bench_function("exposure_build_and_queue", |b| {
        b.iter(|| sink.send(exposure(&made)))
    });
    drop(writer);

    let ev = exposure(&made);
    let mut buf = Vec::with_capacity(4096);
    let mut g = c.benchmark_group("exposure_encode");
    g.throughput(Throughput::Elements(1));
    g.bench_function("json_line", |b| {
        b.iter(|| {
            buf.clear();
            black_box(&ev).encode(&mut buf, None);
        })
    });
    g.finish();

    let mut g = c.benchmark_group("event_writer");
    g.throughput(Throughput::Elements(1_000_000));
    g.sample_size(10);
    g.bench_function("1M_exposures_to_disk", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().unwrap();
                let writer = EventWriter::start(abgate::events::writer::WriterOptions {
                    dir: dir.path().to_path_buf(),
                    rotate_bytes: 1 << 30, // no rotation (and its fsync) inside the measured window
                    flush_interval: Duration::from_millis(5),
                    queue: 1_100_000,
                    hash_key: None,
                    instance: None,
                })
                .unwrap();
                let sink = writer.sink();
                let events: Vec<Event> = (0..1_000_000).map(|_| ev.clone()).collect();
                let start = Instant::now();
                for e in events {
                    sink.send(e);
                }
                // Steady-state capacity: until every event is written (the final fsync
                // of close() is a shutdown cost, not throughput).
                let written = &sink.stats().written;
                while written.load(std::sync::atomic::Ordering::Relaxed) < 1_000_000 {
                    std::hint::spin_loop();
                    if sink.stats().dropped() > 0 {
                        break;
                    }
                }
                total += start.elapsed();
                let stats = writer.close();
                assert_eq!(stats.dropped(), 0);
            }
            total
        })
    });
    g.finish();
}

criterion_group!(hot, benches);
criterion_main!(hot);
