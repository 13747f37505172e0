//! Event records (exposure, outcome, guardrail, ramp, shadow, bandit), their JSON Lines
//! encoding, and the reader that the analysis uses. The durable writer lives in [`writer`].
//!
//! One JSON object per line; `ts` is RFC 3339 UTC with microseconds. Field names are the
//! product contract (docs/events.md).

pub mod bandit;
pub mod encode;
pub mod reader;
pub mod shadow;
pub mod writer;

use crate::guard::Decision;
use serde::{Serialize, Serializer};
use smallvec::SmallVec;
use std::sync::Arc;
use std::time::SystemTime;

pub use bandit::BanditRecord;
pub use shadow::{ShadowRecord, ShadowResult};
pub use writer::{EventSink, EventWriter, WriterStats};

/// Why a request failed, as written in `error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Could not connect to the backend.
    Connect,
    /// The backend did not answer in time.
    Timeout,
    /// The backend connection broke.
    Reset,
    /// The backend's response was not valid HTTP (a malformed header, too many header
    /// lines, bad framing or HTTP/2 frames): a fault of the backend, not a broken
    /// connection.
    Protocol,
    /// The backend answered 5xx.
    #[serde(rename = "upstream_5xx")]
    Upstream5xx,
    /// The backend answered a `grpc-status` listed in the upstream's `grpc_error_codes`.
    Grpc,
    /// abgate itself failed the request.
    Proxy,
}

impl ErrorKind {
    /// The kinds that are the upstream's failures (every kind but `proxy`), in the order
    /// of their metric handles.
    pub const UPSTREAM: [ErrorKind; 6] = [
        ErrorKind::Connect,
        ErrorKind::Timeout,
        ErrorKind::Reset,
        ErrorKind::Protocol,
        ErrorKind::Upstream5xx,
        ErrorKind::Grpc,
    ];

    /// The `kind` label of `abgate_upstream_errors_total` (`5xx` where the event says
    /// `upstream_5xx`); `None` for abgate's own failures, which no upstream caused.
    pub fn upstream_label(self) -> Option<&'static str> {
        match self {
            ErrorKind::Connect => Some("connect"),
            ErrorKind::Timeout => Some("timeout"),
            ErrorKind::Reset => Some("reset"),
            ErrorKind::Protocol => Some("protocol"),
            ErrorKind::Upstream5xx => Some("5xx"),
            ErrorKind::Grpc => Some("grpc"),
            ErrorKind::Proxy => None,
        }
    }

    /// The word written in an exposure's `error` field.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Reset => "reset",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Upstream5xx => "upstream_5xx",
            ErrorKind::Grpc => "grpc",
            ErrorKind::Proxy => "proxy",
        }
    }
}

/// A request's id: what the exposure records as `request_id` and what the backend
/// receives as `x-request-id`, so backend logs and exposures join on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestId {
    /// Minted by abgate: 128 bits written as a ULID (time-ordered, 26 characters).
    Ulid(u128),
    /// The client's own `x-request-id`, forwarded unchanged (checked by
    /// [`RequestId::from_client`]).
    Client(Box<str>),
}

/// A new ULID (what request ids and, with `[fleet]`, every event's `event_id` are):
/// 48 bits of milliseconds since the epoch, 80 random bits.
pub fn ulid(now: SystemTime) -> u128 {
    let ms = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let rnd: u128 = rand::random::<u128>() & ((1u128 << 80) - 1);
    (ms << 80) | rnd
}

/// The longest client `x-request-id` abgate adopts (a UUID is 36 bytes, a W3C
/// `traceparent` 55); a longer one is replaced by a minted id.
pub const CLIENT_REQUEST_ID_MAX: usize = 128;

impl RequestId {
    /// A new id: 48 bits of milliseconds since the epoch, 80 random bits.
    pub fn new(now: SystemTime) -> Self {
        RequestId::Ulid(ulid(now))
    }

    /// The client's `x-request-id` value as the request's id, if it is usable: 1 to
    /// [`CLIENT_REQUEST_ID_MAX`] bytes of visible ASCII (no spaces or control
    /// characters), so it reads the same in every log that carries it.
    pub fn from_client(value: &[u8]) -> Option<Self> {
        let usable = !value.is_empty()
            && value.len() <= CLIENT_REQUEST_ID_MAX
            && value.iter().all(|b| b.is_ascii_graphic());
        usable
            .then(|| std::str::from_utf8(value).ok())
            .flatten()
            .map(|s| RequestId::Client(s.into()))
    }

    /// The 26 characters of a minted id (Crockford base32, like a ULID).
    pub fn ulid_bytes(ulid: u128) -> [u8; 26] {
        const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
        let mut buf = [0u8; 26];
        for (i, b) in buf.iter_mut().enumerate() {
            let shift = 125 - 5 * i as u32;
            *b = ALPHABET[((ulid >> shift) & 31) as usize];
        }
        buf
    }
}

impl Default for RequestId {
    fn default() -> Self {
        RequestId::Ulid(0)
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestId::Ulid(u) => {
                f.write_str(std::str::from_utf8(&Self::ulid_bytes(*u)).unwrap_or("?"))
            }
            RequestId::Client(s) => f.write_str(s),
        }
    }
}

impl Serialize for RequestId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The names of one exposure's assignment (made when the config is compiled).
pub use crate::config::AssignmentNames;

/// One experiment a request was exposed to.
#[derive(Debug, Clone, Serialize)]
pub struct ExposureAssignment {
    /// Layer, experiment, assigned and served variant.
    #[serde(flatten)]
    pub names: Arc<AssignmentNames>,
    /// Unit of this experiment when it is not the top-level `unit`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<Arc<str>>,
    /// Unit id of this experiment when it is not the top-level `unit_id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit_id: Option<String>,
    /// Present and true when a QA force chose the variant.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub forced: bool,
    /// The bandit period the request was served in (bandit experiments only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bandit_period: Option<u64>,
}

/// An exposure: one per proxied request.
#[derive(Debug, Clone, Serialize)]
pub struct Exposure {
    /// When the response completed.
    #[serde(serialize_with = "crate::rfc3339::serialize")]
    pub ts: SystemTime,
    /// Request id: the `x-request-id` the backend received.
    pub request_id: RequestId,
    /// Unit of `unit_id` (`user`).
    pub unit: &'static str,
    /// The identity; null when the request had none.
    pub unit_id: Option<String>,
    /// Experiments the request was in.
    pub assignments: SmallVec<[ExposureAssignment; 4]>,
    /// Whether the unit is in the global holdout.
    pub holdout: bool,
    /// Upstream pool that served the request.
    pub upstream: Arc<str>,
    /// Status sent to the client (0 if none was sent).
    pub status: u16,
    /// Time from request start to response end.
    pub latency_ms: f64,
    /// Time from request start to the first byte of the response body sent to the
    /// client (the header when there is no body): for a streamed generation, the first
    /// token. Equals `latency_ms` when nothing was sent.
    pub ttfb_ms: f64,
    /// Failure class, or null.
    pub error: Option<ErrorKind>,
    /// The backend's `grpc-status` (trailers, or a trailers-only header); null for a
    /// response that is not gRPC.
    pub grpc_status: Option<u32>,
    /// Which config routed the request.
    pub config_version: Arc<str>,
}

/// Where an outcome came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeSource {
    /// `POST /_abgate/outcome`.
    Api,
    /// A backend response header.
    Header,
}

/// An outcome: a metric value of a unit.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// When it was received.
    #[serde(serialize_with = "crate::rfc3339::serialize")]
    pub ts: SystemTime,
    /// The unit.
    pub unit_id: String,
    /// Metric name (declared in `[[metric]]`).
    pub metric: Arc<str>,
    /// Value (finite).
    pub value: f64,
    /// Where it came from.
    pub source: OutcomeSource,
}

/// Anything the writer writes.
#[derive(Debug, Clone)]
pub enum Event {
    /// Exposure.
    Exposure(Box<Exposure>),
    /// Outcome.
    Outcome(Outcome),
    /// A guardrail or operator decision.
    Guardrail(Decision),
    /// A ramp's transition, with the gate's numbers.
    Ramp(Box<crate::guard::ramp::Transition>),
    /// A shadow copy's comparison.
    Shadow(Box<ShadowRecord>),
    /// A bandit period opened.
    Bandit(Box<BanditRecord>),
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Tagged<'a> {
    Exposure(&'a Exposure),
    Outcome(&'a Outcome),
    Guardrail(&'a Decision),
    Ramp(&'a crate::guard::ramp::Transition),
    Shadow(&'a ShadowRecord),
    Bandit(&'a BanditRecord),
}

impl Event {
    /// Append this event as one JSON line to `buf`. `hash_id` rewrites unit ids (the
    /// privacy option); it is applied here, in the writer, off the request path.
    pub fn encode(&self, buf: &mut Vec<u8>, hash_id: Option<&dyn Fn(&str) -> String>) {
        match self {
            Event::Exposure(e) => encode::exposure(buf, e, hash_id),
            Event::Outcome(o) => encode::outcome(buf, o, hash_id),
            Event::Guardrail(g) => {
                // Serializing into a Vec cannot fail for this type.
                let _ = serde_json::to_writer(&mut *buf, &Tagged::Guardrail(g));
            }
            Event::Ramp(r) => {
                let _ = serde_json::to_writer(&mut *buf, &Tagged::Ramp(r));
            }
            Event::Shadow(r) => {
                let _ = serde_json::to_writer(&mut *buf, &Tagged::Shadow(r));
            }
            Event::Bandit(r) => {
                let _ = serde_json::to_writer(&mut *buf, &Tagged::Bandit(r));
            }
        }
        buf.push(b'\n');
    }

    /// The same line through serde (the reference the fast encoder is tested against).
    pub fn encode_serde(&self, buf: &mut Vec<u8>) {
        let _ = match self {
            Event::Exposure(e) => serde_json::to_writer(&mut *buf, &Tagged::Exposure(e)),
            Event::Outcome(o) => serde_json::to_writer(&mut *buf, &Tagged::Outcome(o)),
            Event::Guardrail(g) => serde_json::to_writer(&mut *buf, &Tagged::Guardrail(g)),
            Event::Ramp(r) => serde_json::to_writer(&mut *buf, &Tagged::Ramp(r)),
            Event::Shadow(r) => serde_json::to_writer(&mut *buf, &Tagged::Shadow(r)),
            Event::Bandit(r) => serde_json::to_writer(&mut *buf, &Tagged::Bandit(r)),
        };
        buf.push(b'\n');
    }
}

/// Keyed hash of a unit id for `events.hash_unit_ids`: HMAC-SHA256, first 16 bytes, hex.
pub fn keyed_unit_hash(key: &[u8], id: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac =
        <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    hex::encode(&mac.finalize().into_bytes()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_match_humantime_across_centuries() {
        // Every 3 days and 7,919 s plus a varying fraction, 1970 to about 2126: leap
        // years, 2000 and 2100 (not leap), month ends and all six microsecond digits.
        let mut buf = Vec::new();
        for i in 0..19_000u64 {
            let t = SystemTime::UNIX_EPOCH
                + std::time::Duration::new(
                    i * (3 * 86_400 + 7_919),
                    ((i * 7_777_777) % 1_000_000_000) as u32,
                );
            buf.clear();
            encode::timestamp(&mut buf, t);
            let want = format!("\"{}\"", humantime::format_rfc3339_micros(t));
            assert_eq!(std::str::from_utf8(&buf).unwrap(), want, "at {t:?}");
        }
    }

    #[test]
    fn fast_encoder_matches_serde_exactly() {
        use std::time::Duration;
        let base = Exposure {
            ts: SystemTime::UNIX_EPOCH + Duration::from_micros(1_795_860_000_000_007),
            request_id: RequestId::Ulid(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef),
            unit: "user",
            unit_id: Some("we\"ird\\id\u{1}é".into()),
            assignments: smallvec::smallvec![
                ExposureAssignment {
                    names: Arc::new(AssignmentNames::new(
                        "model".into(),
                        "ranker_v2".into(),
                        "treatment".into(),
                        "control".into()
                    )),
                    unit: Some("x-tenant".into()),
                    unit_id: Some("t-1".into()),
                    forced: true,
                    bandit_period: None,
                },
                ExposureAssignment {
                    names: Arc::new(AssignmentNames::new(
                        "p".into(),
                        "e".into(),
                        "a".into(),
                        "a".into()
                    )),
                    unit: None,
                    unit_id: None,
                    forced: false,
                    bandit_period: Some(7),
                }
            ],
            holdout: true,
            upstream: "model_b".into(),
            status: 502,
            latency_ms: 1234.5,
            ttfb_ms: 3.25,
            error: Some(ErrorKind::Grpc),
            grpc_status: Some(14),
            config_version: "abc".into(),
        };
        let mut none = base.clone();
        none.unit_id = None;
        none.assignments.clear();
        none.error = None;
        none.grpc_status = None;
        none.latency_ms = 12.0;
        // a client's request id, with the two visible characters JSON escapes
        none.request_id = RequestId::from_client(br#"req-"7"\x"#).unwrap();
        // dates across years, leap days and the epoch
        for micros in [
            0u64,
            951_782_400_000_001,
            1_709_164_799_999_999,
            4_102_444_800_123_456,
        ] {
            let mut e = base.clone();
            e.ts = SystemTime::UNIX_EPOCH + Duration::from_micros(micros);
            for ev in [
                Event::Exposure(Box::new(e)),
                Event::Exposure(Box::new(none.clone())),
            ] {
                let (mut a, mut b) = (Vec::new(), Vec::new());
                ev.encode(&mut a, None);
                ev.encode_serde(&mut b);
                assert_eq!(String::from_utf8(a).unwrap(), String::from_utf8(b).unwrap());
            }
        }
        let o = Event::Outcome(Outcome {
            ts: SystemTime::UNIX_EPOCH + Duration::from_micros(1_795_860_000_123_456),
            unit_id: "u\n1".into(),
            metric: "tokens".into(),
            value: 0.1 + 0.2,
            source: OutcomeSource::Header,
        });
        let (mut a, mut b) = (Vec::new(), Vec::new());
        o.encode(&mut a, None);
        o.encode_serde(&mut b);
        assert_eq!(a, b);
    }

    #[test]
    fn a_client_request_id_is_adopted_only_when_usable() {
        let adopt = |v: &[u8]| RequestId::from_client(v).map(|id| id.to_string());
        let uuid = "3f2c1a9e-8b7d-4c6e-9f10-2a3b4c5d6e7f";
        assert_eq!(adopt(uuid.as_bytes()).as_deref(), Some(uuid));
        assert_eq!(adopt(b"client-req-1").as_deref(), Some("client-req-1"));
        let longest = "a".repeat(CLIENT_REQUEST_ID_MAX);
        assert_eq!(adopt(longest.as_bytes()), Some(longest.clone()));
        // empty, too long, spaces, control characters, non-ASCII: abgate mints its own
        for bad in [
            &b""[..],
            "a".repeat(CLIENT_REQUEST_ID_MAX + 1).as_bytes(),
            b"a b",
            b"a\tb",
            b"id\x7f",
            "r\u{e9}q".as_bytes(),
        ] {
            assert_eq!(adopt(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn request_id_is_a_26_char_ulid() {
        let id = RequestId::new(
            SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_000),
        );
        let s = id.to_string();
        assert_eq!(s.len(), 26);
        // the leading 10 characters encode the millisecond timestamp
        let id2 = RequestId::new(
            SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_000),
        );
        assert_eq!(&s[..10], &id2.to_string()[..10]);
    }

    #[test]
    fn exposure_encodes_with_spec_fields() {
        let e = Event::Exposure(Box::new(Exposure {
            ts: SystemTime::UNIX_EPOCH + std::time::Duration::from_micros(1_795_860_000_123_456),
            request_id: RequestId::Ulid(0),
            unit: "user",
            unit_id: Some("u-123".into()),
            assignments: smallvec::smallvec![ExposureAssignment {
                names: Arc::new(AssignmentNames::new(
                    "model".into(),
                    "ranker_v2".into(),
                    "treatment".into(),
                    "treatment".into()
                )),
                unit: None,
                unit_id: None,
                forced: false,
                bandit_period: None,
            }],
            holdout: false,
            upstream: "model_b".into(),
            status: 200,
            latency_ms: 12.4,
            ttfb_ms: 2.5,
            error: None,
            grpc_status: None,
            config_version: "abc".into(),
        }));
        let mut buf = Vec::new();
        e.encode(&mut buf, None);
        let s = String::from_utf8(buf).unwrap();
        assert!(s.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["type"], "exposure");
        assert_eq!(v["ts"], "2026-11-28T10:00:00.123456Z");
        assert_eq!(v["unit_id"], "u-123");
        assert_eq!(v["assignments"][0]["served"], "treatment");
        assert_eq!(v["error"], serde_json::Value::Null);
        assert_eq!(v["grpc_status"], serde_json::Value::Null);
        assert_eq!(v["ttfb_ms"], 2.5);
        assert_eq!(v["status"], 200);
        let mut buf = Vec::new();
        let h = |id: &str| keyed_unit_hash(b"k", id);
        e.encode(&mut buf, Some(&h));
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v["unit_id"], keyed_unit_hash(b"k", "u-123"));
        assert_eq!(v["unit_id"].as_str().unwrap().len(), 32);
    }
}
