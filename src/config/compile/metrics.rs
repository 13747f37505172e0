//! `[[metric]]`: the declared outcome metrics, which experiments refer to by name.

use super::values::{header_name, name_ok};
use crate::config::raw::RawMetric;
use crate::config::{Diagnostics, MetricDef, MetricKind};
use std::sync::Arc;

/// Every well-named `[[metric]]`, in file order.
pub(super) fn compile_metrics(d: &mut Diagnostics, raw: &[RawMetric]) -> Vec<MetricDef> {
    let mut metrics: Vec<MetricDef> = Vec::new();
    for (i, m) in raw.iter().enumerate() {
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
        let kind = metric_kind(d, &path, m.kind.as_deref());
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
    metrics
}

/// `binomial` or `continuous`; `continuous` stands in (after recording why) otherwise.
fn metric_kind(d: &mut Diagnostics, path: &str, kind: Option<&str>) -> MetricKind {
    match kind {
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
            d.push(path, "missing `kind` (binomial or continuous)");
            MetricKind::Continuous
        }
    }
}

/// Metric names as experiments refer to them.
pub(super) struct MetricLookup<'a> {
    defs: &'a [MetricDef],
    /// The declared names, for messages about an unknown one.
    valid: String,
}

impl<'a> MetricLookup<'a> {
    /// The lookup of the compiled `defs`.
    pub(super) fn new(defs: &'a [MetricDef]) -> Self {
        let names: Vec<&str> = defs.iter().map(|m| &*m.name).collect();
        let valid = if names.is_empty() {
            "no [[metric]] is declared; declare it first".to_string()
        } else {
            format!("declared: {}", names.join(", "))
        };
        Self { defs, valid }
    }

    /// The declared metric `name` with its index; an unknown name is recorded at `path`.
    pub(super) fn def(
        &self,
        d: &mut Diagnostics,
        path: &str,
        name: &str,
    ) -> Option<(usize, &'a MetricDef)> {
        self.name(d, path, name)?;
        self.defs.iter().enumerate().find(|(_, x)| &*x.name == name)
    }

    /// The declared metric `name`; an unknown name is recorded at `path`.
    pub(super) fn name(&self, d: &mut Diagnostics, path: &str, name: &str) -> Option<Arc<str>> {
        match self.defs.iter().find(|x| &*x.name == name) {
            Some(x) => Some(x.name.clone()),
            None => {
                d.push(path, format!("unknown metric `{name}` ({})", self.valid));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::{errors, parse, MINIMAL};
    use crate::config::MetricKind;

    #[test]
    fn metrics_keep_file_order_kind_direction_and_lowercased_header() {
        let cfg = parse(&format!(
            "{MINIMAL}[[metric]]\nname = \"conv\"\nkind = \"binomial\"\n\
             [[metric]]\nname = \"tokens\"\nkind = \"continuous\"\nhigher_is_better = false\n\
             from_response_header = \"X-Tokens\"\n"
        ))
        .unwrap();
        let conv = cfg.metric("conv").unwrap();
        assert_eq!(conv.kind, MetricKind::Binomial);
        assert!(conv.higher_is_better && conv.from_response_header.is_none());
        let tokens = &cfg.metrics[1];
        assert_eq!(
            (&*tokens.name, tokens.kind),
            ("tokens", MetricKind::Continuous)
        );
        assert!(!tokens.higher_is_better);
        assert_eq!(tokens.from_response_header.as_ref().unwrap(), "x-tokens");
    }

    #[test]
    fn bad_metrics_are_each_reported_at_their_line() {
        let e = errors(&format!(
            "{MINIMAL}[[metric]]\nkind = \"binomial\"\n\
             [[metric]]\nname = \"m\"\nkind = \"weird\"\n\
             [[metric]]\nname = \"m\"\n\
             [[metric]]\nname = \"error\"\nkind = \"binomial\"\nfrom_response_header = \"x y\"\n"
        ));
        let got: Vec<_> = e
            .iter()
            .map(|(l, p, m)| (*l, p.as_str(), m.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (5, "metric[0]", "missing: every metric needs a `name`"),
                (
                    9,
                    "metric[1].kind",
                    "`weird` is not a metric kind; valid: binomial, continuous"
                ),
                (10, "metric[2]", "missing `kind` (binomial or continuous)"),
                (
                    11,
                    "metric[2].name",
                    "metric `m` is defined twice or shadows a built-in (`latency_ms`, `error`); pick another name"
                ),
                (
                    13,
                    "metric[3].name",
                    "metric `error` is defined twice or shadows a built-in (`latency_ms`, `error`); pick another name"
                ),
                (
                    15,
                    "metric[3].from_response_header",
                    "`x y` is not a valid HTTP header name; use letters, digits and `-`"
                ),
            ]
        );
    }
}
