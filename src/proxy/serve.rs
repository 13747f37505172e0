//! `abgate serve`: the process around the proxy service.
//!
//! Start-up order: validate the config (exit 1 on error) → bind every listener ourselves
//! (so port 0 works, bind errors are clear, and readiness is known) → open the guard
//! state and the event writer → start the pingora service on the bound sockets, the
//! admin API, the guardrail evaluator and the config watcher → print the addresses.
//!
//! Stop (`SIGTERM` or `SIGINT`): stop accepting, wait for in-flight requests (bounded by
//! `server.shutdown_timeout`), then drain the event queue and fsync. Every response that
//! was sent has its exposure on disk when the process exits.

use super::service::AbgateProxy;
use super::App;
use crate::admin::metrics::Metrics;
use crate::config::{self, Config};
use crate::events::writer::{EventWriter, WriterOptions};
use crate::guard::Guard;
use pingora::server::configuration::ServerConf;
use pingora::server::Fds;
use pingora::services::Service;
use std::net::TcpListener;
use std::os::fd::IntoRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Why `serve` failed, mapped to exit codes by the CLI.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Bad config or settings (exit 1).
    #[error("{0}")]
    Invalid(String),
    /// Runtime failure: bind, disk, threads (exit 2).
    #[error("{0}")]
    Runtime(String),
}

/// Run the proxy until SIGTERM/SIGINT.
pub fn serve(config_path: &Path) -> Result<(), ServeError> {
    let cfg = config::load_file(config_path).map_err(|e| ServeError::Invalid(e.to_string()))?;
    let config_path = config_path
        .canonicalize()
        .unwrap_or_else(|_| config_path.to_path_buf());

    let mut proxy_listeners = Vec::new();
    for a in &cfg.server.listen {
        let l = TcpListener::bind(a).map_err(|e| {
            ServeError::Runtime(format!(
                "cannot listen on {a} (server.listen): {e}; pick a free port or stop what holds it"
            ))
        })?;
        proxy_listeners.push(l);
    }
    let admin_listener = TcpListener::bind(&cfg.admin.listen).map_err(|e| {
        ServeError::Runtime(format!(
            "cannot listen on {} (admin.listen): {e}; pick a free port or stop what holds it",
            cfg.admin.listen
        ))
    })?;

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
    let writer = EventWriter::start(WriterOptions {
        dir: cfg.events.dir.clone(),
        rotate_bytes: cfg.events.rotate_bytes,
        flush_interval: cfg.events.flush_interval,
        queue: cfg.events.queue,
        hash_key,
    })
    .map_err(ServeError::Runtime)?;
    let guard =
        Arc::new(Guard::open(&cfg.state_dir).map_err(|e| ServeError::Runtime(e.to_string()))?);
    if cfg.admin_token().is_none() {
        tracing::warn!(
            "${} is not set: admin mutations (reload, rollback, resume, pause) and QA forces are refused",
            cfg.admin.token_env
        );
    }

    // One worker thread: a current-thread runtime, so the proxy, the admin API and the
    // evaluator share one thread without the multi-thread scheduler's bookkeeping and
    // cross-thread wake-ups (measured: see README, Performance). More: a multi-thread
    // runtime with that many workers.
    let rt = if cfg.server.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cfg.server.threads)
            .thread_name("abgate-worker")
            .enable_all()
            .build()
    }
    .map_err(|e| ServeError::Runtime(format!("cannot start the runtime: {e}")))?;

    // pingora's own timers (its "fast timeout": 10 ms ticks, a clock thread, a lock and
    // a tree insert per timed read) are kept for sub-second timeouts; the backend
    // connect and read timeouts of a second or more use tokio's timer wheel, which
    // costs fewer instructions per request (README, Performance).
    pingora::prelude::fast_timeout::set_fast_timeout_to_tokio_threshold(Some(
        std::time::Duration::ZERO,
    ));

    let shutdown_timeout = cfg.server.shutdown_timeout;
    let (_app, left) = rt.block_on(async {
        let app = run(
            cfg,
            config_path,
            proxy_listeners,
            admin_listener,
            writer.sink(),
            guard,
        )
        .await?;
        // Let in-flight requests finish and log (inside the runtime: on a current-thread
        // runtime nothing runs outside `block_on`).
        let deadline = Instant::now() + shutdown_timeout;
        while app.inflight.load(Relaxed) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let left = app.inflight.load(Relaxed);
        Ok::<_, ServeError>((app, left))
    })?;
    if left > 0 {
        tracing::warn!(
            "{left} requests still in flight after server.shutdown_timeout; stopping anyway"
        );
    }
    rt.shutdown_timeout(Duration::from_secs(1));
    let stats = writer.close();
    tracing::info!(
        "stopped: {} events written, {} dropped",
        stats.written.load(Relaxed),
        stats.dropped()
    );
    Ok(())
}

async fn run(
    cfg: Config,
    config_path: PathBuf,
    proxy_listeners: Vec<TcpListener>,
    admin_listener: TcpListener,
    sink: crate::events::EventSink,
    guard: Arc<Guard>,
) -> Result<Arc<App>, ServeError> {
    let metrics = Metrics::new();
    let app = App::new(cfg, config_path.clone(), sink, guard, metrics)
        .map_err(|e| ServeError::Runtime(format!("cannot build upstream pools: {e}")))?;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);

    // The pingora service on our own sockets.
    let conf = Arc::new(ServerConf {
        threads: app.snapshot.load().config.server.threads,
        ..ServerConf::default()
    });
    let mut service = pingora::proxy::http_proxy_service(&conf, AbgateProxy { app: app.clone() });
    let mut fds = Fds::new();
    let mut proxy_addrs = Vec::new();
    for l in proxy_listeners {
        let addr = l
            .local_addr()
            .map_err(|e| ServeError::Runtime(format!("listener address: {e}")))?
            .to_string();
        // tokio needs the socket in non-blocking mode.
        l.set_nonblocking(true)
            .map_err(|e| ServeError::Runtime(format!("listener {addr}: {e}")))?;
        service.add_tcp(&addr);
        fds.add(addr.clone(), l.into_raw_fd());
        proxy_addrs.push(addr);
    }
    let fds = Arc::new(parking_lot::Mutex::new(fds));
    let srx = shutdown_rx.clone();
    let proxy_task = tokio::spawn(async move {
        service.start_service(Some(fds), srx, 1).await;
    });

    admin_listener
        .set_nonblocking(true)
        .map_err(|e| ServeError::Runtime(e.to_string()))?;
    let admin_addr = admin_listener
        .local_addr()
        .map_err(|e| ServeError::Runtime(e.to_string()))?;
    let admin_l = tokio::net::TcpListener::from_std(admin_listener)
        .map_err(|e| ServeError::Runtime(e.to_string()))?;
    tokio::spawn(crate::admin::run(admin_l, app.clone(), shutdown_rx.clone()));
    tokio::spawn(crate::proxy::serve::evaluator_loop(
        app.clone(),
        shutdown_rx.clone(),
    ));
    spawn_watcher(app.clone(), shutdown_rx.clone());

    app.ready.store(true, Relaxed);
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "abgate: serving config {} (version {}); proxy on {}; admin on {}",
            config_path.display(),
            app.snapshot.load().config.version,
            proxy_addrs.join(", "),
            admin_addr
        );
        let _ = out.flush();
    }
    tracing::info!(
        "proxy listening on {}; admin on {admin_addr}",
        proxy_addrs.join(", ")
    );

    // Signals.
    use tokio::signal::unix::{signal, SignalKind};
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| ServeError::Runtime(e.to_string()))?;
    let mut int =
        signal(SignalKind::interrupt()).map_err(|e| ServeError::Runtime(e.to_string()))?;
    let mut hup = signal(SignalKind::hangup()).map_err(|e| ServeError::Runtime(e.to_string()))?;
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: stopping"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: stopping"); break; }
            _ = hup.recv() => {
                let a = app.clone();
                let _ = tokio::task::spawn_blocking(move || a.reload("SIGHUP")).await;
            }
        }
    }
    app.ready.store(false, Relaxed);
    let _ = shutdown_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), proxy_task).await;
    Ok(app)
}

/// Run the guardrail evaluator until shutdown.
pub async fn evaluator_loop(app: Arc<App>, mut shutdown: watch::Receiver<bool>) {
    let mut last: std::collections::HashMap<String, Instant> = std::collections::HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut last_srm = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let snap = app.snapshot.load_full();
        crate::guard::runner::check_all(&app, &snap, &mut last, Instant::now());
        if last_srm.elapsed() >= Duration::from_secs(1) {
            last_srm = Instant::now();
            for (li, layer) in snap.config.layers.iter().enumerate() {
                for (ei, exp) in layer.experiments.iter().enumerate() {
                    let n: Vec<u64> = snap.experiments[li][ei]
                        .metrics
                        .iter()
                        .map(|m| m.exposures.get())
                        .collect();
                    let w: Vec<f64> = exp.variants.iter().map(|v| v.weight).collect();
                    app.metrics
                        .srm_p_value
                        .with_label_values(&[&exp.name])
                        .set(crate::stats::chi_square_gof(&n, &w));
                }
            }
        }
    }
}

fn spawn_watcher(app: Arc<App>, mut shutdown: watch::Receiver<bool>) {
    use notify::{RecursiveMode, Watcher};
    let path = app.config_path.clone();
    // Watch the directory: editors replace files by rename and Kubernetes swaps a
    // symlinked directory; the file itself may be a new inode after either.
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(16);
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            if !matches!(ev.kind, notify::EventKind::Access(_)) {
                let _ = tx.try_send(());
            }
        }
    });
    let mut watcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(
                "file watcher unavailable ({e}); reload with SIGHUP or POST /admin/reload"
            );
            return;
        }
    };
    if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
        tracing::warn!(
            "cannot watch {} ({e}); reload with SIGHUP or POST /admin/reload",
            dir.display()
        );
        return;
    }
    tokio::spawn(async move {
        let _keep = watcher;
        loop {
            tokio::select! {
                r = rx.recv() => if r.is_none() { return },
                _ = shutdown.changed() => return,
            }
            // Debounce: wait for the burst of events of one save to end.
            loop {
                match tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            let a = app.clone();
            let _ = tokio::task::spawn_blocking(move || a.reload("file change")).await;
        }
    });
}
