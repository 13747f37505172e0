//! From assignments to the backend: which variant serves each assignment (control for a
//! rolled-back or paused variant, unless forced), which unit id each exposure names, and
//! which upstream pool routes the request (the first layer, in file order, whose served
//! variant names an upstream; otherwise `routing.default_upstream`).

use super::context::Ctx;
use crate::assign::{RequestView, UnitIds};
use crate::config::Unit;
use crate::runtime::Snapshot;

/// Fill `ctx.served`, `ctx.unit_ids` and `ctx.upstream` from `ctx.assignments`.
///
/// Hot path: called once per request.
pub fn route(snap: &Snapshot, view: &RequestView<'_>, ctx: &mut Ctx) {
    let ids = UnitIds {
        user: ctx.user.as_deref(),
        session: ctx.session.as_deref(),
        request: ctx.request_unit.as_deref(),
    };
    ctx.upstream = snap.config.default_upstream;
    let mut routed = false;
    for a in &ctx.assignments {
        let exp = snap.experiment(a.layer as usize, a.experiment as usize);
        let served = if !a.forced && exp.state().served_by_control(a.variant as usize) {
            exp.config.control
        } else {
            a.variant as usize
        };
        let i = ctx.served.len();
        ctx.served.push(served as u16);
        let unit_id = match &exp.config.unit {
            Unit::Header(_) => ids.get(&exp.config.unit, view).map(str::to_string),
            Unit::Session => ids.session.map(str::to_string),
            Unit::Request => ids.request.map(str::to_string),
            Unit::User => None,
        };
        if unit_id.is_some() {
            ctx.unit_ids.resize(i, None);
            ctx.unit_ids.push(unit_id);
        }
        if !routed {
            if let Some(u) = exp.config.variants[served].upstream {
                ctx.upstream = u;
                routed = true;
            }
        }
    }
}
