//! `[server]` and `[admin]`: the proxy's and the admin API's listeners and settings.

use super::values::dur;
use crate::config::raw::{RawAdmin, RawServer};
use crate::config::{AdminSettings, Diagnostics, ServerSettings};
use std::net::SocketAddr;

/// `[server]`, with defaults for what is left out.
pub(super) fn compile_server(d: &mut Diagnostics, raw: &RawServer) -> ServerSettings {
    let listen = raw
        .listen
        .clone()
        .unwrap_or_else(|| vec!["127.0.0.1:8080".into()]);
    if listen.is_empty() {
        d.push(
            "server.listen",
            "needs at least one address, e.g. [\"127.0.0.1:8080\"]",
        );
    }
    for (i, a) in listen.iter().enumerate() {
        if a.parse::<SocketAddr>().is_err() {
            d.push(
                &format!("server.listen[{i}]"),
                format!("`{a}` is not an `ip:port` address, e.g. \"127.0.0.1:8080\""),
            );
        }
    }
    let threads = match raw.threads {
        None => 2,
        Some(t) if (1..=256).contains(&t) => t as usize,
        Some(t) => {
            d.push("server.threads", format!("{t} must be between 1 and 256"));
            1
        }
    };
    let outcome_path = raw
        .outcome_path
        .clone()
        .unwrap_or_else(|| "/_abgate/outcome".into());
    if !outcome_path.starts_with('/') {
        d.push(
            "server.outcome_path",
            format!("`{outcome_path}` must start with `/`"),
        );
    }
    ServerSettings {
        listen,
        threads,
        shutdown_timeout: dur(d, "server.shutdown_timeout", &raw.shutdown_timeout, "30s"),
        debug_header: raw.debug_header.unwrap_or(false),
        outcome_path,
        preserve_header_case: raw.preserve_header_case.unwrap_or(false),
    }
}

/// `[admin]`, with defaults for what is left out.
pub(super) fn compile_admin(d: &mut Diagnostics, raw: &RawAdmin) -> AdminSettings {
    let listen = raw
        .listen
        .clone()
        .unwrap_or_else(|| "127.0.0.1:9100".into());
    if listen.parse::<SocketAddr>().is_err() {
        d.push(
            "admin.listen",
            format!("`{listen}` is not an `ip:port` address, e.g. \"127.0.0.1:9100\""),
        );
    }
    AdminSettings {
        listen,
        token_env: raw
            .token_env
            .clone()
            .unwrap_or_else(|| "ABGATE_ADMIN_TOKEN".into()),
        request_metrics: raw.request_metrics.unwrap_or(true),
    }
}
