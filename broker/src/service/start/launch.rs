//! A start on a host whose agent is connected here, as one broker makes it: reserve the slot
//! (exact: only this broker launches on its hosts while it holds their agents), launch with
//! the agent link the reservation handed over, record the session once, with its outcome.
//!
//! Most launches answer within a millisecond or two; the session is then recorded in one
//! change with its outcome. A slower one is recorded `starting` first, so it is listed while
//! it launches. A start another one must see before its launch ends is recorded first: one
//! under an `Idempotency-Key` (a retry finds it), and among replicas one the user's quota
//! counts (the user's next start through another replica counts it).
//!
//! Among replicas every record of a start here is fenced by the epoch of this broker's hold
//! on the host: a replica that lost its host meanwhile writes nothing, and its game is
//! stopped.

use std::time::Duration;

use protocol::api::{Session, StartSession};
use protocol::wire::{GameOffer, LaunchFailure, LaunchRequest, MAX_READY_TIMEOUT_SECS};
use protocol::{GameId, HostId, SessionId};
use time::OffsetDateTime;
use tokio::time::timeout;

use super::{placement_error, NewStart, NO_CAPACITY_RETRY_SECS};
use crate::agents::{LaunchReply, LinkError, Placed};
use crate::error::{self, Error, Unreachable};
use crate::placement::PlacementError;
use crate::service::Service;
use crate::session::{Actor, SessionEvent, TransitionError};
use crate::store::{Claimed, Fence, IdempotencyKey, Inserted, StoreError};

/// A launch answered within this is recorded with its outcome in one change (one commit with
/// MySQL); a slower one is first recorded `starting`, so it is listed while it launches. A
/// broker that dies in that window leaves a game without a record, which is stopped when its
/// host reconnects.
const RECORD_AT_ONCE: Duration = Duration::from_millis(50);

/// An agent's answer to a launch, or the launch timeout.
type LaunchOutcome = Result<Result<LaunchReply, LinkError>, tokio::time::error::Elapsed>;

/// How long a game's readiness check may take, as offered (none: no check).
fn ready_timeout(offer: Option<&GameOffer>) -> Duration {
    Duration::from_millis(u64::from(
        offer.and_then(|o| o.ready_timeout_ms).unwrap_or(0),
    ))
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
    /// Starts a session on a host whose agent is connected here: `prefer` when it can take
    /// it, else this broker's own placement's choice. Alone, a placement failure is the
    /// caller's answer; among replicas, "no capacity" (the shared view was stale), and the
    /// start tries another replica.
    pub(in crate::service) async fn start_here(
        &self,
        start: &NewStart,
        prefer: Option<&HostId>,
    ) -> Result<(Session, bool), Error> {
        let NewStart {
            id,
            request: req,
            key,
            actor,
            pool,
        } = start;
        let (key, actor) = (key.as_ref(), *actor);
        let placed = match self
            .registry
            .place(&super::placement_request(req), id, prefer)
        {
            Ok(p) => p,
            Err(_) if self.replicas.is_some() => {
                return Err(placement_error(PlacementError::NoCapacity, req))
            }
            Err(e) => {
                let any = self.registry.any_connected();
                return Err(self.placement_failed(e, req, any).await);
            }
        };
        let span = tracing::Span::current();
        span.record("session", tracing::field::display(id));
        span.record("host", tracing::field::display(&placed.host_id));
        let fence = match self.owner_fence(&placed.host_id) {
            Ok(f) => f,
            Err(e) => {
                self.registry.release(&placed.host_id, id);
                return Err(e.into());
            }
        };
        let mut session = crate::session::new_session(
            id.clone(),
            req.game_id.clone(),
            placed.mode.clone(),
            req.config.clone(),
            placed.host_id.clone(),
            OffsetDateTime::now_utc(),
        );
        session.pool_id.clone_from(pool);
        session.settings.clone_from(&req.settings);
        session.user_id.clone_from(&req.user_id);
        session.max_duration_s = self.max_duration(&placed.host_id, req).await;
        session.build.clone_from(&placed.build);
        session.gpus.clone_from(&placed.held.gpus);
        session.slots = placed.held.slots;
        session.labels.clone_from(&placed.labels);
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
            join: Some(self.join_access(id)),
            build: placed.build.clone(),
            gpus: placed.held.gpus.clone(),
        };
        let deadline = self.launch_deadline(&placed.host_id, &req.game_id);
        let quota = req.user_id.is_some() && self.settings.max_sessions_per_user.is_some();
        if self.replicas.is_some() && (key.is_some() || quota) {
            return self
                .claimed_then_launched(&session, start, &placed, fence.as_ref(), launch)
                .await;
        }
        let launch = timeout(deadline, placed.link.launch(launch));
        tokio::pin!(launch);
        // Most launches answer within a millisecond or two: then the session is recorded once,
        // with its outcome. A start under an Idempotency-Key is recorded first, so a
        // concurrent retry finds it.
        if key.is_none() {
            tokio::select! {
                reply = &mut launch => {
                    return self
                        .launched_at_once(&session, req, &placed, reply, actor, fence.as_ref())
                        .await;
                }
                () = tokio::time::sleep(RECORD_AT_ONCE) => {}
            }
        }
        // The `starting` record and the rest of the launch go together rather than one after
        // the other. A broker that dies in between leaves either a record whose game never
        // ran (settled when the host reconnects) or a game without a record (stopped then).
        let (inserted, reply) = tokio::join!(
            self.store.insert(&session, key, actor, fence.as_ref()),
            launch
        );
        if !matches!(inserted, Ok(Inserted::New)) {
            self.never_recorded(&session);
            // No game may run without a session. (One launched late is stopped by the link.)
            if matches!(reply, Ok(Ok(LaunchReply::Launched(_)))) {
                placed.link.stop_nowait(id.clone());
            }
        }
        match inserted {
            Ok(Inserted::New) => {}
            // A concurrent request with the same key got there first.
            Ok(Inserted::KeyConflict) => return Err(Error::KeyReused),
            Ok(Inserted::Existing(first)) => return Ok((self.settled(&first).await?, false)),
            Err(e) => return Err(e.into()),
        }
        let result = self.launched(&session, req, &placed, reply).await;
        self.forget_key_of_failed(&result, key).await;
        result
    }

    /// Among replicas, a start another replica's start must see before its launch ends: its
    /// session is recorded `starting` first, within its user's quota and bound to its key, by
    /// a store change every replica's starts queue on; then launched.
    async fn claimed_then_launched(
        &self,
        session: &Session,
        start: &NewStart,
        placed: &Placed,
        fence: Option<&Fence>,
        launch: LaunchRequest,
    ) -> Result<(Session, bool), Error> {
        let (req, key, actor) = (&start.request, start.key.as_ref(), start.actor);
        let max = self.settings.max_sessions_per_user;
        let claimed = self
            .store
            .claim(session, key, actor, max, fence.map(|f| f.epoch))
            .await;
        if !matches!(claimed, Ok(Claimed::New { .. })) {
            self.never_recorded(session);
        }
        match claimed {
            Ok(Claimed::New { .. }) => {}
            // The store counts a session on the host that this broker does not (one a dead
            // replica left `starting`), or the host moved on: another host may take it.
            Ok(Claimed::Full | Claimed::Gone) => {
                return Err(placement_error(PlacementError::NoCapacity, req))
            }
            Ok(Claimed::Quota) => return Err(self.quota_exceeded(req.user_id.as_deref()).await),
            Ok(Claimed::KeyTaken) => {
                return match self.same_key(key).await? {
                    Some(first) => Ok((self.settled(&first).await?, false)),
                    None => Err(Error::KeyReused),
                }
            }
            Err(e) => return Err(e.into()),
        }
        // Readable now: waiters on it re-read.
        let _ = self.changes.send(session.session_id.clone());
        let deadline = self.launch_deadline(&placed.host_id, &req.game_id);
        let reply = timeout(deadline, placed.link.launch(launch)).await;
        let result = self.launched(session, req, placed, reply).await;
        self.forget_key_of_failed(&result, key).await;
        result
    }

    /// A start whose session was never recorded: no longer in flight (waiters on it, which
    /// could read it meanwhile, learn so), and its slot free again.
    fn never_recorded(&self, session: &Session) {
        let id = &session.session_id;
        self.inflight.launch_done(id);
        let _ = self.changes.send(id.clone());
        self.registry.release(&session.host_id, id);
    }

    /// A start that failed forgets its key, so it can be retried.
    async fn forget_key_of_failed<T>(
        &self,
        result: &Result<T, Error>,
        key: Option<&IdempotencyKey>,
    ) {
        if let (Err(_), Some(k)) = (result, key) {
            if let Err(e) = self.store.forget_key(&k.key).await {
                tracing::warn!(error = %e, "could not forget the Idempotency-Key of a failed start");
            }
        }
    }

    /// How long a launch of `game` on `host` may take to be answered: the launch timeout,
    /// plus the game's readiness timeout on that host, if it has a check.
    pub(in crate::service) fn launch_deadline(&self, host: &HostId, game: &GameId) -> Duration {
        self.settings.launch_timeout + ready_timeout(self.registry.offer(host, game).as_ref())
    }

    /// How `host` offers `game`, wherever its agent is: here, or (for another replica's host)
    /// in the replicas' shared view.
    pub(in crate::service) async fn offer_anywhere(
        &self,
        host: &HostId,
        game: &GameId,
    ) -> Option<GameOffer> {
        match self.registry.offer(host, game) {
            Some(o) => Some(o),
            None if self.replicas.is_some() => self.shared_offer(host, game).await,
            None => None,
        }
    }

    /// The limit of a session of `req` placed on `host`: the smaller of the start's and the
    /// game's `max_duration_s` there. A pool's game takes its claimer's limit when claimed.
    pub(in crate::service) async fn max_duration(
        &self,
        host: &HostId,
        req: &StartSession,
    ) -> Option<u32> {
        let offered = self
            .offer_anywhere(host, &req.game_id)
            .await
            .and_then(|o| o.max_duration_s);
        crate::session::shorter_limit(offered, req.max_duration_s)
    }

    /// [`Self::launch_deadline`] for a host wherever its agent is: as the host offers the
    /// game here or, for another replica's host, in the replicas' shared view;
    /// [`Self::longest_launch`] when neither knows the host.
    pub(in crate::service) async fn launch_deadline_anywhere(
        &self,
        host: &HostId,
        game: &GameId,
    ) -> Duration {
        match self.offer_anywhere(host, game).await {
            Some(o) => self.settings.launch_timeout + ready_timeout(Some(&o)),
            None => self.longest_launch(),
        }
    }

    /// The longest any launch may take, for waits that do not know the game or its host.
    pub(in crate::service) fn longest_launch(&self) -> Duration {
        self.settings.launch_timeout + Duration::from_secs(u64::from(MAX_READY_TIMEOUT_SECS))
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
        fence: Option<&Fence>,
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
                fence,
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

    fn req() -> StartSession {
        StartSession::new(GameId::new("pong").unwrap())
    }

    fn placed() -> Placed {
        Placed {
            host_id: HostId::new("host-a").unwrap(),
            mode: "classic".into(),
            build: None,
            link: AgentLink::channel(1).0,
            held: crate::agents::registry::Held {
                slots: 1,
                gpus: Vec::new(),
            },
            labels: Default::default(),
        }
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
            let (e, a, err) = launch_outcome(reply, &req(), &p, t);
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
