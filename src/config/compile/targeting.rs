//! `targeting = { … }`: the conditions a request must meet to be in an experiment.
//! Header names are parsed and methods upper-cased once here, so matching a request is
//! plain comparison.

use super::values::header_name;
use crate::config::raw::{RawTargeting, StringOrList};
use crate::config::CookieName;
use crate::config::{Diagnostics, Targeting};
use std::collections::BTreeMap;

/// The experiment's targeting at `path`; no targeting matches every request.
pub(super) fn compile_targeting(
    d: &mut Diagnostics,
    path: &str,
    t: Option<&RawTargeting>,
) -> Targeting {
    let Some(t) = t else {
        return Targeting::default();
    };
    let path_prefix = path_prefixes(d, path, t.path_prefix.as_ref());
    let method = methods(d, path, t.method.as_ref());
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

/// Path prefixes, each starting with `/`.
fn path_prefixes(d: &mut Diagnostics, path: &str, raw: Option<&StringOrList>) -> Vec<String> {
    let prefixes: Vec<String> = raw.cloned().map(|p| p.into_vec()).unwrap_or_default();
    for p in &prefixes {
        if !p.starts_with('/') {
            d.push(
                &format!("{path}.path_prefix"),
                format!("`{p}` must start with `/`"),
            );
        }
    }
    prefixes
}

/// HTTP methods, upper-cased.
fn methods(d: &mut Diagnostics, path: &str, raw: Option<&StringOrList>) -> Vec<String> {
    let methods: Vec<String> = raw
        .cloned()
        .map(|m| m.into_vec())
        .unwrap_or_default()
        .into_iter()
        .map(|m| m.to_ascii_uppercase())
        .collect();
    for m in &methods {
        if http::Method::from_bytes(m.as_bytes()).is_err() {
            d.push(
                &format!("{path}.method"),
                format!("`{m}` is not an HTTP method"),
            );
        }
    }
    methods
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::{errors, parse, MINIMAL};

    fn targeted(targeting: &str) -> String {
        format!(
            "{MINIMAL}[[layer]]\nname = \"l\"\n[[layer.experiment]]\nname = \"e\"\n\
             traffic = 1.0\ntargeting = {targeting}\n\
             [[layer.experiment.variant]]\nname = \"a\"\nweight = 1\n\
             [[layer.experiment.variant]]\nname = \"b\"\nweight = 1\n"
        )
    }

    #[test]
    fn targeting_lists_values_uppercases_methods_and_lowercases_header_names() {
        let cfg = parse(&targeted(
            "{ path_prefix = \"/v1/\", method = [\"get\", \"Post\"], header = { \"X-A\" = \"1\" }, \
             cookie = { c = [\"2\", \"3\"] }, query = { q = \"4\" } }",
        ))
        .unwrap();
        let t = &cfg.layers[0].experiments[0].targeting;
        assert_eq!(t.path_prefix, ["/v1/"]);
        assert_eq!(t.method, ["GET", "POST"]);
        assert_eq!(t.header[0].0, "x-a");
        assert_eq!(t.header[0].1, ["1"]);
        assert_eq!(t.cookie[0].0.as_str(), "c");
        assert_eq!(t.cookie[0].1, ["2", "3"]);
        assert_eq!(t.query, [("q".to_string(), vec!["4".to_string()])]);
        assert!(!t.is_empty());
    }

    #[test]
    fn no_targeting_is_empty() {
        let cfg = parse(&targeted("{}")).unwrap();
        assert!(cfg.layers[0].experiments[0].targeting.is_empty());
    }

    #[test]
    fn bad_prefixes_methods_and_header_names_are_each_reported_on_the_targeting_line() {
        let e = errors(&targeted(
            "{ path_prefix = [\"v1\", \"/ok\"], method = \"B D\", header = { \"b c\" = \"2\" } }",
        ));
        let p = "layer[0].experiment[0].targeting";
        let got: Vec<_> = e
            .iter()
            .map(|(l, p, m)| (*l, p.as_str(), m.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (10, &*format!("{p}.path_prefix"), "`v1` must start with `/`"),
                (10, &*format!("{p}.method"), "`B D` is not an HTTP method"),
                (
                    10,
                    &*format!("{p}.header.b c"),
                    "`b c` is not a valid HTTP header name; use letters, digits and `-`"
                ),
            ]
        );
    }
}
