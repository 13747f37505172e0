//! Comparing a served response with its shadow's, as pure functions: what differs
//! between two statuses and two bodies, under a variant's `compare` settings.
//!
//! - Streamed responses (server-sent events, gRPC, NDJSON): status only; their latency
//!   and time to first byte are compared by the report, not here.
//! - A body over `max_response_bytes` on either side: status and length.
//! - Two JSON bodies: flattened to JSON pointers (RFC 6901) of their leaves; pointers
//!   under a `json_ignore` entry are left out; numbers within `float_tolerance` are
//!   equal; a pointer present on one side only differs.
//! - Anything else: the bodies' xxh3 hashes; a difference names the pointer `""` (the
//!   whole document).

use crate::config::ShadowCompare;
use serde_json::Value;
use std::collections::BTreeMap;

/// Differing pointers named per comparison at most (the rest are counted).
pub const MAX_POINTERS: usize = 16;

/// One side's response as the comparison sees it.
#[derive(Debug, Clone, Copy)]
pub struct Response<'a> {
    /// Status code.
    pub status: u16,
    /// The body if it was kept whole (`None`: longer than the limit).
    pub body: Option<&'a [u8]>,
    /// Body length in bytes.
    pub len: u64,
    /// A streamed response (compared by status only).
    pub streamed: bool,
}

/// How the bodies were compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// JSON pointers.
    Json,
    /// Hash of the bytes.
    Hash,
    /// Streamed: status only.
    Stream,
    /// Over the size limit: status and length.
    Size,
}

impl Method {
    /// The word of the `shadow` record's `compared` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Json => "json",
            Method::Hash => "hash",
            Method::Stream => "stream",
            Method::Size => "size",
        }
    }
}

/// What a comparison found.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    /// How the bodies were compared.
    pub method: Method,
    /// The statuses differ.
    pub status: bool,
    /// Differing pointers, in order, at most [`MAX_POINTERS`] (`""`: the whole body).
    pub pointers: Vec<String>,
    /// Differing pointers beyond those named.
    pub more: usize,
}

impl Difference {
    /// Nothing differs.
    pub fn is_match(&self) -> bool {
        !self.status && self.pointers.is_empty()
    }
}

/// Compare the served response `primary` with `shadow`.
pub fn compare(primary: &Response<'_>, shadow: &Response<'_>, cfg: &ShadowCompare) -> Difference {
    let status = primary.status != shadow.status;
    let mut d = Difference {
        method: Method::Stream,
        status,
        pointers: Vec::new(),
        more: 0,
    };
    if primary.streamed || shadow.streamed {
        return d;
    }
    let (Some(a), Some(b)) = (primary.body, shadow.body) else {
        d.method = Method::Size;
        if primary.len != shadow.len {
            d.pointers.push(String::new());
        }
        return d;
    };
    let differing = match (json(a), json(b)) {
        (Some(ja), Some(jb)) => {
            d.method = Method::Json;
            json_differences(&ja, &jb, cfg)
        }
        _ => {
            d.method = Method::Hash;
            if xxhash_rust::xxh3::xxh3_64(a) != xxhash_rust::xxh3::xxh3_64(b) {
                vec![String::new()]
            } else {
                Vec::new()
            }
        }
    };
    d.more = differing.len().saturating_sub(MAX_POINTERS);
    d.pointers = differing;
    d.pointers.truncate(MAX_POINTERS);
    d
}

/// A JSON document, if `body` is one (an empty body is not).
fn json(body: &[u8]) -> Option<Value> {
    serde_json::from_slice(body).ok()
}

/// The pointers whose values differ between `a` and `b`, in pointer order, ignoring
/// `cfg.json_ignore` and numeric differences within `cfg.float_tolerance`.
pub fn json_differences(a: &Value, b: &Value, cfg: &ShadowCompare) -> Vec<String> {
    let (fa, fb) = (flatten(a), flatten(b));
    let mut out = Vec::new();
    let mut keys: Vec<&String> = fa.keys().chain(fb.keys()).collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        if ignored(k, &cfg.json_ignore) {
            continue;
        }
        let same = match (fa.get(k), fb.get(k)) {
            (Some(x), Some(y)) => leaf_equal(x, y, cfg.float_tolerance),
            _ => false,
        };
        if !same {
            out.push(k.clone());
        }
    }
    out
}

/// Every leaf of `v` by its JSON pointer: scalars, and empty arrays and objects (so
/// `[]` and `{}` differ from a missing member and from each other).
pub fn flatten(v: &Value) -> BTreeMap<String, &Value> {
    let mut out = BTreeMap::new();
    let mut path = String::new();
    walk(v, &mut path, &mut out);
    out
}

fn walk<'a>(v: &'a Value, path: &mut String, out: &mut BTreeMap<String, &'a Value>) {
    let len = path.len();
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                path.push('/');
                escape_into(k, path);
                walk(child, path, out);
                path.truncate(len);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for (i, child) in a.iter().enumerate() {
                path.push('/');
                path.push_str(&i.to_string());
                walk(child, path, out);
                path.truncate(len);
            }
        }
        _ => {
            out.insert(path.clone(), v);
        }
    }
}

/// A key as a pointer token: `~` → `~0`, `/` → `~1`.
fn escape_into(key: &str, path: &mut String) {
    for c in key.chars() {
        match c {
            '~' => path.push_str("~0"),
            '/' => path.push_str("~1"),
            c => path.push(c),
        }
    }
}

/// `pointer` is one of `ignore` or below one.
fn ignored(pointer: &str, ignore: &[String]) -> bool {
    ignore.iter().any(|i| {
        pointer == i
            || (pointer.len() > i.len()
                && pointer.starts_with(i.as_str())
                && pointer.as_bytes()[i.len()] == b'/')
    })
}

fn leaf_equal(a: &Value, b: &Value, tolerance: f64) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y || (x - y).abs() <= tolerance,
            _ => x == y,
        },
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(ignore: &[&str], tol: f64) -> ShadowCompare {
        ShadowCompare {
            json_ignore: ignore.iter().map(|s| s.to_string()).collect(),
            float_tolerance: tol,
        }
    }

    fn resp(status: u16, body: &[u8]) -> Response<'_> {
        Response {
            status,
            body: Some(body),
            len: body.len() as u64,
            streamed: false,
        }
    }

    #[test]
    fn flatten_names_every_leaf_by_its_escaped_pointer() {
        let v = json!({"a": {"b/c": 1, "d~e": [true, null]}, "e": [], "f": {}, "g": "x"});
        let keys: Vec<_> = flatten(&v).into_keys().collect();
        assert_eq!(
            keys,
            ["/a/b~1c", "/a/d~0e/0", "/a/d~0e/1", "/e", "/f", "/g"]
        );
        let scalar = json!(3);
        assert_eq!(flatten(&scalar).into_keys().collect::<Vec<_>>(), [""]);
    }

    #[test]
    fn ignored_pointers_and_their_subtrees_are_left_out_but_not_their_siblings() {
        let a = json!({"id": "x", "ids": 1, "meta": {"created": 1, "model": "a"}, "label": "cat"});
        let b = json!({"id": "y", "ids": 2, "meta": {"created": 2, "model": "b"}, "label": "cat"});
        assert_eq!(
            json_differences(&a, &b, &cfg(&["/id", "/meta/created"], 0.0)),
            ["/ids", "/meta/model"]
        );
        assert_eq!(
            json_differences(&a, &b, &cfg(&["/id", "/ids", "/meta"], 0.0)),
            Vec::<String>::new()
        );
        assert!(
            json_differences(&a, &b, &cfg(&[""], 0.0)).is_empty(),
            "\"\" ignores everything"
        );
    }

    #[test]
    fn numbers_within_the_tolerance_are_equal_and_types_must_agree() {
        let a = json!({"p": 0.5, "q": 1, "r": "1", "s": [1.0]});
        let b = json!({"p": 0.5000004, "q": 1.0, "r": 1, "s": [1.1]});
        assert_eq!(json_differences(&a, &b, &cfg(&[], 1e-6)), ["/r", "/s/0"]);
        assert_eq!(
            json_differences(&a, &b, &cfg(&[], 0.0)),
            ["/p", "/r", "/s/0"]
        );
    }

    #[test]
    fn members_on_one_side_only_and_shape_changes_differ() {
        let a = json!({"x": [1, 2], "y": {}, "z": null});
        let b = json!({"x": [1], "y": [], "w": null});
        assert_eq!(
            json_differences(&a, &b, &cfg(&[], 0.0)),
            ["/w", "/x/1", "/y", "/z"]
        );
    }

    #[test]
    fn json_bodies_compare_by_pointer_others_by_hash_and_status_counts() {
        let c = cfg(&["/id"], 0.0);
        let d = compare(
            &resp(200, br#"{"id":1,"label":"cat"}"#),
            &resp(200, br#"{ "label" : "cat", "id": 2 }"#),
            &c,
        );
        assert!(d.is_match(), "{d:?}");
        assert_eq!(d.method, Method::Json);
        let d = compare(
            &resp(200, br#"{"id":1,"label":"cat"}"#),
            &resp(500, br#"{"id":1,"label":"dog"}"#),
            &c,
        );
        assert!(d.status);
        assert_eq!(d.pointers, ["/label"]);
        let d = compare(&resp(200, b"hello"), &resp(200, b"hello"), &c);
        assert_eq!((d.method, d.is_match()), (Method::Hash, true));
        let d = compare(&resp(200, b"hello"), &resp(200, b"{\"a\":1}"), &c);
        assert_eq!(
            (d.method, d.pointers.clone()),
            (Method::Hash, vec![String::new()])
        );
        assert!(compare(&resp(204, b""), &resp(204, b""), &c).is_match());
    }

    #[test]
    fn streams_compare_by_status_and_oversized_bodies_by_length() {
        let c = cfg(&[], 0.0);
        let mut a = resp(200, b"data: 1\n\n");
        let b = resp(200, b"data: 2\n\n");
        a.streamed = true;
        let d = compare(&a, &b, &c);
        assert_eq!((d.method, d.is_match()), (Method::Stream, true));
        let big = Response {
            status: 200,
            body: None,
            len: 10,
            streamed: false,
        };
        let d = compare(&big, &resp(200, b"0123456789"), &c);
        assert_eq!((d.method, d.is_match()), (Method::Size, true));
        let d = compare(&big, &resp(200, b"01234"), &c);
        assert_eq!(d.pointers, [""]);
    }

    #[test]
    fn at_most_sixteen_pointers_are_named_and_the_rest_counted() {
        let a = Value::Array((0..20).map(|i| json!(i)).collect());
        let b = Value::Array((0..20).map(|i| json!(i + 100)).collect());
        let d = compare(
            &resp(200, a.to_string().as_bytes()),
            &resp(200, b.to_string().as_bytes()),
            &cfg(&[], 0.0),
        );
        assert_eq!((d.pointers.len(), d.more), (MAX_POINTERS, 4));
    }
}
