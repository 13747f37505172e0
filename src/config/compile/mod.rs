//! Validation of a [`RawConfig`] into the immutable [`Config`], one section at a time.
//!
//! Everything the request path needs is precomputed here: hash seeds, bucket ranges,
//! cumulative variant thresholds, parsed header names and values, upstream indices,
//! the `layer.experiment=variant` labels. Nothing in [`Config`] changes after this.
//!
//! Each section records its problems in [`Diagnostics`] and goes on with a stand-in
//! value, so one run reports every problem of the file. Problems are sorted by line
//! afterwards; those on one line keep the order in which the sections below find them,
//! so that order is part of the output.

mod bandit;
mod buckets;
mod events;
mod fleet;
mod guardrails;
mod holdout;
mod identity;
mod layers;
mod metrics;
mod ramp;
mod routing;
mod server;
mod shadow;
mod targeting;
mod tls;
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
    let server = server::compile_server(d, &raw.server, base);
    let admin = server::compile_admin(d, &raw.admin);
    let identity = identity::compile_identity(d, &raw.identity);
    let events = events::compile_events(d, &raw.events, base);
    let state_dir = events::state_dir(&raw.state, base);
    let upstreams = upstreams::compile_upstreams(d, &raw.upstream, base);
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
    let fleet = raw.fleet.as_ref().map(|f| fleet::compile_fleet(d, f));

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
        fleet,
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

#[cfg(test)]
mod tests {
    use crate::config::test_support::{parse, MINIMAL};

    /// A layer `name` with one experiment randomized by `unit`.
    fn layer(name: &str, unit: &str) -> String {
        format!(
            "[[layer]]\nname = \"{name}\"\n[[layer.experiment]]\nname = \"{name}_e\"\n\
             traffic = 1.0\nunit = \"{unit}\"\n\
             [[layer.experiment.variant]]\nname = \"a\"\nweight = 1\n\
             [[layer.experiment.variant]]\nname = \"b\"\nweight = 1\n"
        )
    }

    #[test]
    fn session_and_request_units_are_flagged_only_when_a_layer_uses_them() {
        let cfg = parse(MINIMAL).unwrap();
        assert!(!cfg.uses_session && !cfg.uses_request_unit);
        let cfg = parse(&format!("{MINIMAL}{}", layer("s", "session"))).unwrap();
        assert!(cfg.uses_session && !cfg.uses_request_unit);
        let cfg = parse(&format!(
            "{MINIMAL}{}{}",
            layer("u", "user"),
            layer("r", "request")
        ))
        .unwrap();
        assert!(!cfg.uses_session && cfg.uses_request_unit);
    }

    #[test]
    fn relative_paths_are_taken_from_the_config_file_directory() {
        let cfg =
            crate::config::parse_str(MINIMAL, std::path::Path::new("/srv/ab/c.toml")).unwrap();
        assert_eq!(cfg.source, std::path::Path::new("/srv/ab/c.toml"));
        assert!(cfg.events.dir.starts_with("/srv/ab"));
        assert!(cfg.state_dir.starts_with("/srv/ab"));
    }
}
