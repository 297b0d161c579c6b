//! The table of games: what [`Games`] knows of each game (its PID, ports and slot, state and
//! idleness), the port pool, the launches between their record and their spawn, and the exits
//! remembered for the broker.
//!
//! Locking: one `std::sync::Mutex` around the table, held only for map and pool updates, never
//! across an `.await`.

use std::collections::{HashMap, VecDeque};
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

use protocol::wire::{ExitStatus, ExitedGame};
use protocol::{BuildId, SessionId};
use tokio::sync::watch;

use super::Games;
use crate::ports::{Lease, PortPool};

/// A game's process state. Transitions happen only in [`Games::stop`] (Running -> Stopping) and
/// in the supervising task (any -> removed, when the group is gone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum GameState {
    /// Started, its readiness check not passed yet; its end is answered by the launch
    /// (`LaunchFailed`), not `Exited`.
    Readying,
    /// Started (and ready); no stop asked.
    Running,
    /// SIGTERM sent; its end is answered with `Stopped`, not `Exited`.
    Stopping,
}

/// One game of the table.
#[derive(Debug)]
pub(super) struct Entry {
    /// Its PID, which is also its process group's id.
    pub(super) pid: u32,
    /// Its ports and slot.
    pub(super) lease: Lease,
    /// Its start time, to tell a reused PID apart.
    pub(super) start_time: Option<u64>,
    pub(super) state: GameState,
    /// Whether a cgroup may exist for it, to remove when it ends.
    pub(super) limited: bool,
    /// How its group ended, once it has.
    pub(super) gone: watch::Receiver<Option<ExitStatus>>,
    /// With an idle timeout: since when nobody has been connected to its ports.
    pub(super) idle: Option<IdleWatch>,
}

/// A game's idle timeout (catalog `idle_timeout_s`) and when it last had a connection.
#[derive(Debug, Clone, Copy)]
pub(super) struct IdleWatch {
    pub(super) timeout: Duration,
    /// Its launch, its last connection seen, or (for a game of a previous run) the agent's
    /// start.
    pub(super) last_active: Instant,
}

impl IdleWatch {
    pub(super) fn new(timeout: Option<Duration>) -> Option<Self> {
        timeout.map(|timeout| Self {
            timeout,
            last_active: Instant::now(),
        })
    }
}

/// Every game of this host, and what their launches and exits hold.
#[derive(Debug)]
pub(super) struct Table {
    /// The games started, by session.
    pub(super) games: HashMap<SessionId, Entry>,
    /// Ports and slots, free and taken.
    pub(super) ports: PortPool,
    /// Exits reported again at each handshake until they age out, in case the link dropped
    /// before the broker read them.
    pub(super) exited: VecDeque<(ExitedGame, Instant)>,
    /// Launches between their record and their spawn: session, ports and slot.
    pub(super) pending: HashMap<SessionId, Lease>,
    /// The build each session of a central game runs, held in the build cache while it does.
    pub(super) builds: HashMap<SessionId, BuildId>,
}

/// Exits remembered for re-reporting: at most this many, for at most [`EXIT_MEMORY`].
pub(super) const MAX_EXITS: usize = 256;
/// How long an exit is remembered for re-reporting.
pub(super) const EXIT_MEMORY: Duration = Duration::from_secs(600);

impl Games {
    /// Ends a launch's pending state (it started, or will not).
    pub(super) fn unpend(&self, t: &mut Table, session_id: &SessionId) {
        t.pending.remove(session_id);
        self.launch_settled.notify_waiters();
    }

    /// Gives back a launch's slot and lease: it will not start.
    pub(super) fn abandon_launch(&self, session_id: &SessionId, lease: &Lease) {
        let mut t = self.table();
        self.unpend(&mut t, session_id);
        t.ports.release(lease);
        self.forget_build(&mut t, session_id);
    }

    /// A session is gone: its build is no longer held for it.
    pub(super) fn forget_build(&self, t: &mut Table, session_id: &SessionId) {
        if let Some(build) = t.builds.remove(session_id) {
            self.central.release(&build);
        }
    }

    /// The table, locked.
    pub(super) fn table(&self) -> MutexGuard<'_, Table> {
        // A panic while holding this lock would be a bug in a few lines of map code; the table
        // itself stays consistent, so carry on with it.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }
}
