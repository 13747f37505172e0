//! A full disk under `events.dir` (issue: disk full). A real `abgate serve` writes its
//! events to a small filesystem mounted on `events.dir`: a 256 KiB tmpfs
//! (`mount -t tmpfs -o size=256k`; the tests run as root in a container). Where tmpfs
//! cannot be mounted, the stand-in is a 1 MiB ext2 image mounted through a loop device
//! (`mkfs.ext2` + `mount -o loop`; `DISK_FULL_FS=loop` forces it, to exercise it); where
//! neither can be made, the test is skipped with a line on stderr saying so. The
//! filesystem is unmounted by a guard when the test ends, however it ends.
//!
//! A filler file takes all of the filesystem but 48 KiB. Requests go on until the writer
//! reports `write_error` drops (the disk is full) and for 3 s beyond; then the filler is
//! deleted, as an operator freeing space would. Checked: every request is answered 200;
//! the event files do not multiply while the disk is full (at most one new file); every
//! line on disk is a whole JSON exposure; exposures on disk plus
//! `abgate_events_dropped_total{reason="write_error"}` is exactly the number of requests
//! answered, while full and after; once space is back, writing resumes in the same (or
//! the next) file with no further drops, and the stop line's figures agree.
//!
//! `cargo test --test disk_full -- --nocapture` prints the figures.

mod common;
use common::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Free space left next to the filler: about a hundred exposures.
const ROOM: u64 = 48 * 1024;

/// The INFO line of a recovery.
const RECOVERED: &str = "event writes recovered after";

/// A small filesystem mounted on a directory; unmounted on drop.
struct SmallFs {
    at: PathBuf,
    kind: &'static str,
}

impl SmallFs {
    /// Mount a small filesystem on `at` (an empty directory); `scratch` holds a loop
    /// image if one is needed. `None` when no small filesystem can be made here.
    fn mount(at: &Path, scratch: &Path) -> Option<SmallFs> {
        let loop_only = std::env::var("DISK_FULL_FS").is_ok_and(|v| v == "loop");
        if !loop_only && run("mount", &["-t", "tmpfs", "-o", "size=256k", "tmpfs"], at) {
            return Some(SmallFs {
                at: at.to_path_buf(),
                kind: "tmpfs of 256 KiB",
            });
        }
        let image = scratch.join("small-fs.img");
        let made = std::fs::File::create(&image)
            .and_then(|f| f.set_len(1 << 20))
            .is_ok()
            && run("mkfs.ext2", &["-q", "-F"], &image);
        if made && mount_loop(&image, at) {
            return Some(SmallFs {
                at: at.to_path_buf(),
                kind: "ext2 image of 1 MiB on a loop device",
            });
        }
        None
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        // abgate has exited by now (its guard drops first); retry briefly, then detach.
        for _ in 0..50 {
            if run("umount", &[], &self.at) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = run("umount", &["-l"], &self.at);
    }
}

/// `program args… target` succeeded (its output is discarded).
fn run(program: &str, args: &[&str], target: &Path) -> bool {
    Command::new(program)
        .args(args)
        .arg(target)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `mount -o loop IMAGE AT` succeeded.
fn mount_loop(image: &Path, at: &Path) -> bool {
    Command::new("mount")
        .args(["-o", "loop"])
        .arg(image)
        .arg(at)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Fill the filesystem of `path`'s directory with the file `path`, then give `room`
/// bytes back.
fn fill_leaving(path: &Path, room: u64) -> u64 {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 4096];
    let mut len = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => len += n as u64,
        }
    }
    assert!(len > room, "the small filesystem holds only {len} bytes");
    f.set_len(len - room).unwrap();
    f.sync_all().unwrap();
    len - room
}

/// The event files in `dir`.
fn event_files(dir: &Path) -> Vec<PathBuf> {
    abgate::events::reader::event_files(&[dir.to_path_buf()]).unwrap()
}

/// What the event files hold.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct OnDisk {
    /// Whole JSON lines, every one an exposure.
    exposures: u64,
    /// Lines that are not whole JSON (a torn line: a write in progress, or left behind).
    torn: u64,
}

fn on_disk(dir: &Path) -> OnDisk {
    let mut d = OnDisk::default();
    for file in event_files(dir) {
        let bytes = std::fs::read(&file).unwrap();
        // after the last `\n`: a line not finished (torn), even if it happens to parse
        let end = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        d.torn += u64::from(end < bytes.len());
        for line in bytes[..end]
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
        {
            match serde_json::from_slice::<serde_json::Value>(line) {
                Ok(v) => {
                    assert_eq!(v["type"], "exposure", "{}", file.display());
                    d.exposures += 1;
                }
                Err(_) => d.torn += 1,
            }
        }
    }
    d
}

fn dropped_write_error(g: &Abgate) -> u64 {
    metric_sum(
        &g.metrics(),
        "abgate_events_dropped_total",
        &["reason=\"write_error\""],
    ) as u64
}

/// Wait until every answered request's exposure is on disk, as a whole line, or
/// counted as dropped; returns (on disk, dropped). Exactly `answered`: never more,
/// whatever the timing, and no torn line stays.
fn wait_accounted(g: &Abgate, dir: &Path, answered: u64) -> (u64, u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let disk = on_disk(dir);
        let dropped = dropped_write_error(g);
        assert!(
            disk.exposures + dropped <= answered,
            "{disk:?} + {dropped} dropped > {answered} answered"
        );
        if disk.torn == 0 && disk.exposures + dropped == answered {
            return (disk.exposures, dropped);
        }
        assert!(
            Instant::now() < deadline,
            "not every exposure written once or counted once, or a torn line on disk: \
             {disk:?} + {dropped} dropped (write_error) != {answered} answered; files {:?}",
            event_files(dir)
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// One request through the proxy; it must be answered 200.
fn request(g: &Abgate, i: u64) {
    let (status, _, _) = get_as(g, "/v1/chat", &format!("u{i}"));
    assert_eq!(status, 200, "request {i}");
}

fn count_lines(logs: &str, needle: &str) -> usize {
    logs.lines().filter(|l| l.contains(needle)).count()
}

#[test]
fn a_full_disk_keeps_one_event_file_counts_every_exposure_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let events_dir = dir.path().join("events");
    std::fs::create_dir_all(&events_dir).unwrap();
    let Some(fs) = SmallFs::mount(&events_dir, dir.path()) else {
        eprintln!(
            "SKIPPED disk_full: cannot mount a small filesystem (tmpfs or a loop-mounted ext2 image) on {}; run as root with mount permission",
            events_dir.display()
        );
        return;
    };
    let filler = events_dir.join("filler.bin");
    let filler_len = fill_leaving(&filler, ROOM);
    let a = MockServer::builder().name("a").start().unwrap();
    let b = MockServer::builder().name("b").start().unwrap();
    let g = start(
        dir.path(),
        &two_backend(DIR_PLACEHOLDER, a.addr, b.addr).toml(),
    );
    assert!(event_files(&events_dir).is_empty());

    // Until the disk is full: the first write_error drop.
    let mut answered = 0u64;
    wait_for(60, "the disk to fill up", || {
        for _ in 0..10 {
            request(&g, answered);
            answered += 1;
        }
        (dropped_write_error(&g) > 0).then_some(())
    });
    let full_at = Instant::now();
    let answered_to_full = answered;
    let files_at_full = event_files(&events_dir).len();
    // And beyond, for 3 s: the writer fails, backs off and retries meanwhile.
    let mut files_max = files_at_full;
    while full_at.elapsed() < Duration::from_secs(3) {
        for _ in 0..10 {
            request(&g, answered);
            answered += 1;
        }
        files_max = files_max.max(event_files(&events_dir).len());
    }
    let files_full = event_files(&events_dir);
    files_max = files_max.max(files_full.len());
    assert!(
        files_max <= files_at_full + 1,
        "event files multiplied on a full disk: {files_at_full} when it filled up, {files_max} at most, now {} files",
        files_full.len()
    );
    let (disk_full, dropped_full) = wait_accounted(&g, &events_dir, answered);
    assert!(
        disk_full > 0 && dropped_full > 0,
        "{disk_full} {dropped_full}"
    );
    let logs = g.logs();
    let error_lines = count_lines(&logs, "event writer: cannot write");
    assert!(
        (1..=2).contains(&error_lines),
        "{error_lines} ERROR lines in 3 s:\n{logs}"
    );

    let recovered_while_full = count_lines(&logs, RECOVERED);

    // Free the space: writing resumes (after the backoff) with no more drops.
    std::fs::remove_file(&filler).unwrap();
    let freed_at = Instant::now();
    wait_for(30, "event writes to resume", || {
        let before = dropped_write_error(&g);
        for _ in 0..10 {
            request(&g, answered);
            answered += 1;
        }
        let (_, dropped) = wait_accounted(&g, &events_dir, answered);
        (dropped == before).then_some(())
    });
    let resumed_after = freed_at.elapsed();
    let (disk_resumed, dropped_resumed) = wait_accounted(&g, &events_dir, answered);
    for _ in 0..100 {
        request(&g, answered);
        answered += 1;
    }
    let (disk_end, dropped_end) = wait_accounted(&g, &events_dir, answered);
    assert_eq!(dropped_end, dropped_resumed, "drops after recovery");
    assert_eq!(disk_end, disk_resumed + 100);
    let files_end = event_files(&events_dir);
    assert!(
        files_end.len() <= files_at_full + 1 && files_full.iter().all(|f| files_end.contains(f)),
        "writing resumed in the same or the next file: {files_full:?} then {files_end:?}"
    );
    let written = metric_sum(&g.metrics(), "abgate_events_written_total", &[]) as u64;
    assert_eq!(written, disk_end, "abgate_events_written_total");
    // One INFO line for this recovery. (A line about an earlier, momentary recovery —
    // a small write fitting in the last page of a full disk — delays it by up to 10 s.)
    wait_for(20, "the INFO line of the recovery", || {
        let logs = g.logs();
        (count_lines(&logs, RECOVERED) > recovered_while_full).then_some(())
    });

    // The stop line tells the same figures.
    let logs_path = g.stderr.clone();
    let status = g.stop();
    assert!(status.success(), "{status:?}");
    let logs = std::fs::read_to_string(logs_path).unwrap();
    let stop = logs
        .lines()
        .find(|l| l.contains("stopped: "))
        .unwrap_or_else(|| panic!("no stop line:\n{logs}"));
    let want = format!("stopped: {disk_end} events written, {dropped_end} dropped");
    assert!(stop.contains(&want), "{stop:?}, want {want:?}");
    assert_eq!(
        on_disk(&events_dir),
        OnDisk {
            exposures: disk_end,
            torn: 0
        }
    );
    assert_eq!(disk_end + dropped_end, answered);

    eprintln!(
        "disk_full on a {}: filler {filler_len} B leaving {ROOM} B; full after {answered_to_full} requests; \
         event files: 0 before, {files_at_full} when full, {files_max} at most while full, {} at the end; \
         while full (3 s): {disk_full} exposures on disk + {dropped_full} dropped (write_error) = {} answered, {error_lines} ERROR line(s); \
         space freed: writes resumed within {:.1} s; end: {disk_end} on disk + {dropped_end} dropped = {answered} answered, all 200",
        fs.kind,
        files_end.len(),
        disk_full + dropped_full,
        resumed_after.as_secs_f64(),
    );
    for line in logs.lines().filter(|l| l.contains("event writ")) {
        eprintln!("  {line}");
    }
    drop(a);
    drop(b);
    drop(fs);
}
