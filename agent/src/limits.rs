//! Resource limits for games (catalog `[games.NAME.limits]`), applied through cgroups where the
//! host allows it: cgroup v2 (`/sys/fs/cgroup` with `cgroup.controllers`) or the v1 `pids` and
//! `memory` hierarchies. Each limited session gets its own group, `arcade/SESSION_ID`, removed
//! when the game ends.
//!
//! A limit that cannot be applied is reported — the launch fails and the game is killed —
//! never silently ignored. The game is moved into its group right after it is spawned (std
//! offers no way to spawn into a cgroup); anything it forks from then on is inside.
//!
//! All of this is blocking file IO: call it off the async threads.

use std::io;
use std::path::{Path, PathBuf};

use protocol::SessionId;

/// Limits of one game: `protocol::catalog`'s, as a catalog entry writes them.
pub use protocol::catalog::Limits;

/// Why limits cannot be applied.
#[derive(Debug, thiserror::Error)]
pub enum LimitsError {
    /// A cgroup file cannot be written.
    #[error("cannot write {value:?} to {path}: {source}")]
    Write {
        /// What was to be written.
        value: String,
        /// The file.
        path: PathBuf,
        /// Why it failed.
        source: io::Error,
    },
    /// A cgroup directory cannot be created.
    #[error("cannot create {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why it failed.
        source: io::Error,
    },
    /// The cgroup hierarchy a group belongs in is not there.
    #[error("no cgroup hierarchy at {0}")]
    NoHierarchy(PathBuf),
}

const ROOT: &str = "/sys/fs/cgroup";

fn write(path: &Path, value: &str) -> Result<(), LimitsError> {
    std::fs::write(path, value).map_err(|source| LimitsError::Write {
        value: value.to_owned(),
        path: path.to_owned(),
        source,
    })
}

fn create_dir(path: &Path) -> Result<(), LimitsError> {
    std::fs::create_dir_all(path).map_err(|source| LimitsError::CreateDir {
        path: path.to_owned(),
        source,
    })
}

fn v2() -> bool {
    Path::new(ROOT).join("cgroup.controllers").is_file()
}

/// The directories of a session's groups: one for v2, one per controller for v1.
fn dirs(session: &SessionId) -> Vec<(Option<&'static str>, PathBuf)> {
    if v2() {
        vec![(None, Path::new(ROOT).join("arcade").join(session.as_str()))]
    } else {
        ["pids", "memory"]
            .into_iter()
            .map(|c| {
                (
                    Some(c),
                    Path::new(ROOT)
                        .join(c)
                        .join("arcade")
                        .join(session.as_str()),
                )
            })
            .collect()
    }
}

/// Puts process `pid` (the game's leader, just spawned) into a new group for `session` with
/// `limits`.
pub fn apply(session: &SessionId, pid: u32, limits: &Limits) -> Result<(), LimitsError> {
    if v2() {
        let parent = Path::new(ROOT).join("arcade");
        create_dir(&parent)?;
        // Controllers must be enabled for the children of both the root and our parent.
        let mut wanted = Vec::new();
        if limits.max_processes.is_some() {
            wanted.push("+pids");
        }
        if limits.memory_mb.is_some() {
            wanted.push("+memory");
        }
        for dir in [Path::new(ROOT), parent.as_path()] {
            write(&dir.join("cgroup.subtree_control"), &wanted.join(" "))?;
        }
    }
    for (controller, dir) in dirs(session) {
        let wants = match controller {
            Some("pids") => limits.max_processes.is_some(),
            Some("memory") => limits.memory_mb.is_some(),
            _ => true,
        };
        if !wants {
            continue;
        }
        if !dir
            .parent()
            .is_some_and(|p| p.parent().is_some_and(Path::is_dir))
        {
            return Err(LimitsError::NoHierarchy(dir));
        }
        create_dir(&dir)?;
        if let (Some("pids") | None, Some(n)) = (controller, limits.max_processes) {
            write(&dir.join("pids.max"), &n.to_string())?;
        }
        if let (Some("memory") | None, Some(mb)) = (controller, limits.memory_mb) {
            let bytes = (mb * 1024 * 1024).to_string();
            let file = if controller.is_some() {
                "memory.limit_in_bytes"
            } else {
                "memory.max"
            };
            write(&dir.join(file), &bytes)?;
        }
        write(&dir.join("cgroup.procs"), &pid.to_string())?;
    }
    Ok(())
}

/// Removes a session's groups (once its processes are gone); missing ones are fine.
pub fn remove(session: &SessionId) {
    for (_, dir) in dirs(session) {
        if let Err(e) = std::fs::remove_dir(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a game's cgroup");
            }
        }
    }
}

/// The path of a session's group for `controller` (v1) or its only group (v2): for tests and
/// operators' tools.
pub fn group_dir(session: &SessionId, controller: &str) -> PathBuf {
    dirs(session)
        .into_iter()
        .find(|(c, _)| c.is_none() || *c == Some(controller))
        .map(|(_, d)| d)
        .unwrap_or_default()
}
