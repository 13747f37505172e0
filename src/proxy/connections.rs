//! Client connections: counted while open, refused beyond `server.max_connections`.
//!
//! pingora accepts the connections and hands each one to [`Counted::process_new`], once
//! per request on an HTTP/1.1 keep-alive connection (once in all for HTTP/2). The first
//! time a connection arrives it is wrapped in [`Tracked`], whose drop (the connection
//! closes, whichever way) gives its place back; a connection that arrives already
//! wrapped is a reused one. Beyond the limit a new connection is closed at once, before
//! anything is read from it, counted in `abgate_downstream_rejected_total{reason=
//! "max_connections"}` and logged at most once per 10 s: the process keeps the file
//! descriptors its open connections, backends, event files and admin API need, instead
//! of failing accepts and requests everywhere at descriptor exhaustion.
//!
//! The open count is `abgate_downstream_connections` itself (one atomic for both).

use crate::runtime::App;
use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, UniqueID,
    UniqueIDType, ALPN,
};
use pingora::server::ShutdownWatch;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

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
        if stream.as_any().is::<Tracked>() {
            return self.inner.process_new(stream, shutdown).await;
        }
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
        open.inc();
        let tracked = Tracked {
            inner: stream,
            open: open.clone(),
        };
        self.inner.process_new(Box::new(tracked), shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await
    }
}

/// A client connection counted while it is open.
#[derive(Debug)]
pub struct Tracked {
    inner: pingora::protocols::Stream,
    open: prometheus::IntGauge,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for Tracked {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for Tracked {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Tracked {
    fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for Tracked {
    fn get_timing_digest(&self) -> Vec<Option<pingora::protocols::TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for Tracked {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: pingora::protocols::raw_connect::ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for Tracked {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for Tracked {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        self.inner.try_peek(buf).await
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
