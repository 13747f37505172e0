//! Hot reload: re-read the config file, validate it, and swap in a new snapshot only if
//! it is valid; the old config keeps serving otherwise. File watcher, `SIGHUP` and
//! `POST /admin/reload` all end here.

use super::{build_snapshot, App, ReloadOutcome};
use crate::config::{self, Config, ConfigError};
use std::sync::atomic::Ordering::Relaxed;
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
        let restart_only = restart_only_changes(&cur.config, &cfg);
        if !restart_only.is_empty() {
            tracing::warn!(
                "config reload: {} changed; these apply only after a restart (the running values stay)",
                restart_only.join(", ")
            );
        }
        let snap = match build_snapshot(Arc::new(cfg), &self.guard, &self.metrics, &self.shadows) {
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
        // `share_windows` applies at once; the rest of `[fleet]` only after a restart.
        if let (true, Some(f)) = (self.fleet.enabled.load(Relaxed), &snap.config.fleet) {
            self.fleet.share_windows.store(f.share_windows, Relaxed);
        }
        self.metrics.set_config_version(&version);
        self.snapshot.store(Arc::new(snap));
        self.metrics.config_reloads.with_label_values(&["ok"]).inc();
        tracing::info!("config reloaded ({trigger}): version {version}");
        Ok(ReloadOutcome::Applied { version })
    }
}

/// The restart-only keys whose values differ between `old` and `new`.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
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
    let fleet_but_windows = |c: &Config| {
        c.fleet.clone().map(|mut f| {
            f.share_windows = false;
            f
        })
    };
    if fleet_but_windows(old) != fleet_but_windows(new) {
        changed.push("fleet (all but share_windows)");
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> Config {
        use crate::config::test_support::{parse, MINIMAL};
        parse(&format!("{MINIMAL}{extra}")).unwrap()
    }

    #[test]
    fn fleet_keys_but_share_windows_are_restart_only() {
        let fleet = |more: &str| {
            cfg(&format!(
                "[fleet]\nnats_url = \"nats://127.0.0.1:4222\"\ninstance = \"p\"\n{more}"
            ))
        };
        let none = cfg("");
        assert!(restart_only_changes(&fleet(""), &fleet("")).is_empty());
        assert!(restart_only_changes(&fleet(""), &fleet("share_windows = false")).is_empty());
        let want = vec!["fleet (all but share_windows)"];
        assert_eq!(
            restart_only_changes(&fleet(""), &fleet("bucket = \"b2\"")),
            want
        );
        assert_eq!(restart_only_changes(&none, &fleet("")), want);
        assert_eq!(restart_only_changes(&fleet(""), &none), want);
    }
}
