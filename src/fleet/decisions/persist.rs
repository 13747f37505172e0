//! The fleet state this sidecar last knew, in `[state] dir`/`fleet.json`: every decision
//! key with the revision and value last seen, and the local decisions not yet published
//! (taken while cut off from the broker). Written atomically (temporary file, fsync,
//! rename), so a crash leaves the old file or the new one.
//!
//! The live state a decision leaves (rolled back, paused) is persisted by the guard
//! store (`decisions.json`) when the decision is applied, local or remote; this file adds
//! what the fleet needs on top: which revisions were already applied (not re-applied
//! after a restart) and what remains to publish.

use super::plan::Current;
use crate::guard::Decision;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A local decision waiting to be published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    /// The decision.
    pub decision: Decision,
    /// Its `guardrail` event is written already (taken while cut off).
    pub announced: bool,
}

/// The content of `fleet.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FleetFile {
    /// Decision key → the value last seen and applied.
    pub known: BTreeMap<String, Current>,
    /// Decision key → the latest local decision not yet in the bucket.
    pub pending: BTreeMap<String, Pending>,
}

/// Where `fleet.json` lives in `state_dir`.
pub fn path_in(state_dir: &Path) -> PathBuf {
    state_dir.join("fleet.json")
}

/// Read `path`; a missing file is an empty state, an unreadable one is reported and
/// replaced by an empty state (the guard store still holds every applied decision).
pub fn load(path: &Path) -> FleetFile {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
            tracing::warn!(
                "fleet state {} is not readable ({e}); starting from the guard store's decisions and the bucket",
                path.display()
            );
            FleetFile::default()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => FleetFile::default(),
        Err(e) => {
            tracing::warn!("cannot read fleet state {}: {e}", path.display());
            FleetFile::default()
        }
    }
}

/// Write `body` to `path` atomically.
pub fn save(path: &Path, body: &[u8]) -> std::io::Result<()> {
    crate::guard::write_atomic(path, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::decisions::plan::FleetDecision;
    use crate::guard::Action;
    use std::sync::Arc;

    #[test]
    fn fleet_state_survives_a_save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_in(dir.path());
        assert_eq!(load(&path), FleetFile::default());
        let mut d = Decision::manual(&Arc::from("exp"), &Arc::from("b"), Action::ManualRollback);
        // The file keeps microseconds.
        d.ts = std::time::UNIX_EPOCH + std::time::Duration::from_micros(1_700_000_000_123_456);
        let mut f = FleetFile::default();
        f.known.insert(
            "decision.exp.b".into(),
            Current {
                revision: 4,
                value: FleetDecision {
                    generation: 1,
                    instance: "pod-a".into(),
                    decision: d.clone(),
                },
            },
        );
        f.pending.insert(
            "decision.exp.c".into(),
            Pending {
                decision: d,
                announced: true,
            },
        );
        save(&path, &serde_json::to_vec(&f).unwrap()).unwrap();
        assert_eq!(load(&path), f);
        std::fs::write(&path, b"{not json").unwrap();
        assert_eq!(load(&path), FleetFile::default());
    }
}
