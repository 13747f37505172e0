//! Reading event files back: a file, a directory of rotated files (in name = time
//! order), or several of either. Lines that are not complete JSON objects — a torn last
//! line after a crash, say — are skipped with a warning naming the file and line.

use std::io::Read;
use std::path::{Path, PathBuf};

/// Expand files and directories into the event files to read, in time order.
pub fn event_files(inputs: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in inputs {
        if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| {
                    f.is_file()
                        && f.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.ends_with(".jsonl") || n.ends_with(".json"))
                })
                .collect();
            files.sort();
            out.extend(files);
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{}: no such file or directory", p.display()),
            ));
        }
    }
    Ok(out)
}

/// Call `f` with every non-empty line of `files` (file, 1-based line number, text).
/// Lines that are not valid UTF-8 are reported to `bad`.
pub fn for_each_line(
    files: &[PathBuf],
    mut f: impl FnMut(&Path, usize, &str),
    mut bad: impl FnMut(&Path, usize, &str),
) -> std::io::Result<()> {
    let mut not_utf8 = Vec::new();
    for_each_line_bytes(
        files,
        |file, n, b| match std::str::from_utf8(b) {
            Ok(s) => f(file, n, s),
            Err(_) => not_utf8.push((file.to_path_buf(), n)),
        },
        &mut bad,
    )?;
    for (file, n) in not_utf8 {
        bad(&file, n, "not UTF-8: skipped");
    }
    Ok(())
}

/// Like [`for_each_line`] but hands over raw bytes (the JSON parser validates UTF-8
/// itself, so the analysis does not pay for it twice). Torn last lines go to `bad`.
///
/// Files are read in large chunks and lines are handed out as slices of the chunk, so a
/// line is never copied; a line longer than the chunk grows it.
pub fn for_each_line_bytes(
    files: &[PathBuf],
    mut f: impl FnMut(&Path, usize, &[u8]),
    mut bad: impl FnMut(&Path, usize, &str),
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    for file in files {
        let mut r = std::fs::File::open(file)?;
        let mut n = 0;
        // buf[start..end] is read and not yet handed out
        let (mut start, mut end) = (0, 0);
        loop {
            while let Some(p) = memchr::memchr(b'\n', &buf[start..end]) {
                let body = &buf[start..start + p];
                start += p + 1;
                n += 1;
                if !body.iter().all(|b| b.is_ascii_whitespace()) {
                    f(file, n, body);
                }
            }
            buf.copy_within(start..end, 0);
            end -= start;
            start = 0;
            if end == buf.len() {
                buf.resize(buf.len() * 2, 0);
            }
            let got = match r.read(&mut buf[end..]) {
                Ok(got) => got,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if got == 0 {
                if !buf[..end].iter().all(|b| b.is_ascii_whitespace()) {
                    bad(file, n + 1, "torn last line (no newline): skipped");
                }
                break;
            }
            end += got;
        }
    }
    Ok(())
}

/// Read every event as a JSON value (tests and small tools). Returns the values and the
/// number of skipped lines; warnings go to the log.
pub fn read_values(input: &Path) -> std::io::Result<(Vec<serde_json::Value>, usize)> {
    let files = event_files(&[input.to_path_buf()])?;
    let mut out = Vec::new();
    let mut skipped = 0;
    let mut warn = |file: &Path, n: usize, why: &str| {
        tracing::warn!("{}:{n}: {why}", file.display());
        skipped += 1;
    };
    let mut invalid = Vec::new();
    for_each_line(
        &files,
        |file, n, s| match serde_json::from_str::<serde_json::Value>(s) {
            Ok(v) if v.is_object() => out.push(v),
            _ => invalid.push((file.to_path_buf(), n)),
        },
        &mut warn,
    )?;
    for (file, n) in invalid {
        warn(&file, n, "not a JSON object: skipped");
    }
    Ok((out, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_last_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("events-1.jsonl");
        std::fs::write(
            &p,
            b"{\"type\":\"outcome\",\"value\":1}\n{\"type\":\"outcome\",\"val",
        )
        .unwrap();
        let (v, skipped) = read_values(&p).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(skipped, 1);
    }

    #[test]
    fn directories_are_read_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("events-2.jsonl"), b"{\"n\":2}\n").unwrap();
        std::fs::write(dir.path().join("events-1.jsonl"), b"{\"n\":1}\n").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"ignored").unwrap();
        let (v, _) = read_values(dir.path()).unwrap();
        assert_eq!(
            v.iter()
                .map(|x| x["n"].as_i64().unwrap())
                .collect::<Vec<_>>(),
            vec![1, 2]
        );
    }

    #[test]
    fn lines_longer_than_the_read_chunk_and_blank_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("events-1.jsonl");
        let long = "x".repeat(2_500_000);
        std::fs::write(&p, format!("a\n\n  \n{long}\nb\nc")).unwrap();
        let (mut seen, mut torn) = (Vec::new(), Vec::new());
        for_each_line_bytes(
            &[p],
            |_, n, b| seen.push((n, b.len())),
            |_, n, why| torn.push((n, why.to_string())),
        )
        .unwrap();
        assert_eq!(seen, vec![(1, 1), (4, 2_500_000), (5, 1)]);
        assert_eq!(torn.len(), 1);
        assert_eq!(torn[0].0, 6);
    }
}
