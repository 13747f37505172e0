//! Reading one event line for the analysis: the fields `analyze` needs, and nothing else.
//!
//! Most of the time of an analysis is spent turning lines into fields, so lines are read
//! by a small scanner that walks the JSON once, borrows the strings it needs from the
//! line and skips everything else without building it. The scanner is strict: the moment
//! a line is anything but plain JSON of the expected shape — an escape inside a string it
//! must keep, bytes that are not UTF-8, a raw control character, a duplicate field, a number out of range, a syntax error —
//! it gives up and the line goes to `serde_json`, which either reads it the slow way or
//! says precisely what is wrong with it. So the scanner decides nothing serde would
//! decide differently (tested by running both on the same mutated lines).

use serde::Deserialize;
use smallvec::SmallVec;
use std::borrow::Cow;

/// The fields of an event line the analysis uses.
#[derive(Debug, Deserialize, PartialEq)]
pub struct Line<'a> {
    #[serde(rename = "type", borrow)]
    pub ty: Cow<'a, str>,
    #[serde(borrow, default)]
    pub ts: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub unit_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub assignments: Option<SmallVec<[LineAssignment<'a>; 4]>>,
    #[serde(borrow, default)]
    pub metric: Option<Cow<'a, str>>,
    #[serde(default)]
    pub value: Option<f64>,
    #[serde(default)]
    pub latency_ms: Option<f64>,
    #[serde(borrow, default)]
    pub error: Option<Cow<'a, str>>,
    /// With `[fleet]`: the event's id; a line whose id was already read is a duplicate.
    #[serde(borrow, default)]
    pub event_id: Option<Cow<'a, str>>,
}

/// One entry of an exposure's `assignments`.
#[derive(Debug, Deserialize, PartialEq)]
pub struct LineAssignment<'a> {
    #[serde(borrow)]
    pub experiment: Cow<'a, str>,
    #[serde(borrow)]
    pub variant: Cow<'a, str>,
    #[serde(borrow, default)]
    pub unit_id: Option<Cow<'a, str>>,
    #[serde(default)]
    pub forced: bool,
    /// The bandit period whose table chose `variant` (bandit experiments only).
    #[serde(default)]
    pub bandit_period: Option<u64>,
}

impl Line<'_> {
    pub fn empty() -> Self {
        Line {
            ty: Cow::Borrowed(""),
            ts: None,
            unit_id: None,
            assignments: None,
            metric: None,
            value: None,
            latency_ms: None,
            error: None,
            event_id: None,
        }
    }
}

/// Read one line into `out` (fresh from [`Line::empty`]): the scanner when it can,
/// `serde_json` when it cannot. After an error `out` holds nothing meaningful.
pub fn parse<'a>(line: &'a [u8], out: &mut Line<'a>) -> Result<(), serde_json::Error> {
    if Scanner::new(line).and_then(|s| s.line(out)).is_some() {
        return Ok(());
    }
    *out = serde_json::from_slice(line)?;
    Ok(())
}

/// Deepest nesting the scanner skips before handing the line to serde (which has its own
/// limit of 128).
const MAX_DEPTH: u32 = 64;

/// Byte classes inside a JSON string.
const PLAIN: u8 = 0;
const QUOTE: u8 = 1;
const BACKSLASH: u8 = 2;
/// Control characters, which JSON requires to be escaped.
const OTHER: u8 = 3;

static STRING_CLASS: [u8; 256] = {
    let mut t = [PLAIN; 256];
    let mut i = 0;
    while i < 256 {
        if i < 0x20 {
            t[i] = OTHER;
        }
        i += 1;
    }
    t[b'"' as usize] = QUOTE;
    t[b'\\' as usize] = BACKSLASH;
    t
};

struct Scanner<'a> {
    /// The line, validated as UTF-8 once (the fast standard-library check), so the
    /// strings the scanner keeps are slices of it.
    s: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Scanner<'a> {
    fn new(line: &'a [u8]) -> Option<Self> {
        let s = std::str::from_utf8(line).ok()?;
        Some(Scanner { s, b: line, i: 0 })
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        if self.peek() == Some(c) {
            self.i += 1;
            Some(())
        } else {
            None
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Some(())
        } else {
            None
        }
    }

    /// A string without escapes, borrowed from the line.
    fn str(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.i;
        loop {
            match STRING_CLASS[*self.b.get(self.i)? as usize] {
                PLAIN => self.i += 1,
                QUOTE => break,
                _ => return None,
            }
        }
        let s = self.s.get(start..self.i);
        self.i += 1;
        s
    }

    /// Skip a string, validating its escapes.
    fn skip_str(&mut self) -> Option<()> {
        self.eat(b'"')?;
        loop {
            match STRING_CLASS[*self.b.get(self.i)? as usize] {
                PLAIN => self.i += 1,
                QUOTE => {
                    self.i += 1;
                    return Some(());
                }
                BACKSLASH => {
                    match *self.b.get(self.i + 1)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 2,
                        // \uXXXX (surrogate pairs and all) is left to serde, as is
                        // anything invalid
                        _ => return None,
                    }
                }
                _ => return None,
            }
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
        self.i - start
    }

    /// A JSON number, as a finite f64.
    fn number(&mut self) -> Option<f64> {
        let start = self.i;
        let _ = self.eat(b'-');
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        if self.eat(b'.').is_some() && self.digits() == 0 {
            return None;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if self.digits() == 0 {
                return None;
            }
        }
        let x: f64 = self.s.get(start..self.i)?.parse().ok()?;
        x.is_finite().then_some(x)
    }

    fn skip_value(&mut self, depth: u32) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'"' => self.skip_str(),
            b'{' => {
                self.i += 1;
                self.members(b'}', |s| {
                    s.skip_str()?;
                    s.ws();
                    s.eat(b':')?;
                    s.ws();
                    s.skip_value(depth + 1)
                })
            }
            b'[' => {
                self.i += 1;
                self.members(b']', |s| s.skip_value(depth + 1))
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number().map(|_| ()),
            _ => None,
        }
    }

    fn is_null(&mut self) -> bool {
        self.peek() == Some(b'n') && self.literal(b"null").is_some()
    }

    fn opt_str(&mut self) -> Option<Option<Cow<'a, str>>> {
        if self.is_null() {
            return Some(None);
        }
        self.str().map(|s| Some(Cow::Borrowed(s)))
    }

    /// Null, or a plain unsigned integer (digits only, no leading zero, fits in u64);
    /// anything else is serde's to judge.
    fn opt_u64(&mut self) -> Option<Option<u64>> {
        if self.is_null() {
            return Some(None);
        }
        let start = self.i;
        let n = self.digits();
        if n == 0 || (n > 1 && self.b[start] == b'0') {
            return None;
        }
        if let Some(b'.' | b'e' | b'E') = self.peek() {
            return None;
        }
        self.s.get(start..self.i)?.parse().ok().map(Some)
    }

    fn opt_number(&mut self) -> Option<Option<f64>> {
        if self.is_null() {
            return Some(None);
        }
        self.number().map(Some)
    }

    /// Walk the members of an object, calling `member` with each key (the scanner then
    /// positioned on the value). `member` returns `None` to give up.
    fn object(&mut self, mut member: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        self.members(b'}', |s| {
            let key = s.str()?;
            s.ws();
            s.eat(b':')?;
            s.ws();
            member(s, key)
        })
    }

    /// The members of an object or the items of an array, the opening bracket already
    /// read: `each` reads one, then a `,` continues and `close` ends.
    fn members(&mut self, close: u8, mut each: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.ws();
        if self.eat(close).is_some() {
            return Some(());
        }
        loop {
            each(self)?;
            self.ws();
            match self.peek()? {
                b',' => {
                    self.i += 1;
                    self.ws();
                }
                c if c == close => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    fn assignment(&mut self) -> Option<LineAssignment<'a>> {
        let (mut experiment, mut variant, mut unit_id, mut forced, mut period) =
            (None, None, None, None, None);
        self.object(|s, key| match key {
            "experiment" => set_once(&mut experiment, Cow::Borrowed(s.str()?)),
            "variant" => set_once(&mut variant, Cow::Borrowed(s.str()?)),
            "unit_id" => set_once(&mut unit_id, s.opt_str()?),
            "forced" => {
                let v = match s.peek()? {
                    b't' => s.literal(b"true").map(|_| true)?,
                    b'f' => s.literal(b"false").map(|_| false)?,
                    _ => return None,
                };
                set_once(&mut forced, v)
            }
            "bandit_period" => set_once(&mut period, s.opt_u64()?),
            _ => s.skip_value(1),
        })?;
        Some(LineAssignment {
            experiment: experiment?,
            variant: variant?,
            unit_id: unit_id.flatten(),
            forced: forced.unwrap_or(false),
            bandit_period: period.flatten(),
        })
    }

    fn assignments(&mut self, out: &mut Option<SmallVec<[LineAssignment<'a>; 4]>>) -> Option<()> {
        if self.is_null() {
            return Some(());
        }
        self.eat(b'[')?;
        let list = out.insert(SmallVec::new());
        self.members(b']', |s| {
            list.push(s.assignment()?);
            Some(())
        })
    }

    /// Fill `out` (fresh from [`Line::empty`]) in place: the line struct is large and
    /// moving it around cost more than reading some fields.
    fn line(mut self, out: &mut Line<'a>) -> Option<()> {
        // The fields read, in the order of the bits of `seen` (a duplicate field is
        // serde's to report).
        const FIELDS: [&str; 9] = [
            "type",
            "ts",
            "unit_id",
            "assignments",
            "metric",
            "value",
            "latency_ms",
            "error",
            "event_id",
        ];
        let mut seen = 0u16;
        self.ws();
        self.object(|s, key| {
            let Some(f) = FIELDS.iter().position(|k| *k == key) else {
                return s.skip_value(1);
            };
            if seen & (1 << f) != 0 {
                return None;
            }
            seen |= 1 << f;
            match f {
                0 => out.ty = Cow::Borrowed(s.str()?),
                1 => out.ts = s.opt_str()?,
                2 => out.unit_id = s.opt_str()?,
                3 => s.assignments(&mut out.assignments)?,
                4 => out.metric = s.opt_str()?,
                5 => out.value = s.opt_number()?,
                6 => out.latency_ms = s.opt_number()?,
                7 => out.error = s.opt_str()?,
                _ => out.event_id = s.opt_str()?,
            }
            Some(())
        })?;
        self.ws();
        // `type` is required
        (self.i == self.b.len() && seen & 1 != 0).then_some(())
    }
}

/// Set a field seen for the first time; a duplicate field is serde's to report.
fn set_once<T>(slot: &mut Option<T>, v: T) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(v);
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast(line: &str) -> Option<Line<'_>> {
        scan(line.as_bytes())
    }

    fn scan(line: &[u8]) -> Option<Line<'_>> {
        let mut out = Line::empty();
        Scanner::new(line)?.line(&mut out)?;
        Some(out)
    }

    const EXPOSURE: &str = r#"{"type":"exposure","ts":"2026-11-23T02:00:00.000000Z","request_id":"01M834KJ36J9JTBGECVT6VKNS6","unit":"user","unit_id":"user-0","assignments":[{"layer":"model","experiment":"ranker_v2","variant":"control","served":"control","bandit_period":12},{"layer":"prompt","experiment":"system_prompt","variant":"concise","served":"control","forced":false,"unit_id":"tenant-9"}],"holdout":false,"upstream":"model_a","status":200,"latency_ms":13.048,"error":null,"config_version":"0e269387a367","event_id":"01M834KJ36J9JTBGECVT6VKNS7","instance":"pod-a"}"#;
    const OUTCOME: &str = r#"{"type":"outcome","ts":"2026-11-23T02:00:00.000000Z","unit_id":"user-1","metric":"revenue","value":12.5e-1,"source":"api","extra":{"a":[1,-2.5,true,null,"x\"y\\u"],"b":{}}}"#;

    #[test]
    fn reads_the_lines_abgate_writes() {
        for l in [
            EXPOSURE,
            OUTCOME,
            r#"{"type":"outcome","unit_id":"usér-✓","value":-0}"#,
        ] {
            let a = fast(l).expect("scanner reads the line");
            let b: Line = serde_json::from_str(l).unwrap();
            assert_eq!(a, b);
        }
        let e = fast(EXPOSURE).unwrap();
        let a = e.assignments.unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[1].unit_id.as_deref(), Some("tenant-9"));
        assert_eq!((a[0].bandit_period, a[1].bandit_period), (Some(12), None));
        assert_eq!(e.latency_ms, Some(13.048));
        assert_eq!(e.event_id.as_deref(), Some("01M834KJ36J9JTBGECVT6VKNS7"));
        assert_eq!(fast(OUTCOME).unwrap().value, Some(1.25));
    }

    #[test]
    fn hands_anything_unusual_to_serde() {
        for l in [
            r#"{"type":"outcome","metric":"a\u00e9"}"#, // escape in a kept string
            "{\"type\":\"outcome\",\"metric\":\"\u{1}\"}", // control character
            r#"{"type":"outcome","value":1e999}"#,      // out of range
            r#"{"type":"outcome","value":01}"#,         // bad number
            r#"{"type":"outcome","type":"exposure"}"#,  // duplicate field
            r#"{"type":"outcome"} x"#,                  // trailing characters
            r#"{"type":"outcome","value":"1"}"#,        // wrong type
            r#"{"ts":"x"}"#,                            // missing type
            r#"{"type":"outcome","x":"a\qb"}"#,         // bad escape
            r#"[1]"#,
            r#"{"type":"exposure","assignments":[{"experiment":"e"}]}"#,
            r#"{"type":"exposure","assignments":[{"experiment":"e","variant":"a","bandit_period":1.0}]}"#,
            r#"{"type":"exposure","assignments":[{"experiment":"e","variant":"a","bandit_period":-1}]}"#,
            r#"{"type":"exposure","assignments":[{"experiment":"e","variant":"a","bandit_period":01}]}"#,
        ] {
            assert!(fast(l).is_none(), "{l}");
        }
        // what serde makes of them is then serde's answer
        let mut out = Line::empty();
        parse(br#"{"type":"outcome","metric":"a\u00e9"}"#, &mut out).unwrap();
        assert_eq!(out.metric.as_deref(), Some("aé"));
        assert!(parse(br#"{"type":"outcome","value":1e999}"#, &mut Line::empty()).is_err());
    }

    /// The scanner's answer, when it gives one, is serde's answer: every line of a corpus
    /// mutated at random (fixed seed) either falls back or reads exactly as serde reads it.
    #[test]
    fn agrees_with_serde_on_mutated_lines() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(20261123);
        let alphabet = b"{}[]:,\"\\ 0123456789.-+eEtruefalsn\t\nxu\x01\xc3\xa9\xff";
        let (mut agreed, mut fell_back) = (0, 0);
        for i in 0..200_000 {
            let base = if i % 2 == 0 { EXPOSURE } else { OUTCOME };
            let mut b = base.as_bytes().to_vec();
            for _ in 0..rng.random_range(1..4) {
                let at = rng.random_range(0..b.len());
                match rng.random_range(0..3) {
                    0 => b[at] = alphabet[rng.random_range(0..alphabet.len())],
                    1 => {
                        b.remove(at);
                    }
                    _ => b.insert(at, alphabet[rng.random_range(0..alphabet.len())]),
                }
            }
            let scanned = scan(&b);
            let by_serde = serde_json::from_slice::<Line>(&b);
            match scanned {
                Some(l) => {
                    let s = by_serde.unwrap_or_else(|e| {
                        panic!(
                            "scanner read a line serde rejects ({e}): {}",
                            String::from_utf8_lossy(&b)
                        )
                    });
                    assert_eq!(l, s, "{}", String::from_utf8_lossy(&b));
                    agreed += 1;
                }
                None => fell_back += 1,
            }
        }
        // Both paths are exercised.
        assert!(
            agreed > 20_000 && fell_back > 20_000,
            "{agreed} {fell_back}"
        );
    }
}
