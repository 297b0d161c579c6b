//! Where a host's agent is: connected here, or to another replica. The one place that decides;
//! starts, ends, log reads and sweeps ask it and do not know which it was.
//!
//! A host whose agent is connected here is served here. Otherwise, with replicas, the store
//! names its owner and the call goes there over NATS ([`super::remote`]); without replicas, or
//! with no owner, the host is offline.

use std::time::Duration;

use protocol::api::{Session, StartSession};
use protocol::{HostId, SessionId};

use protocol::wire::{LogChunk, LogRead};

use super::logs::PAGE_TIMEOUT;
use super::remote::{Call, LogPiece, NotAnswered};
use super::Service;
use crate::agents::AgentLink;
use crate::error::{Error, Unreachable};
use crate::session::{Actor, SessionEvent};

/// An owner gets this long beyond its own deadline (the launch or stop timeout) to answer.
const CALL_GRACE: Duration = Duration::from_secs(2);

/// Where a host's agent is.
#[derive(Debug)]
pub(super) enum Route {
    /// Connected here.
    Here(AgentLink),
    /// Connected to this replica.
    Replica(String),
}

impl Service {
    /// Where `host`'s agent is; [`Unreachable::Offline`] when nowhere.
    pub(super) async fn route(&self, host: &HostId) -> Result<Route, Error> {
        if let Some(link) = self.registry.link(host) {
            return Ok(Route::Here(link));
        }
        let offline = || Error::HostUnavailable {
            host: host.clone(),
            why: Unreachable::Offline,
        };
        let Some(replicas) = &self.replicas else {
            return Err(offline());
        };
        match replicas.db.owner(host).await? {
            Some(owner) if owner != self.settings.broker_id => Ok(Route::Replica(owner)),
            _ => Err(offline()),
        }
    }

    /// Launches the game of a session claimed `starting` wherever its host's agent is, and
    /// answers the recorded outcome. A launch that provably never reached an agent is
    /// recorded failed here; one whose fate is unknown (the owner did not answer in time) is
    /// left `starting`, for its owner or, if that died, the sweep to settle.
    pub(super) async fn launch_routed(
        &self,
        session: &Session,
        request: &StartSession,
    ) -> Result<Session, Error> {
        let host = &session.host_id;
        let unreachable = || Error::HostUnavailable {
            host: host.clone(),
            why: Unreachable::ReplicaUnreachable,
        };
        let not_launched = match self.route(host).await {
            Ok(Route::Here(_)) => return self.launch_here(session, request).await,
            Ok(Route::Replica(owner)) => {
                let call = Call::Launch {
                    session: Box::new(session.clone()),
                    request: request.clone(),
                };
                // The owner answers within the game's launch deadline; a caller whose owner
                // died mid-launch waits no longer than that.
                let deadline =
                    self.launch_deadline_anywhere(host, &session.game_id).await + CALL_GRACE;
                match self.call(&owner, &call, deadline).await {
                    Ok(s) => return Ok(s),
                    Err(Ok(e)) => return Err(e),
                    Err(Err(NotAnswered::Unknown)) => return Err(unreachable()),
                    Err(Err(NotAnswered::NotDelivered)) => unreachable(),
                }
            }
            Err(e) => e,
        };
        if let Err(e) = self
            .record(
                &session.session_id,
                SessionEvent::LaunchFailed,
                Actor::Sweep,
            )
            .await
        {
            tracing::warn!(session = %session.session_id, error = %e, "could not record a launch that never ran");
        }
        Err(not_launched)
    }

    /// Ends a session wherever its host's agent is; here when it is nowhere (the session is
    /// then left `stopping`).
    pub(super) async fn end_routed(
        &self,
        host: &HostId,
        id: &SessionId,
        actor: Actor,
    ) -> Result<Session, Error> {
        let Ok(Route::Replica(owner)) = self.route(host).await else {
            return self.end_here(id, actor).await;
        };
        let call = Call::End {
            session_id: id.clone(),
            actor,
        };
        let deadline = self.settings.stop_timeout + CALL_GRACE;
        self.call(&owner, &call, deadline)
            .await
            .map_err(|e| match e {
                Ok(e) => e,
                Err(_) => Error::HostUnavailable {
                    host: host.clone(),
                    why: Unreachable::ReplicaUnreachable,
                },
            })
    }

    /// Reads a page of a game's output from `host`'s agent, wherever it is.
    pub(super) async fn log_page_routed(
        &self,
        host: &HostId,
        id: &SessionId,
        read: LogRead,
    ) -> Result<LogChunk, Error> {
        let owner = match self.route(host).await {
            Ok(Route::Here(_)) => return self.log_page_here(host, id, read).await,
            Ok(Route::Replica(owner)) => owner,
            Err(Error::HostUnavailable { host, .. }) => {
                return Err(Error::HostUnavailable {
                    host,
                    why: Unreachable::LogOffline,
                })
            }
            Err(e) => return Err(e),
        };
        let call = Call::ReadLog {
            host_id: host.clone(),
            session_id: id.clone(),
            read,
        };
        let piece: LogPiece = self
            .call(&owner, &call, PAGE_TIMEOUT + CALL_GRACE)
            .await
            .map_err(|e| match e {
                Ok(e) => e,
                Err(_) => Error::HostUnavailable {
                    host: host.clone(),
                    why: Unreachable::ReplicaUnreachable,
                },
            })?;
        piece.try_into()
    }

    /// Asks `host`'s agent, wherever it is, to stop a game; nobody waits for the answer.
    pub(super) async fn stop_routed(&self, host: &HostId, id: &SessionId) {
        match self.route(host).await {
            Ok(Route::Here(link)) => link.stop_nowait(id.clone()),
            Ok(Route::Replica(owner)) => self.tell_stop(&owner, host, id).await,
            Err(e) => {
                tracing::debug!(session = %id, error = %e, "stop left to the host's reconcile")
            }
        }
    }
}
