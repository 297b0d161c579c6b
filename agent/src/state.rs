//! What the agent keeps in `--state-dir` to find its games again after its own restart, and
//! how it tells its games from strangers that reuse their PIDs.
//!
//! `state.json` holds every running game (session, pid, process group, port, and the leader's
//! start time in clock ticks since boot, from `/proc/PID/stat`) and the exits not yet surely
//! reported. It is rewritten atomically (a temporary file, then `rename`) after every change,
//! before the change is reported to the broker.

use std::path::{Path, PathBuf};

use protocol::wire::ExitedGame;
use protocol::SessionId;
use serde::{Deserialize, Serialize};

/// One running game, as saved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedGame {
    /// Its session.
    pub session_id: SessionId,
    /// The leader's PID, which is also the process group id.
    pub pid: u32,
    /// The port handed to it.
    pub port: u16,
    /// The leader's start time (`/proc/PID/stat` field 22), to tell a reused PID apart.
    pub start_time: Option<u64>,
    /// Recorded just before the spawn: the PID is not known yet (0). Found again, if the agent
    /// died in between, by the `ARCADE_SESSION_ID` in its processes' environment.
    #[serde(default)]
    pub pending: bool,
}

/// The saved state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    /// Running games.
    pub games: Vec<SavedGame>,
    /// Recent exits, reported again at every handshake until they age out.
    pub exited: Vec<ExitedGame>,
}

/// The state file in `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join("state.json")
}

/// Reads the saved state; a missing file is an empty state, an unreadable one is logged and
/// treated as empty (its games cannot be told from strangers, so they are left alone).
pub fn load(dir: &Path) -> Saved {
    let p = path(dir);
    match std::fs::read(&p) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::error!(file = %p.display(), error = %e, "unreadable agent state; ignoring it");
            Saved::default()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Saved::default(),
        Err(e) => {
            tracing::error!(file = %p.display(), error = %e, "cannot read agent state; ignoring it");
            Saved::default()
        }
    }
}

/// Writes the state atomically (a complete old or new file, never a torn one). Blocking: call
/// it off the async threads. Not fsynced: the file must survive the agent's death, not the
/// machine's, since a machine crash takes the games with it.
pub fn save(dir: &Path, saved: &Saved) -> std::io::Result<()> {
    let p = path(dir);
    let tmp = dir.join("state.json.tmp");
    let bytes = serde_json::to_vec_pretty(saved).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, &p)
}

/// `(process group, start time)` of a live process, from `/proc/PID/stat`.
pub fn proc_stat(pid: u32) -> Option<(u32, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields resume after the
    // last ')'. Field 3 is the state, so field N is at index N - 3.
    let rest = text.get(text.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let pgrp = fields.get(5 - 3)?.parse().ok()?;
    let start = fields.get(22 - 3)?.parse().ok()?;
    Some((pgrp, start))
}

/// Whether some process other than the leader is in process group `pgid`.
pub fn group_has_members(pgid: u32) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .any(|pid| pid != pgid && proc_stat(pid).is_some_and(|(pgrp, _)| pgrp == pgid))
}

/// What became of a saved game while the agent was away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// Its group still runs: adopt it.
    Running {
        /// The game's process group (its leader's PID).
        pgid: u32,
        /// The leader's start time, when the leader lives.
        start_time: Option<u64>,
    },
    /// Nothing of it is left (or its PID now belongs to another program, which is never
    /// touched).
    Gone,
}

/// Looks for a saved game.
pub fn find(game: &SavedGame) -> Found {
    if game.pending {
        return find_by_session(&game.session_id);
    }
    let running = Found::Running {
        pgid: game.pid,
        start_time: game.start_time,
    };
    match proc_stat(game.pid) {
        Some((pgrp, start)) if pgrp == game.pid && Some(start) == game.start_time => running,
        // The PID was reused by another program: our leader is gone. Its group could only
        // live on under that PID if the stranger had joined it, which it cannot have.
        Some(_) => Found::Gone,
        None if group_has_members(game.pid) => running,
        None => Found::Gone,
    }
}

/// Finds a game spawned but not yet recorded when the agent died, by the `ARCADE_SESSION_ID`
/// every game process carries in its environment.
fn find_by_session(session: &SessionId) -> Found {
    let wanted = format!("ARCADE_SESSION_ID={session}").into_bytes();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Found::Gone;
    };
    let found = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == wanted.as_slice()))
        });
    match found.and_then(proc_stat) {
        Some((pgid, _)) if pgid > 1 => Found::Running {
            pgid,
            start_time: proc_stat(pgid).filter(|(g, _)| *g == pgid).map(|(_, s)| s),
        },
        _ => Found::Gone,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_stat() {
        let me = std::process::id();
        let (pgrp, start) = proc_stat(me).unwrap();
        assert!(pgrp > 0 && start > 0);
        assert_eq!(proc_stat(me).unwrap().1, start);
    }

    #[test]
    fn tells_a_reused_pid_apart() {
        let me = std::process::id();
        let (pgrp, start) = proc_stat(me).unwrap();
        let game = |start_time| SavedGame {
            session_id: SessionId::new("s").unwrap(),
            pid: me,
            port: 1,
            start_time,
            pending: false,
        };
        if pgrp == me {
            assert!(matches!(find(&game(Some(start))), Found::Running { .. }));
        }
        assert_eq!(find(&game(Some(start + 1))), Found::Gone);
    }

    #[test]
    fn saves_and_loads_atomically() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()), Saved::default());
        let saved = Saved {
            games: vec![SavedGame {
                session_id: SessionId::new("s").unwrap(),
                pid: 42,
                port: 20000,
                start_time: Some(7),
                pending: false,
            }],
            exited: vec![],
        };
        save(dir.path(), &saved).unwrap();
        assert_eq!(load(dir.path()), saved);
        std::fs::write(path(dir.path()), "garbage").unwrap();
        assert_eq!(load(dir.path()), Saved::default());
    }
}
