//! `[events]` and `[state]`: where the exposure/outcome log and the rollback decisions
//! are written. Relative directories are taken from the config file's directory, so a
//! config means the same wherever abgate is started from.

use super::values::dur;
use crate::config::raw::{RawEvents, RawState};
use crate::config::{Diagnostics, EventSettings};
use std::path::{Path, PathBuf};

/// `[events]`, with defaults for what is left out; `base` is the config's directory.
pub(super) fn compile_events(d: &mut Diagnostics, raw: &RawEvents, base: &Path) -> EventSettings {
    let rotate_bytes = match raw.rotate_bytes {
        None => 256 * 1024 * 1024,
        Some(b) if b >= 4096 => b as u64,
        Some(b) => {
            d.push(
                "events.rotate_bytes",
                format!("{b} is too small; use at least 4096"),
            );
            4096
        }
    };
    let queue = match raw.queue {
        None => 65536,
        Some(q) if (1..=16_777_216).contains(&q) => q as usize,
        Some(q) => {
            d.push(
                "events.queue",
                format!("{q} must be between 1 and 16777216"),
            );
            1
        }
    };
    EventSettings {
        dir: resolve(base, raw.dir.as_deref().unwrap_or("./data/events")),
        rotate_bytes,
        flush_interval: dur(d, "events.flush_interval", &raw.flush_interval, "200ms"),
        queue,
        hash_unit_ids: raw.hash_unit_ids.unwrap_or(false),
        enabled: raw.enabled.unwrap_or(true),
        hash_key_env: raw
            .hash_key_env
            .clone()
            .unwrap_or_else(|| "ABGATE_HASH_KEY".into()),
    }
}

/// The `[state]` directory; `base` is the config's directory.
pub(super) fn state_dir(raw: &RawState, base: &Path) -> PathBuf {
    resolve(base, raw.dir.as_deref().unwrap_or("./data/state"))
}

/// `p` as written if absolute, else under `base`.
fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = PathBuf::from(p);
    if p.is_absolute() {
        p
    } else {
        base.join(p)
    }
}
