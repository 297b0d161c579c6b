//! Warm pools, as the API sees them: writing and removing a pool's spec (under `If-Match`),
//! reading pools with their counts, and a start's claim of a pool's ready game.
//!
//! A start matches a pool when its game, mode and config are the pool's, exactly as asked
//! (a pool without a mode serves starts without one). The pools are read from a copy kept
//! for [`POOLS_TTL`] (renewed at once after a write here), so a start that matches none costs
//! no store call; a claim is one store change ([`Store::claim_ready`]), so two starts never
//! get the same game, through one broker or several.
//!
//! [`Store::claim_ready`]: crate::store::Store::claim_ready

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use protocol::api::{Pool, PoolSpec, Session, SessionStatus, StartSession, MAX_POOL_SIZE};
use protocol::{PoolId, SessionId};
use time::OffsetDateTime;

use super::Service;
use crate::error::Error;
use crate::session::{Actor, SessionEvent};
use crate::store::pools::{Claimant, PoolRecord, PoolRemoved, PoolWrite, Precondition, ReadyClaim};
use crate::store::{IdempotencyKey, KeyMatch};

/// How long a start uses its copy of the pools before reading them again: a pool written
/// through another replica serves starts here within this.
const POOLS_TTL: Duration = Duration::from_secs(1);
/// The longest `max_age_s`: a year.
const MAX_AGE_LIMIT_SECS: u64 = 365 * 86_400;

/// The pools as last read, and when.
#[derive(Debug, Default)]
pub(super) struct PoolCache(Mutex<Option<(Instant, Arc<Vec<PoolRecord>>)>>);

impl PoolCache {
    fn get(&self) -> Option<Arc<Vec<PoolRecord>>> {
        let kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        kept.as_ref()
            .filter(|(at, _)| at.elapsed() < POOLS_TTL)
            .map(|(_, p)| Arc::clone(p))
    }

    fn set(&self, pools: Vec<PoolRecord>) -> Arc<Vec<PoolRecord>> {
        let pools = Arc::new(pools);
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((Instant::now(), Arc::clone(&pools)));
        pools
    }

    fn clear(&self) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

/// Whether a start asks for the game, mode and config `pool` keeps ready (its settings are
/// compared once the game's defaults fill both in: [`Service::claim_from_pool`]).
fn matches(pool: &PoolRecord, req: &StartSession) -> bool {
    pool.spec.game_id == req.game_id && pool.spec.mode == req.mode && pool.spec.config == req.config
}

/// Whether two specs make the same games (game, mode, config and settings; not how many
/// or for how long).
fn same_games(a: &PoolSpec, b: &PoolSpec) -> bool {
    a.game_id == b.game_id && a.mode == b.mode && a.config == b.config && a.settings == b.settings
}

/// A spec as stored: checked, with its `max_age_s` spelled out.
fn checked(spec: PoolSpec) -> Result<PoolSpec, Error> {
    for (what, v) in [("mode", &spec.mode), ("config", &spec.config)] {
        if let Some(v) = v {
            protocol::settings::check_value(what, v).map_err(|e| Error::Invalid(e.to_string()))?;
        }
    }
    if spec.size > MAX_POOL_SIZE {
        return Err(Error::Invalid(format!("size must be 0 to {MAX_POOL_SIZE}")));
    }
    let max_age = spec
        .max_age_s
        .unwrap_or(protocol::api::DEFAULT_POOL_MAX_AGE_SECS);
    if !(1..=MAX_AGE_LIMIT_SECS).contains(&max_age) {
        return Err(Error::Invalid(format!(
            "max_age_s must be 1 to {MAX_AGE_LIMIT_SECS}"
        )));
    }
    Ok(PoolSpec {
        max_age_s: Some(max_age),
        ..spec
    })
}

/// A pool's live sessions, by pool: its ready ones (oldest first) and how many are starting.
#[derive(Debug, Default)]
pub(super) struct PoolSessions {
    /// `ready`, oldest ready first.
    pub ready: Vec<Session>,
    /// `starting`.
    pub starting: u32,
}

/// Live sessions grouped by pool.
pub(super) fn by_pool(active: Vec<Session>) -> HashMap<PoolId, PoolSessions> {
    let mut by: HashMap<PoolId, PoolSessions> = HashMap::new();
    for s in active {
        let Some(pool) = s.pool_id.clone() else {
            continue;
        };
        let entry = by.entry(pool).or_default();
        match s.status {
            SessionStatus::Ready => entry.ready.push(s),
            SessionStatus::Starting => entry.starting += 1,
            _ => {}
        }
    }
    for p in by.values_mut() {
        p.ready.sort_by_key(|s| (s.started_at, s.created_at));
    }
    by
}

/// A pool as the API shows it.
fn view(p: PoolRecord, live: Option<&PoolSessions>) -> Pool {
    let max_age_s = p.max_age_s();
    Pool {
        pool_id: p.pool_id,
        game_id: p.spec.game_id,
        mode: p.spec.mode,
        config: p.spec.config,
        settings: p.spec.settings,
        size: p.spec.size,
        max_age_s,
        ready: live.map_or(0, |l| u32::try_from(l.ready.len()).unwrap_or(u32::MAX)),
        starting: live.map_or(0, |l| l.starting),
        claims: p.claims,
        misses: p.misses,
        failures: p.failures,
        last_error: p.last_error,
        version: p.version,
    }
}

impl Service {
    /// The pools, renewed from the store when the copy is older than [`POOLS_TTL`].
    pub(super) async fn pool_records(&self) -> Result<Arc<Vec<PoolRecord>>, Error> {
        if let Some(p) = self.pool_cache.get() {
            return Ok(p);
        }
        Ok(self.pool_cache.set(self.store.pools().await?))
    }

    /// Every pool with its counts, by id.
    pub async fn pools(&self) -> Result<Vec<Pool>, Error> {
        let records = self.store.pools().await?;
        let live = by_pool(self.store.active(None).await?);
        Ok(records
            .into_iter()
            .map(|p| {
                let l = live.get(&p.pool_id);
                view(p, l)
            })
            .collect())
    }

    /// One pool with its counts.
    pub async fn pool(&self, id: &PoolId) -> Result<Pool, Error> {
        self.pools()
            .await?
            .into_iter()
            .find(|p| &p.pool_id == id)
            .ok_or_else(|| Error::NoPool(id.clone()))
    }

    /// Creates or changes a pool, when `cond` holds; `true` when it is new. The pool's
    /// keeper brings it to its new size.
    pub async fn put_pool(
        self: &Arc<Self>,
        id: &PoolId,
        spec: PoolSpec,
        cond: Option<&Precondition>,
    ) -> Result<(Pool, bool), Error> {
        let spec = checked(spec)?;
        // Settings the game does not take are refused as a start's would be.
        self.settings_for(&spec.game_id, &spec.settings).await?;
        let any = self
            .hosts()
            .await?
            .iter()
            .any(|h| h.status != protocol::api::HostStatus::Offline);
        if any && !self.store.is_known_game(&spec.game_id).await? {
            return Err(Error::UnknownGame(spec.game_id));
        }
        let before = self
            .store
            .pools()
            .await?
            .into_iter()
            .find(|p| &p.pool_id == id);
        let written = self.store.put_pool(id, &spec, cond).await?;
        self.pool_cache.clear();
        let created = match written {
            PoolWrite::Created(_) => true,
            PoolWrite::Updated(_) => false,
            PoolWrite::PreconditionFailed => return Err(Error::PreconditionFailed(id.clone())),
        };
        // Games made ready for what the pool was are not what it keeps now: retired, and the
        // keeper launches new ones (a claim never takes one with other settings meanwhile).
        if before.is_some_and(|old| !same_games(&old.spec, &spec)) {
            let ready = by_pool(self.store.active(None).await?)
                .remove(id)
                .map(|l| l.ready.into_iter().map(|s| s.session_id).collect())
                .unwrap_or_default();
            self.retire(ready);
        }
        self.pool_wake.notify_one();
        Ok((self.pool(id).await?, created))
    }

    /// Removes a pool, when `cond` holds, and stops its ready games; answers the pool as it
    /// was. Its games still starting are stopped by the keeper once they are ready.
    pub async fn delete_pool(
        self: &Arc<Self>,
        id: &PoolId,
        cond: Option<&Precondition>,
    ) -> Result<Pool, Error> {
        let live = by_pool(self.store.active(None).await?).remove(id);
        let removed = match self.store.remove_pool(id, cond).await? {
            PoolRemoved::Removed(p) => p,
            PoolRemoved::NotFound => return Err(Error::NoPool(id.clone())),
            PoolRemoved::PreconditionFailed => return Err(Error::PreconditionFailed(id.clone())),
        };
        self.pool_cache.clear();
        let pool = view(removed, live.as_ref());
        let ready: Vec<SessionId> = live
            .map(|l| l.ready.into_iter().map(|s| s.session_id).collect())
            .unwrap_or_default();
        // Retired, not ended: a game a player claimed meanwhile is the player's.
        futures::future::join_all(ready.iter().map(|s| self.retire_now(s))).await;
        Ok(pool)
    }

    /// A start's claim of a ready game from the pool it matches: the session, or `None` when
    /// no pool matches or the pool has none ready (the start goes cold).
    pub(super) async fn claim_from_pool(
        &self,
        req: &StartSession,
        key: Option<&IdempotencyKey>,
        actor: Actor,
    ) -> Result<Option<(Session, bool)>, Error> {
        // A pool's games were placed without the start's labels: such a start goes cold, to a
        // host placement chooses for it.
        if !req.labels.is_empty() || !req.prefer.is_empty() {
            return Ok(None);
        }
        let pools = self.pool_records().await?;
        // `req.settings` are the start's with the game's defaults: a pool's must come to the
        // same (a start asking for a default value is served by a pool that names none).
        let mut found = None;
        for p in pools.iter().filter(|p| matches(p, req)) {
            if self
                .settings_for(&p.spec.game_id, &p.spec.settings)
                .await
                .is_ok_and(|s| s == req.settings)
            {
                found = Some(p);
                break;
            }
        }
        let Some(pool) = found else {
            return Ok(None);
        };
        let now = OffsetDateTime::now_utc();
        // A broker alone counted the user's quota already (its ticket); replicas count here.
        let max = self
            .replicas
            .as_ref()
            .and(self.settings.max_sessions_per_user);
        let claimant = Claimant {
            user: req.user_id.as_deref().map(|u| (u, max)),
            max_duration_s: req.max_duration_s,
            settings: Some(&req.settings),
        };
        match self
            .store
            .claim_ready(&pool.pool_id, actor, key, claimant, now)
            .await?
        {
            ReadyClaim::Claimed(s) => {
                let s = *s;
                tracing::Span::current().record("session", tracing::field::display(&s.session_id));
                tracing::Span::current().record("host", tracing::field::display(&s.host_id));
                self.changed(&s, &SessionEvent::Claimed);
                self.pool_wake.notify_one();
                Ok(Some((s, true)))
            }
            ReadyClaim::Empty => Ok(None),
            ReadyClaim::Quota => Err(self.quota_exceeded(req.user_id.as_deref()).await),
            ReadyClaim::KeyTaken => match key {
                Some(k) => match self.store.find_key(k).await? {
                    Some(KeyMatch::Same(first)) => Ok(Some((self.settled(&first).await?, false))),
                    Some(KeyMatch::Different) | None => Err(Error::KeyReused),
                },
                None => Ok(None),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::GameId;

    fn spec(size: u32, max_age_s: Option<u64>) -> PoolSpec {
        PoolSpec {
            game_id: GameId::new("pong").unwrap(),
            mode: None,
            config: None,
            settings: Default::default(),
            size,
            max_age_s,
        }
    }

    #[test]
    fn specs_are_bounded_and_spell_out_their_max_age() {
        assert_eq!(
            checked(spec(5, None)).unwrap().max_age_s,
            Some(protocol::api::DEFAULT_POOL_MAX_AGE_SECS)
        );
        assert!(checked(spec(MAX_POOL_SIZE, Some(1))).is_ok());
        for bad in [
            spec(MAX_POOL_SIZE + 1, None),
            spec(1, Some(0)),
            spec(1, Some(MAX_AGE_LIMIT_SECS + 1)),
            PoolSpec {
                mode: Some(String::new()),
                ..spec(1, None)
            },
        ] {
            assert!(matches!(checked(bad), Err(Error::Invalid(_))));
        }
    }

    #[test]
    fn a_start_matches_a_pool_only_with_the_same_game_mode_and_config() {
        let pool = PoolRecord {
            pool_id: PoolId::new("p").unwrap(),
            spec: PoolSpec {
                mode: Some("turbo".into()),
                ..spec(1, None)
            },
            version: 1,
            claims: 0,
            misses: 0,
            failures: 0,
            last_error: None,
        };
        let req = |game: &str, mode: Option<&str>, config: Option<&str>| StartSession {
            mode: mode.map(str::to_owned),
            config: config.map(str::to_owned),
            ..StartSession::new(GameId::new(game).unwrap())
        };
        assert!(matches(&pool, &req("pong", Some("turbo"), None)));
        assert!(!matches(&pool, &req("pong", None, None)));
        assert!(!matches(&pool, &req("pong", Some("turbo"), Some("a.conf"))));
        assert!(!matches(&pool, &req("tetris", Some("turbo"), None)));
    }
}
