//! `[[layer]]` and `[[layer.experiment]]`: layer and experiment names, randomization
//! units, metric references, and the assembly of each compiled [`Experiment`] from its
//! bucket range, targeting, variants and guardrails.

use super::bandit::compile_bandit;
use super::buckets::bucket_range;
use super::guardrails::compile_guardrails;
use super::metrics::MetricLookup;
use super::ramp::compile_ramp;
use super::targeting::compile_targeting;
use super::upstreams::UpstreamLookup;
use super::values::{header_name, name_ok, unique_name};
use super::variants;
use crate::config::raw::{RawExperiment, RawLayer};
use crate::config::{Diagnostics, Experiment, Layer, Unit};
use crate::hash::seed_of;
use std::collections::HashSet;
use std::sync::Arc;

/// What experiments refer to by name.
pub(super) struct Lookups<'a> {
    /// Declared metrics.
    pub metrics: MetricLookup<'a>,
    /// Upstream pools.
    pub upstreams: UpstreamLookup<'a>,
}

/// Every layer, in file order; each layer and experiment name is unique in the file.
pub(super) fn compile_layers(
    d: &mut Diagnostics,
    raw: &[RawLayer],
    refs: &Lookups<'_>,
) -> Vec<Layer> {
    let mut layers = Vec::new();
    let mut seen_layers = HashSet::new();
    let mut seen_experiments = HashSet::new();
    for (li, l) in raw.iter().enumerate() {
        let lpath = format!("layer[{li}]");
        let lname = unique_name(d, &lpath, &l.name, "layer", &mut seen_layers, |n| {
            format!("layer `{n}` is defined twice; layer names must be unique")
        });
        let salt = l.salt.clone().unwrap_or_else(|| lname.to_string());
        let scope = LayerScope {
            index: li,
            path: lpath,
            name: lname,
        };
        let experiments =
            compile_experiments(d, &scope, &l.experiment, &mut seen_experiments, refs);
        layers.push(Layer {
            name: scope.name,
            seed: seed_of(&salt),
            experiments,
        });
    }
    layers
}

/// The layer an experiment is compiled in.
struct LayerScope {
    index: usize,
    /// `layer[i]`
    path: String,
    name: Arc<str>,
}

/// The experiments of one layer, in file order, on disjoint bucket ranges and one unit.
fn compile_experiments(
    d: &mut Diagnostics,
    layer: &LayerScope,
    raw: &[RawExperiment],
    seen: &mut HashSet<String>,
    refs: &Lookups<'_>,
) -> Vec<Experiment> {
    let mut experiments: Vec<Experiment> = Vec::new();
    let mut next_start = 0u32;
    let mut layer_unit: Option<Unit> = None;
    for (ei, e) in raw.iter().enumerate() {
        let epath = format!("{}.experiment[{ei}]", layer.path);
        let ename = experiment_name(d, &epath, e, seen);
        let guardrails = e
            .guardrails
            .as_ref()
            .map(|g| compile_guardrails(d, &format!("{epath}.guardrails"), g));
        let ramp = compile_ramp(d, &epath, e, guardrails.as_ref());
        // An invalid ramp still owns traffic: no second error about a missing one.
        let ramp_target = match (&ramp, &e.ramp) {
            (Some(r), _) => Some(r.target()),
            (None, Some(_)) => Some(0.0),
            (None, None) => None,
        };
        let range = bucket_range(
            d,
            &epath,
            e,
            ramp_target,
            &ename,
            &layer.name,
            next_start,
            &experiments,
        );
        next_start = range.end;
        let unit = parse_unit(d, &format!("{epath}.unit"), e.unit.as_deref());
        check_layer_unit(d, &epath, &layer.name, &mut layer_unit, &unit);
        let primary_metric = e
            .primary_metric
            .as_deref()
            .and_then(|m| refs.metrics.name(d, &format!("{epath}.primary_metric"), m));
        let metrics = e
            .metrics
            .iter()
            .enumerate()
            .filter_map(|(i, m)| refs.metrics.name(d, &format!("{epath}.metrics[{i}]"), m))
            .collect();
        let targeting = compile_targeting(d, &format!("{epath}.targeting"), e.targeting.as_ref());
        let variants =
            variants::compile_variants(d, &epath, &layer.name, &ename, &e.variant, &refs.upstreams);
        let bandit = e.bandit.as_ref().map(|b| {
            compile_bandit(
                d,
                &format!("{epath}.bandit"),
                b,
                variants.len(),
                &refs.metrics,
            )
        });
        if e.bandit.is_some() && e.ramp.is_some() {
            d.push(
                &format!("{epath}.ramp"),
                "a bandit experiment cannot also have a ramp (the bandit sets its own weights and the ramp its traffic); remove one of them".to_string(),
            );
        }
        let control = variants::control(&variants);
        experiments.push(Experiment {
            seed: seed_of(e.salt.as_deref().unwrap_or(&ename)),
            exposure_names: variants::exposure_names(&layer.name, &ename, &variants, control),
            thresholds: variants::thresholds(&variants),
            name: ename,
            layer: layer.index,
            traffic: range.traffic,
            start: range.start,
            end: range.end,
            unit,
            primary_metric,
            metrics,
            targeting,
            variants,
            control,
            guardrails,
            ramp,
            bandit,
        });
    }
    experiments
}

/// The experiment's name: valid, not the reserved `none`, unique across the file.
fn experiment_name(
    d: &mut Diagnostics,
    epath: &str,
    e: &RawExperiment,
    seen: &mut HashSet<String>,
) -> Arc<str> {
    let ename = name_ok(d, epath, &e.name, "experiment").unwrap_or_else(|| Arc::from("?"));
    if &*ename == "none" {
        d.push(
            &format!("{epath}.name"),
            "`none` is reserved (requests outside every experiment); pick another name",
        );
    }
    if !seen.insert(ename.to_string()) {
        d.push(&format!("{epath}.name"), format!("experiment `{ename}` is defined twice; experiment names must be unique across the file"));
    }
    ename
}

/// `user` (the default), `session`, `request` or `header:<name>`.
fn parse_unit(d: &mut Diagnostics, path: &str, unit: Option<&str>) -> Unit {
    match unit.unwrap_or("user") {
        "user" => Unit::User,
        "session" => Unit::Session,
        "request" => Unit::Request,
        u if u.starts_with("header:") => header_name(d, path, &u[7..])
            .map(Unit::Header)
            .unwrap_or(Unit::User),
        u => {
            d.push(
                path,
                format!("`{u}` is not a unit; valid: user, session, request, header:<name>"),
            );
            Unit::User
        }
    }
}

/// All experiments of a layer share the first one's unit.
fn check_layer_unit(
    d: &mut Diagnostics,
    epath: &str,
    lname: &str,
    layer_unit: &mut Option<Unit>,
    unit: &Unit,
) {
    match layer_unit {
        None => *layer_unit = Some(unit.clone()),
        Some(lu) if lu != unit => d.push(
            &format!("{epath}.unit"),
            format!(
                "all experiments of layer `{lname}` must share one unit (the layer hashes it to keep experiments exclusive); this one is `{}`, earlier ones `{}`; move it to another layer",
                unit.label(),
                lu.label()
            ),
        ),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::{errors, parse, MINIMAL};
    use crate::config::Unit;
    use crate::hash::seed_of;

    const VARIANTS: &str = "[[layer.experiment.variant]]\nname = \"a\"\nweight = 1\n\
                            [[layer.experiment.variant]]\nname = \"b\"\nweight = 1\n";

    #[test]
    fn layers_and_experiments_get_seeds_units_metrics_and_their_layer_index() {
        let cfg = parse(&format!(
            "{MINIMAL}[[metric]]\nname = \"conv\"\nkind = \"binomial\"\n\
             [[layer]]\nname = \"first\"\n\
             [[layer]]\nname = \"l\"\nsalt = \"ls\"\n\
             [[layer.experiment]]\nname = \"e\"\ntraffic = 0.5\nunit = \"header:X-Team\"\n\
             primary_metric = \"conv\"\nmetrics = [\"conv\"]\n{VARIANTS}\
             [[layer.experiment]]\nname = \"f\"\ntraffic = 0.5\nsalt = \"fs\"\n\
             unit = \"header:x-team\"\n{VARIANTS}"
        ))
        .unwrap();
        assert_eq!(cfg.layers[0].seed, seed_of("first"));
        let l = &cfg.layers[1];
        assert_eq!(l.seed, seed_of("ls"));
        let (e, f) = (&l.experiments[0], &l.experiments[1]);
        assert_eq!((e.layer, e.seed, f.seed), (1, seed_of("e"), seed_of("fs")));
        assert_eq!(
            e.unit,
            Unit::Header(http::HeaderName::from_static("x-team"))
        );
        assert_eq!(e.primary_metric.as_deref(), Some("conv"));
        assert_eq!(e.metrics.len(), 1);
        assert_eq!(cfg.experiment("f"), Some((1, 1)));
    }

    #[test]
    fn bad_names_units_and_metric_references_are_each_reported_at_their_line() {
        let e = errors(&format!(
            "{MINIMAL}[[layer]]\nname = \"l\"\n\
             [[layer.experiment]]\nname = \"none\"\ntraffic = 0.1\nunit = \"planet\"\n\
             primary_metric = \"nope\"\n{VARIANTS}\
             [[layer.experiment]]\nname = \"none\"\ntraffic = 0.1\nunit = \"session\"\n{VARIANTS}\
             [[layer]]\nname = \"l\"\n"
        ));
        let got: Vec<_> = e
            .iter()
            .map(|(l, p, m)| (*l, p.as_str(), m.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    8,
                    "layer[0].experiment[0].name",
                    "`none` is reserved (requests outside every experiment); pick another name"
                ),
                (
                    10,
                    "layer[0].experiment[0].unit",
                    "`planet` is not a unit; valid: user, session, request, header:<name>"
                ),
                (
                    11,
                    "layer[0].experiment[0].primary_metric",
                    "unknown metric `nope` (no [[metric]] is declared; declare it first)"
                ),
                (
                    19,
                    "layer[0].experiment[1].name",
                    "`none` is reserved (requests outside every experiment); pick another name"
                ),
                (
                    19,
                    "layer[0].experiment[1].name",
                    "experiment `none` is defined twice; experiment names must be unique across the file"
                ),
                (
                    21,
                    "layer[0].experiment[1].unit",
                    "all experiments of layer `l` must share one unit (the layer hashes it to keep experiments exclusive); this one is `session`, earlier ones `user`; move it to another layer"
                ),
                (
                    29,
                    "layer[1].name",
                    "layer `l` is defined twice; layer names must be unique"
                ),
            ]
        );
    }
}
