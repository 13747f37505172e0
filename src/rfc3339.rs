//! Timestamps as every abgate record carries them: RFC 3339 UTC with microseconds
//! (`2026-11-22T10:00:00.123456Z`), for serde. The event writer's fast path formats the
//! same text without serde (`events::encode::timestamp`, tested against this).

use serde::{Deserialize, Deserializer, Serializer};
use std::time::SystemTime;

/// Serialize a `SystemTime` as RFC 3339 UTC with microseconds.
pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_micros(*t))
}

/// Read an RFC 3339 timestamp back.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_rfc3339(&s).map_err(serde::de::Error::custom)
}
