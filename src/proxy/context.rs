//! The per-request context: what the hooks of one request share, from the request
//! filter to the logging hook.

use super::deadline::Watchdog;
use crate::assign::Assignments;
use crate::config::{Config, Experiment, Variant};
use crate::events::{ErrorKind, RequestId};
use crate::runtime::{InflightGuard, Snapshot};
use smallvec::SmallVec;
use std::sync::Arc;
use std::time::Instant;

/// Per-request state.
pub struct Ctx {
    /// When the request head was read.
    pub start: Instant,
    /// The config generation this request runs on (loaded once).
    pub snap: Option<Arc<Snapshot>>,
    /// Counts the request in flight until the context drops (after logging).
    pub inflight: Option<InflightGuard>,
    /// The user id (identity header, cookie, or minted).
    pub user: Option<String>,
    /// The session id, when a session-unit experiment exists.
    pub session: Option<String>,
    /// This request's random unit, when a request-unit experiment exists.
    pub request_unit: Option<String>,
    // Rarely used parts are plain (empty, unallocated) Vecs rather than inline arrays:
    // the context is allocated and initialised for every request.
    /// `Set-Cookie` values for minted ids.
    pub set_cookies: Vec<String>,
    /// Assigned variants, one per experiment the request is in.
    pub assignments: Assignments,
    /// Served variant index per assignment.
    pub served: SmallVec<[u16; 8]>,
    /// Unit ids of header/session/request-unit experiments, per assignment (shorter, or
    /// empty, when the rest are user-unit experiments).
    pub unit_ids: Vec<Option<String>>,
    /// In the global holdout.
    pub holdout: bool,
    /// Index of the upstream pool that serves the request.
    pub upstream: usize,
    /// The request's id (the client's usable `x-request-id`, or minted).
    pub request_id: RequestId,
    /// Why the request failed, if it did.
    pub error: Option<ErrorKind>,
    /// Outcomes read off the backend's response headers: (metric index, value).
    pub header_outcomes: Vec<(usize, f64)>,
    /// Answered by abgate itself (outcome endpoint, refusals): no exposure.
    pub local: bool,
    /// When the first byte of the response body went to the client (time to first
    /// byte / first token).
    pub first_byte: Option<Instant>,
    /// When the response header went to the client.
    pub header_sent: Option<Instant>,
    /// The backend's `grpc-status`, if it sent one.
    pub grpc_status: Option<u32>,
    /// Attempts at the backend (pingora retries a failed attempt on a fresh connection).
    pub attempts: u8,
    /// The backend-silence watchdog of an HTTP/1.x backend request, while armed.
    pub watchdog: Option<Watchdog>,
    /// The watchdog fired: the failure that follows is a timeout.
    pub timed_out: bool,
    /// This request's shadow copy, when it was selected for one.
    pub shadow: Option<Box<super::shadow::ShadowCopy>>,
}

impl Ctx {
    /// A fresh context.
    pub fn new() -> Ctx {
        Ctx {
            start: Instant::now(),
            snap: None,
            inflight: None,
            user: None,
            session: None,
            request_unit: None,
            set_cookies: Vec::new(),
            assignments: Assignments::new(),
            served: SmallVec::new(),
            unit_ids: Vec::new(),
            holdout: false,
            upstream: 0,
            request_id: RequestId::default(),
            error: None,
            header_outcomes: Vec::new(),
            local: false,
            first_byte: None,
            header_sent: None,
            grpc_status: None,
            attempts: 0,
            watchdog: None,
            timed_out: false,
            shadow: None,
        }
    }

    /// Disarm the watchdog, remembering whether it had fired.
    pub fn disarm_watchdog(&mut self) {
        if let Some(w) = self.watchdog.take() {
            self.timed_out |= w.fired();
        }
    }

    /// Each experiment the request is in, with the variant serving it (control for a
    /// rolled-back or paused variant).
    pub fn served<'a>(
        &'a self,
        cfg: &'a Config,
    ) -> impl Iterator<Item = (&'a Experiment, &'a Variant)> {
        self.assignments
            .iter()
            .zip(&self.served)
            .map(|(a, &served)| {
                let exp = &cfg.layers[a.layer as usize].experiments[a.experiment as usize];
                (exp, &exp.variants[served as usize])
            })
    }
}

impl Default for Ctx {
    fn default() -> Ctx {
        Ctx::new()
    }
}
