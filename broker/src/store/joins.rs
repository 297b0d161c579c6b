//! Join tokens in the store (API.md, "Players"): what is kept of a session's token (its hash,
//! and for a start under a key, the token sealed under that key: see [`crate::join`]), the
//! one conditional write that redeems it, and the secret game keys are made with.
//!
//! A redeem is one write that succeeds only while the token is unused, unexpired and its
//! session runs: at most one redeem of a token succeeds, across replicas and restarts. It
//! appends `session.joined` to the stream in the same commit.

use protocol::api::Session;
use protocol::SessionId;
use time::OffsetDateTime;

use super::{Store, StoreError};
use crate::session::Actor;

/// A session's join token as the store keeps it: never the token itself.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinRecord {
    /// The token's SHA-256.
    pub token_hash: [u8; 32],
    /// The token sealed under its start's `Idempotency-Key`, if it had one.
    pub sealed: Option<[u8; 16]>,
    /// When it stops being accepted.
    pub expires_at: OffsetDateTime,
    /// When it was redeemed, if it was.
    pub used_at: Option<OffsetDateTime>,
}

impl std::fmt::Debug for JoinRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinRecord")
            .field("expires_at", &self.expires_at)
            .field("used_at", &self.used_at)
            .finish_non_exhaustive()
    }
}

/// What a redeem became.
#[derive(Debug, Clone, PartialEq)]
pub enum Redeemed {
    /// This redeem used the token: the session, as in the `session.joined` event.
    Joined(Box<Session>),
    /// Nothing was written, because of this.
    Refused(JoinRefusal),
}

/// Why a redeem was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinRefusal {
    /// No such session.
    NotFound,
    /// The session does not run (not yet claimed, or over): its game key is dead.
    NotRunning,
    /// It has no token, or another one (this one was voided by a fresh one).
    WrongToken,
    /// The token was redeemed before.
    Used,
    /// The token expired.
    Expired,
}

impl JoinRefusal {
    /// Why a redeem of a token hashed `hash` at `now` is refused, given what the store holds.
    pub fn of(
        status_running: Option<bool>,
        join: Option<&JoinRecord>,
        hash: &[u8; 32],
        now: OffsetDateTime,
    ) -> Self {
        match (status_running, join) {
            (None, _) => Self::NotFound,
            (Some(false), _) => Self::NotRunning,
            (Some(true), None) => Self::WrongToken,
            (Some(true), Some(j)) if !crate::auth::same_secret(&j.token_hash, hash) => {
                Self::WrongToken
            }
            (Some(true), Some(j)) if j.used_at.is_some() => Self::Used,
            (Some(true), Some(j)) if j.expires_at <= now => Self::Expired,
            // Redeemable, yet the write did not apply: only a concurrent redeem that won does
            // that.
            (Some(true), Some(_)) => Self::Used,
        }
    }
}

impl Store {
    /// Keeps `join` as `id`'s token: in place of any before it with `replace` (a fresh
    /// token voids the previous), else only if it has none (answers whether it was kept).
    pub async fn put_join(
        &self,
        id: &SessionId,
        join: &JoinRecord,
        replace: bool,
    ) -> Result<bool, StoreError> {
        match self {
            Self::Memory(m) => m.put_join(id, join, replace),
            Self::Mysql(m) => m.put_join(id, join, replace).await,
        }
    }

    /// What is kept of `id`'s token, if it has one.
    pub async fn join_of(&self, id: &SessionId) -> Result<Option<JoinRecord>, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.join_of(id)),
            Self::Mysql(m) => m.join_of(id).await,
        }
    }

    /// Redeems `id`'s token hashed `hash` at `now`, by `actor`: one conditional write, so
    /// at most one redeem of a token succeeds; with it, `session.joined` on the stream.
    pub async fn redeem(
        &self,
        id: &SessionId,
        hash: &[u8; 32],
        now: OffsetDateTime,
        actor: Actor,
    ) -> Result<Redeemed, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.redeem(id, hash, now, actor)),
            Self::Mysql(m) => m.redeem(id, hash, now, actor).await,
        }
    }

    /// The store's secret named `name`, made (32 random bytes) by whoever asks first: every
    /// replica sharing the store gets the same.
    pub async fn secret(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.secret(name)),
            Self::Mysql(m) => m.secret(name).await,
        }
    }
}
