//! A game's supervising task: it reaps the game's leader, then watches (and reaps) the rest of
//! its group until none is left, gives back its slot and ports, and reports an exit that no
//! stop asked for.
//!
//! The agent makes itself a child subreaper (Linux `PR_SET_CHILD_SUBREAPER`), so orphaned
//! members of a game's group are re-parented to the agent instead of init; the supervising task
//! reaps them (`waitpid(-pgid)`) and so learns how the last one ended. Without that, a group
//! whose leader has exited would leave zombies that nobody reaps in a container without an init.

use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::wire::{AgentMessage, ExitStatus, ExitedGame};
use protocol::SessionId;
use tokio::process::Child;
use tokio::sync::watch;

use super::group::{exit_status, group_alive, reap_group};
use super::spawn::remove_session_dir;
use super::table::{GameState, MAX_EXITS};
use super::Games;

/// The first and the longest pause between two looks at a group whose leader has exited.
const GROUP_POLL_MIN: Duration = Duration::from_millis(20);
const GROUP_POLL_MAX: Duration = Duration::from_millis(250);

/// Makes this process the reaper of its orphaned descendants; see the module docs.
pub fn become_subreaper() {
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::warn!(error = %e, "cannot become a child subreaper; orphaned game processes will be reaped by init");
    }
}

impl Games {
    /// Reaps the leader, then watches (and reaps) the rest of its group until none is left.
    /// A game adopted from a previous run has no `leader` handle: it is not our child, so it
    /// is only watched, and how it ends is unknown. Returns early, leaving the game be, when
    /// the agent exits leaving its games running.
    pub(super) async fn supervise(
        self: Arc<Self>,
        session_id: SessionId,
        leader: Option<Child>,
        pgid: u32,
        gone: watch::Sender<Option<ExitStatus>>,
    ) {
        let mut last = ExitStatus::Unknown;
        if let Some(mut child) = leader {
            tokio::select! {
                () = self.leave.cancelled() => return,
                st = child.wait() => {
                    last = match st {
                        Ok(st) => exit_status(st),
                        Err(e) => {
                            tracing::error!(session = %session_id, error = %e, "cannot wait for game");
                            ExitStatus::Unknown
                        }
                    };
                }
            }
        }
        let mut pause = GROUP_POLL_MIN;
        loop {
            if let Some(st) = reap_group(pgid) {
                last = st;
            }
            if !group_alive(pgid) {
                break;
            }
            tokio::select! {
                () = self.leave.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(GROUP_POLL_MAX);
        }
        let (state, limited) = {
            let mut t = self.table();
            let entry = t.games.remove(&session_id);
            if let Some(e) = &entry {
                t.ports.release(&e.lease);
            }
            self.forget_build(&mut t, &session_id);
            (
                entry.as_ref().map(|e| e.state),
                entry.is_some_and(|e| e.limited),
            )
        };
        if limited {
            let id = session_id.clone();
            let _ = tokio::task::spawn_blocking(move || crate::limits::remove(&id)).await;
        }
        remove_session_dir(&self.config.state_dir, &session_id).await;
        gone.send_replace(Some(last));
        if state == Some(GameState::Running) {
            let mut t = self.table();
            if t.exited.len() >= MAX_EXITS {
                t.exited.pop_front();
            }
            t.exited.push_back((
                ExitedGame {
                    session_id: session_id.clone(),
                    status: last,
                },
                Instant::now(),
            ));
        }
        match state {
            Some(GameState::Running) => {
                tracing::info!(session = %session_id, status = ?last, "game exited by itself");
                self.metrics.exit();
                let msg = AgentMessage::Exited {
                    session_id,
                    status: last,
                };
                if self.events.send(msg).await.is_err() {
                    tracing::debug!("agent is shutting down; exit not reported");
                }
            }
            Some(GameState::Stopping) => {
                tracing::info!(session = %session_id, status = ?last, "game stopped");
            }
            Some(GameState::Readying) => {
                tracing::info!(session = %session_id, status = ?last, "game ended before it was ready");
            }
            None => {}
        }
        // After the report, and not waited for: a restarted agent that misses this write
        // finds the game gone, which it is.
        if state.is_some() {
            self.persist_later();
        }
    }
}
