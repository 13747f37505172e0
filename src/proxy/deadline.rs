//! The backend-silence watchdog of HTTP/1.x backends: `read_timeout` until the response
//! header, `idle_timeout` inside the body and on an upgraded connection.
//!
//! pingora applies one read timeout to every read from a backend, header and body
//! alike. abgate gives it the longer of the two timeouts
//! ([`UpstreamSpec::per_read_timeout`]) and, when they differ, enforces the shorter one
//! with this watchdog: armed when the backend connection is ready, pushed back by every
//! chunk that flows (request body while the header is awaited, response body after),
//! switched to the body's timeout by the response header, disarmed when the request
//! ends. When it fires it shuts the backend socket down (through a duplicate of its
//! descriptor, so it can never touch a descriptor the process has since reused); the
//! pending read fails and the request fails as a timeout: 504 before the header, an
//! aborted response after it.
//!
//! HTTP/2 backends multiplex requests on one connection, which must not be shut down for
//! one slow stream: there pingora's per-read timeout (the longer one) bounds both
//! phases (docs/protocols.md says so).
//!
//! [`UpstreamSpec::per_read_timeout`]: crate::config::UpstreamSpec::per_read_timeout

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An armed watchdog; dropping it disarms it.
pub struct Watchdog {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

struct Shared {
    origin: Instant,
    /// Deadline in microseconds since `origin`.
    due_us: AtomicU64,
    /// The silence allowed, in microseconds.
    timeout_us: AtomicU64,
    fired: AtomicBool,
}

impl Watchdog {
    /// Arm a watchdog allowing `timeout` of silence on the backend socket `fd`. `None`
    /// when the descriptor cannot be duplicated (the request then runs under pingora's
    /// read timeout alone).
    pub fn arm(fd: RawFd, timeout: Duration) -> Option<Watchdog> {
        // pingora holds `fd` open while its hook runs; the task owns the duplicate and
        // closes it when it ends or is aborted.
        let socket = std::net::TcpStream::from(abgate_fd::duplicate(fd).ok()?);
        let timeout_us = timeout.as_micros() as u64;
        let shared = Arc::new(Shared {
            origin: Instant::now(),
            due_us: AtomicU64::new(timeout_us),
            timeout_us: AtomicU64::new(timeout_us),
            fired: AtomicBool::new(false),
        });
        let watch = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let due = watch.origin + Duration::from_micros(watch.due_us.load(Relaxed));
                tokio::time::sleep_until(due.into()).await;
                if watch.origin.elapsed().as_micros() as u64 >= watch.due_us.load(Relaxed) {
                    watch.fired.store(true, Relaxed);
                    let _ = socket.shutdown(std::net::Shutdown::Both);
                    return;
                }
            }
        });
        Some(Watchdog { shared, task })
    }

    /// Something flowed: the silence starts again now.
    #[inline]
    pub fn extend(&self) {
        let s = &self.shared;
        let now = s.origin.elapsed().as_micros() as u64;
        s.due_us.store(now + s.timeout_us.load(Relaxed), Relaxed);
    }

    /// Allow `timeout` of silence from now on (the response header arrived).
    pub fn set_timeout(&self, timeout: Duration) {
        self.shared
            .timeout_us
            .store(timeout.as_micros() as u64, Relaxed);
        self.extend();
    }

    /// Whether the watchdog fired.
    pub fn fired(&self) -> bool {
        self.shared.fired.load(Relaxed)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsRawFd;

    fn pair(listener: &std::net::TcpListener) -> (std::net::TcpStream, std::net::TcpStream) {
        let a = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        (a, listener.accept().unwrap().0)
    }

    async fn wait_fired(w: &Watchdog) -> Duration {
        let start = Instant::now();
        while !w.fired() && start.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        start.elapsed()
    }

    #[tokio::test]
    async fn a_watchdog_that_fires_shuts_its_socket_and_a_dropped_one_does_not() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (mut a, _a_peer) = pair(&listener);
        let (mut b, _b_peer) = pair(&listener);
        let fires = Watchdog::arm(a.as_raw_fd(), Duration::from_millis(20)).unwrap();
        drop(Watchdog::arm(b.as_raw_fd(), Duration::from_millis(20)).unwrap());
        wait_fired(&fires).await;
        assert!(fires.fired());
        // The shut-down socket reads EOF at once; the other one is still open: a read
        // with a timeout times out instead of returning EOF.
        let mut buf = [0u8; 1];
        assert_eq!(a.read(&mut buf).unwrap(), 0);
        b.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        assert!(b.read(&mut buf).is_err());
    }

    #[tokio::test]
    async fn activity_and_a_new_timeout_move_the_deadline() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (a, _peer) = pair(&listener);
        let w = Watchdog::arm(a.as_raw_fd(), Duration::from_millis(40)).unwrap();
        let start = Instant::now();
        // Activity every 10 ms for 100 ms keeps a 40 ms watchdog from firing.
        while start.elapsed() < Duration::from_millis(100) {
            tokio::time::sleep(Duration::from_millis(10)).await;
            w.extend();
        }
        assert!(!w.fired(), "fired despite activity every 10 ms");
        // A longer timeout from now on: it fires, and not before 150 ms.
        let switched = Instant::now();
        w.set_timeout(Duration::from_millis(150));
        wait_fired(&w).await;
        assert!(w.fired());
        assert!(switched.elapsed() >= Duration::from_millis(150));
    }
}
