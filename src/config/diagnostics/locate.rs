//! Maps a key path (`layer[0].experiment[1].traffic`) back to a line of the config text,
//! so every validation message can say where to look.

use super::Diagnostic;
use toml_edit::{Item, Value};

/// 1-based line of a byte offset.
pub fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Attach lines to (path, message) pairs. A path whose leaf is missing from the file
/// (a required key left out) points at the deepest table that exists.
pub fn locate_all(text: &str, items: Vec<(String, String)>) -> Vec<Diagnostic> {
    let doc = toml_edit::Document::parse(text).ok();
    items
        .into_iter()
        .map(|(path, message)| {
            let line = doc
                .as_ref()
                .and_then(|d| find_span(d.as_item(), &segments(&path)))
                .map(|off| line_of(text, off));
            Diagnostic {
                line,
                path,
                message,
            }
        })
        .collect()
}

enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

fn segments(path: &str) -> Vec<Seg<'_>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Seg::Key(key));
        }
        for idx in rest.split('[').filter(|s| !s.is_empty()) {
            if let Ok(i) = idx.trim_end_matches(']').parse() {
                out.push(Seg::Index(i));
            }
        }
    }
    out
}

/// Start offset of the deepest item on `path` that exists.
fn find_span(root: &Item, path: &[Seg<'_>]) -> Option<usize> {
    let mut best = None;
    let mut cur = Node::Item(root);
    for seg in path {
        let next = match (cur, seg) {
            (Node::Item(Item::Table(t)), Seg::Key(k)) => {
                if let Some((key, item)) = t.get_key_value(k) {
                    best = key.span().map(|s| s.start).or(best);
                    Some(Node::Item(item))
                } else {
                    None
                }
            }
            (Node::Item(Item::ArrayOfTables(a)), Seg::Index(i)) => a.get(*i).map(|t| {
                best = t.span().map(|s| s.start).or(best);
                Node::Table(t)
            }),
            (Node::Table(t), Seg::Key(k)) => t.get_key_value(k).map(|(key, item)| {
                best = key.span().map(|s| s.start).or(best);
                Node::Item(item)
            }),
            (Node::Item(Item::Value(v)), s) | (Node::Value(v), s) => value_child(v, s, &mut best),
            _ => None,
        };
        match next {
            Some(n) => cur = n,
            None => break,
        }
    }
    best
}

#[derive(Clone, Copy)]
enum Node<'a> {
    Item(&'a Item),
    Table(&'a toml_edit::Table),
    Value(&'a Value),
}

fn value_child<'a>(v: &'a Value, seg: &Seg<'_>, best: &mut Option<usize>) -> Option<Node<'a>> {
    match (v, seg) {
        (Value::InlineTable(t), Seg::Key(k)) => t.get_key_value(k).map(|(key, val)| {
            *best = key.span().map(|s| s.start).or(*best);
            Node::Item(val)
        }),
        (Value::Array(a), Seg::Index(i)) => a.get(*i).map(|val| {
            *best = val.span().map(|s| s.start).or(*best);
            Node::Value(val)
        }),
        _ => None,
    }
}
