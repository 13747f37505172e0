//! abgate started in the test process (`abgate::server::start`), for tests that need no
//! signals or process exit: faster than a child process, and the runtime state can be
//! inspected directly. Tests of signals, restarts and exit codes use the child process.

use abgate::server::{Listeners, Running, Stopped};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A running in-process abgate on its own multi-thread runtime.
pub struct InProcess {
    pub proxy: String,
    pub admin: String,
    pub dir: PathBuf,
    running: Option<Running>,
    rt: tokio::runtime::Runtime,
}

/// Write `config` (with `{DIR}` replaced by `dir`) and start abgate on it in process.
/// Listeners are bound here on `127.0.0.1:0`; the config's own addresses are not used.
pub fn start_in_process(dir: &Path, config: &str) -> InProcess {
    let text = config.replace("{DIR}", &dir.display().to_string());
    let path = dir.join("abgate.toml");
    std::fs::write(&path, &text).unwrap();
    let cfg = abgate::config::parse_str(&text, &path).unwrap_or_else(|e| panic!("{e}"));
    let listeners = Listeners {
        proxy: vec![TcpListener::bind("127.0.0.1:0").unwrap()],
        tls: Vec::new(),
        admin: TcpListener::bind("127.0.0.1:0").unwrap(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let running = rt
        .block_on(abgate::server::start(cfg, path, listeners))
        .unwrap_or_else(|e| panic!("abgate did not start: {e}"));
    InProcess {
        proxy: running.proxy_addrs[0].to_string(),
        admin: running.admin_addr.to_string(),
        dir: dir.to_path_buf(),
        running: Some(running),
        rt,
    }
}

impl InProcess {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.proxy, path)
    }
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }
    /// The runtime state of the running server.
    pub fn app(&self) -> &Arc<abgate::runtime::App> {
        self.running.as_ref().expect("running").app()
    }
    /// Stop gracefully: in-flight requests finish, every exposure reaches the disk.
    pub fn stop(mut self) -> Stopped {
        let running = self.running.take().expect("running");
        self.rt.block_on(running.stop())
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            self.rt.block_on(r.stop());
        }
    }
}
