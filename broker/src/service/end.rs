//! Ending a session: record that it is stopping, have its agent stop the game, and answer once
//! the game's processes are gone, with the session `ended`.
//!
//! Ends agree: ending a session that is over answers its final state, a session still
//! starting is ended once its start settles, and two ends at once both answer the final state.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use protocol::api::{Session, SessionStatus};
use protocol::SessionId;
use tokio::time::timeout;
use tracing::Instrument;

use super::Service;
use crate::agents::{AgentLink, LinkError};
use crate::error::{Error, Unreachable};
use crate::session::{Actor, SessionEvent};
use crate::store::StoreError;

impl Service {
    /// Ends a session and answers once its game's processes are gone. The end runs to
    /// completion even if the caller goes away.
    pub async fn end(self: &Arc<Self>, id: SessionId, actor: Actor) -> Result<Session, Error> {
        let span = tracing::info_span!("end", session = %id, host = tracing::field::Empty);
        let t0 = std::time::Instant::now();
        let result = self
            .detached(move |svc| async move { svc.end_once(&id, actor).await }.instrument(span))
            .await;
        let outcome = match &result {
            Ok(_) => "ended",
            Err(e) => e.kind(),
        };
        self.metrics.ended(outcome, t0.elapsed());
        result
    }

    /// Ends the running session whose game is at `ip` with `pid` (the original portal's
    /// `/End`); for a `player`, only its own (another user's is as if there were none).
    pub async fn end_by_addr(
        self: &Arc<Self>,
        ip: String,
        pid: String,
        player: Option<&str>,
        actor: Actor,
    ) -> Result<Session, Error> {
        let not_found = || Error::NoSessionAt {
            ip: ip.clone(),
            pid: pid.clone(),
        };
        let addr: IpAddr = ip.trim().parse().map_err(|_| not_found())?;
        let game: u32 = pid.trim().parse().map_err(|_| not_found())?;
        let s = self
            .store
            .find_active_by_addr(addr, game)
            .await?
            .filter(|s| player.is_none_or(|u| s.user_id.as_deref() == Some(u)))
            .ok_or_else(not_found)?;
        self.end(s.session_id, actor).await
    }

    async fn end_once(&self, id: &SessionId, actor: Actor) -> Result<Session, Error> {
        let mut s = self.session(id).await?;
        if s.status == SessionStatus::Starting {
            s = self
                .wait_while_starting(id, self.longest_launch() + Duration::from_secs(1))
                .await?;
        }
        if s.status.is_terminal() {
            return Ok(s);
        }
        self.end_routed(&s.host_id, id, actor).await
    }

    /// Ends a session whose host's agent is connected here, through `link` when the router
    /// found it (the owner serving another replica's call finds its own), or nowhere: the
    /// session is then left `stopping`, and the answer says the host is offline.
    pub(super) async fn end_here(
        &self,
        id: &SessionId,
        actor: Actor,
        link: Option<AgentLink>,
    ) -> Result<Session, Error> {
        let _ending = self.inflight.end_begins(id.clone());
        let s = match self.record(id, SessionEvent::StopRequested, actor).await {
            Ok(s) => s,
            Err(StoreError::Transition(_)) => return Ok(self.store.get(id).await?),
            Err(e) => return Err(e.into()),
        };
        let host = &s.host_id;
        tracing::Span::current().record("host", tracing::field::display(host));
        let unreachable = |why| Error::HostUnavailable {
            host: host.clone(),
            why,
        };
        let link = link
            .or_else(|| self.registry.link(host))
            .ok_or_else(|| unreachable(Unreachable::Offline))?;
        match timeout(self.settings.stop_timeout, link.stop(id.clone())).await {
            Ok(Ok(())) => match self
                .record_as_owner(host, id, SessionEvent::Stopped, Actor::Agent)
                .await
            {
                Ok(s) => Ok(s),
                // Ended otherwise meanwhile (the game exited, a concurrent end): the final
                // state is the answer.
                Err(StoreError::Transition(_)) => Ok(self.store.get(id).await?),
                Err(e) => Err(e.into()),
            },
            Ok(Err(LinkError::Closed)) => Err(unreachable(Unreachable::DisconnectedWhileStopping)),
            Err(_) => Err(unreachable(Unreachable::StopTimedOut(
                self.settings.stop_timeout,
            ))),
        }
    }
}
