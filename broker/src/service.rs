//! The session service: what the API does, independent of HTTP.
//!
//! HTTP handlers decode a request, call one method here, and encode its answer. The service
//! owns no connection and no record: it asks the [`Registry`] for placement and agent links,
//! the [`Store`] for records, and agents (through their [`crate::agent_link::AgentLink`]) for
//! launches and stops. It also consumes the agents' own events ([`HostEvent`]) and sweeps
//! sessions of hosts that stayed away.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use protocol::api::{self, Session, SessionQuery, SessionStatus, StartSession};
use protocol::wire::{ExitStatus, LaunchFailure, LaunchRequest, RunningGame};
use protocol::{HostId, SessionId};
use time::OffsetDateTime;
use tokio::sync::{broadcast, mpsc};
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;

use crate::agent_link::{HostEvent, LaunchReply, LinkError};
use crate::error::ApiError;
use crate::placement::PlacementError;
use crate::registry::Registry;
use crate::session::{SessionEvent, TransitionError};
use crate::store::{Store, StoreError};

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
    /// Sessions whose start is in flight, with an exit that arrived before the start was
    /// recorded (a game that dies at once): applied right after, so no exit is lost.
    launching: Mutex<HashMap<SessionId, Option<ExitStatus>>>,
    changes: broadcast::Sender<SessionId>,
    idempotency: Mutex<HashMap<String, Keyed>>,
}

/// What an `Idempotency-Key` stands for.
#[derive(Debug)]
struct Keyed {
    request: StartSession,
    /// `None` while the first start with this key is in flight.
    session: Option<SessionId>,
    at: Instant,
}

/// How long an `Idempotency-Key` is remembered.
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);
/// Keys remembered at most; past that, a start with a new key is refused until old ones expire.
const MAX_IDEMPOTENCY_KEYS: usize = 100_000;
/// The longest `Idempotency-Key` accepted.
const MAX_KEY_LEN: usize = 255;

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
            changes: broadcast::channel(CHANGE_QUEUE).0,
            idempotency: Mutex::new(HashMap::new()),
        })
    }

    fn launching(&self) -> MutexGuard<'_, HashMap<SessionId, Option<ExitStatus>>> {
        self.launching.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies an event to a session's record; frees its slot when it is over.
    async fn record(&self, id: &SessionId, event: SessionEvent) -> Result<Session, StoreError> {
        let s = self
            .store
            .transition(id, &event, OffsetDateTime::now_utc())
            .await?;
        if s.status.is_terminal() {
            self.registry.release(&s.host_id, id);
        }
        tracing::debug!(session = %id, status = %s.status, ?event, "session changed");
        let _ = self.changes.send(id.clone());
        Ok(s)
    }

    /// Starts a game, at most once per `key`: a repeated key with the same request answers the
    /// first start's session (and `false`: not new) and starts nothing; with another request,
    /// 409. A start that failed forgets its key, so it can be retried.
    pub async fn start_idempotent(
        &self,
        req: StartSession,
        key: Option<String>,
    ) -> Result<(Session, bool), ApiError> {
        let Some(key) = key else {
            return Ok((self.start(req).await?, true));
        };
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Err(ApiError::BadRequest(format!(
                "Idempotency-Key must be 1 to {MAX_KEY_LEN} bytes"
            )));
        }
        let existing = {
            let mut keys = self.idempotency.lock().unwrap_or_else(|p| p.into_inner());
            keys.retain(|_, k| k.at.elapsed() < IDEMPOTENCY_TTL);
            match keys.get(&key) {
                Some(k) if k.request != req => {
                    return Err(ApiError::Conflict(
                        "this Idempotency-Key was used with a different request".into(),
                    ))
                }
                Some(k) => Some(k.session.clone()),
                None if keys.len() >= MAX_IDEMPOTENCY_KEYS => {
                    return Err(ApiError::Conflict(
                        "too many Idempotency-Keys remembered; retry later".into(),
                    ))
                }
                None => {
                    keys.insert(
                        key.clone(),
                        Keyed {
                            request: req.clone(),
                            session: None,
                            at: Instant::now(),
                        },
                    );
                    None
                }
            }
        };
        match existing {
            Some(Some(id)) => return Ok((self.store.get(&id).await?, false)),
            Some(None) => {
                return Err(ApiError::Conflict(
                    "a start with this Idempotency-Key is in progress; retry shortly".into(),
                ))
            }
            None => {}
        }
        let result = self.start(req).await;
        let mut keys = self.idempotency.lock().unwrap_or_else(|p| p.into_inner());
        match &result {
            Ok(s) => {
                if let Some(k) = keys.get_mut(&key) {
                    k.session = Some(s.session_id.clone());
                }
            }
            Err(_) => {
                keys.remove(&key);
            }
        }
        result.map(|s| (s, true))
    }

    /// Starts a game: places it, records it `starting`, asks the agent, and answers once the
    /// game runs (or why it does not).
    pub async fn start(&self, req: StartSession) -> Result<Session, ApiError> {
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
        if let Err(e) = self.store.insert(session).await {
            self.registry.release(&placed.host_id, &id);
            return Err(e.into());
        }
        self.launching().insert(id.clone(), None);
        let launch = LaunchRequest {
            session_id: id.clone(),
            game_id: req.game_id.clone(),
            mode: Some(placed.mode.clone()),
            config: req.config.clone(),
        };
        let host = &placed.host_id;
        let result = match timeout(self.settings.launch_timeout, placed.link.launch(launch)).await {
            Ok(Ok(LaunchReply::Launched(l))) => {
                let event = SessionEvent::Launched {
                    pid: l.pid,
                    ip: l.ip,
                    port: l.port,
                };
                match self.record(&id, event).await {
                    Ok(s) => Ok(s),
                    Err(StoreError::Transition(TransitionError::Final(_))) => {
                        // The host was declared lost meanwhile; its game must not run on.
                        placed.link.stop_nowait(id.clone());
                        Err(ApiError::HostUnavailable(format!(
                            "host {host} went away during the launch; retry"
                        )))
                    }
                    Err(e) => {
                        placed.link.stop_nowait(id.clone());
                        Err(e.into())
                    }
                }
            }
            Ok(Ok(LaunchReply::Failed { kind, message })) => {
                self.settle(&id, SessionEvent::LaunchFailed).await;
                Err(match kind {
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
                })
            }
            Ok(Err(LinkError::Closed)) => {
                self.settle(&id, SessionEvent::LaunchFailed).await;
                Err(ApiError::LaunchFailed(format!(
                    "host {host}'s agent disconnected during the launch; retry"
                )))
            }
            Err(_) => {
                self.settle(&id, SessionEvent::LaunchTimedOut).await;
                // Whatever the agent launched late must not run without a session.
                placed.link.stop_nowait(id.clone());
                Err(ApiError::LaunchTimeout(format!(
                    "host {host} did not confirm the launch within {:?}; nothing is left running",
                    self.settings.launch_timeout
                )))
            }
        };
        let early_exit = self.launching().remove(&id).flatten();
        match (result, early_exit) {
            (Ok(_), Some(status)) => {
                tracing::info!(session = %id, ?status, "game exited as it started");
                Ok(self.record(&id, SessionEvent::Exited(status)).await?)
            }
            (result, _) => result,
        }
    }

    /// Records a start's failure; a store fault is logged (the sweep settles it later).
    async fn settle(&self, id: &SessionId, event: SessionEvent) {
        if let Err(e) = self.record(id, event).await {
            tracing::warn!(session = %id, error = %e, "could not record the failed start");
        }
    }

    /// One session.
    pub async fn get(&self, id: &SessionId) -> Result<Session, ApiError> {
        Ok(self.store.get(id).await?)
    }

    /// Sessions, newest first.
    pub async fn list(&self, q: &SessionQuery) -> Result<Vec<Session>, ApiError> {
        Ok(self.store.list(q).await?)
    }

    /// Ends a session and answers once its game's processes are gone. Ending a session that
    /// is over answers its final state; a session still starting is ended once it runs.
    pub async fn end(&self, id: &SessionId) -> Result<Session, ApiError> {
        let mut s = self.store.get(id).await?;
        if s.status == SessionStatus::Starting {
            s = self
                .wait_while_starting(id, self.settings.launch_timeout + Duration::from_secs(1))
                .await?;
        }
        if s.status.is_terminal() {
            return Ok(s);
        }
        let s = match self.record(id, SessionEvent::StopRequested).await {
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
            Ok(Ok(())) => match self.record(id, SessionEvent::Stopped).await {
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
            let s = self.store.get(id).await?;
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
    pub async fn end_by_addr(&self, ip: &str, pid: &str) -> Result<Session, ApiError> {
        let not_found =
            || ApiError::NotFound(format!("no running session has IP {ip:?} and PID {pid:?}"));
        let ip: IpAddr = ip.trim().parse().map_err(|_| not_found())?;
        let pid: u32 = pid.trim().parse().map_err(|_| not_found())?;
        let s = self
            .store
            .find_active_by_addr(ip, pid)
            .await?
            .ok_or_else(not_found)?;
        self.end(&s.session_id).await
    }

    /// Every host.
    pub fn hosts(&self) -> Vec<api::Host> {
        self.registry.hosts()
    }

    /// Drains or resumes a host.
    pub fn set_draining(&self, host: &HostId, draining: bool) -> Result<api::Host, ApiError> {
        self.registry
            .set_draining(host, draining)
            .ok_or_else(|| ApiError::NotFound(format!("no host {host}")))
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
                HostEvent::Registered { host_id, running } => {
                    self.reconcile(&host_id, &running).await
                }
            }
        }
    }

    async fn on_exited(&self, host: &HostId, id: &SessionId, status: ExitStatus) {
        if let Some(slot) = self.launching().get_mut(id) {
            *slot = Some(status);
            return;
        }
        match self.record(id, SessionEvent::Exited(status)).await {
            Ok(s) => {
                tracing::info!(session = %id, %host, exit_code = ?s.exit_code, "game exited; session ended")
            }
            Err(e) => tracing::debug!(session = %id, %host, error = %e, "exit not applied"),
        }
    }

    /// Squares a (re)connected host's games with the records: games without a live session
    /// are stopped; sessions whose game is gone are ended.
    async fn reconcile(&self, host: &HostId, running: &[RunningGame]) {
        let Some(link) = self.registry.link(host) else {
            return;
        };
        for g in running {
            match self.store.get(&g.session_id).await {
                Ok(s) if !s.status.is_terminal() && &s.host_id == host => {
                    self.registry.hold(host, &s.session_id)
                }
                Ok(_) | Err(StoreError::NotFound(_)) => {
                    tracing::warn!(%host, session = %g.session_id, pid = g.pid, "host runs a game without a live session; stopping it");
                    link.stop_nowait(g.session_id.clone());
                }
                Err(e) => tracing::warn!(%host, error = %e, "cannot reconcile"),
            }
        }
        let active = match self.store.active_on_host(host).await {
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
            let event = match s.status {
                SessionStatus::Stopping => SessionEvent::Stopped,
                _ => SessionEvent::Exited(ExitStatus::Code(-1)),
            };
            tracing::info!(%host, session = %s.session_id, "game is gone from its host; ending the session");
            let _ = self.record(&s.session_id, event).await;
        }
    }

    /// Every so often, ends the sessions of hosts away longer than the heartbeat timeout.
    pub async fn run_sweeper(self: Arc<Self>, shutdown: CancellationToken) {
        let every = (self.settings.heartbeat_timeout / 4).max(Duration::from_millis(100));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            for host in self.registry.lost_hosts(self.settings.heartbeat_timeout) {
                let sessions = match self.store.active_on_host(&host).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(%host, error = %e, "sweep: cannot read sessions");
                        continue;
                    }
                };
                tracing::warn!(%host, sessions = sessions.len(), "host lost; its sessions are lost");
                for s in sessions {
                    if let Err(e) = self.record(&s.session_id, SessionEvent::HostLost).await {
                        tracing::debug!(session = %s.session_id, error = %e, "sweep: not applied");
                    }
                }
            }
        }
    }
}
