//! The local event log as the shipper reads it: the writer's rotated files in name
//! (= time) order, a position in them ([`Pos`]: file name and byte offset), the
//! persisted checkpoint, and the `max_backlog` skip.
//!
//! Only complete lines (ending in `\n`) are handed out. The writer never touches a file
//! again once a newer one exists, so an unterminated tail of a file that has a successor
//! is a torn line (a crash mid-write): it is skipped and counted. The newest file's
//! unterminated tail is a write in progress: it waits.
//!
//! Everything here is blocking file I/O; the shipper calls it on the blocking pool.

use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// A place in the log: the file (its name in the events directory) and the byte
/// offset of the next line to ship.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Pos {
    /// File name, e.g. `events-20261122T100000.123456Z.jsonl`.
    pub file: String,
    /// Byte offset in it.
    pub offset: u64,
}

/// Read the checkpoint at `path`: `None` when there is none (first start: ship from
/// the oldest file) or it cannot be read (logged; shipping from the oldest file again
/// is safe, duplicates carry their event id).
pub fn load_checkpoint(path: &Path) -> Option<Pos> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(
                "shipper: cannot read {}: {e}; shipping from the oldest event file",
                path.display()
            );
            return None;
        }
    };
    match serde_json::from_slice(&text) {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::warn!(
                "shipper: {} is not a checkpoint ({e}); shipping from the oldest event file",
                path.display()
            );
            None
        }
    }
}

/// Write the checkpoint atomically: a temp file, fsynced, renamed over `path`. A crash
/// leaves the old checkpoint or the new one, never a mix.
pub fn save_checkpoint(path: &Path, pos: &Pos) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(pos).unwrap_or_default())?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}

/// What [`Log::read`] found at a position.
#[derive(Debug)]
pub enum Found {
    /// Complete lines: `data` starts at `start`; `ends` are the offsets (in `data`) just
    /// past each line's `\n`.
    Lines {
        /// The file read.
        file: String,
        /// Offset of `data` in the file.
        start: u64,
        /// The bytes, whole lines only.
        data: bytes::Bytes,
        /// End of each line in `data` (after its `\n`).
        ends: Vec<usize>,
    },
    /// Nothing more in this file: go on at `next` (the next file, offset 0), skipping
    /// `torn` bytes of an unterminated last line.
    Next {
        /// Where to continue.
        next: Pos,
        /// Bytes of a torn last line skipped.
        torn: u64,
    },
    /// Caught up with the writer: nothing to ship now.
    Idle,
}

/// What [`Log::enforce_backlog`] skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The position after the skip.
    pub to: Pos,
    /// Events (lines) skipped.
    pub events: u64,
    /// Bytes skipped.
    pub bytes: u64,
}

/// The events directory.
#[derive(Debug, Clone)]
pub struct Log {
    dir: PathBuf,
}

impl Log {
    /// The log in `dir` (the writer's `events.dir`).
    pub fn new(dir: &Path) -> Log {
        Log {
            dir: dir.to_path_buf(),
        }
    }

    /// Event files (name, size) in time order.
    pub fn files(&self) -> std::io::Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.dir)? {
            let e = e?;
            let Ok(name) = e.file_name().into_string() else {
                continue;
            };
            if !(name.starts_with("events-") && name.ends_with(".jsonl")) {
                continue;
            }
            let meta = e.metadata()?;
            if meta.is_file() {
                out.push((name, meta.len()));
            }
        }
        out.sort_by(|a, b| order_key(&a.0).cmp(&order_key(&b.0)));
        Ok(out)
    }

    /// The first position: the oldest file's start (or an empty position before any
    /// file exists; [`Log::read`] then moves to the first file written).
    pub fn first(&self) -> std::io::Result<Pos> {
        Ok(self
            .files()?
            .into_iter()
            .next()
            .map(|(file, _)| Pos { file, offset: 0 })
            .unwrap_or_default())
    }

    /// Bytes from `pos` to the end of the log.
    pub fn backlog(&self, pos: &Pos) -> std::io::Result<u64> {
        Ok(backlog_of(&self.files()?, pos))
    }

    /// Read up to about `max` bytes of complete lines at `pos`.
    pub fn read(&self, pos: &Pos, max: usize) -> std::io::Result<Found> {
        let files = self.files()?;
        let Some(i) = files
            .iter()
            .position(|(f, _)| order_key(f) >= order_key(&pos.file))
        else {
            return Ok(Found::Idle);
        };
        let (name, size) = &files[i];
        let has_next = i + 1 < files.len();
        let next = |torn| Found::Next {
            next: Pos {
                file: files[i + 1].0.clone(),
                offset: 0,
            },
            torn,
        };
        if *name != pos.file {
            // the checkpoint's file is gone (or there was none yet): start the next one
            return Ok(Found::Next {
                next: Pos {
                    file: name.clone(),
                    offset: 0,
                },
                torn: 0,
            });
        }
        if pos.offset >= *size {
            return Ok(if has_next { next(0) } else { Found::Idle });
        }
        let mut f = File::open(self.dir.join(name))?;
        f.seek(SeekFrom::Start(pos.offset))?;
        let want = (*size - pos.offset).min(max as u64) as usize;
        // read into spare capacity: no zeroing of a buffer about to be overwritten
        let mut data = Vec::with_capacity(want);
        (&mut f).take(want as u64).read_to_end(&mut data)?;
        if data.len() < want {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("{name} shrank while being read"),
            ));
        }
        let mut last = memchr::memrchr(b'\n', &data);
        if last.is_none() && want < (*size - pos.offset) as usize {
            // a line longer than `max`: read the rest of the file
            f.read_to_end(&mut data)?;
            last = memchr::memrchr(b'\n', &data);
        }
        let Some(last) = last else {
            return Ok(if has_next {
                next(*size - pos.offset)
            } else {
                Found::Idle
            });
        };
        data.truncate(last + 1);
        let ends = memchr::memchr_iter(b'\n', &data).map(|i| i + 1).collect();
        Ok(Found::Lines {
            file: name.clone(),
            start: pos.offset,
            data: data.into(),
            ends,
        })
    }

    /// When more than `max` bytes lie beyond `pos`, skip the oldest of them: whole files
    /// first, then the start of the newest file up to a line boundary, until at most
    /// `max` remain. Returns what was skipped (events counted by their newlines).
    pub fn enforce_backlog(&self, pos: &Pos, max: u64) -> std::io::Result<Option<Skipped>> {
        let files = self.files()?;
        let mut backlog = backlog_of(&files, pos);
        if backlog <= max {
            return Ok(None);
        }
        let mut at = pos.clone();
        let (mut events, mut bytes) = (0, 0);
        let mut i = files
            .iter()
            .position(|(f, _)| order_key(f) >= order_key(&at.file))
            .unwrap_or(files.len());
        if i < files.len() && files[i].0 != at.file {
            at = Pos {
                file: files[i].0.clone(),
                offset: 0,
            };
        }
        while backlog > max && i < files.len() {
            let (name, size) = &files[i];
            let path = self.dir.join(name);
            if i + 1 < files.len() {
                events += count_lines(&path, at.offset, *size)?;
                bytes += size.saturating_sub(at.offset);
                backlog -= size.saturating_sub(at.offset);
                i += 1;
                at = Pos {
                    file: files[i].0.clone(),
                    offset: 0,
                };
            } else {
                // the newest file: skip to the first line starting at or after `size - max`
                let target = size.saturating_sub(max).max(at.offset);
                let to = next_line_start(&path, target, *size)?;
                events += count_lines(&path, at.offset, to)?;
                bytes += to - at.offset;
                at.offset = to;
                break;
            }
        }
        Ok(Some(Skipped {
            to: at,
            events,
            bytes,
        }))
    }
}

/// Sort key of a file name: the writer names a second file of the same microsecond
/// `events-<stamp>-1.jsonl`, which must come after `events-<stamp>.jsonl`.
fn order_key(name: &str) -> (&str, u64) {
    let stem = name.strip_suffix(".jsonl").unwrap_or(name);
    match stem.rsplit_once('-') {
        Some((base, n)) if base.len() > "events".len() && n.bytes().all(|b| b.is_ascii_digit()) => {
            (base, n.parse().unwrap_or(0))
        }
        _ => (stem, 0),
    }
}

fn backlog_of(files: &[(String, u64)], pos: &Pos) -> u64 {
    files
        .iter()
        .filter(|(f, _)| order_key(f) >= order_key(&pos.file))
        .map(|(f, size)| {
            if *f == pos.file {
                size.saturating_sub(pos.offset)
            } else {
                *size
            }
        })
        .sum()
}

/// Lines (newlines) in `path` between `from` and `to`.
fn count_lines(path: &Path, from: u64, to: u64) -> std::io::Result<u64> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(from))?;
    let mut left = to.saturating_sub(from);
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0;
    while left > 0 {
        let want = (buf.len() as u64).min(left) as usize;
        let got = f.read(&mut buf[..want])?;
        if got == 0 {
            break;
        }
        n += memchr::memchr_iter(b'\n', &buf[..got]).count() as u64;
        left -= got as u64;
    }
    Ok(n)
}

/// The start of the first line at or after `at` (`at` itself when a line starts there),
/// or `size` when no line does.
fn next_line_start(path: &Path, at: u64, size: u64) -> std::io::Result<u64> {
    if at == 0 {
        return Ok(0);
    }
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(at - 1))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut base = at - 1;
    loop {
        let got = f.read(&mut buf)?;
        if got == 0 {
            return Ok(size);
        }
        if let Some(i) = memchr::memchr(b'\n', &buf[..got]) {
            return Ok(base + i as u64 + 1);
        }
        base += got as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, lines: &[&str]) {
        let mut s = String::new();
        for l in lines {
            s.push_str(l);
            s.push('\n');
        }
        std::fs::write(dir.join(name), s).unwrap();
    }

    fn lines(r: &Found) -> Vec<String> {
        match r {
            Found::Lines { data, ends, .. } => {
                let mut out = Vec::new();
                let mut s = 0;
                for &e in ends {
                    out.push(String::from_utf8(data[s..e - 1].to_vec()).unwrap());
                    s = e;
                }
                out
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reading_follows_rotation_and_skips_a_torn_tail() {
        let d = tempfile::tempdir().unwrap();
        let log = Log::new(d.path());
        write(d.path(), "events-A.jsonl", &["a1", "a2"]);
        std::fs::OpenOptions::new()
            .append(true)
            .open(d.path().join("events-A.jsonl"))
            .unwrap()
            .write_all(b"{\"torn")
            .unwrap();
        // the newest file's unterminated tail waits for the writer
        let p = log.first().unwrap();
        assert_eq!(lines(&log.read(&p, 1 << 20).unwrap()), ["a1", "a2"]);
        let p = Pos {
            file: "events-A.jsonl".into(),
            offset: 6,
        };
        assert!(matches!(log.read(&p, 1 << 20).unwrap(), Found::Idle));
        // once a newer file exists, it is torn: skipped, and the next file follows
        write(d.path(), "events-B.jsonl", &["b1"]);
        match log.read(&p, 1 << 20).unwrap() {
            Found::Next { next, torn } => {
                assert_eq!(next.file, "events-B.jsonl");
                assert_eq!(torn, 6);
            }
            other => panic!("{other:?}"),
        }
        // a chunk holds only whole lines
        let p = Pos {
            file: "events-A.jsonl".into(),
            offset: 0,
        };
        assert_eq!(lines(&log.read(&p, 4).unwrap()), ["a1"]);
        assert_eq!(log.backlog(&p).unwrap(), 12 + 3);
    }

    #[test]
    fn same_microsecond_files_sort_in_creation_order() {
        let mut names = vec![
            "events-20261122T100000.000002Z.jsonl",
            "events-20261122T100000.000001Z-1.jsonl",
            "events-20261122T100000.000001Z.jsonl",
        ];
        names.sort_by(|a, b| order_key(a).cmp(&order_key(b)));
        assert_eq!(
            names,
            [
                "events-20261122T100000.000001Z.jsonl",
                "events-20261122T100000.000001Z-1.jsonl",
                "events-20261122T100000.000002Z.jsonl",
            ]
        );
    }

    #[test]
    fn a_vanished_checkpoint_file_moves_on_to_the_next() {
        let d = tempfile::tempdir().unwrap();
        let log = Log::new(d.path());
        write(d.path(), "events-C.jsonl", &["c1"]);
        let gone = Pos {
            file: "events-B.jsonl".into(),
            offset: 99,
        };
        match log.read(&gone, 100).unwrap() {
            Found::Next { next, torn: 0 } => assert_eq!(next.file, "events-C.jsonl"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn backlog_over_the_limit_skips_the_oldest_and_counts_them() {
        let d = tempfile::tempdir().unwrap();
        let log = Log::new(d.path());
        // 3 files of 10 lines of 10 bytes
        for f in ["A", "B", "C"] {
            let l: Vec<String> = (0..10).map(|i| format!("{f}{i:08}")).collect();
            let l: Vec<&str> = l.iter().map(|s| s.as_str()).collect();
            write(d.path(), &format!("events-{f}.jsonl"), &l);
        }
        let start = Pos {
            file: "events-A.jsonl".into(),
            offset: 30,
        };
        assert_eq!(log.backlog(&start).unwrap(), 270);
        assert_eq!(log.enforce_backlog(&start, 270).unwrap(), None);
        // 250 allowed: all of A's remaining 7 lines go
        let s = log.enforce_backlog(&start, 250).unwrap().unwrap();
        assert_eq!((s.events, s.bytes), (7, 70));
        assert_eq!(s.to.file, "events-B.jsonl");
        // 45 allowed: A and B go, and C's start up to a line boundary (55 bytes, 5.5
        // lines → 6 lines), leaving 40 bytes
        let s = log.enforce_backlog(&start, 45).unwrap().unwrap();
        assert_eq!(
            s.to,
            Pos {
                file: "events-C.jsonl".into(),
                offset: 60
            }
        );
        assert_eq!((s.events, s.bytes), (7 + 10 + 6, 70 + 100 + 60));
        assert_eq!(log.backlog(&s.to).unwrap(), 40);
    }

    #[test]
    fn checkpoint_round_trips_and_a_bad_one_is_ignored() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("state").join("shipper.checkpoint");
        assert_eq!(load_checkpoint(&path), None);
        let p = Pos {
            file: "events-X.jsonl".into(),
            offset: 42,
        };
        save_checkpoint(&path, &p).unwrap();
        assert_eq!(load_checkpoint(&path), Some(p));
        assert!(!path.with_extension("tmp").exists());
        std::fs::write(&path, b"{garbage").unwrap();
        assert_eq!(load_checkpoint(&path), None);
    }
}
