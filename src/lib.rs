//! # abgate
//!
//! A reverse-proxy sidecar for online experiments on ML model endpoints.
//!
//! # Layout
//! Dependencies run one way, from the bottom of this list up (`tests/architecture.rs`
//! fails when a module imports one above it):
//! - [`hash`], [`stats`], [`rfc3339`], [`mock`]: the frozen hashing contract, pure
//!   statistics, the timestamp format, the mock model server (tests, benches, the demo).
//! - [`config`]: the TOML model and its validation into an immutable compiled form.
//! - [`assign`]: identity, hashing, layers, targeting — pure functions.
//! - [`guard`]: guardrail windows, the decision rule, decisions and their store.
//! - [`events`]: exposure, outcome and decision records and their durable writer.
//! - [`metrics`]: every Prometheus metric, defined in one place.
//! - [`analyze`]: offline (and live) reports from event logs.
//! - [`runtime`]: the shared state of a running abgate and the current config generation;
//!   hot reload; the one place decisions take effect.
//! - [`proxy`], [`admin`], [`control`]: the pingora service on the request path, the
//!   admin API, and the control loops beside it (guardrail checks).
//! - [`server`]: wires them together around bound listeners (in process or `abgate serve`).
//! - [`cli`], [`demo`]: the command line and the demo.
#![forbid(unsafe_code)]
// `!(x > 0.0)` is written on purpose throughout: unlike `x <= 0.0` it is also true for NaN.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

pub mod admin;
pub mod analyze;
pub mod assign;
pub mod cli;
pub mod config;
pub mod control;
pub mod demo;
pub mod events;
pub mod fleet;
pub mod guard;
pub mod hash;
pub mod metrics;
pub mod mock;
pub mod proxy;
pub mod ratelog;
pub mod rfc3339;
pub mod runtime;
pub mod server;
pub mod stats;
