//! The fleet: many sidecars, one experiment, through NATS JetStream (`[fleet]`).
//!
//! | file | what |
//! |---|---|
//! | [`conn`] | the broker connection: connects in the background, reconnects with jittered backoff, never blocks start-up or requests |
//!
//! Everything here runs beside the request path: the proxy never waits on the broker.
//! A sidecar without `[fleet]` starts none of it. What the admin API shows of the fleet
//! lives in [`crate::runtime::FleetStatus`], which this module writes and the admin API
//! reads (the admin API does not depend on this module).

pub mod conn;

pub use conn::FleetConn;
