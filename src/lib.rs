//! # abgate
//!
//! A reverse-proxy sidecar for online experiments on ML model endpoints.
//!
//! # Layout
//! - [`config`]: the TOML model and its validation into an immutable compiled form.
//! - [`assign`]: identity, hashing, layers, targeting — pure functions.
//! - [`proxy`]: the pingora service that glues the others together on the request path.
//! - [`events`]: exposure/outcome/guardrail records and their durable writer.
//! - [`guard`]: sliding windows, the guardrail evaluator and rollback state.
//! - [`stats`]: statistical tests, pure functions.
//! - [`admin`]: the admin HTTP API and Prometheus metrics.
//! - [`analyze`]: offline reports from event logs.
//! - [`cli`], [`demo`]: the command line and the demo.
//! - [`mock`]: the mock model server used by tests, benches and the demo.
#![forbid(unsafe_code)]
// `!(x > 0.0)` is written on purpose throughout: unlike `x <= 0.0` it is also true for NaN.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

pub mod admin;
pub mod analyze;
pub mod assign;
pub mod cli;
pub mod config;
pub mod demo;
pub mod events;
pub mod guard;
pub mod mock;
pub mod proxy;
pub mod stats;
