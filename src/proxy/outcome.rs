//! The outcome endpoint (`POST /_abgate/outcome` by default, `server.outcome_path`):
//! a JSON object or array of `{"metric", "value", "unit_id"?}`. A body is validated
//! completely before anything is logged: every item, or none (400 with the reason and
//! the item). The unit id defaults to the request's own identity.

use super::respond::{json_error, respond};
use crate::assign::identity;
use crate::config::Config;
use crate::events::{Event, Outcome, OutcomeSource};
use crate::runtime::App;
use crate::runtime::Snapshot;
use pingora::prelude::*;
use pingora::proxy::Session;
use std::time::SystemTime;

/// Largest accepted outcome body.
pub const OUTCOME_BODY_LIMIT: usize = 64 * 1024;

/// Answer an outcome request completely.
pub async fn handle(app: &App, snap: &Snapshot, session: &mut Session) -> Result<()> {
    if !snap.config.events.enabled {
        let msg = "event logging is off ([events] enabled = false): outcomes cannot be recorded";
        return respond(session, 503, Some(json_error(msg, None)), &[]).await;
    }
    if session.req_header().method != http::Method::POST {
        let msg = "use POST with a JSON object or array of {\"metric\", \"value\", \"unit_id\"?}";
        return respond(session, 405, Some(json_error(msg, None)), &[]).await;
    }
    let Some(body) = read_body(session).await? else {
        let msg = "body over 64 KiB; send smaller batches";
        return respond(session, 413, Some(json_error(msg, None)), &[]).await;
    };
    let cfg = &snap.config;
    let headers = &session.req_header().headers;
    let identity = identity::user_id(&cfg.identity, headers, |_| {}).map(str::to_string);
    match parse_outcomes(&body, cfg, identity.as_deref()) {
        Ok(items) => {
            let now = SystemTime::now();
            let n = items.len();
            for OutcomeItem {
                metric: mi,
                unit_id,
                value,
            } in items
            {
                snap.outcome_counters[mi].inc();
                snap.credit_reward(mi, &unit_id, value);
                app.sink.send(Event::Outcome(Outcome {
                    ts: now,
                    unit_id,
                    metric: cfg.metrics[mi].name.clone(),
                    value,
                    source: OutcomeSource::Api,
                }));
            }
            tracing::debug!("accepted {n} outcomes");
            respond(session, 204, None, &[]).await
        }
        Err((msg, item)) => respond(session, 400, Some(json_error(&msg, item)), &[]).await,
    }
}

/// Whether `s` is acceptable as an outcome's `unit_id`: the same rule as every unit id
/// ([`identity::valid_id`]: printable, which JSON's escapes would otherwise let through).
fn printable_id(s: &str) -> bool {
    identity::valid_id(s.as_bytes())
}

/// The whole request body, or `None` once it exceeds [`OUTCOME_BODY_LIMIT`].
async fn read_body(session: &mut Session) -> Result<Option<Vec<u8>>> {
    let mut body = Vec::new();
    while let Some(chunk) = session.read_request_body().await? {
        if body.len() + chunk.len() > OUTCOME_BODY_LIMIT {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

/// One valid item of an outcome body.
#[derive(Debug, PartialEq)]
pub struct OutcomeItem {
    /// Index into the config's metrics.
    pub metric: usize,
    pub unit_id: String,
    pub value: f64,
}

/// Why an outcome body was refused, and the index of the offending item if it is one.
pub type BadOutcome = (String, Option<usize>);

/// Validate an outcome body completely before anything is logged: all items or none.
pub fn parse_outcomes(
    body: &[u8],
    cfg: &Config,
    identity: Option<&str>,
) -> std::result::Result<Vec<OutcomeItem>, BadOutcome> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| (format!("body is not valid JSON: {e}"), None))?;
    let items: Vec<&serde_json::Value> = match &v {
        serde_json::Value::Array(a) if a.is_empty() => {
            return Err(("empty array: send at least one outcome".into(), None))
        }
        serde_json::Value::Array(a) => a.iter().collect(),
        serde_json::Value::Object(_) => vec![&v],
        _ => {
            return Err((
                "body must be a JSON object or an array of objects".into(),
                None,
            ))
        }
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, it) in items.into_iter().enumerate() {
        let obj = it
            .as_object()
            .ok_or_else(|| ("item is not a JSON object".to_string(), Some(i)))?;
        for k in obj.keys() {
            if !matches!(k.as_str(), "metric" | "value" | "unit_id") {
                return Err((
                    format!("unknown field `{k}`; valid: metric, value, unit_id"),
                    Some(i),
                ));
            }
        }
        let metric = obj
            .get("metric")
            .and_then(|m| m.as_str())
            .ok_or_else(|| ("missing string field `metric`".to_string(), Some(i)))?;
        let mi = cfg
            .metrics
            .iter()
            .position(|m| &*m.name == metric)
            .ok_or_else(|| {
                let declared: Vec<&str> = cfg.metrics.iter().map(|m| &*m.name).collect();
                (
                    format!(
                        "unknown metric `{metric}`; declared: {}",
                        declared.join(", ")
                    ),
                    Some(i),
                )
            })?;
        let value = match obj.get("value") {
            Some(serde_json::Value::Number(n)) => n.as_f64().filter(|x| x.is_finite()),
            _ => None,
        }
        .ok_or_else(|| ("`value` must be a finite number".to_string(), Some(i)))?;
        let unit_id = match obj.get("unit_id") {
            None | Some(serde_json::Value::Null) => identity
                .ok_or_else(|| {
                    (
                        "no `unit_id` and the request carries no identity (header or cookie)"
                            .to_string(),
                        Some(i),
                    )
                })?
                .to_string(),
            Some(serde_json::Value::String(s)) if printable_id(s) => s.clone(),
            Some(_) => {
                return Err((
                    "`unit_id` must be a string of 1 to 256 printable characters".into(),
                    Some(i),
                ))
            }
        };
        out.push(OutcomeItem {
            metric: mi,
            unit_id,
            value,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::{parse, MINIMAL};

    fn cfg() -> Config {
        let text = format!("{MINIMAL}[[metric]]\nname = \"conversion\"\nkind = \"binomial\"\n");
        parse(&text).unwrap()
    }

    #[test]
    fn unit_ids_with_c1_controls_or_line_separators_are_refused_with_the_item() {
        let cfg = cfg();
        for bad in [
            "u\u{85}1",
            "u\u{9b}1",
            "u\u{2028}1",
            "u\u{2029}1",
            "u\n1",
            "",
        ] {
            let body = serde_json::json!([{"metric": "conversion", "value": 1, "unit_id": "ok"},
                                          {"metric": "conversion", "value": 1, "unit_id": bad}]);
            let err = parse_outcomes(body.to_string().as_bytes(), &cfg, None).unwrap_err();
            assert_eq!(err.1, Some(1), "{bad:?}");
            assert!(err.0.contains("printable"), "{bad:?}: {}", err.0);
        }
        let ok = serde_json::json!({"metric": "conversion", "value": 1, "unit_id": "üser-é-1"});
        let items = parse_outcomes(ok.to_string().as_bytes(), &cfg, None).unwrap();
        assert_eq!(items[0].unit_id, "üser-é-1");
    }
}
