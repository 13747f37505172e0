//! A real `nats-server` with JetStream for the fleet tests: on a free loopback port, its
//! store in a temp dir, waited for until it accepts clients; killed with `SIGKILL` and
//! restarted on the same port and store to play a broker outage.
//!
//! The binary is `$NATS_SERVER`, else `nats-server` on the `PATH`, else
//! `/usr/sbin/nats-server` (Debian's package).
#![allow(dead_code)]

use std::io::Read;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running (or stopped) `nats-server -js`.
pub struct NatsServer {
    child: Option<Child>,
    /// Its client port on 127.0.0.1.
    pub port: u16,
    store: tempfile::TempDir,
    log: PathBuf,
}

impl NatsServer {
    /// Start a server on a free port and wait until it accepts clients (bounded).
    pub fn start() -> NatsServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let store = tempfile::tempdir().unwrap();
        let log = store.path().join("nats-server.log");
        let mut s = NatsServer {
            child: None,
            port,
            store,
            log,
        };
        s.restart();
        s
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stop the server (SIGKILL: a broker that disappears) and wait for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it again on the same port and store; waits until it accepts clients.
    pub fn restart(&mut self) {
        self.stop();
        let store_dir = self.store.path().join("js");
        let child = Command::new(binary())
            .args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("-sd")
            .arg(&store_dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&self.log).unwrap())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run nats-server ({e}); install it (apt-get install nats-server) or set $NATS_SERVER"
                )
            });
        self.child = Some(child);
        self.wait_ready();
    }

    /// The server's log (for failure messages).
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until a client connection gets the server's `INFO` line (bounded: 10 s).
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!("nats-server exited ({status}):\n{}", self.logs());
                }
            }
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                let mut buf = [0u8; 4];
                if s.read_exact(&mut buf).is_ok() && &buf == b"INFO" {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not accept clients within 10 s:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("NATS_SERVER") {
        return PathBuf::from(p);
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("nats-server"))
                .find(|p| p.is_file())
        })
        .unwrap_or_default();
    on_path.unwrap_or_else(|| PathBuf::from("/usr/sbin/nats-server"))
}
