//! What the link tells the broker of the games, besides the answers to its launches and
//! stops: the games running (at the handshake, and at each heartbeat with how long an idle one
//! has been idle), and the exits to report again at a handshake.

use std::collections::HashSet;
use std::time::Instant;

use protocol::wire::{ExitedGame, RunningGame};

use super::table::{GameState, EXIT_MEMORY};
use super::Games;

impl Games {
    /// Exits to report again at the next handshake.
    pub fn exited(&self) -> Vec<ExitedGame> {
        let mut t = self.table();
        while t
            .exited
            .front()
            .is_some_and(|(_, at)| at.elapsed() > EXIT_MEMORY)
        {
            t.exited.pop_front();
        }
        t.exited.iter().map(|(e, _)| e.clone()).collect()
    }

    /// The games running now.
    pub fn running(&self) -> Vec<RunningGame> {
        self.running_seen(None)
    }

    /// Whether any game has an idle timeout: only then is the TCP table worth reading.
    pub fn watches_idle(&self) -> bool {
        self.table().games.values().any(|e| e.idle.is_some())
    }

    /// [`Self::running`], as of `connected`, the local ports with an established TCP
    /// connection now (when read): a game with a connection on any of its ports is active
    /// now, and one without any for at least its idle timeout says for how long.
    pub fn running_seen(&self, connected: Option<&HashSet<u16>>) -> Vec<RunningGame> {
        let now = Instant::now();
        let mut t = self.table();
        let mut v: Vec<RunningGame> = t
            .games
            .iter_mut()
            .map(|(id, e)| {
                let idle_ms = match (e.idle.as_mut(), connected) {
                    (Some(w), Some(connected)) => {
                        if e.lease.ports.iter().any(|p| connected.contains(p)) {
                            w.last_active = now;
                        }
                        let idle = now.duration_since(w.last_active);
                        (e.state == GameState::Running && idle >= w.timeout)
                            .then(|| u64::try_from(idle.as_millis()).unwrap_or(u64::MAX))
                    }
                    _ => None,
                };
                RunningGame {
                    session_id: id.clone(),
                    pid: e.pid,
                    pgid: e.pid,
                    port: e.lease.port(),
                    idle_ms,
                    slots: e.lease.weight,
                    gpus: e.lease.gpus.clone(),
                }
            })
            .collect();
        drop(t);
        v.sort_by(|a, b| a.session_id.cmp(&b.session_id));
        v
    }

    /// How many games run now.
    pub fn running_count(&self) -> usize {
        self.table().games.len()
    }
}
