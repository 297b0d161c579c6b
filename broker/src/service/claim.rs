//! Starting a game when the broker is one of several replicas: place from the hosts the
//! replicas share, claim the slot in the store, then launch where the host's agent is.
//!
//! Capacity is exact whatever the interleaving: the claim is one transaction that locks the
//! host's row and counts its live sessions ([`MysqlStore::claim`]), so concurrent starts
//! through any replicas queue on it. A start that loses the race for a host's last slot places
//! again among the others, as Agones and Thundernetes retry placement on contention. The
//! session is recorded (`starting`, bound to its `Idempotency-Key`) before anything is
//! launched, so a retry through another replica, or a replica that dies mid-launch, finds it.
//!
//! Placement reads a view of the shared hosts kept for [`VIEW_TTL`] (reading it costs about as
//! much as the claim itself: measured in BENCHMARKS.md), counting this replica's own claims
//! meanwhile. It may be stale, never wrong: the claim decides, and a start that finds no
//! host in a kept view reads the store again before it answers.
//!
//! [`MysqlStore::claim`]: crate::store::mysql::MysqlStore::claim

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use protocol::api::{HostStatus, Session, StartSession};
use protocol::wire::GameOffer;
use protocol::{GameId, HostId, PoolId, SessionId};
use time::OffsetDateTime;

use super::Service;
use crate::error::Error;
use crate::placement::{self, HostView};
use crate::session::Actor;
use crate::store::{Claimed, IdempotencyKey, KeyMatch, SharedHost};

/// How long placement uses a view of the shared hosts before it reads them again.
const VIEW_TTL: Duration = Duration::from_secs(1);

/// The view of the shared hosts placement uses, and when it was read.
#[derive(Debug, Default)]
pub(super) struct SharedView(Mutex<Option<(Instant, Vec<HostView>)>>);

impl SharedView {
    fn get(&self) -> Option<Vec<HostView>> {
        let kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        kept.as_ref()
            .filter(|(at, _)| at.elapsed() < VIEW_TTL)
            .map(|(_, v)| v.clone())
    }

    /// Keeps `views`, read from the store now, unless `keep_fresh` and another start kept a
    /// view read within [`VIEW_TTL`] meanwhile: that one holds the claims counted since, which
    /// concurrent starts must see to spread. Answers the view kept.
    fn set(&self, views: Vec<HostView>, keep_fresh: bool) -> Vec<HostView> {
        let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match kept.as_ref() {
            Some((at, v)) if keep_fresh && at.elapsed() < VIEW_TTL => v.clone(),
            _ => {
                *kept = Some((Instant::now(), views.clone()));
                views
            }
        }
    }

    /// Places a session on the kept view, if it is fresh, and counts it there at once, so
    /// concurrent starts through this replica spread over the hosts instead of all choosing
    /// the one that was least loaded when they began.
    fn place(
        &self,
        game: &protocol::GameId,
        mode: Option<&str>,
    ) -> Option<Result<placement::Choice, placement::PlacementError>> {
        let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let (at, views) = kept.as_mut()?;
        if at.elapsed() >= VIEW_TTL {
            return None;
        }
        let choice = placement::place(views.iter(), game, mode);
        if let Ok(c) = &choice {
            if let Some(v) = views.iter_mut().find(|v| v.host_id == c.host_id) {
                v.sessions += 1;
            }
        }
        Some(choice)
    }

    /// Applies `change` to a host of the kept view.
    fn update(&self, host: &protocol::HostId, change: impl FnOnce(&mut HostView)) {
        let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(v) = kept
            .as_mut()
            .and_then(|(_, v)| v.iter_mut().find(|v| &v.host_id == host))
        {
            change(v);
        }
    }
}

/// How long a replica may be silent before its hosts count as offline. Replicas say they are
/// alive a few times per heartbeat timeout.
pub(super) fn alive_within(heartbeat_timeout: Duration) -> Duration {
    heartbeat_timeout
}

/// What placement sees of a shared host: online when a live replica holds its agent, has
/// squared its games, and it is not drained.
pub(super) fn view(h: &SharedHost) -> HostView {
    let facts = h.record.facts.as_ref();
    let status = match (h.owner.is_some() && h.ready, h.record.drained) {
        (false, _) => HostStatus::Offline,
        (true, true) => HostStatus::Draining,
        (true, false) => HostStatus::Online,
    };
    HostView {
        host_id: h.record.host_id.clone(),
        status,
        games: facts.map(|f| f.games.clone()).unwrap_or_default(),
        max_sessions: facts.map_or(0, |f| f.max_sessions),
        sessions: h.sessions,
        cpu_percent: h.load.0,
    }
}

impl Service {
    /// Places, claims and launches a new session (see the module's doc).
    pub(super) async fn start_claimed(
        &self,
        id: SessionId,
        req: StartSession,
        key: Option<&IdempotencyKey>,
        actor: Actor,
        pool: Option<&PoolId>,
    ) -> Result<(Session, bool), Error> {
        let replicas = self.replicas()?;
        // The store is read at most once: a start that finds no host in a kept view reads it
        // again before it answers.
        let mut fresh = false;
        // Each round claims, takes one host out of the running, or (once) reads the store.
        let session = loop {
            let placed = match self.shared_view.place(&req.game_id, req.mode.as_deref()) {
                Some(p) => p,
                None => {
                    self.read_view_keeping_fresh(true).await?;
                    fresh = true;
                    continue;
                }
            };
            let choice = match placed {
                Ok(c) => c,
                Err(_) if !fresh => {
                    self.read_view_keeping_fresh(false).await?;
                    fresh = true;
                    continue;
                }
                Err(e) => {
                    // A concurrent start with the same key may hold the last slot: it answers.
                    if let Some(first) = self.same_key(key).await? {
                        return Ok((self.settled(&first).await?, false));
                    }
                    let any = self
                        .shared_view
                        .get()
                        .is_some_and(|v| v.iter().any(|v| v.status != HostStatus::Offline));
                    return Err(self.placement_failed(e, &req, any).await);
                }
            };
            let mut session = crate::session::new_session(
                id.clone(),
                req.game_id.clone(),
                choice.mode.clone(),
                req.config.clone(),
                choice.host_id.clone(),
                OffsetDateTime::now_utc(),
            );
            session.pool_id = pool.cloned();
            session.settings.clone_from(&req.settings);
            session.user_id.clone_from(&req.user_id);
            session.max_duration_s = self.max_duration(&choice.host_id, &req).await;
            let max = self.settings.max_sessions_per_user;
            match replicas.db.claim(&session, key, actor, max).await? {
                Claimed::New { .. } => break session,
                Claimed::Full | Claimed::Gone => {
                    self.shared_view
                        .update(&choice.host_id, |v| v.status = HostStatus::Offline);
                }
                Claimed::Quota => {
                    return Err(self.quota_exceeded(req.user_id.as_deref()).await);
                }
                Claimed::KeyTaken => {
                    return match self.same_key(key).await? {
                        Some(first) => Ok((self.settled(&first).await?, false)),
                        None => Err(Error::KeyReused),
                    };
                }
            }
        };
        let span = tracing::Span::current();
        span.record("session", tracing::field::display(&id));
        span.record("host", tracing::field::display(&session.host_id));
        let _ = self.changes.send(id.clone());
        let result = self.launch_routed(&session, &req).await;
        if let (Err(_), Some(k)) = (&result, key) {
            if let Err(e) = self.store.forget_key(&k.key).await {
                tracing::warn!(error = %e, "could not forget the Idempotency-Key of a failed start");
            }
        }
        result.map(|s| (s, true))
    }

    /// The settings a game offers, as a shared host that offers it says.
    pub(super) async fn shared_game_settings(
        &self,
        game: &protocol::GameId,
    ) -> Result<Option<Vec<protocol::settings::SettingOffer>>, Error> {
        let views = match self.shared_view.get() {
            Some(v) => v,
            None => self.read_view().await?,
        };
        Ok(views
            .iter()
            .filter(|v| v.status != HostStatus::Offline)
            .flat_map(|v| v.games.iter())
            .find(|g| &g.game_id == game)
            .map(|g| g.settings.clone()))
    }

    /// How `host` offers `game`, as the shared view of the hosts says; `None` when the view
    /// does not know the host or it cannot be read.
    pub(super) async fn shared_offer(&self, host: &HostId, game: &GameId) -> Option<GameOffer> {
        let views = match self.shared_view.get() {
            Some(v) => v,
            // A view a start kept meanwhile holds the claims it counted: it wins.
            None => self.read_view_keeping_fresh(true).await.ok()?,
        };
        views
            .iter()
            .find(|v| &v.host_id == host)?
            .games
            .iter()
            .find(|g| &g.game_id == game)
            .cloned()
    }

    /// Reads the shared hosts as placement sees them, and keeps the view.
    async fn read_view(&self) -> Result<Vec<HostView>, Error> {
        self.read_view_keeping_fresh(false).await
    }

    /// [`Self::read_view`], but a view another start kept meanwhile wins when `keep_fresh`.
    async fn read_view_keeping_fresh(&self, keep_fresh: bool) -> Result<Vec<HostView>, Error> {
        let shared = self
            .replicas()?
            .db
            .shared_hosts(alive_within(self.settings.heartbeat_timeout))
            .await?;
        let views: Vec<HostView> = shared.iter().map(view).collect();
        Ok(self.shared_view.set(views, keep_fresh))
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::HostRecord;
    use protocol::HostId;

    fn shared(owner: Option<&str>, ready: bool, drained: bool) -> SharedHost {
        SharedHost {
            record: HostRecord {
                host_id: HostId::new("h").unwrap(),
                drained,
                facts: None,
                last_seen: OffsetDateTime::UNIX_EPOCH,
            },
            owner: owner.map(str::to_owned),
            epoch: 3,
            ready,
            sessions: 2,
            load: (12.5, 0),
        }
    }

    #[test]
    fn a_shared_host_is_online_only_when_held_reconciled_and_not_drained() {
        let cases = [
            (Some("b1"), true, false, HostStatus::Online),
            (Some("b1"), true, true, HostStatus::Draining),
            (Some("b1"), false, false, HostStatus::Offline),
            (None, true, false, HostStatus::Offline),
            (None, false, true, HostStatus::Offline),
        ];
        for (owner, ready, drained, status) in cases {
            let v = view(&shared(owner, ready, drained));
            assert_eq!(v.status, status, "{owner:?} {ready} {drained}");
            assert_eq!(v.sessions, 2);
        }
    }
}
