//! Across a restart of the agent: at exit, leaving its games running (their supervising tasks
//! let go of them, and the state file is brought up to date); at the next start, taking back
//! those still running and remembering the others as exited. A PID now used by another
//! program is never touched.

use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::wire::{ExitStatus, ExitedGame};
use tokio::sync::watch;

use super::table::{Entry, GameState, IdleWatch};
use super::Games;
use crate::ports::{Lease, PortPool};
use crate::state;

impl Games {
    /// Leaves the games running (the agent is exiting and will find them again): supervising
    /// tasks stop watching, and the state file is brought up to date.
    pub async fn leave_running(self: &Arc<Self>) {
        self.leave.cancel();
        if let Err(e) = self.persist().await {
            tracing::error!(error = %e, "cannot write the agent state; running games may not be found again");
        }
    }

    /// Takes back the games of a previous run of the agent (from `saved`): those still running
    /// are watched again; those gone are remembered as exited, how unknown. A PID now used by
    /// another program is never touched.
    pub async fn adopt(self: &Arc<Self>, saved: state::Saved) {
        let now = Instant::now();
        // Reading /proc blocks: off the async threads.
        let found = tokio::task::spawn_blocking(move || {
            saved
                .games
                .into_iter()
                .map(|g| {
                    let f = state::find(&g);
                    (g, f)
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for (game, found) in found {
            match found {
                state::Found::Running { pgid, start_time } => {
                    let (gone_tx, gone_rx) = watch::channel(None);
                    {
                        let mut t = self.table();
                        let lease = saved_lease(&mut t.ports, &game);
                        if let Some(build) = &game.build {
                            t.builds.insert(game.session_id.clone(), build.clone());
                            self.central.hold(build);
                        }
                        t.games.insert(
                            game.session_id.clone(),
                            Entry {
                                pid: pgid,
                                lease,
                                start_time,
                                state: GameState::Running,
                                // A previous run may have made it a cgroup.
                                limited: true,
                                gone: gone_rx,
                                idle: IdleWatch::new(
                                    game.idle_timeout_s
                                        .map(|s| Duration::from_secs(u64::from(s))),
                                ),
                            },
                        );
                    }
                    tracing::info!(session = %game.session_id, pid = pgid, "found a game of a previous run; watching it again");
                    let me = Arc::clone(self);
                    self.tracker.spawn(async move {
                        me.supervise(game.session_id, None, pgid, gone_tx).await
                    });
                }
                state::Found::Gone => {
                    tracing::info!(session = %game.session_id, pid = game.pid, "a game of a previous run ended meanwhile");
                    self.table().exited.push_back((
                        ExitedGame {
                            session_id: game.session_id,
                            status: ExitStatus::Unknown,
                        },
                        now,
                    ));
                }
            }
        }
        {
            let mut t = self.table();
            for e in saved.exited {
                if !t.exited.iter().any(|(x, _)| x.session_id == e.session_id) {
                    t.exited.push_back((e, now));
                }
            }
        }
        if let Err(e) = self.persist().await {
            tracing::error!(error = %e, "cannot write the agent state");
        }
    }
}

/// A saved game's lease, taken again from `pool` (a state of an older agent has no slot: it
/// gets the lowest free one).
fn saved_lease(pool: &mut PortPool, g: &state::SavedGame) -> Lease {
    let lease = Lease {
        ports: std::iter::once(g.port)
            .chain(g.more_ports.iter().copied())
            .collect(),
        slot: g.slot.unwrap_or_else(|| pool.free_slot()),
        weight: g.weight.unwrap_or(1),
        gpus: g.gpus.clone(),
    };
    pool.claim(&lease);
    lease
}
