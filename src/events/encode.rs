//! Hand-written JSON Lines encoding of the two frequent records (exposure, outcome).
//!
//! It produces exactly what the serde derive produces (a test compares both on the same
//! records), about four times faster, so one writer thread keeps up with well over a
//! million events per second. Rare records (guardrail decisions) go through serde.

use super::{Exposure, Outcome, RequestId};
use std::time::SystemTime;

/// Bytes a JSON string cannot hold as they are.
static ESCAPE: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

#[inline]
fn needs_escape(s: &str) -> bool {
    s.bytes().any(|b| ESCAPE[b as usize])
}

/// A JSON string, quoted.
#[inline]
pub fn string(buf: &mut Vec<u8>, s: &str) {
    if needs_escape(s) {
        // Rare: let serde_json do the escaping.
        let _ = serde_json::to_writer(&mut *buf, s);
    } else {
        buf.push(b'"');
        buf.extend_from_slice(s.as_bytes());
        buf.push(b'"');
    }
}

fn opt_string(buf: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => string(buf, s),
        None => buf.extend_from_slice(b"null"),
    }
}

#[inline]
fn float(buf: &mut Vec<u8>, x: f64) {
    if x.is_finite() {
        let mut b = ryu::Buffer::new();
        buf.extend_from_slice(b.format_finite(x).as_bytes());
    } else {
        buf.extend_from_slice(b"null");
    }
}

#[inline]
fn int(buf: &mut Vec<u8>, x: u64) {
    let mut b = itoa::Buffer::new();
    buf.extend_from_slice(b.format(x).as_bytes());
}

/// `"2026-11-23T02:43:48.455471Z"` (RFC 3339, UTC, microseconds), quoted.
pub fn timestamp(buf: &mut Vec<u8>, t: SystemTime) {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let days = (secs / 86_400) as i64;
    let sod = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u64;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u64;
    let year = (if month <= 2 { y + 1 } else { y }) as u64;
    // Filled on the stack and copied once: one capacity check instead of 29.
    let mut out = *b"\"0000-00-00T00:00:00.000000Z\"";
    let mut digits = |at: usize, width: usize, mut v: u64| {
        for slot in out[at..at + width].iter_mut().rev() {
            *slot = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    digits(1, 4, year);
    digits(6, 2, month);
    digits(9, 2, day);
    digits(12, 2, sod / 3600);
    digits(15, 2, sod / 60 % 60);
    digits(18, 2, sod % 60);
    digits(21, 6, d.subsec_micros() as u64);
    buf.extend_from_slice(&out);
}

fn request_id(buf: &mut Vec<u8>, id: RequestId) {
    buf.push(b'"');
    buf.extend_from_slice(&id.to_bytes());
    buf.push(b'"');
}

/// One exposure line (without the trailing newline); `hash` rewrites unit ids.
pub fn exposure(buf: &mut Vec<u8>, e: &Exposure, hash: Option<&dyn Fn(&str) -> String>) {
    let hashed = |s: &str| -> Option<String> { hash.map(|h| h(s)) };
    buf.extend_from_slice(b"{\"type\":\"exposure\",\"ts\":");
    timestamp(buf, e.ts);
    buf.extend_from_slice(b",\"request_id\":");
    request_id(buf, e.request_id);
    buf.extend_from_slice(b",\"unit\":");
    string(buf, e.unit);
    buf.extend_from_slice(b",\"unit_id\":");
    match e.unit_id.as_deref() {
        Some(u) => match hashed(u) {
            Some(h) => string(buf, &h),
            None => string(buf, u),
        },
        None => buf.extend_from_slice(b"null"),
    }
    buf.extend_from_slice(b",\"assignments\":[");
    for (i, a) in e.assignments.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        buf.extend_from_slice(a.names.json());
        if let Some(u) = &a.unit {
            buf.extend_from_slice(b",\"unit\":");
            string(buf, u);
        }
        if let Some(u) = a.unit_id.as_deref() {
            buf.extend_from_slice(b",\"unit_id\":");
            match hashed(u) {
                Some(h) => string(buf, &h),
                None => string(buf, u),
            }
        }
        if a.forced {
            buf.extend_from_slice(b",\"forced\":true");
        }
        buf.push(b'}');
    }
    buf.extend_from_slice(b"],\"holdout\":");
    buf.extend_from_slice(if e.holdout { b"true" } else { b"false" });
    buf.extend_from_slice(b",\"upstream\":");
    string(buf, &e.upstream);
    buf.extend_from_slice(b",\"status\":");
    int(buf, e.status as u64);
    buf.extend_from_slice(b",\"latency_ms\":");
    float(buf, e.latency_ms);
    buf.extend_from_slice(b",\"error\":");
    opt_string(buf, e.error.map(|k| k.as_str()));
    buf.extend_from_slice(b",\"config_version\":");
    string(buf, &e.config_version);
    buf.push(b'}');
}

/// One outcome line (without the trailing newline).
pub fn outcome(buf: &mut Vec<u8>, o: &Outcome, hash: Option<&dyn Fn(&str) -> String>) {
    buf.extend_from_slice(b"{\"type\":\"outcome\",\"ts\":");
    timestamp(buf, o.ts);
    buf.extend_from_slice(b",\"unit_id\":");
    match hash {
        Some(h) => string(buf, &h(&o.unit_id)),
        None => string(buf, &o.unit_id),
    }
    buf.extend_from_slice(b",\"metric\":");
    string(buf, &o.metric);
    buf.extend_from_slice(b",\"value\":");
    float(buf, o.value);
    buf.extend_from_slice(b",\"source\":");
    string(
        buf,
        match o.source {
            super::OutcomeSource::Api => "api",
            super::OutcomeSource::Header => "header",
        },
    );
    buf.push(b'}');
}
