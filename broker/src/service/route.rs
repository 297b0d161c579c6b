//! Where a host's agent is: connected here, or to another replica. The one place that decides
//! and sends; starts, ends, log reads and sweeps ask it and do not know which it was.
//!
//! A host whose agent is connected here is served here, with the link found. Otherwise, with
//! replicas, the call goes over NATS ([`super::remote`]) to the host's owner: for a start, the
//! owner placement's view names; for the rest, the owner the store names. Without replicas, or
//! with no owner, the host is offline.
//!
//! An owner killed mid-call never answers, and a call's deadline is its owner's (a stop may
//! take two minutes). So while a routed start or end waits, the session's record is read
//! every [`RECORD_POLL`]: once it says what the call would have answered (the host's new
//! owner reconciled it, or the dead owner's last write landed), that is the answer.

use std::time::Duration;

use protocol::api::{Session, SessionStatus};
use protocol::wire::{LogChunk, LogRead};
use protocol::{HostId, SessionId};

use super::logs::PAGE_TIMEOUT;
use super::remote::{Call, LogPiece, NotAnswered, Started};
use super::start::{Forwarded, NewStart};
use super::view::Placed;
use super::Service;
use crate::agents::AgentLink;
use crate::error::{Error, Unreachable};
use crate::session::Actor;

/// An owner gets this long beyond its own deadline (the launch or stop timeout) to answer.
const CALL_GRACE: Duration = Duration::from_secs(2);

/// How often a routed call's session record is read while the call waits.
const RECORD_POLL: Duration = Duration::from_secs(1);

/// Where a host's agent is.
#[derive(Debug)]
pub(super) enum Route {
    /// Connected here.
    Here(AgentLink),
    /// Connected to this replica.
    Replica {
        /// The replica.
        owner: String,
        /// Named by this replica's view of the shared hosts (up to a second old), not read
        /// from the store now: an owner that answers that the host moved on sends the call
        /// back to the store's word.
        hinted: bool,
    },
}

/// Whether a call's answer says that a route from the view may have been stale: the owner no
/// longer holds the host, or nobody took the call (the owner is gone). Nothing was done.
fn stale<T>(answer: &Result<T, Result<Error, NotAnswered>>) -> bool {
    matches!(
        answer,
        Err(Ok(Error::HostUnavailable {
            why: Unreachable::Moved,
            ..
        })) | Err(Err(NotAnswered::NotDelivered))
    )
}

impl Service {
    /// Where `host`'s agent is; [`Unreachable::Offline`] when nowhere. Another replica is
    /// named by this replica's view of the shared hosts when it is fresh and names one, unless
    /// `fresh`; else by the store.
    pub(super) async fn route(&self, host: &HostId, fresh: bool) -> Result<Route, Error> {
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
        let me = &self.settings.broker_id;
        if !fresh {
            if let Some(owner) = replicas.view.owner(host).filter(|o| o != me) {
                return Ok(Route::Replica {
                    owner,
                    hinted: true,
                });
            }
        }
        match self.store.owner(host).await? {
            Some(owner) if &owner != me => Ok(Route::Replica {
                owner,
                hinted: false,
            }),
            _ => Err(offline()),
        }
    }

    /// Sends a start to the replica holding the agent of the host placement chose, which
    /// starts it as [`Service::start_here`] does and answers. A start the owner never took
    /// (nobody listens on its subject, NATS is down, or it is too busy) did nothing: it is
    /// [`Forwarded::NotTaken`], and another replica may be tried. One sent whose answer did
    /// not come in time may have started: [`Forwarded::Unknown`], and the pipeline answers
    /// what the store recorded of it, if anything.
    pub(super) async fn start_there(&self, placed: &Placed, start: &NewStart) -> Forwarded {
        let host = &placed.host;
        let unreachable = || Error::HostUnavailable {
            host: host.clone(),
            why: Unreachable::ReplicaUnreachable,
        };
        let call = Call::Start {
            start: Box::new(start.clone()),
            host: host.clone(),
        };
        // The owner answers within the game's launch deadline; a caller whose owner died
        // mid-launch waits no longer than that.
        let deadline = self
            .launch_deadline_anywhere(host, &start.request.game_id)
            .await
            + CALL_GRACE;
        let answered = tokio::select! {
            answer = self.call::<Started>(&placed.owner, &call, deadline) => answer,
            // Running (or over) as recorded: its owner launched it, whether or not it lives to
            // answer. (A failed record waits for the owner's answer: the error is in it.)
            _ = self.record_says(&start.id, |s| {
                !matches!(s.status, SessionStatus::Starting | SessionStatus::Failed)
            }) => Err(Err(NotAnswered::Unknown)),
        };
        match answered {
            Ok(s) => {
                let span = tracing::Span::current();
                span.record("session", tracing::field::display(&start.id));
                span.record("host", tracing::field::display(&s.session.host_id));
                Forwarded::Answered(Box::new(Ok((s.session, s.new))))
            }
            Err(Ok(e)) => Forwarded::Answered(Box::new(Err(e))),
            Err(Err(NotAnswered::Unknown)) => Forwarded::Unknown(unreachable()),
            Err(Err(NotAnswered::NotDelivered)) => Forwarded::NotTaken(unreachable()),
        }
    }

    /// Ends a session wherever its host's agent is; here when it is nowhere (the session is
    /// then left `stopping`).
    pub(super) async fn end_routed(
        &self,
        host: &HostId,
        id: &SessionId,
        actor: Actor,
    ) -> Result<Session, Error> {
        let mut fresh = false;
        let answer = loop {
            let (owner, hinted) = match self.route(host, fresh).await {
                Ok(Route::Here(link)) => return self.end_here(id, actor, Some(link)).await,
                Ok(Route::Replica { owner, hinted }) => (owner, hinted),
                Err(_) => return self.end_here(id, actor, None).await,
            };
            let call = Call::End {
                session_id: id.clone(),
                actor,
                host_id: Some(host.clone()),
            };
            let deadline = self.settings.stop_timeout + CALL_GRACE;
            let answer = tokio::select! {
                answer = self.call(&owner, &call, deadline) => answer,
                s = self.record_says(id, |s| s.status.is_terminal()) => return Ok(s),
            };
            if !(hinted && stale(&answer)) {
                break answer;
            }
            fresh = true;
        };
        answer.map_err(|e| match e {
            Ok(e) => e,
            Err(_) => Error::HostUnavailable {
                host: host.clone(),
                why: Unreachable::ReplicaUnreachable,
            },
        })
    }

    /// Session `id` once its record, read every [`RECORD_POLL`], says `done`.
    async fn record_says(&self, id: &SessionId, done: impl Fn(&Session) -> bool) -> Session {
        loop {
            tokio::time::sleep(RECORD_POLL).await;
            match self.store.get(id).await {
                Ok(s) if done(&s) => return s,
                _ => {}
            }
        }
    }

    /// Reads a page of a game's output from `host`'s agent, wherever it is.
    pub(super) async fn log_page_routed(
        &self,
        host: &HostId,
        id: &SessionId,
        read: LogRead,
    ) -> Result<LogChunk, Error> {
        let mut fresh = false;
        let answer = loop {
            let (owner, hinted) = match self.route(host, fresh).await {
                Ok(Route::Here(link)) => return self.log_page_here(&link, host, id, read).await,
                Ok(Route::Replica { owner, hinted }) => (owner, hinted),
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
            let answer = self.call(&owner, &call, PAGE_TIMEOUT + CALL_GRACE).await;
            if !(hinted && stale(&answer)) {
                break answer;
            }
            fresh = true;
        };
        let piece: LogPiece = answer.map_err(|e| match e {
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
        // From the store: a stop nobody waits for cannot be sent again.
        match self.route(host, true).await {
            Ok(Route::Here(link)) => link.stop_nowait(id.clone()),
            Ok(Route::Replica { owner, .. }) => self.tell_stop(&owner, host, id).await,
            Err(e) => {
                tracing::debug!(session = %id, error = %e, "stop left to the host's reconcile")
            }
        }
    }
}
