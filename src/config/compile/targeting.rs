//! `targeting = { … }`: the conditions a request must meet to be in an experiment.
//! Header names are parsed and methods upper-cased once here, so matching a request is
//! plain comparison.

use super::values::header_name;
use crate::assign::identity::CookieName;
use crate::config::raw::{RawTargeting, StringOrList};
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
