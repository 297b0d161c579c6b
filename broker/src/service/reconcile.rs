//! What agents say on their own — a game exited, a stop nobody waited for was done, a host
//! (re)registered — and squaring a (re)connected host's games with the records.
//!
//! The events come in order on one bounded channel from the agent connections; the service
//! applies them one at a time. A host takes new sessions only once it has been reconciled.

use std::sync::Arc;

use protocol::api::{EventType, Session, SessionStatus};
use protocol::wire::{ExitStatus, ExitedGame, HostFacts, RunningGame};
use protocol::{HostId, SessionId};
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Service;
use crate::agents::registry::Held;
use crate::agents::HostEvent;
use crate::session::{Actor, SessionEvent};
use crate::store::{Fence, StoreError};

/// What to do with a game a reconnected host says it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Running {
    /// Its session is live on this host: hold its slot; `stop` an end that was cut short;
    /// `mark_running` a start that was cut short.
    Keep {
        /// The session is `stopping`.
        stop: bool,
        /// The session is `starting` with no start in flight.
        mark_running: bool,
    },
    /// Its start is in flight; its record may not be committed yet.
    Launching,
    /// No live session of this host: stop the game.
    Stray,
    /// The store cannot say; leave it for the next reconnect.
    Unknown,
}

/// The verdict on a running game, from its record and whether its start is in flight.
fn running(record: &Result<Session, StoreError>, host: &HostId, launching: bool) -> Running {
    match record {
        Ok(s) if !s.status.is_terminal() && &s.host_id == host => Running::Keep {
            stop: s.status == SessionStatus::Stopping,
            mark_running: s.status == SessionStatus::Starting && !launching,
        },
        Err(StoreError::NotFound(_)) if launching => Running::Launching,
        Ok(_) | Err(StoreError::NotFound(_)) => Running::Stray,
        Err(_) => Running::Unknown,
    }
}

/// How a live session whose game is gone from its host ends.
fn gone(status: SessionStatus, exit: Option<ExitStatus>) -> SessionEvent {
    match (status, exit) {
        (SessionStatus::Starting, _) => SessionEvent::LaunchFailed,
        (SessionStatus::Stopping, _) => SessionEvent::Stopped,
        (_, Some(e)) => SessionEvent::Exited(e),
        (_, None) => SessionEvent::Vanished,
    }
}

impl Service {
    /// Applies agents' events until the channel closes or `shutdown` fires.
    pub async fn run_events(
        self: Arc<Self>,
        mut events: mpsc::Receiver<HostEvent>,
        shutdown: CancellationToken,
    ) {
        loop {
            let event = tokio::select! {
                () = shutdown.cancelled() => return,
                e = events.recv() => match e { Some(e) => e, None => return },
            };
            match event {
                HostEvent::Exited {
                    host_id,
                    session_id,
                    status,
                } => self.on_exited(&host_id, &session_id, status).await,
                HostEvent::Stopped {
                    host_id,
                    session_id,
                } => match self
                    .record_as_owner(&host_id, &session_id, SessionEvent::Stopped, Actor::Agent)
                    .await
                {
                    Ok(_) => {
                        tracing::info!(host = %host_id, session = %session_id, "game stopped; session ended")
                    }
                    Err(e) => {
                        tracing::debug!(session = %session_id, error = %e, "stop not applied")
                    }
                },
                HostEvent::Registered {
                    host_id,
                    facts,
                    running,
                    exited,
                } => self.registered(&host_id, &facts, &running, &exited).await,
                HostEvent::Idle {
                    host_id,
                    session_id,
                    idle,
                } => self.idle_seen(host_id, session_id, idle),
                HostEvent::Offers { host_id, facts } => {
                    self.offers_changed(&host_id, &facts).await;
                }
                HostEvent::Disconnected { host_id, epoch } => {
                    self.disconnected(&host_id, epoch).await;
                }
            }
        }
    }

    /// A host (re)registered: record it (with replicas: as held here, at a new epoch that
    /// fences off any older owner), square its games with the records, then let it take
    /// sessions.
    async fn registered(
        &self,
        host: &HostId,
        facts: &HostFacts,
        running: &[RunningGame],
        exited: &[ExitedGame],
    ) {
        self.central_changed();
        if self.replicas.is_none() {
            if let Err(e) = self
                .store
                .save_host(host, facts, OffsetDateTime::now_utc())
                .await
            {
                tracing::warn!(%host, error = %e, "cannot record the host");
            }
            self.reconcile(host, running, exited).await;
            self.registry.mark_ready(host);
            self.host_event(host, EventType::HostOnline, Actor::Agent)
                .await;
            return;
        }
        let epoch = match self
            .store
            .own_host(host, &self.settings.broker_id, facts)
            .await
        {
            Ok(epoch) => epoch,
            Err(e) => {
                // Not held, so not ready: it takes no session until it reconnects.
                tracing::error!(%host, error = %e, "cannot record that this broker holds the host");
                return;
            }
        };
        self.registry.set_epoch(host, epoch);
        // Drained through any replica, whenever: it stays drained here.
        match self.store.drained_hosts().await {
            Ok(drained) => {
                self.registry.set_draining(host, drained.contains(host));
            }
            Err(e) => {
                // Taken as drained until the next beat reads it: never a session on a host an
                // operator drained.
                tracing::warn!(%host, error = %e, "cannot read whether the host is drained");
                self.registry.set_draining(host, true);
            }
        }
        tracing::info!(%host, epoch, "holding the host");
        self.reconcile(host, running, exited).await;
        let fence = Fence {
            host: host.clone(),
            epoch,
        };
        match self.store.host_ready(&fence).await {
            Ok(true) => {
                self.registry.mark_ready(host);
                self.host_event(host, EventType::HostOnline, Actor::Agent)
                    .await;
            }
            Ok(false) => tracing::info!(%host, "the host moved on during its reconcile"),
            Err(e) => tracing::error!(%host, error = %e, "cannot record the host ready"),
        }
    }

    /// A host's connection here is gone: with replicas, it is released unless a newer
    /// connection (through any replica) holds it already; either way, unless the host has
    /// moved on, it is offline from now.
    async fn disconnected(&self, host: &HostId, epoch: Option<u64>) {
        if let (true, Some(epoch)) = (self.replicas.is_some(), epoch) {
            let fence = Fence {
                host: host.clone(),
                epoch,
            };
            match self.store.disown_host(&fence).await {
                Ok(true) => {}
                Ok(false) => return, // Held elsewhere already.
                Err(e) => {
                    tracing::warn!(%host, error = %e, "cannot record that the host left");
                    return;
                }
            }
        } else if self.replicas.is_some() {
            // Never held here (its handshake could not be recorded).
            return;
        }
        self.host_event(host, EventType::HostOffline, Actor::Agent)
            .await;
    }

    async fn on_exited(&self, host: &HostId, id: &SessionId, status: ExitStatus) {
        if self.inflight.hold_exit(id, status) {
            return;
        }
        match self
            .record_as_owner(host, id, SessionEvent::Exited(status), Actor::GameExit)
            .await
        {
            Ok(s) => {
                tracing::info!(session = %id, %host, exit_code = ?s.exit_code, "game exited; session ended")
            }
            Err(e) => tracing::debug!(session = %id, %host, error = %e, "exit not applied"),
        }
    }

    /// Squares a (re)connected host's games with the records:
    /// - a game whose session is live stays (its slot is held); a record still `starting` whose
    ///   game runs becomes `running` (its start was cut short by a broker restart);
    /// - a game without a live session (ended, lost, unknown) is stopped;
    /// - a live record whose game is gone ends: `game_exited` with the exit the agent reports
    ///   when it knows it, `failed` if it never started, `ended` if it was stopping.
    async fn reconcile(&self, host: &HostId, games: &[RunningGame], exited: &[ExitedGame]) {
        let Some(link) = self.registry.link(host) else {
            return;
        };
        let ip = self.registry.ip(host);
        for g in games {
            let record = self.store.get(&g.session_id).await;
            let launching = self.inflight.is_launching(&g.session_id);
            match running(&record, host, launching) {
                Running::Keep { stop, mark_running } => {
                    let held = Held {
                        slots: g.slots.max(1),
                        gpus: g.gpus.clone(),
                    };
                    self.registry.hold(host, &g.session_id, held);
                    if stop {
                        // Its end was cut short: finish it; the answer is recorded on arrival.
                        link.stop_nowait(g.session_id.clone());
                    }
                    if let (true, Some(ip)) = (mark_running, ip) {
                        let (pid, port) = (g.pid, g.port);
                        // Its other ports are not told at a reconnect.
                        let ports = vec![port];
                        // A pool's game waits for a player; a player's runs.
                        let event = match &record {
                            Ok(s) if s.pool_id.is_some() => SessionEvent::Readied {
                                pid,
                                ip,
                                port,
                                ports,
                            },
                            _ => SessionEvent::Launched {
                                pid,
                                ip,
                                port,
                                ports,
                            },
                        };
                        let _ = self
                            .record_as_owner(host, &g.session_id, event, Actor::Recovery)
                            .await;
                    }
                }
                Running::Launching => {}
                Running::Stray => {
                    tracing::warn!(%host, session = %g.session_id, pid = g.pid, "host runs a game without a live session; stopping it");
                    link.stop_nowait(g.session_id.clone());
                }
                Running::Unknown => {
                    if let Err(e) = record {
                        tracing::warn!(%host, error = %e, "cannot reconcile");
                    }
                }
            }
        }
        let active = match self.store.active(Some(host)).await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(%host, error = %e, "cannot reconcile");
                return;
            }
        };
        for s in active {
            let listed = games.iter().any(|g| g.session_id == s.session_id);
            if listed || self.inflight.is_launching(&s.session_id) {
                continue;
            }
            let exit = exited
                .iter()
                .find(|e| e.session_id == s.session_id)
                .map(|e| e.status);
            let event = gone(s.status, exit);
            tracing::info!(%host, session = %s.session_id, ?event, "game is gone from its host; settling the session");
            let _ = self
                .record_as_owner(host, &s.session_id, event, Actor::Recovery)
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::GameId;

    fn session(status: SessionStatus, host: &str) -> Session {
        let mut s = crate::session::new_session(
            SessionId::new("s").unwrap(),
            GameId::new("g").unwrap(),
            "default".into(),
            None,
            HostId::new(host).unwrap(),
            OffsetDateTime::UNIX_EPOCH,
        );
        s.status = status;
        s
    }

    #[test]
    fn a_running_game_is_kept_only_for_a_live_session_of_its_host() {
        use SessionStatus as S;
        let a = HostId::new("a").unwrap();
        let keep = |stop, mark_running| Running::Keep { stop, mark_running };
        let missing = Err(StoreError::NotFound(SessionId::new("s").unwrap()));
        let cases = [
            (Ok(session(S::Running, "a")), false, keep(false, false)),
            (Ok(session(S::Stopping, "a")), false, keep(true, false)),
            (Ok(session(S::Starting, "a")), false, keep(false, true)),
            (Ok(session(S::Starting, "a")), true, keep(false, false)),
            (Ok(session(S::Running, "b")), false, Running::Stray),
            (Ok(session(S::Ended, "a")), false, Running::Stray),
            (Ok(session(S::Lost, "a")), false, Running::Stray),
            (missing.clone(), false, Running::Stray),
            (missing, true, Running::Launching),
            (
                Err(StoreError::Unavailable("down".into())),
                false,
                Running::Unknown,
            ),
        ];
        for (record, launching, want) in cases {
            assert_eq!(
                running(&record, &a, launching),
                want,
                "{record:?} {launching}"
            );
        }
    }

    #[test]
    fn a_vanished_game_ends_its_session_by_what_is_known() {
        use SessionStatus as S;
        let code = Some(ExitStatus::Code(2));
        assert_eq!(gone(S::Starting, code), SessionEvent::LaunchFailed);
        assert_eq!(gone(S::Stopping, None), SessionEvent::Stopped);
        assert_eq!(
            gone(S::Running, code),
            SessionEvent::Exited(ExitStatus::Code(2))
        );
        assert_eq!(gone(S::Running, None), SessionEvent::Vanished);
    }
}
