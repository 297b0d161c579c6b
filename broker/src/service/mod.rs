//! The session service: what the API does, independent of HTTP.
//!
//! HTTP handlers decode a request, call one method here, and encode its answer. The service
//! owns no connection and no record: it asks the [`Registry`] for placement and agent links,
//! the [`Store`] for records, and agents (through their [`crate::agent_link::AgentLink`]) for
//! launches and stops. It also consumes the agents' own events ([`HostEvent`]) and sweeps
//! sessions of hosts that stayed away.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use protocol::api::{self, Session, SessionQuery, SessionStatus, StartSession};
use protocol::wire::{ExitStatus, ExitedGame, LaunchFailure, LaunchRequest, RunningGame};
use protocol::{HostId, SessionId};
use time::OffsetDateTime;
use tokio::sync::{broadcast, mpsc};
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;

use crate::agent_link::{HostEvent, LaunchReply, LinkError};
use crate::error::ApiError;
use crate::placement::PlacementError;
use crate::registry::{Placed, Registry};
use crate::session::{Actor, SessionEvent, TransitionError};
use crate::store::{EventRecord, IdempotencyKey, Inserted, KeyMatch, Page, Store, StoreError};

/// The longest mode or config name accepted, in bytes.
const MAX_VALUE_LEN: usize = 255;
/// Session changes buffered for waiters; a waiter that falls behind re-reads the store.
const CHANGE_QUEUE: usize = 1024;

/// Timing of the service.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    /// A start not confirmed by then fails with 504.
    pub launch_timeout: Duration,
    /// A stop not confirmed by then fails (the agent bounds its own stop well below this).
    pub stop_timeout: Duration,
    /// A host away this long loses its sessions.
    pub heartbeat_timeout: Duration,
}

/// The session service.
#[derive(Debug)]
pub struct Service {
    store: Store,
    registry: Arc<Registry>,
    settings: ServiceSettings,
    /// Sessions whose start is in flight.
    launching: Mutex<HashMap<SessionId, Launching>>,
    /// Sessions with an end in flight; the sweep leaves them to it.
    ending: Mutex<HashSet<SessionId>>,
    changes: broadcast::Sender<SessionId>,
}

/// A launch answered within this is recorded with its outcome in one change (one commit with
/// MySQL); a slower one is first recorded `starting`, so it is listed while it launches. A
/// broker that dies in that window leaves a game without a record, which is stopped when its
/// host reconnects.
const RECORD_AT_ONCE: Duration = Duration::from_millis(50);

/// A start in flight.
#[derive(Debug)]
struct Launching {
    /// As created: what the session is, to readers, until its record exists (a start whose
    /// launch answers at once is recorded only then, see [`RECORD_AT_ONCE`]).
    session: Session,
    /// An exit that arrived before the start was recorded (a game that dies at once):
    /// applied right after, so no exit is lost.
    exit: Option<ExitStatus>,
}

/// An agent's answer to a launch, or the launch timeout.
type LaunchOutcome = Result<Result<LaunchReply, LinkError>, tokio::time::error::Elapsed>;

/// How often the sweep asks a host again to stop a game whose end was cut short.
const STOP_NUDGE_EVERY: Duration = Duration::from_secs(10);

/// Marks an end in flight for as long as it lives.
struct Ending<'a> {
    service: &'a Service,
    id: SessionId,
}

impl Drop for Ending<'_> {
    fn drop(&mut self) {
        self.service
            .ending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

/// The longest `Idempotency-Key` accepted.
const MAX_KEY_LEN: usize = 255;

fn key_conflict() -> ApiError {
    ApiError::Conflict("this Idempotency-Key was used with a different request".into())
}

fn check_value(what: &str, v: Option<&str>) -> Result<(), ApiError> {
    let Some(v) = v else { return Ok(()) };
    if v.is_empty() || v.len() > MAX_VALUE_LEN || v.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(format!(
            "{what} must be 1 to {MAX_VALUE_LEN} bytes without control characters"
        )));
    }
    Ok(())
}

impl Service {
    /// A service over `store` and `registry`.
    pub fn new(store: Store, registry: Arc<Registry>, settings: ServiceSettings) -> Arc<Self> {
        Arc::new(Self {
            store,
            registry,
            settings,
            launching: Mutex::new(HashMap::new()),
            ending: Mutex::new(HashSet::new()),
            changes: broadcast::channel(CHANGE_QUEUE).0,
        })
    }

    fn launching(&self) -> MutexGuard<'_, HashMap<SessionId, Launching>> {
        self.launching.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies an event to a session's record; frees its slot when it is over.
    async fn record(
        &self,
        id: &SessionId,
        event: SessionEvent,
        actor: Actor,
    ) -> Result<Session, StoreError> {
        let s = self
            .store
            .transition(id, &event, actor, OffsetDateTime::now_utc())
            .await?;
        self.changed(&s, &event);
        Ok(s)
    }

    /// What follows a recorded change: a session over gives its host's slot back, and waiters
    /// are told.
    fn changed(&self, s: &Session, event: &SessionEvent) {
        if s.status.is_terminal() {
            self.registry.release(&s.host_id, &s.session_id);
        }
        tracing::debug!(session = %s.session_id, status = %s.status, ?event, "session changed");
        let _ = self.changes.send(s.session_id.clone());
    }

    /// Starts a game, at most once per `key`: a repeated key with the same request answers the
    /// first start's session (and `false`: not new) and starts nothing, whatever the capacity
    /// now; with another request, 409. A key whose first start is still in flight answers once
    /// that start has settled. A start that failed forgets its key, so it can be retried.
    pub async fn start_idempotent(
        &self,
        req: StartSession,
        key: Option<String>,
        actor: Actor,
    ) -> Result<(Session, bool), ApiError> {
        let key = match key {
            Some(k) if k.is_empty() || k.len() > MAX_KEY_LEN => {
                return Err(ApiError::BadRequest(format!(
                    "Idempotency-Key must be 1 to {MAX_KEY_LEN} bytes"
                )))
            }
            Some(k) => Some(IdempotencyKey::new(k, &req)),
            None => None,
        };
        if let Some(k) = &key {
            match self.store.find_key(k).await? {
                Some(KeyMatch::Same(first)) => return Ok((self.settled(&first).await?, false)),
                Some(KeyMatch::Different) => return Err(key_conflict()),
                None => {}
            }
        }
        self.start(req, key.as_ref(), actor).await
    }

    /// A session once it is no longer `starting` (bounded by the launch timeout).
    async fn settled(&self, id: &SessionId) -> Result<Session, ApiError> {
        self.wait_while_starting(id, self.settings.launch_timeout + Duration::from_secs(1))
            .await
    }

    /// Starts a game: places it, records it `starting` while it asks the agent, and answers once the
    /// game runs (or why it does not).
    async fn start(
        &self,
        req: StartSession,
        key: Option<&IdempotencyKey>,
        actor: Actor,
    ) -> Result<(Session, bool), ApiError> {
        check_value("mode", req.mode.as_deref())?;
        check_value("config", req.config.as_deref())?;
        let id = SessionId::new(uuid::Uuid::now_v7().to_string())
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let placed = self
            .registry
            .place(&req.game_id, req.mode.as_deref(), &id)
            .map_err(|e| match e {
                PlacementError::UnknownGame => ApiError::UnknownGame(req.game_id.clone()),
                PlacementError::UnknownMode(modes) => ApiError::BadRequest(format!(
                    "unknown mode {:?} for game {}: it offers {}",
                    req.mode.as_deref().unwrap_or_default(),
                    req.game_id,
                    modes.join(", ")
                )),
                PlacementError::NoCapacity => ApiError::NoCapacity {
                    game: req.game_id.clone(),
                    retry_after_secs: 5,
                },
            })?;
        let session = crate::session::new_session(
            id.clone(),
            req.game_id.clone(),
            placed.mode.clone(),
            req.config.clone(),
            placed.host_id.clone(),
            OffsetDateTime::now_utc(),
        );
        // Before the record exists, so an exit racing the launch is never missed, and so a
        // host's reconcile never takes this session for one whose game vanished (or, before
        // its record exists, for a stray).
        self.launching().insert(
            id.clone(),
            Launching {
                session: session.clone(),
                exit: None,
            },
        );
        let launch = LaunchRequest {
            session_id: id.clone(),
            game_id: req.game_id.clone(),
            mode: Some(placed.mode.clone()),
            config: req.config.clone(),
        };
        let launch = timeout(self.settings.launch_timeout, placed.link.launch(launch));
        tokio::pin!(launch);
        // Most launches answer within a millisecond or two: then the session is recorded once,
        // with its outcome. A start under an Idempotency-Key is recorded first, so a
        // concurrent retry finds it.
        if key.is_none() {
            tokio::select! {
                reply = &mut launch => {
                    return self.launched_at_once(&session, &req, &placed, reply, actor).await;
                }
                () = tokio::time::sleep(RECORD_AT_ONCE) => {}
            }
        }
        // The `starting` record and the rest of the launch go together rather than one after
        // the other. A broker that dies in between leaves either a record whose game never
        // ran (settled when the host reconnects) or a game without a record (stopped then).
        let (inserted, reply) = tokio::join!(self.store.insert(&session, key, actor), launch);
        if !matches!(inserted, Ok(Inserted::New)) {
            self.launching().remove(&id);
            // Waiters on it (it was readable while in flight) learn it was never recorded.
            let _ = self.changes.send(id.clone());
            self.registry.release(&placed.host_id, &id);
            // No game may run without a session. (One launched late is stopped by the link.)
            if matches!(reply, Ok(Ok(LaunchReply::Launched(_)))) {
                placed.link.stop_nowait(id.clone());
            }
        }
        match inserted {
            Ok(Inserted::New) => {}
            // A concurrent request with the same key got there first.
            Ok(Inserted::Existing(first)) => return Ok((self.settled(&first).await?, false)),
            Ok(Inserted::KeyConflict) => return Err(key_conflict()),
            Err(e) => return Err(e.into()),
        }
        let result = self.launched(&id, &req, &placed, reply).await;
        if let (Err(_), Some(k)) = (&result, key) {
            if let Err(e) = self.store.forget_key(&k.key).await {
                tracing::warn!(error = %e, "could not forget the Idempotency-Key of a failed start");
            }
        }
        result
    }

    /// Records a session and its launch's outcome as one change (see [`RECORD_AT_ONCE`]).
    async fn launched_at_once(
        &self,
        session: &Session,
        req: &StartSession,
        placed: &Placed,
        reply: LaunchOutcome,
        actor: Actor,
    ) -> Result<(Session, bool), ApiError> {
        let id = &session.session_id;
        let (event, event_actor, failure) = self.launch_outcome(id, req, placed, reply);
        let recorded = self
            .store
            .insert_after(
                session,
                actor,
                &event,
                event_actor,
                OffsetDateTime::now_utc(),
            )
            .await;
        match &recorded {
            Ok(s) => self.changed(s, &event),
            // Never recorded: its slot is free again (a launched game is stopped below).
            Err(_) => self.registry.release(&placed.host_id, id),
        }
        self.settle_launch(&session.session_id, placed, failure, recorded)
            .await
    }

    /// Records the agent's answer to the launch of a recorded session.
    async fn launched(
        &self,
        id: &SessionId,
        req: &StartSession,
        placed: &Placed,
        reply: LaunchOutcome,
    ) -> Result<(Session, bool), ApiError> {
        let (event, actor, failure) = self.launch_outcome(id, req, placed, reply);
        let recorded = self.record(id, event, actor).await;
        self.settle_launch(id, placed, failure, recorded).await
    }

    /// What a launch's answer means: the event to record, by whom, and for a failed launch
    /// the error to answer. A launch that timed out is stopped: whatever the agent launched
    /// late must not run without a session.
    fn launch_outcome(
        &self,
        id: &SessionId,
        req: &StartSession,
        placed: &Placed,
        reply: LaunchOutcome,
    ) -> (SessionEvent, Actor, Option<ApiError>) {
        let host = &placed.host_id;
        match reply {
            Ok(Ok(LaunchReply::Launched(l))) => {
                let event = SessionEvent::Launched {
                    pid: l.pid,
                    ip: l.ip,
                    port: l.port,
                };
                (event, Actor::Agent, None)
            }
            Ok(Ok(LaunchReply::Failed { kind, message })) => {
                let error = match kind {
                    LaunchFailure::BadRequest => ApiError::BadRequest(message),
                    LaunchFailure::NoCapacity => ApiError::NoCapacity {
                        game: req.game_id.clone(),
                        retry_after_secs: 5,
                    },
                    LaunchFailure::UnknownGame | LaunchFailure::SpawnFailed => {
                        ApiError::LaunchFailed(format!(
                            "host {host} could not start the game: {message}"
                        ))
                    }
                };
                (SessionEvent::LaunchFailed, Actor::Agent, Some(error))
            }
            Ok(Err(LinkError::Closed)) => {
                let error = ApiError::LaunchFailed(format!(
                    "host {host}'s agent disconnected during the launch; retry"
                ));
                (SessionEvent::LaunchFailed, Actor::Agent, Some(error))
            }
            Err(_) => {
                placed.link.stop_nowait(id.clone());
                let error = ApiError::LaunchTimeout(format!(
                    "host {host} did not confirm the launch within {:?}; nothing is left running",
                    self.settings.launch_timeout
                ));
                (SessionEvent::LaunchTimedOut, Actor::Sweep, Some(error))
            }
        }
    }

    /// Answers a start once its outcome is recorded (or could not be): a failed launch answers
    /// its error; a launched game whose record failed is stopped; an exit that arrived during
    /// the launch is recorded now.
    async fn settle_launch(
        &self,
        id: &SessionId,
        placed: &Placed,
        failure: Option<ApiError>,
        recorded: Result<Session, StoreError>,
    ) -> Result<(Session, bool), ApiError> {
        let id = id.clone();
        let host = &placed.host_id;
        let result = match (failure, recorded) {
            (Some(error), recorded) => {
                if let Err(e) = recorded {
                    // A `starting` record is settled by the sweep later.
                    tracing::warn!(session = %id, error = %e, "could not record the failed start");
                }
                Err(error)
            }
            (None, Ok(s)) => Ok(s),
            (None, Err(StoreError::Transition(TransitionError::Final(_)))) => {
                // The host was declared lost meanwhile; its game must not run on.
                placed.link.stop_nowait(id.clone());
                Err(ApiError::HostUnavailable(format!(
                    "host {host} went away during the launch; retry"
                )))
            }
            (None, Err(e)) => {
                placed.link.stop_nowait(id.clone());
                Err(e.into())
            }
        };
        let early_exit = self.launching().remove(&id).and_then(|l| l.exit);
        // Waiters on a start never recorded learn so now.
        let _ = self.changes.send(id.clone());
        let session = match (result, early_exit) {
            (Ok(_), Some(status)) => {
                tracing::info!(session = %id, ?status, "game exited as it started");
                self.record(&id, SessionEvent::Exited(status), Actor::GameExit)
                    .await?
            }
            (result, _) => result?,
        };
        Ok((session, true))
    }

    /// One session.
    pub async fn get(&self, id: &SessionId) -> Result<Session, ApiError> {
        Ok(self.session(id).await?)
    }

    /// A session as recorded, or as created while its start is in flight and not yet
    /// recorded.
    async fn session(&self, id: &SessionId) -> Result<Session, StoreError> {
        match self.store.get(id).await {
            Err(StoreError::NotFound(id)) => match self.launching().get(&id) {
                Some(l) => Ok(l.session.clone()),
                None => Err(StoreError::NotFound(id)),
            },
            other => other,
        }
    }

    /// Sessions, newest first, one page.
    pub async fn list(&self, q: &SessionQuery) -> Result<Page, ApiError> {
        Ok(self.store.list(q).await?)
    }

    /// A session's history, oldest first.
    pub async fn events(&self, id: &SessionId) -> Result<Vec<EventRecord>, ApiError> {
        Ok(self.store.events(id).await?)
    }

    /// Ends a session and answers once its game's processes are gone. Ending a session that
    /// is over answers its final state; a session still starting is ended once it runs.
    pub async fn end(&self, id: &SessionId, actor: Actor) -> Result<Session, ApiError> {
        let mut s = self.session(id).await?;
        if s.status == SessionStatus::Starting {
            s = self
                .wait_while_starting(id, self.settings.launch_timeout + Duration::from_secs(1))
                .await?;
        }
        if s.status.is_terminal() {
            return Ok(s);
        }
        self.ending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone());
        let _ending = Ending {
            service: self,
            id: id.clone(),
        };
        let s = match self.record(id, SessionEvent::StopRequested, actor).await {
            Ok(s) => s,
            Err(StoreError::Transition(_)) => return Ok(self.store.get(id).await?),
            Err(e) => return Err(e.into()),
        };
        let host = &s.host_id;
        let link = self.registry.link(host).ok_or_else(|| {
            ApiError::HostUnavailable(format!(
                "host {host} is offline; the session is stopping and ends when its host comes back or is declared lost"
            ))
        })?;
        match timeout(self.settings.stop_timeout, link.stop(id.clone())).await {
            Ok(Ok(())) => match self.record(id, SessionEvent::Stopped, Actor::Agent).await {
                Ok(s) => Ok(s),
                // Ended otherwise meanwhile (the game exited, a concurrent end): the final
                // state is the answer.
                Err(StoreError::Transition(_)) => Ok(self.store.get(id).await?),
                Err(e) => Err(e.into()),
            },
            Ok(Err(LinkError::Closed)) => Err(ApiError::HostUnavailable(format!(
                "host {host}'s agent disconnected while stopping the game; retry"
            ))),
            Err(_) => Err(ApiError::HostUnavailable(format!(
                "host {host} did not confirm the stop within {:?}; retry",
                self.settings.stop_timeout
            ))),
        }
    }

    async fn wait_while_starting(
        &self,
        id: &SessionId,
        within: Duration,
    ) -> Result<Session, ApiError> {
        let deadline = Instant::now() + within;
        let mut changes = self.changes.subscribe();
        loop {
            let s = self.session(id).await?;
            if s.status != SessionStatus::Starting {
                return Ok(s);
            }
            match tokio::time::timeout_at(deadline, changes.recv()).await {
                Err(_) => return Ok(s),
                Ok(Ok(_) | Err(broadcast::error::RecvError::Lagged(_))) => {}
                Ok(Err(broadcast::error::RecvError::Closed)) => return Ok(s),
            }
        }
    }

    /// Ends the running session whose game is at `ip` with `pid` (the original portal's
    /// `/End`).
    pub async fn end_by_addr(
        &self,
        ip: &str,
        pid: &str,
        actor: Actor,
    ) -> Result<Session, ApiError> {
        let not_found =
            || ApiError::NotFound(format!("no running session has IP {ip:?} and PID {pid:?}"));
        let ip: IpAddr = ip.trim().parse().map_err(|_| not_found())?;
        let pid: u32 = pid.trim().parse().map_err(|_| not_found())?;
        let s = self
            .store
            .find_active_by_addr(ip, pid)
            .await?
            .ok_or_else(not_found)?;
        self.end(&s.session_id, actor).await
    }

    /// Every host.
    pub fn hosts(&self) -> Vec<api::Host> {
        self.registry.hosts()
    }

    /// Drains or resumes a host; the flag is recorded, so it survives restarts.
    pub async fn set_draining(&self, host: &HostId, draining: bool) -> Result<api::Host, ApiError> {
        if !self.registry.knows(host) {
            return Err(ApiError::NotFound(format!("no host {host}")));
        }
        self.store
            .set_drained(host, draining, OffsetDateTime::now_utc())
            .await?;
        self.registry
            .set_draining(host, draining)
            .ok_or_else(|| ApiError::NotFound(format!("no host {host}")))
    }

    /// Loads what the store knows at start: hosts (offline until they reconnect, with their
    /// drained flag) and the slots of sessions not over. Hosts that do not come back within the
    /// heartbeat timeout lose their sessions, through the sweep.
    pub async fn restore(&self) -> Result<(), StoreError> {
        let hosts = self.store.hosts().await?;
        let active = self.store.active(None).await?;
        for h in &hosts {
            self.registry
                .restore(&h.host_id, h.facts.as_ref(), h.drained);
        }
        for s in &active {
            self.registry.restore(&s.host_id, None, false);
            self.registry.hold(&s.host_id, &s.session_id);
        }
        if !hosts.is_empty() || !active.is_empty() {
            tracing::info!(
                hosts = hosts.len(),
                sessions = active.len(),
                "restored from the store; waiting for hosts to reconnect"
            );
        }
        Ok(())
    }

    /// The games on offer.
    pub fn games(&self) -> Vec<api::Game> {
        self.registry.games()
    }

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
                    .record(&session_id, SessionEvent::Stopped, Actor::Agent)
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
                } => {
                    if let Err(e) = self
                        .store
                        .save_host(&host_id, &facts, OffsetDateTime::now_utc())
                        .await
                    {
                        tracing::warn!(host = %host_id, error = %e, "cannot record the host");
                    }
                    self.reconcile(&host_id, &running, &exited).await;
                    self.registry.mark_ready(&host_id);
                }
            }
        }
    }

    async fn on_exited(&self, host: &HostId, id: &SessionId, status: ExitStatus) {
        if let Some(l) = self.launching().get_mut(id) {
            l.exit = Some(status);
            return;
        }
        match self
            .record(id, SessionEvent::Exited(status), Actor::GameExit)
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
    async fn reconcile(&self, host: &HostId, running: &[RunningGame], exited: &[ExitedGame]) {
        let Some(link) = self.registry.link(host) else {
            return;
        };
        let ip = self.registry.ip(host);
        for g in running {
            match self.store.get(&g.session_id).await {
                Ok(s) if !s.status.is_terminal() && &s.host_id == host => {
                    self.registry.hold(host, &s.session_id);
                    if s.status == SessionStatus::Stopping {
                        // Its end was cut short: finish it; the answer is recorded on arrival.
                        link.stop_nowait(s.session_id.clone());
                    }
                    let in_flight = self.launching().contains_key(&s.session_id);
                    if s.status == SessionStatus::Starting && !in_flight {
                        if let Some(ip) = ip {
                            let event = SessionEvent::Launched {
                                pid: g.pid,
                                ip,
                                port: g.port,
                            };
                            let _ = self.record(&s.session_id, event, Actor::Recovery).await;
                        }
                    }
                }
                // Its start is in flight: the record may not be committed yet.
                Err(StoreError::NotFound(_)) if self.launching().contains_key(&g.session_id) => {}
                Ok(_) | Err(StoreError::NotFound(_)) => {
                    tracing::warn!(%host, session = %g.session_id, pid = g.pid, "host runs a game without a live session; stopping it");
                    link.stop_nowait(g.session_id.clone());
                }
                Err(e) => tracing::warn!(%host, error = %e, "cannot reconcile"),
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
            let listed = running.iter().any(|g| g.session_id == s.session_id);
            let in_flight = self.launching().contains_key(&s.session_id);
            if listed || in_flight {
                continue;
            }
            let known_exit = exited.iter().find(|e| e.session_id == s.session_id);
            let event = match (s.status, known_exit) {
                (SessionStatus::Starting, _) => SessionEvent::LaunchFailed,
                (SessionStatus::Stopping, _) => SessionEvent::Stopped,
                (_, Some(e)) => SessionEvent::Exited(e.status),
                (_, None) => SessionEvent::Vanished,
            };
            tracing::info!(%host, session = %s.session_id, ?event, "game is gone from its host; settling the session");
            let _ = self.record(&s.session_id, event, Actor::Recovery).await;
        }
    }

    /// Settles sessions whose start or end was cut short (a broker restart, an agent that
    /// disconnected mid-stop, an end that timed out):
    /// - `starting` past the launch timeout with no start in flight: failed, and whatever their
    ///   host might have launched is stopped;
    /// - `stopping` with no end in flight: their host is asked again to stop the game (every
    ///   [`STOP_NUDGE_EVERY`] at most); its answer ends the session.
    async fn settle_stale(&self, nudged: &mut HashMap<SessionId, Instant>) {
        let Ok(active) = self.store.active(None).await else {
            return;
        };
        nudged.retain(|id, _| active.iter().any(|s| &s.session_id == id));
        for s in active
            .iter()
            .filter(|s| s.status == SessionStatus::Stopping)
        {
            let in_flight = self
                .ending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&s.session_id);
            let recently = nudged
                .get(&s.session_id)
                .is_some_and(|at| at.elapsed() < STOP_NUDGE_EVERY);
            if in_flight || recently {
                continue;
            }
            if let Some(link) = self.registry.link(&s.host_id) {
                tracing::info!(session = %s.session_id, host = %s.host_id, "finishing a cut-short end");
                link.stop_nowait(s.session_id.clone());
                nudged.insert(s.session_id.clone(), Instant::now());
            }
        }
        let limit = self.settings.launch_timeout + Duration::from_secs(5);
        let now = OffsetDateTime::now_utc();
        for s in active {
            let stale = s.status == SessionStatus::Starting
                && now - s.created_at > limit
                && !self.launching().contains_key(&s.session_id);
            if !stale {
                continue;
            }
            tracing::warn!(session = %s.session_id, host = %s.host_id, "start never settled; failing it");
            if self
                .record(&s.session_id, SessionEvent::LaunchTimedOut, Actor::Sweep)
                .await
                .is_ok()
            {
                if let Some(link) = self.registry.link(&s.host_id) {
                    link.stop_nowait(s.session_id.clone());
                }
            }
        }
    }

    /// Every so often, ends the sessions of hosts away longer than the heartbeat timeout.
    pub async fn run_sweeper(self: Arc<Self>, shutdown: CancellationToken) {
        let every = (self.settings.heartbeat_timeout / 4).max(Duration::from_millis(100));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut nudged = HashMap::new();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.settle_stale(&mut nudged).await;
            for host in self.registry.lost_hosts(self.settings.heartbeat_timeout) {
                let sessions = match self.store.active(Some(&host)).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(%host, error = %e, "sweep: cannot read sessions");
                        continue;
                    }
                };
                tracing::warn!(%host, sessions = sessions.len(), "host lost; its sessions are lost");
                for s in sessions {
                    if let Err(e) = self
                        .record(&s.session_id, SessionEvent::HostLost, Actor::HostLost)
                        .await
                    {
                        tracing::debug!(session = %s.session_id, error = %e, "sweep: not applied");
                    }
                }
            }
        }
    }
}
