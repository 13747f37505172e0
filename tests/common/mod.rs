//! Shared helpers for integration tests: start `abgate serve` as a real process on
//! port 0 and read its addresses back; poll with deadlines; stop it with a signal.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod bandit;
pub mod fleet;
pub mod inprocess;
pub mod nats;
pub mod relay;
pub mod synthetic;

pub use abgate::mock::MockServer;
#[allow(unused_imports)]
pub use inprocess::{start_in_process, InProcess};

pub mod config;
// Each test binary compiles this module and uses some of it (as `dead_code` above).
#[allow(unused_imports)]
pub use config::{two_backend, ExperimentSpec, LayerSpec, TestConfig, DIR_PLACEHOLDER};

pub const TOKEN: &str = "test-token-123";

/// A running `abgate serve` process.
pub struct Abgate {
    pub child: Child,
    pub proxy: String,
    /// The first TLS listener (`[server.tls]`), if any.
    pub tls: Option<String>,
    pub admin: String,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub stderr: PathBuf,
}

/// Write `config` (with `{DIR}` replaced by a temp dir) and start abgate on it.
pub fn start(dir: &Path, config: &str) -> Abgate {
    let text = config.replace(DIR_PLACEHOLDER, &dir.display().to_string());
    let path = dir.join("abgate.toml");
    std::fs::write(&path, text).unwrap();
    start_file(dir, &path)
}

pub fn start_file(dir: &Path, path: &Path) -> Abgate {
    let stderr = dir.join(format!(
        "stderr-{}.log",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let mut child = Command::new(env!("CARGO_BIN_EXE_abgate"))
        .args(["serve", "--config"])
        .arg(path)
        .env("ABGATE_ADMIN_TOKEN", TOKEN)
        .env(
            "RUST_LOG",
            std::env::var("ABGATE_TEST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let (proxy, admin) = abgate::demo::parse_ready_line(&line).unwrap_or_else(|| {
        let _ = child.kill();
        panic!(
            "abgate did not start: {line:?}\n{}",
            std::fs::read_to_string(&stderr).unwrap_or_default()
        )
    });
    Abgate {
        child,
        proxy,
        tls: abgate::demo::parse_ready_tls(&line),
        admin,
        dir: dir.to_path_buf(),
        config: path.to_path_buf(),
        stderr,
    }
}

impl Abgate {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.proxy, path)
    }
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }
    /// Send SIGTERM and wait for exit (bounded).
    pub fn stop(mut self) -> std::process::ExitStatus {
        signal(&self.child, "TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "abgate did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    pub fn metrics(&self) -> String {
        agent()
            .get(&self.admin_url("/metrics"))
            .call()
            .unwrap()
            .into_string()
            .unwrap()
    }
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Abgate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn signal(child: &Child, sig: &str) {
    Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
}

pub fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build()
}

/// GET through the proxy with a user cookie; returns (status, body json, response).
pub fn get_as(a: &Abgate, path: &str, user: &str) -> (u16, serde_json::Value, Option<String>) {
    let r = agent()
        .get(&a.url(path))
        .set("cookie", &format!("_ga=1; abgate_uid={user}"))
        .call();
    let resp = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("request failed: {e}"),
    };
    let status = resp.status();
    let variant = resp.header("x-abgate-variant").map(str::to_string);
    let body = resp.into_string().unwrap_or_default();
    (
        status,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
        variant,
    )
}

/// Poll `f` until it returns Some, or panic after `secs`.
pub fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Sum of a metric's samples whose line contains every `parts` substring.
pub fn metric_sum(text: &str, name: &str, parts: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.starts_with(name)
                && (l.as_bytes().get(name.len()) == Some(&b'{')
                    || l.as_bytes().get(name.len()) == Some(&b' '))
        })
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

pub fn events(dir: &Path) -> Vec<serde_json::Value> {
    abgate::events::reader::read_values(dir)
        .map(|(v, _)| v)
        .unwrap_or_default()
}

/// The text of [`two_backend`] on `a` and `b` with `experiment_extra` lines added to
/// experiment `ranker_v2`; its paths are `{DIR}`, filled in by [`start`].
pub fn two_backend_config(a: &MockServer, b: &MockServer, experiment_extra: &str) -> String {
    two_backend(DIR_PLACEHOLDER, a.addr, b.addr)
        .experiment_line("ranker_v2", experiment_extra)
        .toml()
}

/// Two mock backends (`a`, `b`) and abgate in front of them with `two_backend_config`.
pub fn two_backends(experiment_extra: &str) -> (MockServer, MockServer, tempfile::TempDir, Abgate) {
    let a = MockServer::builder().name("a").start().unwrap();
    let b = MockServer::builder().name("b").start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let g = start(dir.path(), &two_backend_config(&a, &b, experiment_extra));
    (a, b, dir, g)
}

/// Metrics are updated after the response is sent (in pingora's logging phase), so a
/// scrape right after the last response may be a request behind: poll until `name`
/// with `parts` sums to `expected` (bounded), then return the scrape.
pub fn wait_metric(g: &Abgate, name: &str, parts: &[&str], expected: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = g.metrics();
        let v = metric_sum(&m, name, parts);
        if v == expected || Instant::now() > deadline {
            assert_eq!(v, expected, "{name}{parts:?} in:\n{m}");
            return m;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A backend that records the bytes of each request head it receives, exactly as they
/// arrived (the mock model server parses with hyper, which lowercases names), and answers
/// `200 ok`. Keep-alive; one thread per connection; lives until the test process ends.
pub struct RawBackend {
    pub addr: String,
    heads: std::sync::mpsc::Receiver<Vec<u8>>,
}

impl RawBackend {
    pub fn start() -> RawBackend {
        RawBackend::start_answering(usize::MAX)
    }

    /// A backend that answers the first `per_connection` requests of each connection and
    /// closes the connection, unanswered, on the next one (a keep-alive connection that
    /// went stale under a proxy's connection pool).
    pub fn start_answering(per_connection: usize) -> RawBackend {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (tx, heads) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let tx = tx.clone();
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    for answered in 0.. {
                        // One request: the head, then a Content-Length body.
                        let end = loop {
                            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break i + 4;
                            }
                            match conn.read(&mut chunk) {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let head: Vec<u8> = buf.drain(..end).collect();
                        let len = content_length(&head);
                        while buf.len() < len {
                            match conn.read(&mut chunk) {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.drain(..len);
                        let _ = tx.send(head);
                        if answered == per_connection {
                            return; // closes the connection without an answer
                        }
                        let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if conn.write_all(reply).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        RawBackend { addr, heads }
    }

    /// The next request head received (bounded wait).
    pub fn next_head(&self) -> Vec<u8> {
        self.heads
            .recv_timeout(Duration::from_secs(10))
            .expect("the backend received no request within 10 s")
    }
}

/// The Content-Length of a message head (0 when it has none).
fn content_length(head: &[u8]) -> usize {
    String::from_utf8_lossy(head)
        .to_ascii_lowercase()
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Send `request` (raw bytes) to `addr` on a new connection and return the response head
/// and body as text (the response must carry Content-Length).
pub fn raw_request(addr: &str, request: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.extend_from_slice(&chunk[..n]);
        if let Some(i) = out.windows(4).position(|w| w == b"\r\n\r\n") {
            if out.len() >= i + 4 + content_length(&out[..i]) {
                break;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
