//! Hand-written JSON Lines encoding of the two frequent records (exposure, outcome).
//!
//! It produces exactly what the serde derive produces (a test compares both on the same
//! records), about four times faster, so one writer thread keeps up with well over a
//! million events per second. Rare records (guardrail decisions) go through serde.

use super::{Exposure, Outcome, RequestId};
use std::cell::Cell;
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
    thread_local! {
        // The last second formatted on this thread and its `"YYYY-MM-DDTHH:MM:SS`: the
        // writer formats thousands of timestamps per second, nearly all in the same second.
        static LAST_SECOND: Cell<(u64, [u8; 20])> = const { Cell::new((u64::MAX, [0; 20])) };
    }
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let prefix = LAST_SECOND.with(|last| {
        let (cached, prefix) = last.get();
        if cached == secs {
            return prefix;
        }
        let prefix = second_prefix(secs);
        last.set((secs, prefix));
        prefix
    });
    // Filled on the stack and copied once: one capacity check.
    let mut out = *b"\"0000-00-00T00:00:00.000000Z\"";
    out[..20].copy_from_slice(&prefix);
    digits(&mut out[21..27], d.subsec_micros() as u64);
    buf.extend_from_slice(&out);
}

/// `"YYYY-MM-DDTHH:MM:SS` of `secs` since the epoch, with the opening quote.
fn second_prefix(secs: u64) -> [u8; 20] {
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
    let mut out = *b"\"0000-00-00T00:00:00";
    digits(&mut out[1..5], year);
    digits(&mut out[6..8], month);
    digits(&mut out[9..11], day);
    digits(&mut out[12..14], sod / 3600);
    digits(&mut out[15..17], sod / 60 % 60);
    digits(&mut out[18..20], sod % 60);
    out
}

/// Writes `v` in decimal into `slots`, zero-padded to their width.
fn digits(slots: &mut [u8], mut v: u64) {
    for slot in slots.iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// A latency in milliseconds. The proxy records whole microseconds, and such a value is
/// written from integers (`12.4`, `0.057`, `30000.0`), byte for byte what ryu writes for
/// it (its shortest round-trip form: the value is the double nearest to a decimal with at
/// most 3 fraction digits, and below 10^12 no shorter decimal lies as near); any other
/// value goes through ryu.
fn millis(buf: &mut Vec<u8>, x: f64) {
    let us = (x * 1000.0).round();
    if !((1.0..1e15).contains(&us) && us / 1000.0 == x) {
        return float(buf, x);
    }
    let us = us as u64;
    int(buf, us / 1000);
    let mut frac = *b".000";
    digits(&mut frac[1..], us % 1000);
    // `.0` for a whole number of milliseconds, else no trailing zeros.
    let keep = match us % 1000 {
        f if f % 100 == 0 => 2,
        f if f % 10 == 0 => 3,
        _ => 4,
    };
    buf.extend_from_slice(&frac[..keep]);
}

fn request_id(buf: &mut Vec<u8>, id: &RequestId) {
    match id {
        RequestId::Ulid(u) => {
            buf.push(b'"');
            buf.extend_from_slice(&RequestId::ulid_bytes(*u));
            buf.push(b'"');
        }
        RequestId::Client(s) => string(buf, s),
    }
}

/// One exposure line (without the trailing newline); `hash` rewrites unit ids.
pub fn exposure(buf: &mut Vec<u8>, e: &Exposure, hash: Option<&dyn Fn(&str) -> String>) {
    let hashed = |s: &str| -> Option<String> { hash.map(|h| h(s)) };
    buf.extend_from_slice(b"{\"type\":\"exposure\",\"ts\":");
    timestamp(buf, e.ts);
    buf.extend_from_slice(b",\"request_id\":");
    request_id(buf, &e.request_id);
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
        if let Some(p) = a.bandit_period {
            buf.extend_from_slice(b",\"bandit_period\":");
            int(buf, p);
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
    millis(buf, e.latency_ms);
    buf.extend_from_slice(b",\"ttfb_ms\":");
    millis(buf, e.ttfb_ms);
    buf.extend_from_slice(b",\"error\":");
    opt_string(buf, e.error.map(|k| k.as_str()));
    buf.extend_from_slice(b",\"grpc_status\":");
    match e.grpc_status {
        Some(c) => int(buf, c as u64),
        None => buf.extend_from_slice(b"null"),
    }
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

/// With `[fleet]`: close the line just encoded at the end of `buf` (`…}` and its
/// `\n`) with `,"event_id":"<ULID>","instance":"<instance>"}` instead. The fields come
/// last so readers can find the id from the end of the line; the writer calls this, so
/// the request path never pays for it.
pub fn fleet_fields(buf: &mut Vec<u8>, event_id: u128, instance: &str) {
    if !buf.ends_with(b"}\n") {
        return; // every encoded event ends so; never splice into anything else
    }
    buf.truncate(buf.len() - 2);
    buf.extend_from_slice(b",\"event_id\":\"");
    buf.extend_from_slice(&RequestId::ulid_bytes(event_id));
    buf.extend_from_slice(b"\",\"instance\":");
    string(buf, instance);
    buf.extend_from_slice(b"}\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn via_ryu(x: f64) -> String {
        let mut buf = Vec::new();
        float(&mut buf, x);
        String::from_utf8(buf).unwrap()
    }

    fn via_millis(x: f64) -> String {
        let mut buf = Vec::new();
        millis(&mut buf, x);
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn millis_writes_what_ryu_writes() {
        // Every microsecond value up to 200 ms, then 200,000 random ones (fixed seed) up to
        // the integer path's bound, then values off the microsecond grid and special ones.
        for us in 0..200_000u64 {
            let x = us as f64 / 1000.0;
            assert_eq!(via_millis(x), via_ryu(x), "{us} µs");
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..200_000 {
            let us: u64 = rng.random_range(1..1_000_000_000_000_000);
            let x = us as f64 / 1000.0;
            assert_eq!(via_millis(x), via_ryu(x), "{us} µs");
        }
        for x in [
            0.0,
            -0.0,
            -1.5,
            0.1 + 0.2,
            0.0004,
            12.4,
            1234.5,
            30_000.0,
            999_999_999_999.999,
            1e12,
            1e15,
            1e300,
            f64::MIN_POSITIVE,
            f64::NAN,
            f64::INFINITY,
        ] {
            assert_eq!(via_millis(x), via_ryu(x), "{x}");
        }
        assert_eq!(via_millis(12.4), "12.4");
        assert_eq!(via_millis(30_000.0), "30000.0");
        assert_eq!(via_millis(0.057), "0.057");
    }

    #[test]
    fn timestamps_within_and_across_seconds_match_humantime() {
        // The date and time of day are cached per second: step through seconds forwards
        // and back, at both ends of each second, on dates far apart.
        let mut buf = Vec::new();
        for base in [0u64, 951_782_399, 1_795_860_000, 4_102_444_799] {
            for (ds, us) in [
                (0, 0),
                (0, 1),
                (0, 999_999),
                (1, 0),
                (1, 500_000),
                (0, 123_456),
                (86_400, 7),
                (0, 8),
            ] {
                let t = SystemTime::UNIX_EPOCH
                    + std::time::Duration::from_secs(base + ds)
                    + std::time::Duration::from_micros(us);
                buf.clear();
                timestamp(&mut buf, t);
                let want = format!("\"{}\"", humantime::format_rfc3339_micros(t));
                assert_eq!(std::str::from_utf8(&buf).unwrap(), want, "at {t:?}");
            }
        }
    }
}
