//! `[server]` and `[admin]`: the proxy's and the admin API's listeners and settings.

use super::tls;
use super::values::dur;
use crate::config::raw::{RawAdmin, RawServer, RawServerTls};
use crate::config::{AdminSettings, Diagnostics, ServerSettings, ServerTls};
use std::net::SocketAddr;
use std::path::Path;

/// `[server]`, with defaults for what is left out.
pub(super) fn compile_server(d: &mut Diagnostics, raw: &RawServer, base: &Path) -> ServerSettings {
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
    listen_addrs(d, "server.listen", &listen, "127.0.0.1:8080");
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
        forwarded: raw.forwarded.unwrap_or(false),
        max_header_bytes: max_header_bytes(d, raw.max_header_bytes.as_ref()),
        max_connections: match raw.max_connections {
            None => None,
            Some(n) if (1..=1_000_000).contains(&n) => Some(n as usize),
            Some(n) => {
                d.push(
                    "server.max_connections",
                    format!("{n} must be between 1 and 1000000 (leave it out to derive it from the descriptor limit)"),
                );
                None
            }
        },
        keepalive_timeout: dur(
            d,
            "server.keepalive_timeout",
            &raw.keepalive_timeout,
            DEFAULT_KEEPALIVE_TIMEOUT,
        )
        .as_secs_f64()
        .ceil() as u64,
        tls: raw.tls.as_ref().and_then(|t| compile_tls(d, t, base)),
    }
}

/// How long an idle client connection is kept: nginx's 75 s, longer than the 60 s idle
/// timeout of the usual load balancers in front (a proxy that closes first races the
/// balancer's next request on that connection: a 502 at the balancer).
pub const DEFAULT_KEEPALIVE_TIMEOUT: &str = "75s";

/// The request-head limit: default 32 KiB (nginx's 1 KiB plus 4 × 8 KiB), at least
/// 1 KiB, at most pingora's own 1 MiB (beyond it pingora answers 400 first).
pub const DEFAULT_MAX_HEADER_BYTES: usize = 32 << 10;

fn max_header_bytes(d: &mut Diagnostics, v: Option<&toml::Value>) -> usize {
    let Some(v) = v else {
        return DEFAULT_MAX_HEADER_BYTES;
    };
    match super::values::parse_size(v) {
        Ok(b) if ((1 << 10)..=(1 << 20)).contains(&b) => b as usize,
        Ok(b) => {
            d.push(
                "server.max_header_bytes",
                format!("{b} bytes is out of range: between \"1KiB\" and \"1MiB\" (pingora reads at most 1 MiB of headers)"),
            );
            DEFAULT_MAX_HEADER_BYTES
        }
        Err(m) => {
            d.push("server.max_header_bytes", m);
            DEFAULT_MAX_HEADER_BYTES
        }
    }
}

/// Each of `list` must be an `ip:port` address.
fn listen_addrs(d: &mut Diagnostics, path: &str, list: &[String], example: &str) {
    for (i, a) in list.iter().enumerate() {
        if a.parse::<SocketAddr>().is_err() {
            d.push(
                &format!("{path}[{i}]"),
                format!("`{a}` is not an `ip:port` address, e.g. \"{example}\""),
            );
        }
    }
}

/// `[server.tls]`: listeners, and a certificate chain with its key that load.
fn compile_tls(d: &mut Diagnostics, raw: &RawServerTls, base: &Path) -> Option<ServerTls> {
    let listen = match &raw.listen {
        Some(l) if !l.is_empty() => l.clone(),
        _ => {
            d.push(
                "server.tls.listen",
                "needs at least one address, e.g. listen = [\"0.0.0.0:8443\"]",
            );
            return None;
        }
    };
    listen_addrs(d, "server.tls.listen", &listen, "0.0.0.0:8443");
    let file = |d: &mut Diagnostics, key: &str, v: &Option<String>, example: &str| match v {
        Some(p) => Some(tls::resolve(base, p)),
        None => {
            d.push(
                &format!("server.tls.{key}"),
                format!("missing: the PEM file of the {example}"),
            );
            None
        }
    };
    let cert = file(
        d,
        "cert",
        &raw.cert,
        "certificate chain, e.g. cert = \"tls/server.crt\"",
    );
    let key = file(
        d,
        "key",
        &raw.key,
        "private key, e.g. key = \"tls/server.key\"",
    );
    let (cert, key) = (cert?, key?);
    if let Err(m) = tls::check_cert_key(&cert, &key) {
        d.push("server.tls.cert", m);
        return None;
    }
    Some(ServerTls { listen, cert, key })
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

#[cfg(test)]
mod tests {
    use crate::config::test_support::{errors, parse, MINIMAL};
    use std::time::Duration;

    #[test]
    fn server_and_admin_defaults_fill_what_is_left_out() {
        let cfg = parse(MINIMAL).unwrap();
        let s = &cfg.server;
        assert_eq!(s.listen, ["127.0.0.1:8080"]);
        assert_eq!(s.threads, 2);
        assert_eq!(s.shutdown_timeout, Duration::from_secs(30));
        assert_eq!(s.keepalive_timeout, 75);
        assert!(!s.debug_header && !s.preserve_header_case);
        assert_eq!(s.outcome_path, "/_abgate/outcome");
        assert_eq!(cfg.admin.listen, "127.0.0.1:9100");
        assert_eq!(cfg.admin.token_env, "ABGATE_ADMIN_TOKEN");
        assert!(cfg.admin.request_metrics);
    }

    #[test]
    fn server_and_admin_keep_valid_values_as_written() {
        let cfg = parse(&format!(
            "{MINIMAL}[server]\nlisten = [\"0.0.0.0:80\", \"[::1]:81\"]\nthreads = 8\n\
             shutdown_timeout = \"5s\"\nkeepalive_timeout = \"1500ms\"\ndebug_header = true\noutcome_path = \"/o\"\n\
             preserve_header_case = true\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             token_env = \"T\"\nrequest_metrics = false\n"
        ))
        .unwrap();
        assert_eq!(cfg.server.listen, ["0.0.0.0:80", "[::1]:81"]);
        assert_eq!(cfg.server.threads, 8);
        assert_eq!(cfg.server.shutdown_timeout, Duration::from_secs(5));
        assert_eq!(
            cfg.server.keepalive_timeout, 2,
            "rounded up to whole seconds"
        );
        assert!(cfg.server.debug_header && cfg.server.preserve_header_case);
        assert_eq!(cfg.server.outcome_path, "/o");
        assert_eq!(cfg.admin.listen, "127.0.0.1:0");
        assert_eq!(cfg.admin.token_env, "T");
        assert!(!cfg.admin.request_metrics);
    }

    #[test]
    fn max_header_bytes_defaults_to_32kib_and_is_bounded_by_1kib_and_1mib() {
        assert_eq!(parse(MINIMAL).unwrap().server.max_header_bytes, 32 << 10);
        let with = |v: &str| format!("{MINIMAL}[server]\nmax_header_bytes = {v}\n");
        assert_eq!(
            parse(&with("\"64KiB\"")).unwrap().server.max_header_bytes,
            64 << 10
        );
        assert_eq!(parse(&with("4096")).unwrap().server.max_header_bytes, 4096);
        for bad in ["100", "\"2MiB\"", "\"lots\""] {
            let e = errors(&with(bad));
            assert_eq!(e.len(), 1, "{bad}: {e:?}");
            assert_eq!((e[0].0, e[0].1.as_str()), (6, "server.max_header_bytes"));
        }
    }

    #[test]
    fn bad_server_and_admin_values_are_each_reported_at_their_line() {
        let e = errors(&format!(
            "{MINIMAL}[server]\nlisten = [\"nope\", \"1.2.3.4:5\"]\nthreads = 0\n\
             outcome_path = \"o\"\nshutdown_timeout = \"0s\"\n[admin]\nlisten = \"x\"\n"
        ));
        let at: Vec<_> = e.iter().map(|(l, p, _)| (*l, p.as_str())).collect();
        assert_eq!(
            at,
            [
                (6, "server.listen[0]"),
                (7, "server.threads"),
                (8, "server.outcome_path"),
                (9, "server.shutdown_timeout"),
                (11, "admin.listen"),
            ]
        );
        assert_eq!(
            e[0].2,
            "`nope` is not an `ip:port` address, e.g. \"127.0.0.1:8080\""
        );
        assert_eq!(e[1].2, "0 must be between 1 and 256");
        assert_eq!(e[2].2, "`o` must start with `/`");
        assert_eq!(e[3].2, "`0s` must be longer than zero");
    }

    #[test]
    fn empty_listen_list_is_an_error() {
        let e = errors(&format!("{MINIMAL}[server]\nlisten = []\n"));
        assert_eq!(e.len(), 1);
        assert_eq!((e[0].0, e[0].1.as_str()), (6, "server.listen"));
        assert!(e[0].2.starts_with("needs at least one address"));
    }
}
