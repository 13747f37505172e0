//! The names an exposure records for one assignment, encoded as JSON once when the
//! config is compiled (the event writer copies the bytes).

use serde::Serialize;
use std::sync::Arc;

/// The names of one (layer, experiment, assigned variant, served variant), with their
/// JSON made once when the config is compiled: a request clones one `Arc` per
/// experiment and the writer copies one slice instead of escaping four strings.
#[derive(Debug, Serialize)]
pub struct AssignmentNames {
    /// Layer name.
    pub layer: Arc<str>,
    /// Experiment name.
    pub experiment: Arc<str>,
    /// Variant assigned by the hash (or forced).
    pub variant: Arc<str>,
    /// Variant actually served (control after a rollback or pause).
    pub served: Arc<str>,
    /// `{"layer":…,"experiment":…,"variant":…,"served":…` (no closing brace).
    #[serde(skip)]
    json: Box<[u8]>,
}

impl AssignmentNames {
    /// Names and their encoding.
    pub fn new(layer: Arc<str>, experiment: Arc<str>, variant: Arc<str>, served: Arc<str>) -> Self {
        let mut json = Vec::with_capacity(64);
        json.extend_from_slice(b"{\"layer\":");
        string(&mut json, &layer);
        json.extend_from_slice(b",\"experiment\":");
        string(&mut json, &experiment);
        json.extend_from_slice(b",\"variant\":");
        string(&mut json, &variant);
        json.extend_from_slice(b",\"served\":");
        string(&mut json, &served);
        Self {
            layer,
            experiment,
            variant,
            served,
            json: json.into_boxed_slice(),
        }
    }

    /// The pre-made JSON: an object's opening brace and its four name members.
    pub fn json(&self) -> &[u8] {
        &self.json
    }
}

/// Append `s` as a JSON string (serde_json's escaping: the writer's fast encoder is
/// tested to write the same bytes).
fn string(buf: &mut Vec<u8>, s: &str) {
    // Writing a `&str` into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *buf, s);
}
