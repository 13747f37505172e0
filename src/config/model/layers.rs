//! Layers and what they hold: experiments with their bucket ranges, variants,
//! randomization units, targeting and guardrails, all as compiled.

use super::AssignmentNames;
use super::CookieName;
use http::{HeaderName, HeaderValue};
use std::sync::Arc;
use std::time::Duration;

/// A layer: its own hash salt, experiments on disjoint bucket ranges.
#[derive(Debug)]
pub struct Layer {
    /// Name.
    pub name: Arc<str>,
    /// Seed from the salt.
    pub seed: u64,
    /// Experiments, in file order.
    pub experiments: Vec<Experiment>,
}

/// Randomization unit of an experiment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unit {
    /// The identity (header, cookie, minted).
    User,
    /// The session cookie.
    Session,
    /// Fresh randomness per request.
    Request,
    /// The value of a request header (cluster randomization).
    Header(HeaderName),
}

impl Unit {
    /// The word used in events.
    pub fn label(&self) -> &str {
        match self {
            Unit::User => "user",
            Unit::Session => "session",
            Unit::Request => "request",
            Unit::Header(h) => h.as_str(),
        }
    }
}

/// Conditions on the request; all must hold, any listed value matches.
#[derive(Debug, Clone, Default)]
pub struct Targeting {
    /// Path prefixes.
    pub path_prefix: Vec<String>,
    /// Methods (upper case).
    pub method: Vec<String>,
    /// Header → values.
    pub header: Vec<(HeaderName, Vec<String>)>,
    /// Cookie → values.
    pub cookie: Vec<(CookieName, Vec<String>)>,
    /// Query parameter → values.
    pub query: Vec<(String, Vec<String>)>,
}

impl Targeting {
    /// Whether there is no condition at all.
    pub fn is_empty(&self) -> bool {
        self.path_prefix.is_empty()
            && self.method.is_empty()
            && self.header.is_empty()
            && self.cookie.is_empty()
            && self.query.is_empty()
    }
}

/// An experiment, compiled.
#[derive(Debug)]
pub struct Experiment {
    /// Name, unique in the file.
    pub name: Arc<str>,
    /// Index of its layer.
    pub layer: usize,
    /// Share of the layer (for reports).
    pub traffic: f64,
    /// First layer bucket owned (inclusive).
    pub start: u32,
    /// End of the owned range (exclusive).
    pub end: u32,
    /// Randomization unit.
    pub unit: Unit,
    /// Seed of the variant hash.
    pub seed: u64,
    /// Primary metric.
    pub primary_metric: Option<Arc<str>>,
    /// Secondary metrics.
    pub metrics: Vec<Arc<str>>,
    /// Targeting.
    pub targeting: Targeting,
    /// Variants.
    pub variants: Vec<Variant>,
    /// Cumulative thresholds in [0, BUCKETS]: variant i owns `[thr[i-1], thr[i])`.
    pub thresholds: Vec<u32>,
    /// Index of the control variant.
    pub control: usize,
    /// Guardrails, if configured.
    pub guardrails: Option<Guardrails>,
    /// The ramp, if configured: it owns `traffic` (its last step), and the traffic served
    /// now is the ramp's current step (`start..end` is the largest range it may reach).
    pub ramp: Option<super::Ramp>,
    /// Thompson-sampling weights, if `[layer.experiment.bandit]` is configured.
    pub bandit: Option<super::Bandit>,
    /// Per variant, the exposure names when it is served itself and when control serves
    /// its units (rollback, pause): made once here, cloned per request.
    pub exposure_names: Vec<[Arc<AssignmentNames>; 2]>,
}

impl Experiment {
    /// The exposure names of assigned `variant` served by `served`.
    pub fn exposure_names(
        &self,
        layer: &Arc<str>,
        variant: usize,
        served: usize,
    ) -> Arc<AssignmentNames> {
        let pair = &self.exposure_names[variant];
        if served == variant {
            pair[0].clone()
        } else if served == self.control {
            pair[1].clone()
        } else {
            // Not made by the request path today; correct if it ever is.
            Arc::new(AssignmentNames::new(
                layer.clone(),
                self.name.clone(),
                self.variants[variant].name.clone(),
                self.variants[served].name.clone(),
            ))
        }
    }
}

/// A variant, compiled.
#[derive(Debug)]
pub struct Variant {
    /// Name.
    pub name: Arc<str>,
    /// Weight as written.
    pub weight: f64,
    /// Upstream index, if the variant routes.
    pub upstream: Option<usize>,
    /// Headers added to the backend request, name and value parsed once.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// `layer.experiment=variant`.
    pub label: Arc<str>,
    /// Copies of its served requests to a candidate, if configured.
    pub shadow: Option<super::Shadow>,
}

/// Guardrail action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardAction {
    /// Serve control to the variant's units.
    Rollback,
    /// Only record and export.
    Alert,
}

/// Which latency of a request the latency guardrail judges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LatencyOf {
    /// The whole response (`latency_ms`).
    #[default]
    Total,
    /// Time to first byte (`ttfb_ms`): for a streamed generation, the first token.
    Ttfb,
}

/// Guardrail settings, resolved.
#[derive(Debug, Clone)]
pub struct Guardrails {
    /// Requests per variant before any decision.
    pub min_requests: u64,
    /// Evaluation period.
    pub check_interval: Duration,
    /// Sliding window length.
    pub window: Duration,
    /// Level of the sequential test.
    pub alpha: f64,
    /// Error-rate guardrail: max absolute increase.
    pub error_max_increase: Option<f64>,
    /// Latency guardrail: (max ratio, min increase in ms).
    pub latency: Option<(f64, f64)>,
    /// Which latency the latency guardrail judges.
    pub latency_of: LatencyOf,
    /// Consecutive failing latency checks needed.
    pub consecutive: u32,
    /// What to do on violation.
    pub action: GuardAction,
}
