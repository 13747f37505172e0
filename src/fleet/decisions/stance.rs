//! How this sidecar's own state compares with a decision: what a restart re-applies,
//! and whether a decision of ours must be applied again after the fleet's.

use super::plan::{self, stance};
use super::Store;
use crate::guard::Decision;
use std::sync::atomic::Ordering::Relaxed;

impl Store {
    /// Re-apply the fleet's last known rollbacks and pauses the guard store lacks (a
    /// crash between applying and persisting): the safe side, before anything else.
    pub(super) async fn reconcile_at_start(&self) {
        for (key, c) in &self.file.known {
            if self.file.pending.contains_key(key) || !self.missing_here(&c.value.decision) {
                continue;
            }
            self.apply(&c.value).await;
        }
    }

    /// Whether `d` is a rollback or pause this sidecar does not hold.
    fn missing_here(&self, d: &Decision) -> bool {
        let snap = self.app.snapshot.load();
        let Some(exp) = snap.find(&d.experiment) else {
            return false;
        };
        let state = exp.state();
        match stance(d.action) {
            plan::Stance::Served => false,
            plan::Stance::Paused => !state.paused.load(Relaxed),
            plan::Stance::RolledBack => state
                .variants
                .iter()
                .find(|v| v.name == d.variant)
                .is_some_and(|v| !v.rolled_back.load(Relaxed)),
        }
    }

    /// Whether this sidecar's state is not what `d` says (any stance).
    pub(super) fn differs_here(&self, d: &Decision) -> bool {
        if stance(d.action) != plan::Stance::Served {
            return self.missing_here(d);
        }
        let snap = self.app.snapshot.load();
        let Some(exp) = snap.find(&d.experiment) else {
            return false;
        };
        let state = exp.state();
        state.paused.load(Relaxed)
            || state
                .variants
                .iter()
                .any(|v| v.name == d.variant && v.rolled_back.load(Relaxed))
    }
}
