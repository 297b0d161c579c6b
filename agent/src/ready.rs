//! Whether a launched game is ready for players: its catalog entry's `ready` check, tried
//! until it passes. [`wait`] never gives up by itself; [`crate::games`] bounds it with the
//! entry's `ready_timeout` and with the game's exit.
//!
//! No check spins: a TCP connect is tried with backoff, the log is read as it grows (its new
//! bytes only, looked at with backoff while it does not), and a file is looked for with
//! backoff. The first look is at once.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use regex::Regex;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::catalog::ReadyCheck;

/// The first pause between two looks, doubled up to [`LONGEST_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(5);
/// The longest pause between two looks.
const LONGEST_PAUSE: Duration = Duration::from_millis(50);
/// One connect attempt's bound.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A line of output longer than this is looked at in pieces of this size.
const MAX_LINE: usize = 64 * 1024;

/// Capped exponential pauses.
#[derive(Debug)]
struct Pauses(Duration);

impl Pauses {
    fn new() -> Self {
        Self(FIRST_PAUSE)
    }

    async fn next(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(LONGEST_PAUSE);
    }

    fn reset(&mut self) {
        self.0 = FIRST_PAUSE;
    }
}

/// What the check is, in words, for messages.
pub fn describe(check: &ReadyCheck, addr: SocketAddr) -> String {
    match check {
        ReadyCheck::Tcp => format!("no TCP connection to {addr} succeeded"),
        ReadyCheck::Log(re) => format!("no line of its output matched {:?}", re.as_str()),
        ReadyCheck::File(path) => format!("{} did not appear", path.display()),
    }
}

/// Returns once `check` passes for a game reached at `addr` whose output goes to `log`.
pub async fn wait(check: &ReadyCheck, addr: SocketAddr, log: &Path) {
    match check {
        ReadyCheck::Tcp => tcp(addr).await,
        ReadyCheck::Log(re) => output(re, log).await,
        ReadyCheck::File(path) => file(path).await,
    }
}

async fn tcp(addr: SocketAddr) {
    let mut pauses = Pauses::new();
    loop {
        if let Ok(Ok(_)) =
            tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr)).await
        {
            return;
        }
        pauses.next().await;
    }
}

async fn file(path: &Path) {
    let mut pauses = Pauses::new();
    while !tokio::fs::try_exists(path).await.unwrap_or(false) {
        pauses.next().await;
    }
}

/// Reads `log` as it grows until a whole line matches `re`.
async fn output(re: &Regex, log: &Path) {
    let mut pauses = Pauses::new();
    let mut offset = 0u64;
    let mut line: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let read = async {
            let mut f = tokio::fs::File::open(log).await?;
            f.seek(std::io::SeekFrom::Start(offset)).await?;
            f.read(&mut chunk).await
        };
        let n = read.await.unwrap_or(0);
        if n == 0 {
            pauses.next().await;
            continue;
        }
        pauses.reset();
        offset += n as u64;
        for &b in &chunk[..n] {
            if b == b'\n' || line.len() >= MAX_LINE {
                if matches(re, &line) {
                    return;
                }
                line.clear();
                if b == b'\n' {
                    continue;
                }
            }
            line.push(b);
        }
    }
}

fn matches(re: &Regex, line: &[u8]) -> bool {
    let text = String::from_utf8_lossy(line);
    re.is_match(text.trim_end_matches('\r'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[tokio::test]
    async fn a_log_line_is_seen_when_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("s.log");
        std::fs::write(&log, "loading\nlistening on").unwrap();
        let re = Regex::new("^listening on [0-9]+$").unwrap();
        let waiter = tokio::spawn({
            let log = log.clone();
            async move { output(&re, &log).await }
        });
        // A partial line does not count; its end does.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(b" 20000\n").unwrap();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the line is seen")
            .unwrap();
    }

    #[tokio::test]
    async fn a_port_is_ready_once_it_listens() {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let waiter = tokio::spawn(tcp(addr));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        let _listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the connect succeeds")
            .unwrap();
    }
}
