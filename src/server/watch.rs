//! The config file watcher: a change of the config file triggers a reload (debounced:
//! the burst of events of one save makes one reload). Other files in its directory (a
//! log written beside it, an editor's swap file) are ignored.

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
    let name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(16);
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            if !matches!(ev.kind, notify::EventKind::Access(_))
                && ev.paths.iter().any(|p| concerns_config(p, &name))
            {
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

/// Whether a change at `changed` (in the config's directory) may change the config
/// named `name`: the file itself (written in place, or renamed over by an editor), or
/// a Kubernetes ConfigMap volume's `..data` symlink swap (its entries start with `..`).
fn concerns_config(changed: &Path, name: &std::ffi::OsStr) -> bool {
    match changed.file_name() {
        Some(n) => n == name || n.as_encoded_bytes().starts_with(b".."),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::concerns_config;
    use std::ffi::OsStr;
    use std::path::Path;

    #[test]
    fn only_the_config_and_configmap_swaps_concern_it() {
        let name = OsStr::new("abgate.toml");
        assert!(concerns_config(Path::new("/etc/abgate/abgate.toml"), name));
        assert!(concerns_config(Path::new("/etc/abgate/..data"), name));
        assert!(concerns_config(
            Path::new("/etc/abgate/..2026_12_03_07_00_00.123"),
            name
        ));
        for other in [
            "abgate.log",
            "abgate.toml.swp",
            ".abgate.toml.swp",
            "abgate.toml~",
        ] {
            assert!(
                !concerns_config(&Path::new("/etc/abgate").join(other), name),
                "{other}"
            );
        }
    }
}
