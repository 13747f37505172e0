//! A real `nats-server` with JetStream for the fleet tests: started on a free port of
//! 127.0.0.1 with its store in a directory the test owns, killed with `SIGKILL` and
//! restarted on the same port and store to play a broker outage.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the Debian package puts the server; `NATS_SERVER` overrides it.
fn binary() -> String {
    std::env::var("NATS_SERVER").unwrap_or_else(|_| {
        if Path::new("/usr/sbin/nats-server").exists() {
            "/usr/sbin/nats-server".into()
        } else {
            "nats-server".into()
        }
    })
}

/// A running (or killed) `nats-server -js`.
pub struct Nats {
    pub port: u16,
    pub store: PathBuf,
    child: Option<Child>,
}

impl Nats {
    /// Start on a free port with its JetStream store in `store`.
    pub fn start(store: &Path) -> Nats {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut n = Nats {
            port,
            store: store.to_path_buf(),
            child: None,
        };
        n.restart();
        n
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// `SIGKILL`: no goodbye to clients, nothing flushed beyond what the store has.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start again on the same port and store (after [`Nats::kill`]); returns once it
    /// accepts connections (bounded: 20 s).
    pub fn restart(&mut self) {
        self.kill();
        let child = Command::new(binary())
            .args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("-sd")
            .arg(&self.store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}); install it: apt-get install nats-server",
                    binary()
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not accept connections on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}
