//! Client connections: counted while open, refused beyond `server.max_connections`.
//!
//! pingora accepts a connection and hands it to [`Counted::process_new`] once. That
//! call serves it to the end — every request of an HTTP/1.1 keep-alive connection in
//! turn (the loop pingora would otherwise run), or an HTTP/2 connection's streams — so
//! the connection is counted exactly while the call runs, at no cost per request.
//! Beyond the limit a new connection is closed at once, before anything is read from
//! it, counted in `abgate_downstream_rejected_total{reason="max_connections"}` and
//! logged at most once per 10 s: the process keeps the file descriptors its open
//! connections, backends, event files and admin API need, instead of failing accepts
//! and requests everywhere at descriptor exhaustion.
//!
//! The open count is `abgate_downstream_connections` itself (one atomic for both).
//!
//! A plaintext connection must send its first 24 bytes within `server.keepalive_timeout`:
//! pingora reads that many (the length of the HTTP/2 preface) to tell h2c from
//! HTTP/1.1, with no deadline of its own, so a client that connected and went silent
//! (or a slowloris) held its slot for ever. It is closed instead, counted in
//! `abgate_downstream_rejected_total{reason="silent"}`.

use crate::runtime::App;
use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::server::ShutdownWatch;
use std::sync::Arc;
use std::time::Duration;

/// Descriptors kept for everything but client connections when the limit is derived
/// from the descriptor limit: backends' connections are counted separately (one per
/// client connection at most), this covers listeners, event files, the admin API,
/// health checks and the broker.
const RESERVED_FDS: u64 = 128;

/// `server.max_connections` when the config leaves it out: half of what the soft
/// `RLIMIT_NOFILE` leaves after [`RESERVED_FDS`] (each proxied connection may hold a
/// backend connection too), at least 16.
pub fn default_max_connections(nofile_soft: u64) -> usize {
    (nofile_soft.saturating_sub(RESERVED_FDS) / 2).max(16) as usize
}

/// The soft descriptor limit of this process (`Max open files` in
/// `/proc/self/limits`; 1024, the usual default, if that cannot be read).
pub fn nofile_soft_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| parse_nofile(&s))
        .unwrap_or(1024)
}

fn parse_nofile(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    match line["Max open files".len()..].split_whitespace().next()? {
        "unlimited" => Some(1 << 20),
        n => n.parse().ok(),
    }
}

/// pingora's server application with a connection count in front.
pub struct Counted<A> {
    inner: Arc<A>,
    app: Arc<App>,
    /// The limit when the config leaves `server.max_connections` out.
    default_max: usize,
    refusals: crate::ratelog::RateLog,
}

impl<A> Counted<A> {
    /// Count the connections handed to `inner`.
    pub fn new(inner: A, app: Arc<App>) -> Counted<A> {
        let default_max = default_max_connections(nofile_soft_limit());
        Counted {
            inner: Arc::new(inner),
            app,
            default_max,
            refusals: crate::ratelog::RateLog::new(Duration::from_secs(10)),
        }
    }

    /// The application inside (to set its options before the service starts).
    pub fn inner_mut(&mut self) -> Option<&mut A> {
        Arc::get_mut(&mut self.inner)
    }

    /// The limit in force: the config's, else the one derived at start.
    pub fn max_connections(&self) -> usize {
        self.app
            .snapshot
            .load()
            .config
            .server
            .max_connections
            .unwrap_or(self.default_max)
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Counted<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: pingora::protocols::Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<pingora::protocols::Stream> {
        let open = &self.app.metrics.downstream_connections;
        let max = self.max_connections();
        if open.get() >= max as i64 {
            self.app
                .metrics
                .downstream_rejected
                .with_label_values(&["max_connections"])
                .inc();
            if let Some(n) = self.refusals.hit() {
                tracing::warn!(
                    "{n} client connection(s) refused in the last 10 s: {max} open (server.max_connections); raise it (and the descriptor limit, ulimit -n) or add instances"
                );
            }
            return None; // dropped: closed before anything is read
        }
        let _open = OpenConnection::new(open);
        let mut stream = stream;
        if stream.get_ssl_digest().is_none() {
            let wait =
                Duration::from_secs(self.app.snapshot.load().config.server.keepalive_timeout);
            let mut preface = [0u8; 24];
            match tokio::time::timeout(wait, stream.try_peek(&mut preface)).await {
                Ok(Ok(_)) => {}            // the bytes are put back for pingora to read again
                Ok(Err(_)) => return None, // closed before 24 bytes: nothing to answer
                Err(_) => {
                    self.app
                        .metrics
                        .downstream_rejected
                        .with_label_values(&["silent"])
                        .inc();
                    return None;
                }
            }
        }
        let mut reused = self.inner.process_new(stream, shutdown).await;
        while let Some(stream) = reused {
            reused = self.inner.process_new(stream, shutdown).await;
        }
        None
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await
    }
}

/// One open connection in the gauge, for as long as it lives (a panic or a cancelled
/// task included).
struct OpenConnection<'a>(&'a prometheus::IntGauge);

impl<'a> OpenConnection<'a> {
    fn new(open: &'a prometheus::IntGauge) -> Self {
        open.inc();
        OpenConnection(open)
    }
}

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::{default_max_connections, parse_nofile};

    #[test]
    fn the_default_leaves_room_for_backends_and_files() {
        assert_eq!(default_max_connections(1024), 448);
        assert_eq!(default_max_connections(65536), 32704);
        assert_eq!(default_max_connections(100), 16);
    }

    #[test]
    fn the_soft_limit_is_read_from_proc_limits() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             95698                95698                processes \n\
                      Max open files            4096                 524288               files     \n";
        assert_eq!(parse_nofile(limits), Some(4096));
        assert!(super::nofile_soft_limit() >= 16);
    }
}
