//! A launch request, from the broker's word to its answer: a slot and ports reserved at once
//! (so a repeated request never launches twice), the launch recorded in the state file, the
//! game spawned, its readiness awaited, `Launched` or `LaunchFailed` sent, and the game then
//! watched until it is gone.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use protocol::wire::{AgentMessage, ExitStatus, LaunchFailure, LaunchRequest, Launched};
use protocol::SessionId;
use tokio::process::Child;
use tokio::sync::watch;

use super::spawn::{remove_session_dir, Spawned};
use super::table::{Entry, GameState, IdleWatch};
use super::Games;
use crate::catalog::ReadyCheck;
use crate::metrics::LaunchOutcome;
use crate::ports::{Lease, Wanted};

/// What [`Games::reserve`] found for a launch request.
#[derive(Debug)]
enum Reserved {
    /// A slot and these ports are taken; launch.
    Taken(Lease),
    /// The session's game runs already: this is its answer.
    Running(Launched),
    /// The session's launch is in flight; its answer will come.
    InFlight,
    /// Refused, with the reason.
    Refused((LaunchFailure, String)),
}

/// A launched game not watched yet: [`Games::launch_and_report`] starts watching it once its
/// `Launched` is queued, so the broker never hears `Exited` before `Launched`.
#[derive(Debug)]
struct Unwatched {
    session_id: SessionId,
    leader: Child,
    pgid: u32,
    gone: watch::Sender<Option<ExitStatus>>,
    /// Its readiness check, to pass before it is reported `Launched`.
    ready: Option<(ReadyCheck, Duration)>,
}

impl Games {
    /// Launches a game in a tracked task and reports `Launched` or `LaunchFailed` on the event
    /// channel; that task then watches the game until its group is gone. Launches run
    /// concurrently, so their state writes are shared (see [`Games::persist_blocking`]).
    ///
    /// The slot and port are taken here, before the task starts, so two requests for one
    /// session never both launch: a repeat of a launch still in flight gets no answer of its
    /// own (the first one's answer is the answer for that session).
    pub fn launch_and_report(self: &Arc<Self>, req: LaunchRequest, ip: IpAddr) {
        let reserved = self.reserve(&req, ip);
        if matches!(reserved, Reserved::InFlight) {
            tracing::debug!(session = %req.session_id, "launch already in flight");
            return;
        }
        let me = Arc::clone(self);
        self.tracker.spawn(async move {
            let outcome = match reserved {
                Reserved::Taken(lease) => me.launch(&req, ip, lease).await,
                Reserved::Running(launched) => Ok((launched, None)),
                Reserved::Refused(e) => Err(e),
                Reserved::InFlight => return,
            };
            let outcome = match outcome {
                Ok((launched, Some(mut u))) => match u.ready.take() {
                    // Watched from now, so an exit during the check is seen; the check's
                    // verdict is the launch's answer.
                    Some((check, within)) => {
                        let gone = u.gone.subscribe();
                        let watcher = Arc::clone(&me);
                        me.tracker.spawn(async move {
                            watcher
                                .supervise(u.session_id, Some(u.leader), u.pgid, u.gone)
                                .await;
                        });
                        let verdict = me.wait_ready(&launched, &check, within, gone).await;
                        me.report_ready(launched, verdict).await;
                        return;
                    }
                    None => Ok((launched, Some(u))),
                },
                other => other,
            };
            let (msg, unwatched) = match outcome {
                Ok((launched, unwatched)) => (AgentMessage::Launched(launched), unwatched),
                Err((kind, message)) => (
                    AgentMessage::LaunchFailed {
                        session_id: req.session_id,
                        kind,
                        message,
                    },
                    None,
                ),
            };
            me.count_launch(&msg);
            // Fails only when the agent is shutting down; the broker learns at the handshake.
            let _ = me.events.send(msg).await;
            if let Some(u) = unwatched {
                me.supervise(u.session_id, Some(u.leader), u.pgid, u.gone)
                    .await;
            }
        });
    }

    /// Counts a launch's answer.
    fn count_launch(&self, msg: &AgentMessage) {
        let outcome = match msg {
            AgentMessage::LaunchFailed { kind, .. } => match kind {
                LaunchFailure::BadRequest | LaunchFailure::UnknownGame => LaunchOutcome::Refused,
                LaunchFailure::NoCapacity => LaunchOutcome::NoCapacity,
                LaunchFailure::SpawnFailed => LaunchOutcome::SpawnFailed,
                LaunchFailure::NotReady => LaunchOutcome::NotReady,
                LaunchFailure::ExitedBeforeReady => LaunchOutcome::ExitedBeforeReady,
            },
            _ => LaunchOutcome::Launched,
        };
        self.metrics.launch(outcome);
    }

    /// Answers a launch whose readiness check has its verdict: `Launched` if the game is
    /// still there and ready (it is then `Running`, so its later exit is reported as
    /// `Exited`, after this), else `LaunchFailed`. The answer's place in the queue is taken
    /// before the table is looked at, so no `Exited` of the game can overtake it.
    async fn report_ready(&self, launched: Launched, verdict: Result<(), (LaunchFailure, String)>) {
        let Ok(permit) = self.events.reserve().await else {
            return;
        };
        let id = launched.session_id.clone();
        let msg = {
            let mut t = self.table();
            match verdict {
                Ok(()) => match t.games.get_mut(&id) {
                    Some(e) if e.state == GameState::Readying => {
                        e.state = GameState::Running;
                        AgentMessage::Launched(launched)
                    }
                    _ => AgentMessage::LaunchFailed {
                        session_id: id,
                        kind: LaunchFailure::ExitedBeforeReady,
                        message: "the game ended or was stopped as it became ready".into(),
                    },
                },
                Err((kind, message)) => AgentMessage::LaunchFailed {
                    session_id: id,
                    kind,
                    message,
                },
            }
        };
        self.count_launch(&msg);
        permit.send(msg);
    }

    /// Takes a slot and a port for a launch, or says why not. A repeated request for a
    /// session already running answers as the first one did and starts nothing.
    fn reserve(&self, req: &LaunchRequest, ip: IpAddr) -> Reserved {
        let mut t = self.table();
        if let Some(e) = t.games.get(&req.session_id) {
            if e.state == GameState::Readying {
                return Reserved::InFlight;
            }
            return Reserved::Running(Launched {
                session_id: req.session_id.clone(),
                pid: e.pid,
                ip,
                port: e.lease.port(),
                ports: e.lease.ports.clone(),
            });
        }
        if t.pending.contains_key(&req.session_id) {
            return Reserved::InFlight;
        }
        // A game this host does not have takes one port and slot: its launch is refused
        // anyway.
        let game = self.game_for(req).ok();
        let want = Wanted {
            ports: usize::from(game.as_ref().map_or(1, |(g, _)| g.ports())),
            weight: game.as_ref().map_or(1, |(g, _)| g.slots()),
            gpus: &req.gpus,
        };
        let lease = match t.ports.take(want) {
            Ok(lease) => lease,
            Err(short) => return Reserved::Refused((LaunchFailure::NoCapacity, short.to_string())),
        };
        t.pending.insert(req.session_id.clone(), lease.clone());
        if let Some(build) = &req.build {
            t.builds.insert(req.session_id.clone(), build.clone());
            self.central.hold(build);
        }
        Reserved::Taken(lease)
    }

    /// Starts a game on its reserved `lease` once its launch is recorded in the state file.
    /// Returns the answer and the game to watch.
    async fn launch(
        self: &Arc<Self>,
        req: &LaunchRequest,
        ip: IpAddr,
        lease: Lease,
    ) -> Result<(Launched, Option<Unwatched>), (LaunchFailure, String)> {
        let port = lease.port();
        // One hop to the blocking pool for all that blocks: the record made before the spawn
        // (an agent killed between the spawn and the next write still finds the game again,
        // by its environment, so it never runs unknown; a game that cannot be recorded is not
        // started), then resolving the config (canonicalize), opening the log, and the spawn.
        let blocking = {
            let me = Arc::clone(self);
            let req = req.clone();
            let lease = lease.clone();
            tokio::task::spawn_blocking(move || -> std::io::Result<_> {
                me.persist_blocking()?;
                Ok(me.start_process(&req, &lease))
            })
            .await
        };
        let spawned = match blocking {
            Ok(Ok(spawned)) => spawned,
            Ok(Err(e)) => {
                self.abandon_launch(&req.session_id, &lease);
                return Err((
                    LaunchFailure::SpawnFailed,
                    format!(
                        "cannot record the game in --state-dir {}: {e}",
                        self.config.state_dir.display()
                    ),
                ));
            }
            Err(e) => Err((
                LaunchFailure::SpawnFailed,
                format!("launch task failed: {e}"),
            )),
        };
        match spawned {
            Ok(Spawned {
                child,
                pid,
                start_time,
                limited,
                ready,
            }) => {
                let (gone_tx, gone_rx) = watch::channel(None);
                {
                    let mut t = self.table();
                    self.unpend(&mut t, &req.session_id);
                    t.games.insert(
                        req.session_id.clone(),
                        Entry {
                            pid,
                            lease: lease.clone(),
                            start_time,
                            state: if ready.is_some() {
                                GameState::Readying
                            } else {
                                GameState::Running
                            },
                            limited,
                            gone: gone_rx,
                            idle: IdleWatch::new(
                                self.game_for(req).ok().and_then(|(g, _)| g.idle_timeout()),
                            ),
                        },
                    );
                }
                // The pending record already lets a restarted agent find the game; the PID
                // makes that cheaper, and need not be waited for.
                self.persist_later();
                tracing::info!(session = %req.session_id, game = %req.game_id, pid, port, "game launched");
                let launched = Launched {
                    session_id: req.session_id.clone(),
                    pid,
                    ip,
                    port,
                    ports: lease.ports.clone(),
                };
                let unwatched = Unwatched {
                    session_id: req.session_id.clone(),
                    leader: child,
                    pgid: pid,
                    gone: gone_tx,
                    ready,
                };
                Ok((launched, Some(unwatched)))
            }
            Err(e) => {
                self.abandon_launch(&req.session_id, &lease);
                remove_session_dir(&self.config.state_dir, &req.session_id).await;
                self.persist_later();
                tracing::warn!(session = %req.session_id, game = %req.game_id, error = %e.1, "launch refused");
                Err(e)
            }
        }
    }
}
