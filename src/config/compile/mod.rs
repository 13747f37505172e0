//! Validation of a [`RawConfig`] into the immutable [`Config`], one section at a time.
//!
//! Everything the request path needs is precomputed here: hash seeds, bucket ranges,
//! cumulative variant thresholds, parsed header names and values, upstream indices,
//! the `layer.experiment=variant` labels. Nothing in [`Config`] changes after this.
//!
//! Each section records its problems in [`Diagnostics`] and goes on with a stand-in
//! value, so one run reports every problem of the file. The sections run in file-section
//! order; problems on the same line are reported in the order they are found here.

mod buckets;
mod events;
mod guardrails;
mod holdout;
mod identity;
mod layers;
mod metrics;
mod routing;
mod server;
mod targeting;
mod upstreams;
mod values;
mod variants;

pub use values::parse_duration;

use super::raw::RawConfig;
use super::{Config, Diagnostics, Layer, Unit};
use std::path::Path;

/// Validate `raw`. Returns `Some` only if `d` received no diagnostic.
pub(super) fn compile(
    raw: RawConfig,
    file: &Path,
    version: String,
    d: &mut Diagnostics,
) -> Option<Config> {
    // Relative directories in the file are relative to the file.
    let base = file.parent().unwrap_or(Path::new("."));
    let server = server::compile_server(d, &raw.server);
    let admin = server::compile_admin(d, &raw.admin);
    let identity = identity::compile_identity(d, &raw.identity);
    let events = events::compile_events(d, &raw.events, base);
    let state_dir = events::state_dir(&raw.state, base);
    let upstreams = upstreams::compile_upstreams(d, &raw.upstream);
    let upstream_lookup = upstreams::UpstreamLookup::new(&upstreams);
    let default_upstream = routing::default_upstream(d, raw.routing.as_ref(), &upstream_lookup);
    let holdout = raw.holdout.as_ref().map(|h| holdout::compile_holdout(d, h));
    let metrics = metrics::compile_metrics(d, &raw.metric);
    let lookups = layers::Lookups {
        metrics: metrics::MetricLookup::new(&metrics),
        upstreams: upstream_lookup,
    };
    let layers = layers::compile_layers(d, &raw.layer, &lookups);
    routing::check_overlap(d, &raw.layer, &layers);

    if !d.is_empty() {
        return None;
    }
    Some(Config {
        uses_session: layer_uses(&layers, &Unit::Session),
        uses_request_unit: layer_uses(&layers, &Unit::Request),
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

/// Whether some layer randomizes by `unit` (all experiments of a layer share the first
/// one's unit).
fn layer_uses(layers: &[Layer], unit: &Unit) -> bool {
    layers
        .iter()
        .any(|l| l.experiments.first().is_some_and(|e| &e.unit == unit))
}
