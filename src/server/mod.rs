//! The server: wires the runtime, the proxy, the admin API and the control loops together
//! around bound listeners, and stops them in order.
//!
//! - [`start`] / [`Running::stop`]: an in-process server (tests, the demo, benchmarks):
//!   it takes a validated config and listeners the caller bound (so port 0 works and the
//!   caller knows the addresses), and stops when told.
//! - [`run`]: start, wait for a shutdown future, stop.
//! - [`serve`]: `abgate serve` — load the config, bind, build the tokio runtime, run until
//!   `SIGTERM`/`SIGINT`, reload on `SIGHUP`.
//!
//! Start-up order: open the guard state and the event writer → build the runtime state →
//! with `[fleet]`, connect to the broker (in the background) and start the shipper →
//! start the pingora service on the bound sockets, the admin API, the control loops and
//! the config watcher → ready. Stop: not ready → stop accepting → wait for in-flight
//! requests (bounded by `server.shutdown_timeout`) → drain the event queue and fsync →
//! with `[fleet]`, let the shipper publish the log's tail (bounded).
//! Every response that was sent has its exposure on disk when [`Running::stop`] returns.

mod watch;

use crate::config::{self, Config};
use crate::events::writer::{EventWriter, WriterOptions};
use crate::events::WriterStats;
use crate::guard::Guard;
use crate::metrics::Metrics;
use crate::proxy::AbgateProxy;
use crate::runtime::App;
use pingora::server::configuration::ServerConf;
use pingora::server::Fds;
use pingora::services::Service;
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::IntoRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a stopping sidecar gives the shipper to publish the tail of the event log
/// (what it cannot ship by then stays in the log, and the next start ships it).
const FLEET_STOP_GRACE: Duration = Duration::from_secs(3);

/// Why the server failed, mapped to exit codes by the CLI.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Bad config or settings (exit 1).
    #[error("{0}")]
    Invalid(String),
    /// Runtime failure: bind, disk, threads (exit 2).
    #[error("{0}")]
    Runtime(String),
}

/// The sockets a server serves on, bound by the caller.
pub struct Listeners {
    /// Proxy listeners (`server.listen`): HTTP/1.1 and h2c.
    pub proxy: Vec<TcpListener>,
    /// TLS proxy listeners (`server.tls.listen`): HTTP/1.1 and h2 by ALPN.
    pub tls: Vec<TcpListener>,
    /// The admin listener (`admin.listen`).
    pub admin: TcpListener,
}

impl Listeners {
    /// Bind the addresses `cfg` names, with errors that say what to do.
    pub fn bind(cfg: &Config) -> Result<Listeners, ServeError> {
        let bind = |addr: &str, key: &str| {
            TcpListener::bind(addr).map_err(|e| {
                ServeError::Runtime(format!(
                    "cannot listen on {addr} ({key}): {e}; pick a free port or stop what holds it"
                ))
            })
        };
        let proxy = cfg
            .server
            .listen
            .iter()
            .map(|a| bind(a, "server.listen"))
            .collect::<Result<_, _>>()?;
        let tls = match &cfg.server.tls {
            Some(t) => t
                .listen
                .iter()
                .map(|a| bind(a, "server.tls.listen"))
                .collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        let admin = bind(&cfg.admin.listen, "admin.listen")?;
        Ok(Listeners { proxy, tls, admin })
    }
}

/// A started server.
pub struct Running {
    app: Arc<App>,
    writer: EventWriter,
    fleet: Option<crate::fleet::Fleet>,
    shutdown: tokio::sync::watch::Sender<bool>,
    proxy_task: tokio::task::JoinHandle<()>,
    /// The proxy's addresses, in `server.listen` order.
    pub proxy_addrs: Vec<SocketAddr>,
    /// The TLS listeners' addresses, in `server.tls.listen` order.
    pub tls_addrs: Vec<SocketAddr>,
    /// The admin API's address.
    pub admin_addr: SocketAddr,
}

/// What [`Running::stop`] reports.
#[derive(Debug)]
pub struct Stopped {
    /// Requests still in flight when `server.shutdown_timeout` ran out.
    pub abandoned: i64,
    /// Events written over the server's life.
    pub events_written: u64,
    /// Events dropped over the server's life.
    pub events_dropped: u64,
}

/// Start a server on `listeners` with the validated `cfg` (read from `config_path`, which
/// reloads re-read). Must run inside a tokio runtime; the proxy's threads are the
/// runtime's.
pub async fn start(
    cfg: Config,
    config_path: PathBuf,
    listeners: Listeners,
) -> Result<Running, ServeError> {
    let writer = EventWriter::start(writer_options(&cfg)?).map_err(ServeError::Runtime)?;
    let guard =
        Arc::new(Guard::open(&cfg.state_dir).map_err(|e| ServeError::Runtime(e.to_string()))?);
    if cfg.admin_token().is_none() {
        tracing::warn!(
            "${} is not set: admin mutations (reload, rollback, resume, pause) and QA forces are refused",
            cfg.admin.token_env
        );
    }
    let threads = cfg.server.threads;
    let tls_files = cfg.server.tls.clone();
    let fleet_settings = cfg.fleet.clone();
    let (events_dir, state_dir) = (cfg.events.dir.clone(), cfg.state_dir.clone());
    let app = App::new(cfg, config_path, writer.sink(), guard, Metrics::new())
        .map_err(|e| ServeError::Runtime(format!("cannot build upstream pools: {e}")))?;
    let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
    let fleet = match &fleet_settings {
        Some(settings) => {
            crate::fleet::Fleet::start(&app, settings, &events_dir, &state_dir, shutdown_rx.clone())
                .await
        }
        None => None,
    };

    let sockets = ProxySockets {
        plain: listeners.proxy,
        tls: listeners.tls,
        tls_files,
    };
    let (proxy_task, proxy_addrs, tls_addrs) = start_proxy(&app, threads, sockets, &shutdown_rx)?;
    let runtime_err = |e: std::io::Error| ServeError::Runtime(e.to_string());
    listeners.admin.set_nonblocking(true).map_err(runtime_err)?;
    let admin_addr = listeners.admin.local_addr().map_err(runtime_err)?;
    if !admin_addr.ip().is_loopback() {
        tracing::warn!(
            "admin.listen is {admin_addr}, not a loopback address: /metrics, /admin/experiments and the live reports are readable without a token by anyone who can reach it; keep it on 127.0.0.1 or firewall it"
        );
    }
    let admin_listener = tokio::net::TcpListener::from_std(listeners.admin).map_err(runtime_err)?;
    tokio::spawn(crate::admin::run(
        admin_listener,
        crate::admin::AdminHandle::new(app.clone()),
        shutdown_rx.clone(),
    ));
    // The ramps' state is exported (and their start announced) before the first
    // request, not at the control loop's first tick.
    app.ramp_pending();
    tokio::spawn(crate::control::run(app.clone(), shutdown_rx.clone()));
    watch::spawn_watcher(app.clone(), shutdown_rx);

    app.ready.store(true, Relaxed);
    Ok(Running {
        app,
        writer,
        fleet,
        shutdown,
        proxy_task,
        proxy_addrs,
        tls_addrs,
        admin_addr,
    })
}

fn writer_options(cfg: &Config) -> Result<WriterOptions, ServeError> {
    let hash_key = if cfg.events.hash_unit_ids {
        match std::env::var(&cfg.events.hash_key_env) {
            Ok(k) if !k.is_empty() => Some(k.into_bytes()),
            _ => {
                return Err(ServeError::Invalid(format!(
                    "events.hash_unit_ids is on but ${} is empty; export a secret key in it (the same key on every instance, so ids join)",
                    cfg.events.hash_key_env
                )))
            }
        }
    } else {
        None
    };
    Ok(WriterOptions {
        dir: cfg.events.dir.clone(),
        rotate_bytes: cfg.events.rotate_bytes,
        flush_interval: cfg.events.flush_interval,
        queue: cfg.events.queue,
        hash_key,
        instance: cfg.fleet.as_ref().map(|f| f.instance.as_str().into()),
    })
}

/// The proxy's bound sockets and the TLS files of its TLS listeners.
struct ProxySockets {
    plain: Vec<TcpListener>,
    tls: Vec<TcpListener>,
    tls_files: Option<crate::config::ServerTls>,
}

type ProxyStarted = (
    tokio::task::JoinHandle<()>,
    Vec<SocketAddr>,
    Vec<SocketAddr>,
);

/// The pingora service on our own sockets: plaintext listeners speak HTTP/1.1 and
/// HTTP/2 with prior knowledge (h2c, what gRPC clients send), told apart by the HTTP/2
/// preface; TLS listeners offer `h2` and `http/1.1` by ALPN.
fn start_proxy(
    app: &Arc<App>,
    threads: usize,
    sockets: ProxySockets,
    shutdown: &tokio::sync::watch::Receiver<bool>,
) -> Result<ProxyStarted, ServeError> {
    let conf = Arc::new(ServerConf {
        threads,
        ..ServerConf::default()
    });
    let mut proxy = pingora::proxy::http_proxy(&conf, AbgateProxy::new(app.clone()));
    let mut options = pingora::apps::HttpServerOptions::default();
    options.h2c = true;
    // An HTTP/2 connection with no stream open is closed after the same idle time as an
    // HTTP/1.1 keep-alive connection (the value at start: pingora reads it once).
    options.h2_idle_timeout = Some(Duration::from_secs(
        app.snapshot.load().config.server.keepalive_timeout,
    ));
    proxy.server_options = Some(options);
    let mut service = pingora::services::listening::Service::new(
        "abgate proxy".into(),
        crate::proxy::connections::Counted::new(proxy, app.clone()),
    );
    let mut fds = Fds::new();
    let mut take = |l: TcpListener| -> Result<SocketAddr, ServeError> {
        let addr = l
            .local_addr()
            .map_err(|e| ServeError::Runtime(format!("listener address: {e}")))?;
        // tokio needs the socket in non-blocking mode.
        l.set_nonblocking(true)
            .map_err(|e| ServeError::Runtime(format!("listener {addr}: {e}")))?;
        fds.add(addr.to_string(), l.into_raw_fd());
        Ok(addr)
    };
    let mut addrs = Vec::new();
    for l in sockets.plain {
        let addr = take(l)?;
        service.add_tcp(&addr.to_string());
        addrs.push(addr);
    }
    let mut tls_addrs = Vec::new();
    if let Some(files) = &sockets.tls_files {
        let path = |p: &Path| p.to_string_lossy().into_owned();
        for l in sockets.tls {
            let addr = take(l)?;
            let mut settings = pingora::listeners::tls::TlsSettings::intermediate(
                &path(&files.cert),
                &path(&files.key),
            )
            .map_err(|e| ServeError::Runtime(format!("server.tls: {e}")))?;
            settings.enable_h2();
            service.add_tls_with_settings(&addr.to_string(), None, settings);
            tls_addrs.push(addr);
        }
    }
    let fds = Arc::new(parking_lot::Mutex::new(fds));
    let srx = shutdown.clone();
    let task = tokio::spawn(async move {
        service.start_service(Some(fds), srx, 1).await;
    });
    Ok((task, addrs, tls_addrs))
}

impl Running {
    /// The shared runtime state (snapshot, metrics, guard store).
    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// Stop: not ready, stop accepting, let in-flight requests finish and log (bounded by
    /// `server.shutdown_timeout`), then drain the event queue to disk.
    pub async fn stop(self) -> Stopped {
        let app = self.app;
        app.ready.store(false, Relaxed);
        app.draining.store(true, Relaxed);
        let _ = self.shutdown.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.proxy_task).await;
        let deadline = Instant::now() + app.snapshot.load().config.server.shutdown_timeout;
        while app.inflight.load(Relaxed) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let abandoned = app.inflight.load(Relaxed);
        if abandoned > 0 {
            tracing::warn!(
                "{abandoned} requests still in flight after server.shutdown_timeout; stopping anyway"
            );
        }
        let writer = self.writer;
        let stats = tokio::task::spawn_blocking(move || writer.close())
            .await
            .ok();
        let (events_written, events_dropped) = stats
            .as_deref()
            .map(|s: &WriterStats| (s.written.load(Relaxed), s.dropped()))
            .unwrap_or_default();
        if let Some(fleet) = self.fleet {
            // the log is complete now: let the shipper publish its tail, briefly
            fleet.stop(FLEET_STOP_GRACE).await;
        }
        tracing::info!("stopped: {events_written} events written, {events_dropped} dropped");
        Stopped {
            abandoned,
            events_written,
            events_dropped,
        }
    }
}

/// Start, wait for `shutdown`, stop.
pub async fn run(
    cfg: Config,
    config_path: PathBuf,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<Stopped, ServeError> {
    let running = start(cfg, config_path, listeners).await?;
    shutdown.await;
    Ok(running.stop().await)
}

/// `abgate serve`: run the proxy until `SIGTERM`/`SIGINT`; `SIGHUP` reloads.
pub fn serve(config_path: &Path) -> Result<(), ServeError> {
    let cfg = config::load_file(config_path).map_err(|e| ServeError::Invalid(e.to_string()))?;
    let config_path = config_path
        .canonicalize()
        .unwrap_or_else(|_| config_path.to_path_buf());
    let listeners = Listeners::bind(&cfg)?;
    let rt = runtime(cfg.server.threads)?;

    // pingora's own timers (its "fast timeout": 10 ms ticks, a clock thread, a lock and
    // a tree insert per timed read) are kept for sub-second timeouts; the backend
    // connect and read timeouts of a second or more use tokio's timer wheel, which
    // costs fewer instructions per request (docs/decisions.md).
    pingora::prelude::fast_timeout::set_fast_timeout_to_tokio_threshold(Some(Duration::ZERO));

    rt.block_on(async {
        let running = start(cfg, config_path.clone(), listeners).await?;
        print_ready(&running, &config_path);
        wait_for_stop_signal(running.app()).await?;
        running.stop().await;
        Ok::<_, ServeError>(())
    })?;
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

/// One worker thread: a current-thread runtime, so the proxy, the admin API and the
/// control loops share one thread without the multi-thread scheduler's bookkeeping and
/// cross-thread wake-ups (docs/decisions.md). More: a multi-thread runtime with that
/// many workers.
fn runtime(threads: usize) -> Result<tokio::runtime::Runtime, ServeError> {
    if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("abgate-worker")
            .enable_all()
            .build()
    }
    .map_err(|e| ServeError::Runtime(format!("cannot start the runtime: {e}")))
}

/// The one line on stdout that says abgate is ready and where (port 0 picks free ports).
fn print_ready(running: &Running, config_path: &Path) {
    use std::io::Write;
    let join = |addrs: &[SocketAddr]| {
        addrs
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let proxy = join(&running.proxy_addrs);
    let tls = if running.tls_addrs.is_empty() {
        String::new()
    } else {
        format!("; tls on {}", join(&running.tls_addrs))
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "abgate: serving config {} (version {}); proxy on {proxy}{tls}; admin on {}",
        config_path.display(),
        running.app().snapshot.load().config.version,
        running.admin_addr
    );
    let _ = out.flush();
    tracing::info!(
        "proxy listening on {proxy}{tls}; admin on {}",
        running.admin_addr
    );
}

/// Wait for `SIGTERM` or `SIGINT`; reload on each `SIGHUP` meanwhile.
async fn wait_for_stop_signal(app: &Arc<App>) -> Result<(), ServeError> {
    use tokio::signal::unix::{signal, SignalKind};
    let listen = |kind| signal(kind).map_err(|e| ServeError::Runtime(e.to_string()));
    let (mut term, mut int, mut hup) = (
        listen(SignalKind::terminate())?,
        listen(SignalKind::interrupt())?,
        listen(SignalKind::hangup())?,
    );
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: stopping"); return Ok(()); }
            _ = int.recv() => { tracing::info!("SIGINT: stopping"); return Ok(()); }
            _ = hup.recv() => {
                let a = app.clone();
                let _ = tokio::task::spawn_blocking(move || a.reload("SIGHUP")).await;
            }
        }
    }
}
