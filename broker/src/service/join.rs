//! Join tokens (API.md, "Players"): the token a start answers with, its redeem by the
//! session's game, and a fresh one for a reconnect. The secrets themselves are made and
//! checked in [`crate::join`]; what is kept of them, and the one write that redeems, in the
//! store.

use std::sync::Arc;

use protocol::api::{Session, SessionStatus, StartSession};
use protocol::wire::JoinAccess;
use protocol::SessionId;
use time::OffsetDateTime;

use super::Service;
use crate::error::{Error, JoinDenied};
use crate::join::{self, Join};
use crate::session::Actor;
use crate::store::{JoinRecord, JoinRefusal, Redeemed};

/// A start's answer: the session, whether this call started it, and its join token.
#[derive(Debug)]
pub struct Started {
    /// The session.
    pub session: Session,
    /// Whether this call started it (else a repeated `Idempotency-Key` found it).
    pub new: bool,
    /// Its join token, when it runs and the token can be given.
    pub join: Option<Join>,
}

impl Service {
    /// [`Self::start`], answered with the session's join token: a fresh one for a new
    /// session, the same one for a repeat of its `Idempotency-Key` (opened from its seal).
    pub async fn start_and_join(
        self: &Arc<Self>,
        req: StartSession,
        key: Option<String>,
        actor: Actor,
    ) -> Result<Started, Error> {
        let (session, new) = self.start(req, key.clone(), actor).await?;
        let join = match self.join_for(&session, key.as_deref()).await {
            Ok(join) => join,
            // The game runs: the start is answered, and the player can ask for a token.
            Err(e) => {
                tracing::warn!(session = %session.session_id, error = %e, "cannot keep the session's join token; answering without one");
                None
            }
        };
        Ok(Started { session, new, join })
    }

    /// The join token to answer a start of `s` with, made and kept now unless the session
    /// has one; a kept one is given again only to a caller with the key it was sealed under.
    async fn join_for(&self, s: &Session, key: Option<&str>) -> Result<Option<Join>, Error> {
        if s.status != SessionStatus::Running {
            return Ok(None);
        }
        let id = &s.session_id;
        let token = join::mint();
        let expires_at = OffsetDateTime::now_utc() + self.settings.join_ttl;
        let record = JoinRecord {
            token_hash: join::token_hash(&token),
            sealed: key.and_then(|k| join::seal(&token, k, id)),
            expires_at,
            used_at: None,
        };
        if self.store.put_join(id, &record, false).await? {
            return Ok(Some(Join { token, expires_at }));
        }
        let Some(kept) = self.store.join_of(id).await? else {
            return Ok(None);
        };
        Ok(key
            .zip(kept.sealed)
            .map(|(k, sealed)| join::unseal(&sealed, k, id))
            .filter(|t| join::token_hash(t) == kept.token_hash)
            .map(|token| Join {
                token,
                expires_at: kept.expires_at,
            }))
    }

    /// Where and with what key the game of session `id` redeems its players' tokens.
    pub(super) fn join_access(&self, id: &SessionId) -> JoinAccess {
        JoinAccess {
            url: format!("{}/v1/sessions/{id}/join", self.settings.public_url),
            key: self.settings.game_keys.key_for(id),
        }
    }

    /// Redeems `token` for session `id`, by the game holding the game key of `key_of`
    /// (`None`: an admin, or an open API): once, while unexpired and while the session runs.
    /// Answers the session as `session.joined` carries it.
    pub async fn redeem(
        &self,
        id: &SessionId,
        token: &str,
        key_of: Option<&SessionId>,
    ) -> Result<Session, Error> {
        let denied = |why| Error::JoinDenied {
            session: id.clone(),
            why,
        };
        if key_of.is_some_and(|k| k != id) {
            return Err(denied(JoinDenied::OtherSessionsKey));
        }
        let hash = join::token_hash(token);
        let now = OffsetDateTime::now_utc();
        match self.store.redeem(id, &hash, now, Actor::Game).await? {
            Redeemed::Joined(s) => {
                self.feed.wake();
                tracing::info!(session = %id, "a player joined");
                Ok(*s)
            }
            Redeemed::Refused(why) => Err(match why {
                JoinRefusal::NotFound => Error::NoSession(id.clone()),
                JoinRefusal::NotRunning => denied(JoinDenied::NotRunning),
                JoinRefusal::WrongToken => denied(JoinDenied::WrongToken),
                JoinRefusal::Used => denied(JoinDenied::Used),
                JoinRefusal::Expired => denied(JoinDenied::Expired),
            }),
        }
    }

    /// A fresh join token for session `id` (a player's reconnect), as `player` sees it
    /// (another user's session: not found); the previous token stops working.
    pub async fn mint_join(&self, id: &SessionId, player: Option<&str>) -> Result<Join, Error> {
        let s = self.get_as(id, player).await?;
        if s.status != SessionStatus::Running {
            return Err(Error::Conflict(format!(
                "session {id} is {}: only a running session's game can be joined",
                s.status.as_str()
            )));
        }
        let token = join::mint();
        let expires_at = OffsetDateTime::now_utc() + self.settings.join_ttl;
        let record = JoinRecord {
            token_hash: join::token_hash(&token),
            sealed: None,
            expires_at,
            used_at: None,
        };
        self.store.put_join(id, &record, true).await?;
        Ok(Join { token, expires_at })
    }
}
