//! Starting a game: validate, place, launch, record, answer — at most once per
//! `Idempotency-Key`.
//!
//! A start answers once the game runs, or why it does not. Its slot is reserved at placement
//! and given back exactly when the start fails or the session ends. No game runs without a
//! session: a launch that times out, or whose record fails, is stopped.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use protocol::api::{Session, StartSession, MAX_DURATION_S};
use protocol::settings::SettingError;
use protocol::wire::{GameOffer, LaunchFailure, LaunchRequest, MAX_READY_TIMEOUT_SECS};
use protocol::{GameId, HostId, PoolId, SessionId};
use time::OffsetDateTime;
use tokio::time::timeout;
use tracing::Instrument;

use super::Service;
use crate::agents::{LaunchReply, LinkError, Placed};
use crate::error::{self, Error, Unreachable};
use crate::placement::PlacementError;
use crate::session::{Actor, SessionEvent, TransitionError};
use crate::store::{IdempotencyKey, Inserted, KeyMatch, StoreError};

/// The longest mode or config name accepted, in bytes.
const MAX_VALUE_LEN: usize = 255;
/// The longest `Idempotency-Key` accepted.
const MAX_KEY_LEN: usize = 255;
/// Seconds a caller is told to wait when no host has room.
const NO_CAPACITY_RETRY_SECS: u32 = 5;

/// A launch answered within this is recorded with its outcome in one change (one commit with
/// MySQL); a slower one is first recorded `starting`, so it is listed while it launches. A
/// broker that dies in that window leaves a game without a record, which is stopped when its
/// host reconnects.
const RECORD_AT_ONCE: Duration = Duration::from_millis(50);

/// An agent's answer to a launch, or the launch timeout.
type LaunchOutcome = Result<Result<LaunchReply, LinkError>, tokio::time::error::Elapsed>;

/// A mode or config value: 1 to [`MAX_VALUE_LEN`] bytes, no control characters.
pub(super) fn check_value(what: &str, v: Option<&str>) -> Result<(), Error> {
    let Some(v) = v else { return Ok(()) };
    if v.is_empty() || v.len() > MAX_VALUE_LEN || v.chars().any(char::is_control) {
        return Err(Error::Invalid(format!(
            "{what} must be 1 to {MAX_VALUE_LEN} bytes without control characters"
        )));
    }
    Ok(())
}

/// How long a game's readiness check may take, as offered (none: no check).
fn ready_timeout(offer: Option<&GameOffer>) -> Duration {
    Duration::from_millis(u64::from(
        offer.and_then(|o| o.ready_timeout_ms).unwrap_or(0),
    ))
}

/// A start's `max_duration_s`, if any, must be 1 to [`MAX_DURATION_S`].
fn check_max_duration(v: Option<u32>) -> Result<(), Error> {
    match v {
        Some(d) if !(1..=MAX_DURATION_S).contains(&d) => Err(Error::Invalid(format!(
            "max_duration_s must be 1 to {MAX_DURATION_S} seconds"
        ))),
        _ => Ok(()),
    }
}

/// A new session's id: a UUIDv7, so ids sort by creation.
fn new_id() -> Result<SessionId, Error> {
    SessionId::new(uuid::Uuid::now_v7().to_string()).map_err(|e| Error::Internal(e.to_string()))
}

/// An `Idempotency-Key`, bound to the request it came with.
fn idempotency_key(
    key: Option<String>,
    req: &StartSession,
) -> Result<Option<IdempotencyKey>, Error> {
    match key {
        Some(k) if k.is_empty() || k.len() > MAX_KEY_LEN => Err(Error::Invalid(format!(
            "Idempotency-Key must be 1 to {MAX_KEY_LEN} bytes"
        ))),
        Some(k) => Ok(Some(IdempotencyKey::new(k, req))),
        None => Ok(None),
    }
}

impl Service {
    /// Why placement found no host, in the caller's terms. A game no connected host offers
    /// is unknown (404) only while some host is connected and none has ever offered it: a
    /// game whose hosts are all away, or any game while no host is there at all (a broker
    /// just started), may be playable shortly (503 with `Retry-After`).
    pub(super) async fn placement_failed(
        &self,
        e: PlacementError,
        req: &StartSession,
        any_connected: bool,
    ) -> Error {
        if e != PlacementError::UnknownGame {
            return placement_error(e, req);
        }
        let unavailable = placement_error(PlacementError::NoCapacity, req);
        if !any_connected {
            return unavailable;
        }
        match self.store.is_known_game(&req.game_id).await {
            Ok(true) => unavailable,
            Ok(false) => placement_error(e, req),
            Err(e) => e.into(),
        }
    }
}

/// Why placement found no host, in the caller's terms.
pub(super) fn placement_error(e: PlacementError, req: &StartSession) -> Error {
    match e {
        PlacementError::UnknownGame => Error::UnknownGame(req.game_id.clone()),
        PlacementError::UnknownMode(offered) => Error::UnknownMode {
            game: req.game_id.clone(),
            mode: req.mode.clone().unwrap_or_default(),
            offered,
        },
        PlacementError::NoCapacity => Error::NoCapacity {
            game: req.game_id.clone(),
            retry_after_secs: NO_CAPACITY_RETRY_SECS,
        },
    }
}

/// What a launch's answer means: the event to record, by whom, and for a failed launch the
/// error to answer.
fn launch_outcome(
    reply: LaunchOutcome,
    req: &StartSession,
    placed: &Placed,
    launch_timeout: Duration,
) -> (SessionEvent, Actor, Option<Error>) {
    let host = &placed.host_id;
    match reply {
        Ok(Ok(LaunchReply::Launched(l))) => {
            let ports = if l.ports.is_empty() {
                vec![l.port]
            } else {
                l.ports
            };
            let event = SessionEvent::Launched {
                pid: l.pid,
                ip: l.ip,
                port: l.port,
                ports,
            };
            (event, Actor::Agent, None)
        }
        Ok(Ok(LaunchReply::Failed { kind, message })) => {
            let error = match kind {
                LaunchFailure::BadRequest => Error::Refused(message),
                LaunchFailure::NoCapacity => Error::NoCapacity {
                    game: req.game_id.clone(),
                    retry_after_secs: NO_CAPACITY_RETRY_SECS,
                },
                LaunchFailure::UnknownGame
                | LaunchFailure::SpawnFailed
                | LaunchFailure::ExitedBeforeReady => Error::LaunchFailed {
                    host: host.clone(),
                    why: error::LaunchFailure::Agent(message),
                },
                LaunchFailure::NotReady => {
                    let error = Error::GameNotReady {
                        host: host.clone(),
                        why: message,
                    };
                    return (SessionEvent::LaunchTimedOut, Actor::Agent, Some(error));
                }
            };
            (SessionEvent::LaunchFailed, Actor::Agent, Some(error))
        }
        Ok(Err(LinkError::Closed)) => {
            let error = Error::LaunchFailed {
                host: host.clone(),
                why: error::LaunchFailure::Disconnected,
            };
            (SessionEvent::LaunchFailed, Actor::Agent, Some(error))
        }
        Err(_) => {
            let error = Error::LaunchTimeout {
                host: host.clone(),
                after: launch_timeout,
            };
            (SessionEvent::LaunchTimedOut, Actor::Sweep, Some(error))
        }
    }
}

impl Service {
    /// How long a launch of `game` on `host` may take to be answered: the launch timeout,
    /// plus the game's readiness timeout on that host, if it has a check.
    pub(super) fn launch_deadline(&self, host: &HostId, game: &GameId) -> Duration {
        self.settings.launch_timeout + ready_timeout(self.registry.offer(host, game).as_ref())
    }

    /// How `host` offers `game`, wherever its agent is: here, or (for another replica's host)
    /// in the replicas' shared view.
    pub(super) async fn offer_anywhere(&self, host: &HostId, game: &GameId) -> Option<GameOffer> {
        match self.registry.offer(host, game) {
            Some(o) => Some(o),
            None if self.replicas.is_some() => self.shared_offer(host, game).await,
            None => None,
        }
    }

    /// The limit of a session of `req` placed on `host`: the smaller of the start's and the
    /// game's `max_duration_s` there. A pool's game takes its claimer's limit when claimed.
    pub(super) async fn max_duration(&self, host: &HostId, req: &StartSession) -> Option<u32> {
        let offered = self
            .offer_anywhere(host, &req.game_id)
            .await
            .and_then(|o| o.max_duration_s);
        crate::session::shorter_limit(offered, req.max_duration_s)
    }

    /// The settings a session of `game` runs with: `requested`, checked against what the
    /// game's hosts offer (a refusal names the key), and the game's defaults. While no host
    /// offers the game, the requested ones if they could be written at all: placement then
    /// says why the game cannot start.
    pub(super) async fn settings_for(
        &self,
        game: &GameId,
        requested: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, Error> {
        let offers = match &self.replicas {
            None => self.registry.game_settings(game),
            Some(_) => self.shared_game_settings(game).await?,
        };
        let checked = match offers {
            Some(offers) => protocol::settings::apply(&offers, requested),
            None => match requested
                .iter()
                .find(|(k, v)| !protocol::settings::is_text(k) || !protocol::settings::is_text(v))
            {
                Some((k, _)) => Err(SettingError::BadText { key: k.clone() }),
                None => Ok(requested.clone()),
            },
        };
        checked.map_err(|e| Error::Invalid(e.to_string()))
    }

    /// [`Self::launch_deadline`] for a host wherever its agent is: as the host offers the
    /// game here or, for another replica's host, in the replicas' shared view;
    /// [`Self::longest_launch`] when neither knows the host.
    pub(super) async fn launch_deadline_anywhere(&self, host: &HostId, game: &GameId) -> Duration {
        match self.offer_anywhere(host, game).await {
            Some(o) => self.settings.launch_timeout + ready_timeout(Some(&o)),
            None => self.longest_launch(),
        }
    }

    /// The longest any launch may take, for waits that do not know the game or its host.
    pub(super) fn longest_launch(&self) -> Duration {
        self.settings.launch_timeout + Duration::from_secs(u64::from(MAX_READY_TIMEOUT_SECS))
    }

    /// Starts a game, at most once per `key`: a repeated key with the same request answers the
    /// first start's session (and `false`: not new) and starts nothing, whatever the capacity
    /// now; with another request, [`Error::KeyReused`]. A key whose first start is still in
    /// flight answers once that start has settled. A start that failed forgets its key, so it
    /// can be retried. The start runs to completion even if the caller goes away.
    pub async fn start(
        self: &Arc<Self>,
        req: StartSession,
        key: Option<String>,
        actor: Actor,
    ) -> Result<(Session, bool), Error> {
        let span = tracing::info_span!(
            "start",
            game = %req.game_id,
            session = tracing::field::Empty,
            host = tracing::field::Empty,
        );
        let t0 = std::time::Instant::now();
        let result = self
            .detached(move |svc| {
                async move { svc.start_once(req, key, actor).await }.instrument(span)
            })
            .await;
        let outcome = match &result {
            Ok((_, true)) => "started",
            Ok((_, false)) => "existing",
            Err(e) => e.kind(),
        };
        self.metrics.started(outcome, t0.elapsed());
        result
    }

    /// Launches the game of a session claimed on a host whose agent is connected here, and
    /// records the outcome (a start through another replica ends here, on the host's owner).
    pub(super) async fn launch_here(
        &self,
        session: &Session,
        req: &StartSession,
    ) -> Result<Session, Error> {
        let id = &session.session_id;
        let Some(link) = self.registry.link(&session.host_id) else {
            // Nothing ran: the claim's record fails, and the caller may retry.
            let _ = self
                .record(id, SessionEvent::LaunchFailed, Actor::Sweep)
                .await;
            return Err(Error::HostUnavailable {
                host: session.host_id.clone(),
                why: Unreachable::Moved,
            });
        };
        let placed = Placed {
            host_id: session.host_id.clone(),
            mode: session.mode.clone(),
            link,
        };
        let _in_flight = self.inflight.launch_begins(session.clone());
        let launch = LaunchRequest {
            session_id: id.clone(),
            game_id: req.game_id.clone(),
            mode: Some(session.mode.clone()),
            config: req.config.clone(),
            settings: session.settings.clone(),
        };
        let deadline = self.launch_deadline(&placed.host_id, &req.game_id);
        let reply = timeout(deadline, placed.link.launch(launch)).await;
        self.launched(session, req, &placed, reply)
            .await
            .map(|(s, _)| s)
    }

    async fn start_once(
        &self,
        mut req: StartSession,
        key: Option<String>,
        actor: Actor,
    ) -> Result<(Session, bool), Error> {
        let key = idempotency_key(key, &req)?;
        if let Some(k) = &key {
            match self.store.find_key(k).await? {
                Some(KeyMatch::Same(first)) => {
                    tracing::Span::current().record("session", tracing::field::display(&first));
                    return Ok((self.settled(&first).await?, false));
                }
                Some(KeyMatch::Different) => return Err(Error::KeyReused),
                None => {}
            }
        }
        check_value("mode", req.mode.as_deref())?;
        check_value("config", req.config.as_deref())?;
        check_max_duration(req.max_duration_s)?;
        super::quota::check_user(req.user_id.as_deref())?;
        let requested = std::mem::take(&mut req.settings);
        // From here on, the settings the session runs with: those asked for and the defaults.
        req.settings = self.settings_for(&req.game_id, &requested).await?;
        let id = new_id()?;
        // Held until the start's outcome is recorded.
        let _ticket = self.take_ticket(req.user_id.as_deref(), &id).await?;
        // A pool is a shortcut: when it cannot be read or claimed from, the start goes cold
        // (and meets the store's trouble, if any, in its own record).
        match self.claim_from_pool(&req, key.as_ref(), actor).await {
            Ok(Some(claimed)) => return Ok(claimed),
            Ok(None) => {}
            Err(e @ (Error::KeyReused | Error::QuotaExceeded { .. })) => return Err(e),
            Err(e) => tracing::warn!(error = %e, "cannot claim from a pool; starting cold"),
        }
        self.start_new(id, req, key.as_ref(), actor, None).await
    }

    /// Launches a game for `pool`: its session, `ready` once launched (and ready, with a
    /// readiness check), waits for a player's start to claim it.
    pub(super) async fn launch_for_pool(
        &self,
        pool: &PoolId,
        mut req: StartSession,
    ) -> Result<Session, Error> {
        req.settings = self.settings_for(&req.game_id, &req.settings).await?;
        let span = tracing::info_span!(
            "pool launch",
            %pool,
            game = %req.game_id,
            session = tracing::field::Empty,
            host = tracing::field::Empty,
        );
        self.start_new(new_id()?, req, None, Actor::Pool, Some(pool))
            .instrument(span)
            .await
            .map(|(s, _)| s)
    }

    /// A session once it is no longer `starting` (bounded by the launch timeout).
    pub(super) async fn settled(&self, id: &SessionId) -> Result<Session, Error> {
        self.wait_while_starting(id, self.longest_launch() + Duration::from_secs(1))
            .await
    }

    /// Places a new session (of `pool`, when given), launches its game, records it, and
    /// answers once the game runs (or why it does not).
    async fn start_new(
        &self,
        id: SessionId,
        req: StartSession,
        key: Option<&IdempotencyKey>,
        actor: Actor,
        pool: Option<&PoolId>,
    ) -> Result<(Session, bool), Error> {
        if self.replicas.is_some() {
            return self.start_claimed(id, req, key, actor, pool).await;
        }
        let placed = match self.registry.place(&req.game_id, req.mode.as_deref(), &id) {
            Ok(p) => p,
            Err(e) => {
                let any = self.registry.any_connected();
                return Err(self.placement_failed(e, &req, any).await);
            }
        };
        let span = tracing::Span::current();
        span.record("session", tracing::field::display(&id));
        span.record("host", tracing::field::display(&placed.host_id));
        let mut session = crate::session::new_session(
            id.clone(),
            req.game_id.clone(),
            placed.mode.clone(),
            req.config.clone(),
            placed.host_id.clone(),
            OffsetDateTime::now_utc(),
        );
        session.pool_id = pool.cloned();
        session.settings.clone_from(&req.settings);
        session.user_id.clone_from(&req.user_id);
        session.max_duration_s = self.max_duration(&placed.host_id, &req).await;
        // Before the record exists, so an exit racing the launch is never missed, and so a
        // host's reconcile never takes this session for one whose game vanished (or, before
        // its record exists, for a stray).
        let _in_flight = self.inflight.launch_begins(session.clone());
        let launch = LaunchRequest {
            session_id: id.clone(),
            game_id: req.game_id.clone(),
            mode: Some(placed.mode.clone()),
            config: req.config.clone(),
            settings: session.settings.clone(),
        };
        let deadline = self.launch_deadline(&placed.host_id, &req.game_id);
        let launch = timeout(deadline, placed.link.launch(launch));
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
            self.inflight.launch_done(&id);
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
            Ok(Inserted::KeyConflict) => return Err(Error::KeyReused),
            Err(e) => return Err(e.into()),
        }
        let result = self.launched(&session, &req, &placed, reply).await;
        if let (Err(_), Some(k)) = (&result, key) {
            if let Err(e) = self.store.forget_key(&k.key).await {
                tracing::warn!(error = %e, "could not forget the Idempotency-Key of a failed start");
            }
        }
        result
    }

    /// What a launch's answer means, and for one that timed out, the stop of whatever the
    /// agent launched late: it must not run without a session.
    fn outcome(
        &self,
        session: &Session,
        req: &StartSession,
        placed: &Placed,
        reply: LaunchOutcome,
    ) -> (SessionEvent, Actor, Option<Error>) {
        let deadline = self.launch_deadline(&placed.host_id, &req.game_id);
        let (event, actor, error) = launch_outcome(reply, req, placed, deadline);
        let event = match event {
            SessionEvent::LaunchTimedOut => {
                placed.link.stop_nowait(session.session_id.clone());
                SessionEvent::LaunchTimedOut
            }
            // A pool's game waits for a player.
            SessionEvent::Launched {
                pid,
                ip,
                port,
                ports,
            } if session.pool_id.is_some() => SessionEvent::Readied {
                pid,
                ip,
                port,
                ports,
            },
            other => other,
        };
        (event, actor, error)
    }

    /// Records a session and its launch's outcome as one change (see [`RECORD_AT_ONCE`]).
    async fn launched_at_once(
        &self,
        session: &Session,
        req: &StartSession,
        placed: &Placed,
        reply: LaunchOutcome,
        actor: Actor,
    ) -> Result<(Session, bool), Error> {
        let id = &session.session_id;
        let (event, event_actor, failure) = self.outcome(session, req, placed, reply);
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
        self.settle_launch(id, placed, failure, recorded).await
    }

    /// Records the agent's answer to the launch of a recorded session.
    async fn launched(
        &self,
        session: &Session,
        req: &StartSession,
        placed: &Placed,
        reply: LaunchOutcome,
    ) -> Result<(Session, bool), Error> {
        let id = &session.session_id;
        let (event, actor, failure) = self.outcome(session, req, placed, reply);
        let recorded = self
            .record_as_owner(&placed.host_id, id, event, actor)
            .await;
        self.settle_launch(id, placed, failure, recorded).await
    }

    /// Answers a start once its outcome is recorded (or could not be): a failed launch answers
    /// its error; a launched game whose record failed is stopped; an exit that arrived during
    /// the launch is recorded now.
    async fn settle_launch(
        &self,
        id: &SessionId,
        placed: &Placed,
        failure: Option<Error>,
        recorded: Result<Session, StoreError>,
    ) -> Result<(Session, bool), Error> {
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
                Err(Error::HostUnavailable {
                    host: host.clone(),
                    why: Unreachable::LostDuringLaunch,
                })
            }
            (None, Err(e)) => {
                placed.link.stop_nowait(id.clone());
                Err(e.into())
            }
        };
        let early_exit = self.inflight.launch_done(id);
        // Waiters on a start never recorded learn so now.
        let _ = self.changes.send(id.clone());
        let session = match (result, early_exit) {
            (Ok(_), Some(status)) => {
                tracing::info!(session = %id, ?status, "game exited as it started");
                self.record_as_owner(host, id, SessionEvent::Exited(status), Actor::GameExit)
                    .await?
            }
            (result, _) => {
                if let Err(e) = &result {
                    tracing::info!(session = %id, %host, error = %e, "start failed");
                }
                result?
            }
        };
        Ok((session, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agents::AgentLink;
    use protocol::wire::Launched;
    use protocol::{GameId, HostId};

    fn req(mode: Option<&str>) -> StartSession {
        StartSession {
            game_id: GameId::new("pong").unwrap(),
            mode: mode.map(str::to_owned),
            config: None,
            settings: Default::default(),
            user_id: None,
            max_duration_s: None,
        }
    }

    fn placed() -> Placed {
        Placed {
            host_id: HostId::new("host-a").unwrap(),
            mode: "classic".into(),
            link: AgentLink::channel(1).0,
        }
    }

    #[test]
    fn values_are_bounded_and_printable() {
        assert!(check_value("mode", None).is_ok());
        assert!(check_value("mode", Some("turbo")).is_ok());
        for bad in ["", "a\nb", &"x".repeat(MAX_VALUE_LEN + 1)] {
            assert!(
                matches!(check_value("mode", Some(bad)), Err(Error::Invalid(_))),
                "{bad:?}"
            );
        }
        assert!(idempotency_key(Some(String::new()), &req(None)).is_err());
        assert!(idempotency_key(Some("k".repeat(MAX_KEY_LEN + 1)), &req(None)).is_err());
        assert!(idempotency_key(Some("order-42".into()), &req(None))
            .unwrap()
            .is_some());
    }

    #[test]
    fn placement_errors_say_what_the_caller_can_do() {
        let e = placement_error(
            PlacementError::UnknownMode(vec!["classic".into(), "turbo".into()]),
            &req(Some("hard")),
        );
        assert!(e.to_string().contains("classic, turbo"), "{e}");
        assert!(matches!(
            placement_error(PlacementError::NoCapacity, &req(None)),
            Error::NoCapacity {
                retry_after_secs: NO_CAPACITY_RETRY_SECS,
                ..
            }
        ));
    }

    #[test]
    fn each_launch_answer_has_its_event_and_error() {
        let p = placed();
        let t = Duration::from_secs(10);
        let launched = Launched {
            session_id: SessionId::new("s").unwrap(),
            pid: 42,
            ip: [127, 0, 0, 1].into(),
            port: 20000,
            ports: vec![20000, 20001],
        };
        let failed = |kind| {
            Ok(Ok(LaunchReply::Failed {
                kind,
                message: "why".into(),
            }))
        };
        let cases: Vec<(LaunchOutcome, SessionEvent, Actor, Option<&str>)> = vec![
            (
                Ok(Ok(LaunchReply::Launched(launched))),
                SessionEvent::Launched {
                    pid: 42,
                    ip: [127, 0, 0, 1].into(),
                    port: 20000,
                    ports: vec![20000, 20001],
                },
                Actor::Agent,
                None,
            ),
            (
                failed(LaunchFailure::BadRequest),
                SessionEvent::LaunchFailed,
                Actor::Agent,
                Some("Refused"),
            ),
            (
                failed(LaunchFailure::NoCapacity),
                SessionEvent::LaunchFailed,
                Actor::Agent,
                Some("NoCapacity"),
            ),
            (
                failed(LaunchFailure::SpawnFailed),
                SessionEvent::LaunchFailed,
                Actor::Agent,
                Some("LaunchFailed"),
            ),
            (
                failed(LaunchFailure::UnknownGame),
                SessionEvent::LaunchFailed,
                Actor::Agent,
                Some("LaunchFailed"),
            ),
            (
                Ok(Err(LinkError::Closed)),
                SessionEvent::LaunchFailed,
                Actor::Agent,
                Some("LaunchFailed"),
            ),
        ];
        for (reply, event, actor, error) in cases {
            let (e, a, err) = launch_outcome(reply, &req(None), &p, t);
            assert_eq!((e, a), (event, actor));
            let kind = err.map(|e| format!("{e:?}"));
            assert_eq!(
                kind.as_deref()
                    .map(|k| k.split(['(', ' ']).next().unwrap_or_default()),
                error
            );
        }
    }
}
