//! What the agent keeps in `--state-dir` to find its games again after its own restart, and
//! how it tells its games from strangers that reuse their PIDs.
//!
//! The state holds every running game (session, pid, process group, port, and the leader's
//! start time in clock ticks since boot, from `/proc/PID/stat`) and the exits not yet surely
//! reported.
//!
//! It is double-buffered in two files, `state.0` and `state.1`, written in turn and in place.
//! Each starts with a header line (`arcade-agent-state 1 <seq> <length> <fnv1a-64>`) and goes
//! on with the JSON. Loading takes the newest copy whose header checks out, so a write cut
//! short by the agent's death spoils only the copy being written, never the one before it.
//! In-place writes create no file: a temporary file and `rename` per write, the usual way,
//! made the kernel's inode allocator the agent's largest cost on ext4 under a stream of
//! launches (it scans past recently deleted inodes; see BENCHMARKS.md).

use std::io::Write;
use std::os::unix::fs::FileExt;
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
    /// The (first) port handed to it.
    pub port: u16,
    /// Its other ports (`ports = N` in its catalog entry).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more_ports: Vec<u16>,
    /// Its slot number (absent in the state of an agent before slots).
    #[serde(default)]
    pub slot: Option<u32>,
    /// The leader's start time (`/proc/PID/stat` field 22), to tell a reused PID apart.
    pub start_time: Option<u64>,
    /// Recorded just before the spawn: the PID is not known yet (0). Found again, if the agent
    /// died in between, by the `ARCADE_SESSION_ID` in its processes' environment.
    #[serde(default)]
    pub pending: bool,
    /// Its catalog `idle_timeout_s` when it was launched, so a restarted agent keeps watching
    /// it (absent while pending: a game found again from its pending record is not watched).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_s: Option<u32>,
    /// For a central game, the build it runs, kept in the cache while it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<protocol::BuildId>,
    /// Its share of `max_sessions`, its game's `slots` (absent before weights: 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// The GPUs it holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<u32>,
}

impl SavedGame {
    /// A game as saved: `pid` 0 and `pending` while it is being spawned.
    pub fn new(
        session_id: &SessionId,
        pid: u32,
        lease: &crate::ports::Lease,
        start_time: Option<u64>,
        pending: bool,
    ) -> Self {
        Self {
            session_id: session_id.clone(),
            pid,
            port: lease.port(),
            more_ports: lease.ports[1..].to_vec(),
            slot: Some(lease.slot),
            start_time,
            pending,
            idle_timeout_s: None,
            build: None,
            weight: Some(lease.weight),
            gpus: lease.gpus.clone(),
        }
    }
}

/// The saved state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    /// Running games.
    pub games: Vec<SavedGame>,
    /// Recent exits, reported again at every handshake until they age out.
    pub exited: Vec<ExitedGame>,
}

/// The two copies in `dir`, written in turn.
pub fn paths(dir: &Path) -> [PathBuf; 2] {
    [dir.join("state.0"), dir.join("state.1")]
}

const MAGIC: &str = "arcade-agent-state 1";

/// FNV-1a, 64 bits: enough to tell a torn write from a whole one (not an adversary's).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// One copy's sequence number and state, if its header and checksum check out.
fn read_copy(path: &Path) -> Option<(u64, Saved)> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::error!(file = %path.display(), error = %e, "cannot read agent state");
            return None;
        }
    };
    let parsed = (|| {
        let nl = bytes.iter().position(|b| *b == b'\n')?;
        let header = std::str::from_utf8(&bytes[..nl]).ok()?;
        let mut f = header.strip_prefix(MAGIC)?.split_whitespace();
        let seq: u64 = f.next()?.parse().ok()?;
        let len: usize = f.next()?.parse().ok()?;
        let sum = u64::from_str_radix(f.next()?, 16).ok()?;
        // Bytes past `len` are the tail of a longer earlier state: ignored.
        let body = bytes.get(nl + 1..nl + 1 + len)?;
        if fnv1a(body) != sum {
            return None;
        }
        Some((seq, serde_json::from_slice(body).ok()?))
    })();
    if parsed.is_none() {
        tracing::warn!(file = %path.display(), "a torn or unreadable copy of the agent state; using the other");
    }
    parsed
}

/// The single `state.json` that agents before the double-buffered file wrote (by tmp+rename,
/// so it is whole or absent). Read only when neither copy exists, so that an upgraded agent
/// finds the games its predecessor left running; the first write supersedes it.
fn read_legacy(dir: &Path) -> Option<Saved> {
    let path = dir.join("state.json");
    let bytes = std::fs::read(&path).ok()?;
    let saved = serde_json::from_slice(&bytes);
    if let Err(e) = &saved {
        tracing::warn!(file = %path.display(), error = %e, "an unreadable legacy agent state");
    }
    saved.ok()
}

/// Reads the newest whole copy of the state; none is an empty state (with a warning when
/// copies exist but none checks out: their games cannot be told from strangers, so they are
/// left alone).
pub fn load(dir: &Path) -> Saved {
    StateFile::open(dir).1
}

/// Writes `saved` as the newest copy in `dir`. Blocking.
pub fn save(dir: &Path, saved: &Saved) -> std::io::Result<()> {
    StateFile::open(dir).0.write(saved)
}

/// The writer of the two copies: which to write next, and with what sequence number.
#[derive(Debug, Clone)]
pub struct StateFile {
    dir: PathBuf,
    /// The newest sequence number written or found.
    seq: u64,
}

impl StateFile {
    /// Reads what `dir` holds; returns the writer and the newest whole state. Blocking.
    pub fn open(dir: &Path) -> (Self, Saved) {
        let newest = paths(dir)
            .iter()
            .filter_map(|p| read_copy(p))
            .max_by_key(|(seq, _)| *seq);
        let (seq, saved) = newest.unwrap_or_else(|| (0, read_legacy(dir).unwrap_or_default()));
        let file = Self {
            dir: dir.to_owned(),
            seq,
        };
        (file, saved)
    }

    /// Writes `saved` over the older copy, in place. Blocking: call it off the async threads.
    /// Not fsynced: the state must survive the agent's death, not the machine's, since a
    /// machine crash takes the games with it.
    pub fn write(&mut self, saved: &Saved) -> std::io::Result<()> {
        let seq = self.seq + 1;
        let body = serde_json::to_vec_pretty(saved).map_err(std::io::Error::other)?;
        let mut bytes = Vec::with_capacity(body.len() + 64);
        writeln!(bytes, "{MAGIC} {seq} {} {:016x}", body.len(), fnv1a(&body))?;
        bytes.extend_from_slice(&body);
        let [even, odd] = paths(&self.dir);
        let path = if seq % 2 == 0 { even } else { odd };
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        file.write_all_at(&bytes, 0)?;
        file.set_len(bytes.len() as u64)?;
        self.seq = seq;
        Ok(())
    }
}

/// `(process group, start time)` of a live process, from `/proc/PID/stat`.
pub fn proc_stat(pid: u32) -> Option<(u32, u64)> {
    use std::io::Read;
    // One read, not read_to_string's size query and second read: this runs once per launch.
    // The fields used here (up to 22: a name of at most 16 bytes and 21 numbers) always fit.
    let mut buf = [0u8; 1024];
    let n = std::fs::File::open(format!("/proc/{pid}/stat"))
        .ok()?
        .read(&mut buf)
        .ok()?;
    let text = std::str::from_utf8(buf.get(..n)?).ok()?;
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
            more_ports: Vec::new(),
            slot: Some(0),
            start_time,
            pending: false,
            idle_timeout_s: None,
            build: None,
            weight: None,
            gpus: Vec::new(),
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
                more_ports: Vec::new(),
                slot: Some(0),
                start_time: Some(7),
                pending: false,
                idle_timeout_s: None,
                build: None,
                weight: None,
                gpus: Vec::new(),
            }],
            exited: vec![],
        };
        save(dir.path(), &saved).unwrap();
        assert_eq!(load(dir.path()), saved);
        let newer = Saved {
            games: (0..10)
                .map(|i| SavedGame {
                    session_id: SessionId::new(format!("s{i}")).unwrap(),
                    pid: 100 + i,
                    port: 20000,
                    more_ports: Vec::new(),
                    slot: Some(0),
                    start_time: None,
                    pending: true,
                    idle_timeout_s: None,
                    build: None,
                    weight: None,
                    gpus: Vec::new(),
                })
                .collect(),
            exited: vec![],
        };
        save(dir.path(), &newer).unwrap();
        assert_eq!(load(dir.path()), newer);
        // A write torn anywhere (a prefix of the new copy over the old one) spoils only its own
        // copy: the one before it is loaded.
        let (mut file, _) = StateFile::open(dir.path());
        for cut in [0, 1, 10, 30, 100, 200] {
            file.write(&newer).unwrap();
            let torn = paths(dir.path())[((file.seq + 1) % 2) as usize].clone();
            let old = std::fs::read(&torn).unwrap();
            file.write(&saved).unwrap();
            let new = std::fs::read(&torn).unwrap();
            let mut spliced = new[..cut.min(new.len() - 1)].to_vec();
            spliced.extend_from_slice(old.get(spliced.len()..).unwrap_or_default());
            std::fs::write(&torn, spliced).unwrap();
            assert_eq!(load(dir.path()), newer, "cut at {cut}");
        }
        for p in paths(dir.path()) {
            std::fs::write(p, "garbage").unwrap();
        }
        assert_eq!(load(dir.path()), Saved::default());
    }

    #[test]
    fn an_upgraded_agent_reads_the_legacy_state_json_until_its_first_write() {
        let dir = tempfile::tempdir().unwrap();
        let game = |i: u32| SavedGame {
            session_id: SessionId::new(format!("s{i}")).unwrap(),
            pid: 100 + i,
            port: 20000,
            more_ports: Vec::new(),
            slot: Some(0),
            start_time: Some(5),
            pending: false,
            idle_timeout_s: None,
            build: None,
            weight: None,
            gpus: Vec::new(),
        };
        let legacy = Saved {
            games: vec![game(1), game(2)],
            exited: vec![],
        };
        std::fs::write(
            dir.path().join("state.json"),
            serde_json::to_vec(&legacy).unwrap(),
        )
        .unwrap();
        let (mut file, found) = StateFile::open(dir.path());
        assert_eq!(found, legacy);
        let now = Saved {
            games: vec![game(2)],
            exited: vec![],
        };
        file.write(&now).unwrap();
        assert_eq!(load(dir.path()), now);
    }

    #[test]
    fn a_longer_old_copy_under_a_shorter_new_one_is_ignored_past_its_length() {
        let dir = tempfile::tempdir().unwrap();
        let game = |i: u32| SavedGame {
            session_id: SessionId::new(format!("s{i}")).unwrap(),
            pid: 100 + i,
            port: 20000,
            more_ports: Vec::new(),
            slot: Some(0),
            start_time: None,
            pending: false,
            idle_timeout_s: None,
            build: None,
            weight: None,
            gpus: Vec::new(),
        };
        let long = Saved {
            games: (0..10).map(game).collect(),
            exited: vec![],
        };
        let short = Saved {
            games: vec![game(1)],
            exited: vec![],
        };
        let (mut file, _) = StateFile::open(dir.path());
        file.write(&long).unwrap();
        file.write(&long).unwrap();
        file.write(&short).unwrap();
        // Simulate a death between the write and the truncation: the old tail is back.
        let newest = &paths(dir.path())[1];
        let mut bytes = std::fs::read(newest).unwrap();
        bytes.extend_from_slice(b"\n  leftover of an older, longer state ]}");
        std::fs::write(newest, bytes).unwrap();
        assert_eq!(load(dir.path()), short);
    }
}
