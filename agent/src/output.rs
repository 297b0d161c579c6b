//! Games' output: each session's stdout and stderr go to one file, `<log dir>/<session>.log`,
//! which the broker reads back page by page ([`read`]) and which is removed once its session
//! has been over for the retention period ([`sweep`]).
//!
//! Everything here is blocking file IO, run on the blocking pool. It knows files and session
//! ids, not the link or the games' table.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use protocol::wire::{LogChunk, LogRead, LogUnavailable, MAX_LOG_PAGE};
use protocol::SessionId;

/// The longest look back for a tail: the API's limit on one answer.
pub const MAX_TAIL_BYTES: u32 = 1 << 20;

/// Where a session's output goes.
pub fn path(dir: &Path, session: &SessionId) -> PathBuf {
    dir.join(format!("{session}.log"))
}

/// Reads one page of a session's output.
pub fn read(dir: &Path, session: &SessionId, what: LogRead) -> Result<LogChunk, LogUnavailable> {
    let mut file = match File::open(path(dir, session)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(LogUnavailable::NotFound),
        Err(e) => {
            tracing::warn!(%session, error = %e, "cannot open a game's log");
            return Err(LogUnavailable::Unreadable);
        }
    };
    let result = (|| {
        let size = file.metadata()?.len();
        let offset = match what {
            LogRead::From { offset } => offset.min(size),
            LogRead::Tail { lines, max_bytes } => {
                tail_start(&mut file, size, lines, max_bytes.min(MAX_TAIL_BYTES))?
            }
        };
        let want = (size - offset).min(u64::from(MAX_LOG_PAGE));
        let mut data = Vec::with_capacity(usize::try_from(want).unwrap_or(0));
        file.seek(SeekFrom::Start(offset))?;
        (&mut file).take(want).read_to_end(&mut data)?;
        Ok::<_, io::Error>(LogChunk { offset, data, size })
    })();
    result.map_err(|e| {
        tracing::warn!(%session, error = %e, "cannot read a game's log");
        LogUnavailable::Unreadable
    })
}

/// Where the last `lines` lines of the first `size` bytes begin, looking back `max_bytes` at
/// most. A last line without its newline counts as a line. When the look-back window starts
/// inside a line, that partial line is left out.
fn tail_start(file: &mut File, size: u64, lines: u32, max_bytes: u32) -> io::Result<u64> {
    let window = size.min(u64::from(max_bytes));
    let start = size - window;
    let mut buf = Vec::with_capacity(usize::try_from(window).unwrap_or(0));
    file.seek(SeekFrom::Start(start))?;
    file.take(window).read_to_end(&mut buf)?;
    Ok(start + tail_in(&buf, lines, start == 0) as u64)
}

/// [`tail_start`] within a buffer: the index in `buf` where its last `lines` lines begin.
/// `whole` says `buf` starts at the beginning of the log (else its first line may be partial).
fn tail_in(buf: &[u8], lines: u32, whole: bool) -> usize {
    if lines == 0 {
        return buf.len();
    }
    // A final newline ends the last line; it does not begin an empty one.
    let body = buf.strip_suffix(b"\n").unwrap_or(buf);
    let mut seen = 0u32;
    for (i, _) in body.iter().enumerate().rev().filter(|(_, b)| **b == b'\n') {
        seen += 1;
        if seen == lines {
            return i + 1;
        }
    }
    if whole {
        return 0;
    }
    // Fewer lines than asked in the window: skip the partial first one.
    body.iter()
        .position(|b| *b == b'\n')
        .map_or(buf.len(), |i| i + 1)
}

/// Removes the logs of sessions not in `running` whose last write is older than `retention`;
/// answers how many it removed.
pub fn sweep(dir: &Path, retention: Duration, running: &HashSet<SessionId>) -> usize {
    let Some(cutoff) = SystemTime::now().checked_sub(retention) else {
        return 0;
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot list the game logs");
            return 0;
        }
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(session) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| SessionId::new(n).ok())
        else {
            continue;
        };
        if running.contains(&session) {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t < cutoff);
        if old {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) => tracing::warn!(%session, error = %e, "cannot remove an old game log"),
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_count_lines_from_the_end() {
        let log = b"one\ntwo\nthree\n";
        let at = |lines, whole| &log[tail_in(log, lines, whole)..];
        assert_eq!(at(1, true), b"three\n");
        assert_eq!(at(2, true), b"two\nthree\n");
        assert_eq!(at(3, true), log);
        assert_eq!(at(9, true), log);
        assert_eq!(at(0, true), b"");
        // A window that starts mid-line drops the partial line.
        assert_eq!(at(9, false), b"two\nthree\n");
        // A last line without its newline is a line.
        let open = b"one\ntwo";
        assert_eq!(&open[tail_in(open, 1, true)..], b"two");
        assert_eq!(&open[tail_in(open, 2, true)..], open);
        assert_eq!(tail_in(b"", 5, true), 0);
        assert_eq!(tail_in(b"\n\n", 1, true), 1);
    }

    #[test]
    fn reads_page_through_a_log() {
        let dir = tempfile::tempdir().unwrap();
        let id = SessionId::new("s1").unwrap();
        assert_eq!(
            read(dir.path(), &id, LogRead::From { offset: 0 }),
            Err(LogUnavailable::NotFound)
        );
        let line = "x".repeat(99) + "\n";
        let text = line.repeat(1000); // 100,000 bytes: three pages
        std::fs::write(path(dir.path(), &id), &text).unwrap();

        let tail = read(
            dir.path(),
            &id,
            LogRead::Tail {
                lines: 2,
                max_bytes: MAX_TAIL_BYTES,
            },
        )
        .unwrap();
        assert_eq!(tail.offset, 99_800);
        assert_eq!(tail.data, (line.repeat(2)).as_bytes());
        assert_eq!(tail.size, 100_000);

        let mut all = Vec::new();
        let mut offset = 0;
        loop {
            let page = read(dir.path(), &id, LogRead::From { offset }).unwrap();
            assert!(page.data.len() <= MAX_LOG_PAGE as usize);
            assert_eq!(page.offset, offset);
            if page.data.is_empty() {
                break;
            }
            offset += page.data.len() as u64;
            all.extend(page.data);
        }
        assert_eq!(all, text.as_bytes());
        // Past the end answers nothing, at the end.
        let past = read(dir.path(), &id, LogRead::From { offset: 1 << 40 }).unwrap();
        assert_eq!((past.offset, past.data.len()), (100_000, 0));

        // A tail looks back no further than asked.
        let short = read(
            dir.path(),
            &id,
            LogRead::Tail {
                lines: 1000,
                max_bytes: 250,
            },
        )
        .unwrap();
        assert_eq!(short.offset, 99_800);
    }

    #[test]
    fn the_sweep_keeps_running_and_recent_logs() {
        let dir = tempfile::tempdir().unwrap();
        let (old, live, fresh) = (
            SessionId::new("old").unwrap(),
            SessionId::new("live").unwrap(),
            SessionId::new("fresh").unwrap(),
        );
        let week_ago = SystemTime::now() - Duration::from_secs(8 * 24 * 3600);
        for id in [&old, &live, &fresh] {
            std::fs::write(path(dir.path(), id), "x\n").unwrap();
        }
        for id in [&old, &live] {
            File::options()
                .write(true)
                .open(path(dir.path(), id))
                .unwrap()
                .set_modified(week_ago)
                .unwrap();
        }
        std::fs::write(dir.path().join("not-a-log.txt"), "x").unwrap();
        let running = HashSet::from([live.clone()]);
        let week = Duration::from_secs(7 * 24 * 3600);
        assert_eq!(sweep(dir.path(), week, &running), 1);
        assert!(!path(dir.path(), &old).exists());
        assert!(path(dir.path(), &live).exists());
        assert!(path(dir.path(), &fresh).exists());
        assert!(dir.path().join("not-a-log.txt").exists());
    }
}
