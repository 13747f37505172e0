//! `GET /admin/experiments/{name}/ramp` (where the ramp is, its plan, the gate's last
//! numbers and its history) and the token-checked `POST …/ramp/advance` (one step now,
//! whatever the gate says) and `POST …/ramp/hold` (stop at the step).

use super::mutate::serialized;
use super::respond::{error, json_resp, Resp};
use crate::config::Ramp;
use crate::guard::ramp::{RampCause, RampState, RampStatus};
use crate::runtime::{App, Live, Snapshot};
use http::StatusCode;
use serde_json::json;
use std::sync::Arc;
use std::time::SystemTime;

/// `GET /admin/experiments/{name}/ramp`.
pub fn view(app: &App, name: &str) -> Resp {
    let snap = app.snapshot.load();
    let (_, ramp, s) = match ramped(app, &snap, name) {
        Ok(x) => x,
        Err(e) => return *e,
    };
    let i = s.index(ramp);
    let last_gate = s.history.iter().rev().find_map(|t| t.gate.clone());
    json_resp(
        StatusCode::OK,
        json!({
            "experiment": name,
            "status": s.status.as_str(),
            "step": s.step,
            "steps": ramp.steps,
            "traffic": s.traffic,
            "step_began": humantime::format_rfc3339_micros(s.step_began).to_string(),
            "held_seconds": s.held(SystemTime::now()).as_secs_f64(),
            "hold_seconds": ramp.hold[i].as_secs_f64(),
            "max_wait_seconds": ramp.max_wait.as_secs_f64(),
            "min_requests": ramp.min_requests,
            "on_insufficient": ramp.on_insufficient.as_str(),
            "last_gate": last_gate,
            "history": s.history,
        }),
    )
}

/// Experiment `name` of `snap`, its ramp and the ramp's state, or the 404 that says
/// which is missing.
fn ramped<'a>(
    app: &App,
    snap: &'a Snapshot,
    name: &str,
) -> Result<(Live<'a>, &'a Ramp, RampState), Box<Resp>> {
    let Some(exp) = snap.find(name) else {
        return Err(Box::new(error(
            StatusCode::NOT_FOUND,
            &format!("no experiment `{name}`"),
        )));
    };
    match (&exp.config.ramp, app.guard.ramps.get(name)) {
        (Some(ramp), Some(s)) => Ok((exp, ramp, s)),
        _ => Err(Box::new(error(
            StatusCode::NOT_FOUND,
            &format!("experiment `{name}` has no ramp"),
        ))),
    }
}

/// `POST /admin/experiments/{name}/ramp/{advance|hold}` (the token is checked).
pub async fn mutate(app: &Arc<App>, name: &str, action: &str) -> Resp {
    let (app, name, action) = (app.clone(), name.to_string(), action.to_string());
    serialized(move || apply(&app, &name, &action))
        .await
        .unwrap_or_else(|| error(StatusCode::INTERNAL_SERVER_ERROR, "admin task failed"))
}

fn apply(app: &App, name: &str, action: &str) -> Resp {
    let snap = app.snapshot.load();
    let (exp, ramp, s) = match ramped(app, &snap, name) {
        Ok(x) => x,
        Err(e) => return *e,
    };
    let now = SystemTime::now();
    let exp_name = exp.config.name.clone();
    let made = match (action, s.status) {
        ("advance", RampStatus::Running | RampStatus::Holding) => app.ramp_update(exp, |s| {
            Some(s.advance(&exp_name, ramp, now, RampCause::Admin, None))
        }),
        ("advance", st) => {
            let why = match st {
                RampStatus::RolledBack => "is rolled back: resume the experiment first",
                _ => "is completed",
            };
            return error(StatusCode::CONFLICT, &format!("the ramp of `{name}` {why}"));
        }
        (_, RampStatus::Running) => app.ramp_update(exp, |s| s.hold(&exp_name, now)),
        (_, st) => {
            return error(
                StatusCode::CONFLICT,
                &format!(
                    "the ramp of `{name}` is {}: only a running ramp can be held",
                    st.as_str()
                ),
            )
        }
    };
    let s = app.guard.ramps.get(name).unwrap_or(s);
    let status = if made.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    json_resp(
        status,
        json!({
            "experiment": name,
            "status": s.status.as_str(),
            "step": s.step,
            "traffic": s.traffic,
            "error": made.err().map(|e| e.to_string()),
        }),
    )
}
