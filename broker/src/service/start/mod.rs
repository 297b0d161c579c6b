//! Starting a game: one pipeline, whether this broker is alone or one of several replicas.
//!
//! ```text
//! start ─► validate ─► idempotency key ─► settings ─► quota ticket ─► pool claim
//!        ─► place (place.rs: which host, so whose agent)
//!        ─► here: start_here (launch.rs: reserve the slot, launch, record once)
//!        └► there: route::start_there ─► the owner's start_here, over NATS
//! ```
//!
//! This file is the only one that knows the order. What differs between one broker and
//! replicas is only where placement looks (the registry, or the replicas' shared view) and
//! whether the chosen host's agent is connected here; the host's owner always places on its
//! own hosts from its own exact count, launches, and records the session once, with its
//! outcome. A replica whose view was stale hears "no capacity" from the owner and tries the
//! next replica's hosts: a stale view costs a retry, never a wrong answer.
//!
//! A start answers once the game runs, or why it does not, at most once per
//! `Idempotency-Key`. Its slot is reserved at placement and given back exactly when the start
//! fails or the session ends. No game runs without a session: a launch that times out, or
//! whose record fails, is stopped.

mod launch;
mod place;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use protocol::api::{Session, SessionStatus, StartSession, MAX_DURATION_S};
use protocol::settings::SettingError;
use protocol::{GameId, PoolId, SessionId};
use tracing::Instrument;

use super::Service;
use crate::error::Error;
use crate::session::Actor;
use crate::store::{IdempotencyKey, KeyMatch};
use place::Target;

pub(super) use place::{placement_error, placement_request};

/// A start as the pipeline carries it from its checks to the host's owner (over NATS too):
/// what is to run, for whom, and under which key.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(in crate::service) struct NewStart {
    /// The new session's id.
    pub id: SessionId,
    /// The request, its settings complete (those asked for and the game's defaults).
    pub request: StartSession,
    /// Its `Idempotency-Key`, bound to the request as the client sent it.
    pub key: Option<IdempotencyKey>,
    /// Who asked.
    pub actor: Actor,
    /// The pool it is launched for, if any.
    pub pool: Option<PoolId>,
}

/// What became of a start whose owner did not answer, as its record tells.
#[derive(Debug)]
enum Fate {
    /// It is recorded and settled (or waiting for it failed): the answer.
    Settled(Box<Result<(Session, bool), Error>>),
    /// It failed: nothing of it runs.
    Failed,
    /// Nothing is recorded (yet).
    Unknown,
}

/// What became of a start sent to another replica.
#[derive(Debug)]
pub(in crate::service) enum Forwarded {
    /// The owner's answer.
    Answered(Box<Result<(Session, bool), Error>>),
    /// No answer in time (the owner died, or NATS broke, mid-call): the start may have
    /// happened.
    Unknown(Error),
    /// The owner never took the start: nothing was done.
    NotTaken(Error),
}

/// The longest `Idempotency-Key` accepted.
const MAX_KEY_LEN: usize = 255;
/// Seconds a caller is told to wait when no host has room.
const NO_CAPACITY_RETRY_SECS: u32 = 5;

/// A start's `max_duration_s`, if any, must be 1 to [`MAX_DURATION_S`].
fn check_max_duration(v: Option<u32>) -> Result<(), Error> {
    match v {
        Some(d) if !(1..=MAX_DURATION_S).contains(&d) => Err(Error::Invalid(format!(
            "max_duration_s must be 1 to {MAX_DURATION_S} seconds"
        ))),
        _ => Ok(()),
    }
}

/// A mode or config value, as every part of Arcade checks it.
fn check_value(what: &str, v: Option<&str>) -> Result<(), Error> {
    match v {
        Some(v) => {
            protocol::settings::check_value(what, v).map_err(|e| Error::Invalid(e.to_string()))
        }
        None => Ok(()),
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
    /// Starts a game, at most once per `key`: a repeated key with the same request answers the
    /// first start's session (and `false`: not new) and starts nothing, whatever the capacity
    /// now; with another request, [`Error::KeyReused`]. A key whose first start is still in
    /// flight answers once that start has settled. A start that failed forgets its key, so it
    /// can be retried: a retry that waited for it to fail starts anew. The start runs to
    /// completion even if the caller goes away.
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

    async fn start_once(
        &self,
        mut req: StartSession,
        key: Option<String>,
        actor: Actor,
    ) -> Result<(Session, bool), Error> {
        let key = idempotency_key(key, &req)?;
        if let Some(first) = self.same_key(key.as_ref()).await? {
            tracing::Span::current().record("session", tracing::field::display(&first));
            let first = self.settled(&first).await?;
            // A failed start forgot its key as it failed: this one starts anew.
            if first.status != SessionStatus::Failed {
                return Ok((first, false));
            }
        }
        check_value("mode", req.mode.as_deref())?;
        check_value("config", req.config.as_deref())?;
        check_max_duration(req.max_duration_s)?;
        for labels in [&req.labels, &req.prefer] {
            protocol::labels::check(labels).map_err(|e| Error::Invalid(e.to_string()))?;
        }
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
        self.start_new(NewStart {
            id,
            request: req,
            key,
            actor,
            pool: None,
        })
        .await
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
        let start = NewStart {
            id: new_id()?,
            request: req,
            key: None,
            actor: Actor::Pool,
            pool: Some(pool.clone()),
        };
        self.start_new(start).instrument(span).await.map(|(s, _)| s)
    }

    /// Places a new session (of `pool`, when given), starts it where its host's agent is, and
    /// answers once the game runs (or why it does not). Among replicas, an owner that has no
    /// room after all (the view was stale) or never took the call (it is gone) is skipped, and
    /// the start placed again among the others: each replica is tried at most once.
    async fn start_new(&self, mut start: NewStart) -> Result<(Session, bool), Error> {
        let mut skip: Vec<String> = Vec::new();
        let mut fresh = false;
        let mut unreachable: Option<Error> = None;
        loop {
            let target = match self.choose(&start.request, &skip, &mut fresh).await {
                Ok(t) => t,
                Err(e @ Error::NoCapacity { .. }) => {
                    // A concurrent start with the same key may hold the last slot: it answers.
                    if let Some(first) = self.same_key(start.key.as_ref()).await? {
                        return Ok((self.settled(&first).await?, false));
                    }
                    return Err(unreachable.unwrap_or(e));
                }
                Err(e) => return Err(e),
            };
            let (placed, result) = match target {
                Target::Here(prefer) => {
                    let here = self.start_here(&start, prefer.as_ref()).await;
                    match here {
                        Err(Error::NoCapacity { .. }) if self.replicas.is_some() => {
                            skip.push(self.settings.broker_id.clone());
                            if let (Some(h), Ok(r)) = (&prefer, self.replicas()) {
                                r.view.full(h);
                            }
                            continue;
                        }
                        other => return other,
                    }
                }
                Target::There(placed) => {
                    let there = self.start_there(&placed, &start).await;
                    (placed, there)
                }
            };
            match result {
                Forwarded::Answered(answer) => match *answer {
                    Err(Error::NoCapacity { .. }) => {
                        if let Ok(r) = self.replicas() {
                            r.view.full(&placed.host);
                        }
                    }
                    answer => return answer,
                },
                Forwarded::Unknown(e) => match self.start_of_unknown_fate(&start).await {
                    Fate::Settled(answer) => return *answer,
                    Fate::Unknown => return Err(e),
                    // Its owner died before its game ran: it is tried anew elsewhere, as
                    // another session (its key was forgotten as it failed).
                    Fate::Failed => {
                        tracing::info!(session = %start.id, "a start whose owner died failed; starting it elsewhere");
                        start.id = new_id()?;
                        unreachable = Some(e);
                    }
                },
                Forwarded::NotTaken(e) => {
                    if let Ok(r) = self.replicas() {
                        r.view.away(&placed.owner);
                    }
                    unreachable = Some(e);
                }
            }
            skip.push(placed.owner);
        }
    }

    /// What became of a start whose owner did not answer: the session as recorded, once it
    /// has settled, if the owner recorded it (a start under a key or a quota is recorded
    /// before its launch), so the caller learns what became of it rather than a 503 for a
    /// game that may run; [`Fate::Failed`] when it failed (its game never ran, or is gone);
    /// else [`Fate::Unknown`] (503; under a key, a retry finds whatever is recorded later).
    async fn start_of_unknown_fate(&self, start: &NewStart) -> Fate {
        if self.store.get(&start.id).await.is_err() {
            return Fate::Unknown;
        }
        match self.settled(&start.id).await {
            Ok(s) if s.status == SessionStatus::Failed => Fate::Failed,
            answer => Fate::Settled(Box::new(answer.map(|s| (s, true)))),
        }
    }

    /// A session once it is no longer `starting` (bounded by the launch timeout).
    pub(super) async fn settled(&self, id: &SessionId) -> Result<Session, Error> {
        self.wait_while_starting(id, self.longest_launch() + Duration::from_secs(1))
            .await
    }

    /// The session a key is bound to with this same request, if it is.
    async fn same_key(&self, key: Option<&IdempotencyKey>) -> Result<Option<SessionId>, Error> {
        let Some(k) = key else { return Ok(None) };
        match self.store.find_key(k).await? {
            Some(KeyMatch::Same(first)) => Ok(Some(first)),
            Some(KeyMatch::Different) => Err(Error::KeyReused),
            None => Ok(None),
        }
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> StartSession {
        StartSession::new(GameId::new("pong").unwrap())
    }

    #[test]
    fn values_and_keys_are_bounded_and_printable() {
        assert!(check_value("mode", None).is_ok());
        assert!(check_value("mode", Some("turbo")).is_ok());
        for bad in ["", "a\nb", &"x".repeat(256)] {
            assert!(
                matches!(check_value("mode", Some(bad)), Err(Error::Invalid(_))),
                "{bad:?}"
            );
        }
        assert!(idempotency_key(Some(String::new()), &req()).is_err());
        assert!(idempotency_key(Some("k".repeat(MAX_KEY_LEN + 1)), &req()).is_err());
        assert!(idempotency_key(Some("order-42".into()), &req())
            .unwrap()
            .is_some());
        assert!(check_max_duration(Some(0)).is_err());
        assert!(check_max_duration(Some(MAX_DURATION_S + 1)).is_err());
        assert!(check_max_duration(Some(60)).is_ok());
    }
}
