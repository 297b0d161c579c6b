//! Ending every game a test's agents started, pass or fail.
//!
//! An agent writes each game's stdout and stderr to `STATE_DIR/logs/SESSION_ID.log`, and every
//! process of the game's group inherits them: a process whose standard output is a file under
//! an agent's `logs/` is one of that agent's games, wherever it sits in the process tree (a
//! launcher's orphan, reparented to init, included). A [`Reaper`] ends those processes when it
//! is dropped, so a test whose agent is killed (`kill -9`), told to leave its games running, or
//! cut short by a panic leaves nothing behind. [`StateDir`] is a temporary state directory
//! with its reaper, for tests that keep one directory across agent restarts.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

/// How long a drop waits for the killed games to be gone.
const GONE_WITHIN: Duration = Duration::from_secs(5);

/// Ends, when dropped, every live process whose standard output or error is a game log of the
/// agent state directory it was made for.
#[derive(Debug)]
pub struct Reaper {
    logs: PathBuf,
}

impl Reaper {
    /// A reaper for the games of agents whose `--state-dir` is `state_dir`.
    /// The directory need not exist yet.
    pub fn for_state_dir(state_dir: &Path) -> Self {
        Self {
            logs: state_dir.join("logs"),
        }
    }

    /// The live (not zombie) processes writing to this directory's game logs.
    pub fn games(&self) -> Vec<u32> {
        // /proc shows a link's target with symlinks resolved: so must the prefix be.
        let Ok(logs) = std::fs::canonicalize(&self.logs) else {
            return Vec::new();
        };
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| !is_zombie(*pid) && writes_to(*pid, &logs))
            .collect()
    }

    /// Kills every game of this directory (its whole process group) and waits, boundedly, until
    /// none is left. Answers the PIDs that were found.
    pub fn end_all(&self) -> Vec<u32> {
        let found = self.games();
        if found.is_empty() {
            return found;
        }
        let deadline = Instant::now() + GONE_WITHIN;
        loop {
            let left = self.games();
            if left.is_empty() || Instant::now() >= deadline {
                break;
            }
            for pid in left {
                let Ok(p) = i32::try_from(pid) else { continue };
                let _ = killpg(Pid::from_raw(p), Signal::SIGKILL);
                let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
            }
            // A killed child of this process stays a zombie until its agent (or the test
            // process, their subreaper) reaps it; zombies are not counted.
            std::thread::sleep(Duration::from_millis(10));
        }
        found
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        let ended = self.end_all();
        if !ended.is_empty() {
            tracing::debug!(?ended, logs = %self.logs.display(), "ended games left running");
        }
    }
}

/// Whether `pid`'s standard output or error is a file under `dir`.
fn writes_to(pid: u32, dir: &Path) -> bool {
    [1, 2].iter().any(|fd| {
        std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
            .is_ok_and(|target| target.starts_with(dir))
    })
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

/// A temporary agent state directory that ends its agents' games before it is removed: for
/// tests that stop and restart an agent on one directory, or run the agent binary.
#[derive(Debug)]
pub struct StateDir {
    // Dropped first: the games end before their logs' directory goes.
    reaper: Reaper,
    dir: tempfile::TempDir,
}

impl StateDir {
    /// A new empty directory.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temporary state directory");
        Self {
            reaper: Reaper::for_state_dir(dir.path()),
            dir,
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Its reaper.
    pub fn reaper(&self) -> &Reaper {
        &self.reaper
    }
}

impl Drop for StateDir {
    /// Builds are unpacked read-only: writable again, so the directory can be removed.
    fn drop(&mut self) {
        let _ = archive::make_writable(&self.dir.path().join("builds"));
    }
}

impl Default for StateDir {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};

    #[test]
    fn a_game_writing_to_its_log_is_found_and_ended_with_its_group() {
        let state = StateDir::new();
        let logs = state.path().join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        let log = std::fs::File::create(logs.join("s.log")).unwrap();
        let mut game = Command::new("/bin/sh")
            .args(["-c", "sleep 3600 & wait"])
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .process_group(0)
            .spawn()
            .unwrap();
        let leader = game.id();
        let deadline = Instant::now() + GONE_WITHIN;
        while state.reaper().games().len() < 2 {
            assert!(
                Instant::now() < deadline,
                "the shell and its sleep are found"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let other = StateDir::new();
        assert!(
            other.reaper().games().is_empty(),
            "another directory's games are not"
        );
        let ended = state.reaper().end_all();
        assert!(ended.contains(&leader), "{ended:?}");
        let _ = game.wait();
        assert!(state.reaper().games().is_empty());
    }
}
