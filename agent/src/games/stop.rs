//! Stopping games: SIGTERM to a game's group, SIGKILL after the grace, and the answer once no
//! process of the group is left; one game at the broker's word, or every game as the agent
//! exits with `--stop-games-on-exit`.

use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use protocol::wire::{AgentMessage, ExitStatus};
use protocol::SessionId;
use tokio::sync::watch;

use super::group::signal_group;
use super::table::GameState;
use super::Games;
use crate::metrics::StopOutcome;

/// How long after SIGKILL we wait for a group to be gone before giving up on it. SIGKILL
/// cannot be ignored, so only a process stuck in the kernel (uninterruptible IO) outlives this.
const KILL_WAIT: Duration = Duration::from_secs(10);

impl Games {
    /// Stops a session's game: SIGTERM to its group, SIGKILL after the grace. Returns when no
    /// process of the group is left (or, for a process stuck in the kernel, after a bound).
    /// A session this agent does not run is already stopped.
    pub async fn stop(&self, session_id: &SessionId) -> StopOutcome {
        let outcome = self.stop_group(session_id).await;
        self.metrics.stop(outcome);
        outcome
    }

    async fn stop_group(&self, session_id: &SessionId) -> StopOutcome {
        // A stop that overtakes its launch waits for the launch to settle, then stops the game
        // it started (launches are bounded: a state write and a spawn).
        loop {
            let settled = self.launch_settled.notified();
            if !self.table().pending.contains_key(session_id) {
                break;
            }
            settled.await;
        }
        let found = {
            let mut t = self.table();
            t.games.get_mut(session_id).map(|e| {
                e.state = GameState::Stopping;
                (e.pid, e.gone.clone())
            })
        };
        let Some((pgid, mut gone)) = found else {
            return StopOutcome::NotRunning;
        };
        signal_group(pgid, Signal::SIGTERM);
        let wait_gone = |gone: &mut watch::Receiver<Option<ExitStatus>>, within| {
            let mut gone = gone.clone();
            async move {
                tokio::time::timeout(within, gone.wait_for(Option::is_some))
                    .await
                    .is_ok()
            }
        };
        if wait_gone(&mut gone, self.config.stop_grace).await {
            return StopOutcome::Terminated;
        }
        tracing::info!(session = %session_id, pgid, "game ignored SIGTERM; sending SIGKILL");
        signal_group(pgid, Signal::SIGKILL);
        if !wait_gone(&mut gone, KILL_WAIT).await {
            tracing::error!(session = %session_id, pgid, "game's process group outlived SIGKILL");
            return StopOutcome::Stuck;
        }
        StopOutcome::Killed
    }

    /// Stops a session's game in a tracked task and reports `Stopped` on the event channel.
    pub fn stop_and_report(self: &Arc<Self>, session_id: SessionId) {
        let me = Arc::clone(self);
        self.tracker.spawn(async move {
            me.stop(&session_id).await;
            // Fails only when the agent is shutting down; the broker learns on reconnect.
            let _ = me.events.send(AgentMessage::Stopped { session_id }).await;
        });
    }

    /// Stops every game, all at once.
    pub async fn stop_all(&self) {
        let ids: Vec<SessionId> = self.table().games.keys().cloned().collect();
        futures::future::join_all(ids.iter().map(|id| self.stop(id))).await;
    }
}
