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

#[cfg(test)]
mod tests {
    use crate::config::test_support::{errors, MINIMAL};
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    fn parse_in(dir: &str, toml: &str) -> crate::config::Config {
        crate::config::parse_str(toml, &Path::new(dir).join("c.toml")).unwrap()
    }

    #[test]
    fn event_and_state_defaults_are_under_the_config_directory() {
        let cfg = parse_in("/etc/abgate", MINIMAL);
        let ev = &cfg.events;
        assert_eq!(ev.dir, PathBuf::from("/etc/abgate/./data/events"));
        assert_eq!(cfg.state_dir, PathBuf::from("/etc/abgate/./data/state"));
        assert_eq!(ev.rotate_bytes, 256 * 1024 * 1024);
        assert_eq!(ev.flush_interval, Duration::from_millis(200));
        assert_eq!(ev.queue, 65536);
        assert!(!ev.hash_unit_ids && ev.enabled);
        assert_eq!(ev.hash_key_env, "ABGATE_HASH_KEY");
    }

    #[test]
    fn absolute_directories_and_valid_values_are_kept() {
        let cfg = parse_in(
            "/etc/abgate",
            &format!(
                "{MINIMAL}[events]\ndir = \"/var/ev\"\nrotate_bytes = 4096\n\
                 flush_interval = \"1s\"\nqueue = 1\nhash_unit_ids = true\nenabled = false\n\
                 hash_key_env = \"K\"\n[state]\ndir = \"st\"\n"
            ),
        );
        let ev = &cfg.events;
        assert_eq!(ev.dir, PathBuf::from("/var/ev"));
        assert_eq!(cfg.state_dir, PathBuf::from("/etc/abgate/st"));
        assert_eq!((ev.rotate_bytes, ev.queue), (4096, 1));
        assert_eq!(ev.flush_interval, Duration::from_secs(1));
        assert!(ev.hash_unit_ids && !ev.enabled);
        assert_eq!(ev.hash_key_env, "K");
    }

    #[test]
    fn bad_event_values_are_each_reported_at_their_line() {
        let e = errors(&format!(
            "{MINIMAL}[events]\nrotate_bytes = 10\nqueue = 16777217\nflush_interval = \"soon\"\n"
        ));
        let at: Vec<_> = e.iter().map(|(l, p, _)| (*l, p.as_str())).collect();
        assert_eq!(
            at,
            [
                (6, "events.rotate_bytes"),
                (7, "events.queue"),
                (8, "events.flush_interval"),
            ]
        );
        assert_eq!(e[0].2, "10 is too small; use at least 4096");
        assert_eq!(e[1].2, "16777217 must be between 1 and 16777216");
    }
}
