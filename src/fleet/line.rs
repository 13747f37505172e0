//! Reading a line of the event log for shipping, without parsing it: its `event_id`
//! (the message id), its `type` and the subject that type is published on.

use std::borrow::Cow;

/// The subject of an event type: `abgate.events.<type>`, without an allocation for
/// the types abgate writes.
pub fn subject(ty: &str) -> Cow<'static, str> {
    match ty {
        "exposure" => Cow::Borrowed("abgate.events.exposure"),
        "outcome" => Cow::Borrowed("abgate.events.outcome"),
        "guardrail" => Cow::Borrowed("abgate.events.guardrail"),
        "ramp" => Cow::Borrowed("abgate.events.ramp"),
        "shadow" => Cow::Borrowed("abgate.events.shadow"),
        "unknown" => Cow::Borrowed("abgate.events.unknown"),
        other => Cow::Owned(format!("abgate.events.{other}")),
    }
}

/// The `event_id` of a line the writer wrote with `[fleet]`: its last field.
pub fn event_id(line: &[u8]) -> Option<&str> {
    const KEY: &[u8] = b"\"event_id\":\"";
    let at = memchr::memmem::rfind(line, KEY)? + KEY.len();
    let id = line.get(at..at + 26)?;
    (line.get(at + 26) == Some(&b'"') && id.iter().all(|b| b.is_ascii_alphanumeric()))
        .then(|| std::str::from_utf8(id).ok())
        .flatten()
}

/// The `type` of a line (`exposure`, `outcome`, `guardrail`, …), for its subject. The
/// writer puts it first; anything else is read with serde. Not a usable subject token:
/// `unknown`.
pub fn event_type(line: &[u8]) -> &str {
    const KEY: &[u8] = b"{\"type\":\"";
    let ty = if let Some(rest) = line.strip_prefix(KEY) {
        memchr::memchr(b'"', rest).and_then(|e| std::str::from_utf8(&rest[..e]).ok())
    } else {
        None
    };
    match ty {
        Some(t) if !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') => t,
        _ => serde_type(line),
    }
}

fn serde_type(line: &[u8]) -> &'static str {
    #[derive(serde::Deserialize)]
    struct Typed<'a> {
        #[serde(rename = "type", borrow)]
        ty: std::borrow::Cow<'a, str>,
    }
    match serde_json::from_slice::<Typed>(line).ok().map(|t| t.ty) {
        Some(t) if t == "exposure" => "exposure",
        Some(t) if t == "outcome" => "outcome",
        Some(t) if t == "guardrail" => "guardrail",
        Some(t) if t == "ramp" => "ramp",
        Some(t) if t == "shadow" => "shadow",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_types_are_read_from_the_line() {
        let l = br#"{"type":"exposure","unit_id":"x\"event_id\":\"","event_id":"01J0000000000000000000000A","instance":"pod-a"}"#;
        assert_eq!(event_id(l), Some("01J0000000000000000000000A"));
        assert_eq!(event_type(l), "exposure");
        assert_eq!(event_id(br#"{"type":"outcome"}"#), None);
        assert_eq!(event_type(br#"{ "type" : "guardrail"}"#), "guardrail");
        assert_eq!(event_type(br#"{"type":"a.b"}"#), "unknown");
        assert_eq!(event_type(b"garbage"), "unknown");
    }
}
