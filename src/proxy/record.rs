//! After the response: what one request leaves behind — request metrics, the served
//! variants' guardrail windows, unit counts, outcomes read off response headers, and one
//! exposure event. Nothing here is waited on: metrics and windows are atomics, events go
//! to the writer's bounded queue.

use super::context::Ctx;
use crate::config::LatencyOf;
use crate::events::{ErrorKind, Event, Exposure, ExposureAssignment, Outcome, OutcomeSource};
use crate::metrics::{status_class, Metrics};
use crate::runtime::{App, Snapshot};
use smallvec::SmallVec;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Record a finished request that reached the proxy path (not a local answer).
///
/// Hot path: called once per request.
pub fn record(app: &App, snap: &Snapshot, status: u16, ctx: &mut Ctx) {
    let cfg = &snap.config;
    if ctx.error.is_none() {
        if (500..=599).contains(&status) {
            ctx.error = Some(ErrorKind::Upstream5xx);
        } else if ctx
            .grpc_status
            .is_some_and(|c| snap.pools[ctx.upstream].spec.grpc_error(c))
        {
            ctx.error = Some(ErrorKind::Grpc);
        }
    }
    let now = Instant::now();
    let elapsed = now.saturating_duration_since(ctx.start);
    let latency_us = elapsed.as_micros() as u64;
    // Time to first byte: the first body byte sent, else the header, else (nothing was
    // sent) the whole request.
    let ttfb = ctx
        .first_byte
        .or(ctx.header_sent)
        .map_or(elapsed, |t| t.saturating_duration_since(ctx.start));
    let ttfb_us = ttfb.as_micros() as u64;
    let class = status_class(status);
    // `[admin] request_metrics = false` skips the per-request families (benchmarks).
    let metrics_on = cfg.admin.request_metrics;
    if metrics_on {
        count_request(&app.metrics, snap, class, (elapsed, ttfb), ctx);
    }
    let now_ms = app.ms_at(now);
    let is_err = ctx.error.is_some();
    let events_on = cfg.events.enabled;
    let mut assignments = SmallVec::new();
    for (i, (a, &served)) in ctx.assignments.iter().zip(&ctx.served).enumerate() {
        let exp = snap.experiment(a.layer as usize, a.experiment as usize);
        let rt = exp.runtime;
        if metrics_on {
            let vm = &rt.metrics[served as usize];
            vm.requests[class].inc();
            vm.duration.observe(elapsed.as_secs_f64());
            vm.ttfb.observe(ttfb.as_secs_f64());
            rt.metrics[a.variant as usize].exposures.inc();
        }
        // A unit served by control (rolled back, paused) is no exposure of its arm.
        if let (Some(b), Some(_), false) = (&rt.bandit, a.bandit_period, a.forced) {
            if served == a.variant {
                b.expose(served as usize);
            }
        }
        if !a.forced {
            let judged_us = match exp.config.guardrails.as_ref().map(|g| g.latency_of) {
                Some(LatencyOf::Ttfb) => ttfb_us,
                _ => latency_us,
            };
            let v = &rt.state.variants[served as usize];
            v.window.record(now_ms, judged_us, is_err);
            if let Some(t) = &v.totals {
                t.record(judged_us, is_err);
            }
        }
        let unit_id = ctx.unit_ids.get_mut(i).and_then(|u| u.take());
        if let Some(u) = unit_id.as_deref().or(ctx.user.as_deref()) {
            rt.state.variants[a.variant as usize]
                .units
                .record(u.as_bytes());
        }
        if events_on {
            assignments.push(ExposureAssignment {
                names: exp.config.exposure_names(
                    &exp.layer.name,
                    a.variant as usize,
                    served as usize,
                ),
                unit: unit_id.as_ref().map(|_| Arc::from(exp.config.unit.label())),
                unit_id,
                forced: a.forced,
                bandit_period: a.bandit_period.map(u64::from),
            });
        }
    }
    if events_on {
        log_events(app, snap, status, (latency_us, ttfb_us), assignments, ctx);
    }
}

/// The request-level metric families: every request once by status class, upstream
/// errors, and the experiment-less requests.
fn count_request(
    m: &Metrics,
    snap: &Snapshot,
    class: usize,
    (elapsed, ttfb): (Duration, Duration),
    ctx: &Ctx,
) {
    m.proxied_by_class[class].inc();
    if let Some(k) = ctx.error {
        snap.upstream_errors[ctx.upstream].count(k);
    }
    if ctx.assignments.is_empty() {
        snap.none_metrics.requests[class].inc();
        snap.none_metrics.duration.observe(elapsed.as_secs_f64());
        snap.none_metrics.ttfb.observe(ttfb.as_secs_f64());
    }
}

/// Outcomes read off the response headers, then the exposure.
fn log_events(
    app: &App,
    snap: &Snapshot,
    status: u16,
    (latency_us, ttfb_us): (u64, u64),
    assignments: SmallVec<[ExposureAssignment; 4]>,
    ctx: &mut Ctx,
) {
    let cfg = &snap.config;
    let ts = SystemTime::now();
    for &(mi, value) in &ctx.header_outcomes {
        if let Some(u) = &ctx.user {
            snap.outcome_counters[mi].inc();
            snap.credit_reward(mi, u, value);
            app.sink.send(Event::Outcome(Outcome {
                ts,
                unit_id: u.clone(),
                metric: cfg.metrics[mi].name.clone(),
                value,
                source: OutcomeSource::Header,
            }));
        }
    }
    app.sink.send(Event::Exposure(Box::new(Exposure {
        ts,
        request_id: std::mem::take(&mut ctx.request_id),
        unit: "user",
        unit_id: ctx.user.take(),
        assignments,
        holdout: ctx.holdout,
        upstream: snap.pools[ctx.upstream].spec.name.clone(),
        status,
        // Whole microseconds: finer digits are timer noise, and the writer formats such a
        // value from integers.
        latency_ms: latency_us as f64 / 1000.0,
        ttfb_ms: ttfb_us as f64 / 1000.0,
        error: ctx.error,
        grpc_status: ctx.grpc_status,
        config_version: snap.version.clone(),
    })));
}
