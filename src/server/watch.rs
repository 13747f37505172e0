//! The config file watcher: a change in the config's directory triggers a reload
//! (debounced: the burst of events of one save makes one reload).

use crate::runtime::App;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Watch the config file's directory and reload on change, until `shutdown`.
pub fn spawn_watcher(app: Arc<App>, mut shutdown: watch::Receiver<bool>) {
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
