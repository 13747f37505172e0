//! Hot reload: re-read the config file, validate it, and swap in a new snapshot only if
//! it is valid; the old config keeps serving otherwise. File watcher, `SIGHUP` and
//! `POST /admin/reload` all end here.

use super::{build_snapshot, App, ReloadOutcome};
use crate::config::{self, Config, ConfigError};
use std::sync::Arc;

impl App {
    /// Re-read the config file; apply it only if it validates. On failure the old
    /// config keeps serving; the error is logged and counted either way.
    pub fn reload(&self, trigger: &str) -> Result<ReloadOutcome, ConfigError> {
        let _g = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        let result = config::load_file(&self.config_path);
        let cfg = match result {
            Ok(c) => c,
            Err(e) => {
                self.metrics
                    .config_reloads
                    .with_label_values(&["error"])
                    .inc();
                tracing::error!(
                    "config reload ({trigger}) rejected; the previous config keeps serving:\n{e}"
                );
                return Err(e);
            }
        };
        let cur = self.snapshot.load();
        if cfg.version == cur.config.version {
            return Ok(ReloadOutcome::Unchanged);
        }
        warn_restart_only(&cur.config, &cfg);
        let snap = match build_snapshot(Arc::new(cfg), &self.guard, &self.metrics) {
            Ok(s) => s,
            Err(e) => {
                self.metrics
                    .config_reloads
                    .with_label_values(&["error"])
                    .inc();
                tracing::error!("config reload ({trigger}) failed building upstream pools: {e}");
                return Err(ConfigError {
                    file: self.config_path.clone(),
                    diagnostics: vec![config::Diagnostic {
                        line: None,
                        path: "upstream".into(),
                        message: e.to_string(),
                    }],
                });
            }
        };
        let version = snap.config.version.clone();
        self.guard.retain(&snap.config);
        self.metrics.set_config_version(&version);
        self.snapshot.store(Arc::new(snap));
        self.metrics.config_reloads.with_label_values(&["ok"]).inc();
        tracing::info!("config reloaded ({trigger}): version {version}");
        Ok(ReloadOutcome::Applied { version })
    }
}

fn warn_restart_only(old: &Config, new: &Config) {
    let mut changed = Vec::new();
    if old.server.listen != new.server.listen {
        changed.push("server.listen");
    }
    if old.server.threads != new.server.threads {
        changed.push("server.threads");
    }
    let tls = |c: &Config| {
        c.server
            .tls
            .as_ref()
            .map(|t| (t.listen.clone(), t.cert.clone(), t.key.clone()))
    };
    if tls(old) != tls(new) {
        changed.push("server.tls");
    }
    if old.admin.listen != new.admin.listen {
        changed.push("admin.listen");
    }
    if old.events.dir != new.events.dir
        || old.events.queue != new.events.queue
        || old.events.rotate_bytes != new.events.rotate_bytes
        || old.events.flush_interval != new.events.flush_interval
        || old.events.hash_unit_ids != new.events.hash_unit_ids
    {
        changed.push("events.*");
    }
    if old.state_dir != new.state_dir {
        changed.push("state.dir");
    }
    if !changed.is_empty() {
        tracing::warn!(
            "config reload: {} changed; these apply only after a restart (the running values stay)",
            changed.join(", ")
        );
    }
}
