//! The query parameters a request gives the mock: `status`, `stall_ms`, `stream`,
//! `interval_ms`, `fail_after`.

use http::StatusCode;
use std::time::Duration;

/// The query parameters the mock understands.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Query {
    pub(super) status: Option<StatusCode>,
    pub(super) stall: Duration,
    pub(super) stream: Option<u64>,
    pub(super) interval: Duration,
    pub(super) fail_after: Option<u64>,
}

impl Query {
    pub(super) fn parse(q: Option<&str>) -> Result<Query, String> {
        let mut out = Query::default();
        for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let num = || {
                v.parse::<u64>()
                    .map_err(|_| format!("mock: `{k}={v}` is not a whole number"))
            };
            match k {
                "status" => {
                    let code = num()?;
                    out.status = Some(
                        u16::try_from(code)
                            .ok()
                            .and_then(|c| StatusCode::from_u16(c).ok())
                            .filter(|s| s.as_u16() >= 200)
                            .ok_or_else(|| format!("mock: `status={v}` is not a final status"))?,
                    );
                }
                "stall_ms" => out.stall = Duration::from_millis(num()?),
                "stream" => out.stream = Some(num()?),
                "interval_ms" => out.interval = Duration::from_millis(num()?),
                "fail_after" => out.fail_after = Some(num()?),
                _ => {}
            }
        }
        Ok(out)
    }
}
