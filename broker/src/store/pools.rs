//! Warm pools as stored: each pool's spec and version, its counters, and the claim of one of
//! its ready sessions by a player's start.
//!
//! A pool's ready games are ordinary sessions (`ready`, with their `pool_id`); what is stored
//! here is the pool itself. A claim is one atomic change: the oldest ready session of the pool
//! becomes `running`, with the claim in its history and the stream, the pool's `claims` count
//! grows, and the start's `Idempotency-Key` (if any) is bound to it. Two claims never take the
//! same session, through one broker or several (MySQL: `FOR UPDATE SKIP LOCKED`).

use protocol::api::{PoolSpec, Session, DEFAULT_POOL_MAX_AGE_SECS};
use protocol::PoolId;
use time::OffsetDateTime;

use super::{IdempotencyKey, Store, StoreError};
use crate::session::Actor;

/// The longest `last_error` kept, in bytes.
pub const MAX_POOL_ERROR: usize = 1024;

/// A pool as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolRecord {
    /// Its name.
    pub pool_id: PoolId,
    /// What it keeps ready (`max_age_s` always set).
    pub spec: PoolSpec,
    /// Grows at every write of its spec; its `ETag`.
    pub version: u64,
    /// Starts that took one of its ready sessions.
    pub claims: u64,
    /// Starts that matched it and found none ready.
    pub misses: u64,
    /// Its launches that failed.
    pub failures: u64,
    /// Why its last launch failed, until one succeeds.
    pub last_error: Option<String>,
}

impl PoolRecord {
    /// The age past which its ready sessions are replaced, in seconds.
    pub fn max_age_s(&self) -> u64 {
        self.spec.max_age_s.unwrap_or(DEFAULT_POOL_MAX_AGE_SECS)
    }
}

/// An `If-Match` condition on a pool's version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// `*`: the pool exists, whatever its version.
    Exists,
    /// One of these versions is the current one.
    Version(Vec<u64>),
}

impl Precondition {
    /// Whether the pool, at `current` (`None`: it does not exist), meets the condition.
    pub fn holds(&self, current: Option<u64>) -> bool {
        match (self, current) {
            (_, None) => false,
            (Self::Exists, Some(_)) => true,
            (Self::Version(vs), Some(v)) => vs.contains(&v),
        }
    }
}

/// The answer to writing a pool's spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolWrite {
    /// A new pool.
    Created(PoolRecord),
    /// The pool's spec is replaced (its version grew).
    Updated(PoolRecord),
    /// The condition did not hold: nothing was written.
    PreconditionFailed,
}

/// The answer to removing a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolRemoved {
    /// Removed; it was this.
    Removed(PoolRecord),
    /// No such pool.
    NotFound,
    /// The condition did not hold: nothing was removed.
    PreconditionFailed,
}

/// Who claims a ready game, and what of theirs the session takes on.
#[derive(Debug, Clone, Copy, Default)]
pub struct Claimant<'a> {
    /// The player (`user_id`), with the most sessions it may hold
    /// (`--max-sessions-per-user`), counted in the claim's own change.
    pub user: Option<(&'a str, Option<u32>)>,
    /// The start's `max_duration_s`: the session keeps the smaller of it and its game's.
    pub max_duration_s: Option<u32>,
    /// The settings the start runs with (the game's defaults filled in): only a ready game
    /// launched with exactly these is taken (one launched before its pool's settings changed
    /// is not). `None`: any.
    pub settings: Option<&'a std::collections::BTreeMap<String, String>>,
}

impl Claimant<'_> {
    /// Whether the ready game `s` is one this claimant may take.
    pub(crate) fn fits(&self, s: &protocol::api::Session) -> bool {
        self.settings.is_none_or(|want| *want == s.settings)
    }

    /// Makes `s`, a ready game being claimed, the claimant's.
    pub(crate) fn take(&self, s: &mut protocol::api::Session) {
        s.user_id = self.user.map(|(u, _)| u.to_owned());
        s.max_duration_s = crate::session::shorter_limit(s.max_duration_s, self.max_duration_s);
    }
}

/// The answer to a start's claim of a ready session.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadyClaim {
    /// This session, `running` now, is the start's (boxed: the other answers are empty).
    Claimed(Box<Session>),
    /// The pool has no ready session (a miss, counted).
    Empty,
    /// The start's `Idempotency-Key` is bound already (a concurrent retry): nothing changed.
    KeyTaken,
    /// The start's user holds its quota of sessions: nothing changed.
    Quota,
}

/// A pool launch's outcome, for its counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaunchResult {
    /// A game is ready: `last_error` is cleared.
    Ready,
    /// It failed: `failures` grows and `last_error` says why.
    Failed(String),
}

/// `s` cut to at most [`MAX_POOL_ERROR`] bytes, on a character boundary.
pub(super) fn bounded_error(s: &str) -> String {
    let mut end = s.len().min(MAX_POOL_ERROR);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

impl Store {
    /// Creates or replaces a pool's spec, when `cond` (if any) holds.
    pub async fn put_pool(
        &self,
        id: &PoolId,
        spec: &PoolSpec,
        cond: Option<&Precondition>,
    ) -> Result<PoolWrite, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.put_pool(id, spec, cond)),
            Self::Mysql(m) => m.put_pool(id, spec, cond).await,
        }
    }

    /// Removes a pool, when `cond` (if any) holds. Its sessions are the caller's to stop.
    pub async fn remove_pool(
        &self,
        id: &PoolId,
        cond: Option<&Precondition>,
    ) -> Result<PoolRemoved, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.remove_pool(id, cond)),
            Self::Mysql(m) => m.remove_pool(id, cond).await,
        }
    }

    /// Every pool, by id.
    pub async fn pools(&self) -> Result<Vec<PoolRecord>, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.pools()),
            Self::Mysql(m) => m.pools().await,
        }
    }

    /// Counts a pool launch's outcome (nothing, if the pool is gone).
    pub async fn pool_launched(&self, id: &PoolId, r: &LaunchResult) -> Result<(), StoreError> {
        match self {
            Self::Memory(m) => {
                m.pool_launched(id, r);
                Ok(())
            }
            Self::Mysql(m) => m.pool_launched(id, r).await,
        }
    }

    /// Gives the oldest ready session of `pool` to a start by `actor` for `claimant`, bound to
    /// `key` when given (see the module's doc); counts a claim, or a miss.
    pub async fn claim_ready(
        &self,
        pool: &PoolId,
        actor: Actor,
        key: Option<&IdempotencyKey>,
        claimant: Claimant<'_>,
        now: OffsetDateTime,
    ) -> Result<ReadyClaim, StoreError> {
        match self {
            Self::Memory(m) => m.claim_ready(pool, actor, key, claimant, now),
            Self::Mysql(m) => m.claim_ready(pool, actor, key, claimant, now).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_holds_only_for_an_existing_pool_at_a_listed_version() {
        let cases = [
            (Precondition::Exists, None, false),
            (Precondition::Exists, Some(3), true),
            (Precondition::Version(vec![3]), Some(3), true),
            (Precondition::Version(vec![2, 4]), Some(3), false),
            (Precondition::Version(vec![3]), None, false),
        ];
        for (cond, current, holds) in cases {
            assert_eq!(cond.holds(current), holds, "{cond:?} {current:?}");
        }
    }

    #[test]
    fn errors_are_cut_on_a_character_boundary() {
        let long = "é".repeat(MAX_POOL_ERROR);
        let cut = bounded_error(&long);
        assert!(cut.len() <= MAX_POOL_ERROR);
        assert!(cut.chars().all(|c| c == 'é'));
        assert_eq!(bounded_error("short"), "short");
    }
}
