//! The `shadow` record: one per shadow copy of a request — compared, failed or skipped —
//! so `abgate analyze` can count mismatch rates, statuses and latencies exactly
//! (docs/decisions.md, "One shadow record per copy"). A mismatch names its differing
//! JSON pointers.

use super::RequestId;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::SystemTime;

/// What became of one shadow copy: the `result` label of
/// `abgate_shadow_requests_total` and of the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum ShadowResult {
    /// Both responses agree.
    Match,
    /// They differ (status, or a body pointer not ignored).
    Mismatch,
    /// The copy failed (connect, timeout, broken connection).
    Error,
    /// The copy was not sent (body too large, no slot, request incomplete).
    Skipped,
}

impl ShadowResult {
    /// Every result, in the order of their metric handles.
    pub const ALL: [ShadowResult; 4] = [
        ShadowResult::Match,
        ShadowResult::Mismatch,
        ShadowResult::Error,
        ShadowResult::Skipped,
    ];

    /// The word in metrics and records.
    pub fn as_str(self) -> &'static str {
        match self {
            ShadowResult::Match => "match",
            ShadowResult::Mismatch => "mismatch",
            ShadowResult::Error => "error",
            ShadowResult::Skipped => "skipped",
        }
    }
}

/// One shadow copy, as written.
#[derive(Debug, Clone, Serialize)]
pub struct ShadowRecord {
    /// When the copy finished (or was skipped).
    #[serde(serialize_with = "crate::rfc3339::serialize")]
    pub ts: SystemTime,
    /// The request's id (the `x-request-id` both backends received).
    pub request_id: RequestId,
    /// The experiment.
    pub experiment: Arc<str>,
    /// The variant whose served request was copied.
    pub variant: Arc<str>,
    /// The upstream that received the copy.
    pub upstream: Arc<str>,
    /// What became of the copy.
    pub result: ShadowResult,
    /// Why it was skipped (`too_large`, `busy`, `incomplete`) or failed (`connect`,
    /// `timeout`, `reset`); null otherwise.
    pub reason: Option<&'static str>,
    /// How the bodies were compared (`json`, `hash`, `stream`, `size`); null when not
    /// compared.
    pub compared: Option<&'static str>,
    /// Status of the served response (0: none).
    pub primary_status: u16,
    /// Status of the shadow's response (0: none).
    pub shadow_status: u16,
    /// Served response: from the request's start to its last byte.
    pub primary_latency_ms: f64,
    /// Served response: to its first body byte.
    pub primary_ttfb_ms: f64,
    /// Shadow response: from dispatch to its last byte; null when not sent or failed.
    pub shadow_latency_ms: Option<f64>,
    /// Shadow response: from dispatch to its first body byte; null when not received.
    pub shadow_ttfb_ms: Option<f64>,
    /// Differing JSON pointers of a mismatch (`""`: the whole body), at most 16.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pointers: Vec<String>,
    /// Differing pointers beyond those named.
    #[serde(skip_serializing_if = "is_zero")]
    pub pointers_more: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}
