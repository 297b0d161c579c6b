//! Replicas asking each other: a start, an end, a log read or a stop for a host whose agent
//! is connected to another replica is done by that replica (the host's owner), over NATS
//! request-reply, and its answer comes back. A start is sent whole, before anything is
//! recorded: the owner places it on its own hosts, launches and records it as one broker does.
//!
//! The calls are a closed enum ([`Call`]) and the answers carry the service's own errors
//! ([`Failure`] mirrors the [`Error`]s an owner can answer), so a start through any replica
//! answers what it would through the owner. Payloads are JSON, bounded by
//! [`MAX_CALL_BYTES`]. Every call is bounded by a deadline; "nobody listens" (the replica is
//! gone) and "no answer in time" are told apart, since only the first proves nothing ran.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use protocol::api::Session;
use protocol::wire::{LogChunk, LogRead};
use protocol::{GameId, HostId, SessionId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::start::NewStart;
use super::Service;
use crate::error::{Error, LaunchFailure, Unreachable};
use crate::nats::{Inbox, Nats, RequestError};
use crate::session::Actor;

/// A call or an answer larger than this is refused (a session is well under 2 KiB, a page of
/// a game's log 64 KiB in base64).
pub const MAX_CALL_BYTES: usize = 128 * 1024;
/// Calls from other replicas served at once, at most; past it a call is answered
/// "unreachable", and its caller retries.
const MAX_SERVED: usize = 1024;

/// What makes this broker one of several: NATS between the replicas, and what this one sees
/// of the hosts they share (the records themselves are in the shared store).
#[derive(Debug)]
pub struct Replicas {
    /// Between replicas.
    pub nats: Nats,
    /// Placement's view of the shared hosts.
    pub(super) view: super::view::SharedView,
}

impl Replicas {
    /// The replica set reached through `nats`.
    pub fn new(nats: Nats) -> Self {
        Self {
            nats,
            view: super::view::SharedView::default(),
        }
    }
}

/// What one replica asks the owner of a host.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum Call {
    /// Start a session on one of your hosts (`host` if it has room), and record it: as one
    /// broker starts one. Nothing of it is recorded yet.
    Start {
        /// The start.
        start: Box<NewStart>,
        /// The host placement chose.
        host: HostId,
    },
    /// End a session on one of your hosts.
    End {
        /// The session.
        session_id: SessionId,
        /// Who asked.
        actor: Actor,
        /// Its host, as the caller routed it: an owner that no longer holds it answers
        /// "moved" and does nothing (absent from callers before issue 24).
        #[serde(default)]
        host_id: Option<HostId>,
    },
    /// One of your hosts was drained or resumed through another replica (recorded already):
    /// your placement must know at once.
    Drain {
        /// The host.
        host_id: HostId,
        /// Drained (`true`) or resumed.
        draining: bool,
    },
    /// Stop a game; nobody waits for the answer.
    Stop {
        /// The host.
        host_id: HostId,
        /// The session.
        session_id: SessionId,
    },
    /// Read a page of a game's output on one of your hosts.
    ReadLog {
        /// The host.
        host_id: HostId,
        /// The session.
        session_id: SessionId,
        /// Which part.
        read: LogRead,
    },
}

/// A page of a game's log between replicas, its bytes in base64 (JSON has no bytes).
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct LogPiece {
    offset: u64,
    size: u64,
    data: String,
}

impl From<LogChunk> for LogPiece {
    fn from(c: LogChunk) -> Self {
        Self {
            offset: c.offset,
            size: c.size,
            data: BASE64.encode(&c.data),
        }
    }
}

impl TryFrom<LogPiece> for LogChunk {
    type Error = Error;
    fn try_from(p: LogPiece) -> Result<Self, Error> {
        let data = BASE64
            .decode(p.data)
            .map_err(|e| Error::Internal(format!("a log page that does not decode: {e}")))?;
        Ok(Self {
            offset: p.offset,
            size: p.size,
            data,
        })
    }
}

/// Why the owner could not do what was asked: the [`Error`]s a start or an end can answer.
#[derive(Debug, Serialize, Deserialize)]
enum Failure {
    Refused(String),
    NoSession(SessionId),
    NoLog {
        session: SessionId,
        host: HostId,
    },
    NoCapacity {
        game: GameId,
        retry_after_secs: u32,
    },
    LaunchFailed {
        host: HostId,
        why: LaunchFailure,
    },
    LaunchTimeout {
        host: HostId,
        after: Duration,
    },
    GameNotReady {
        host: HostId,
        why: String,
    },
    HostUnavailable {
        host: HostId,
        why: Unreachable,
    },
    Conflict(String),
    KeyReused,
    QuotaExceeded {
        user: String,
        sessions: Vec<SessionId>,
    },
    StoreUnavailable,
    /// The owner serves too many calls at once, or is stopping, and did not take this one:
    /// nothing ran.
    Busy,
    /// A fault of the owner's own (logged there).
    Internal,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        match e {
            Error::Refused(m) => Self::Refused(m),
            Error::NoSession(id) => Self::NoSession(id),
            Error::NoLog { session, host } => Self::NoLog { session, host },
            Error::NoCapacity {
                game,
                retry_after_secs,
            } => Self::NoCapacity {
                game,
                retry_after_secs,
            },
            Error::LaunchFailed { host, why } => Self::LaunchFailed { host, why },
            Error::LaunchTimeout { host, after } => Self::LaunchTimeout { host, after },
            Error::GameNotReady { host, why } => Self::GameNotReady { host, why },
            Error::HostUnavailable { host, why } => Self::HostUnavailable { host, why },
            Error::Conflict(m) => Self::Conflict(m),
            Error::KeyReused => Self::KeyReused,
            Error::QuotaExceeded { user, sessions } => Self::QuotaExceeded { user, sessions },
            Error::StoreUnavailable(_) | Error::NotReady(_) => Self::StoreUnavailable,
            other => {
                tracing::error!(error = %other, "a call from another replica failed");
                Self::Internal
            }
        }
    }
}

impl From<Failure> for Error {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Refused(m) => Self::Refused(m),
            Failure::NoSession(id) => Self::NoSession(id),
            Failure::NoLog { session, host } => Self::NoLog { session, host },
            Failure::NoCapacity {
                game,
                retry_after_secs,
            } => Self::NoCapacity {
                game,
                retry_after_secs,
            },
            Failure::LaunchFailed { host, why } => Self::LaunchFailed { host, why },
            Failure::LaunchTimeout { host, after } => Self::LaunchTimeout { host, after },
            Failure::GameNotReady { host, why } => Self::GameNotReady { host, why },
            Failure::HostUnavailable { host, why } => Self::HostUnavailable { host, why },
            Failure::Conflict(m) => Self::Conflict(m),
            Failure::KeyReused => Self::KeyReused,
            Failure::QuotaExceeded { user, sessions } => Self::QuotaExceeded { user, sessions },
            Failure::StoreUnavailable => Self::StoreUnavailable(
                crate::store::StoreError::Unavailable("on the host's broker".into()),
            ),
            Failure::Busy | Failure::Internal => {
                Self::Internal("another replica failed the call".into())
            }
        }
    }
}

/// The owner's answer to a start: the session, and whether this start created it (a retry
/// under an `Idempotency-Key` answers the first start's).
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Started {
    pub session: Session,
    pub new: bool,
}

/// The owner's answer: [`Started`] for a start, a session for an end, a [`LogPiece`] for a
/// log read.
type Answer<T> = Result<T, Failure>;

/// Why a call to another replica got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NotAnswered {
    /// It never reached a replica: nothing was done.
    NotDelivered,
    /// It may have been done.
    Unknown,
}

impl Service {
    pub(super) fn replicas(&self) -> Result<&Replicas, Error> {
        self.replicas
            .as_ref()
            .ok_or_else(|| Error::Internal("a call to another replica without replicas".into()))
    }

    /// Asks replica `owner` to do `call` for `host`, waiting at most `deadline`. `Err(Ok(e))`:
    /// the owner's answer is an error; `Err(Err(n))`: no answer.
    pub(super) async fn call<T: DeserializeOwned>(
        &self,
        owner: &str,
        call: &Call,
        deadline: Duration,
    ) -> Result<T, Result<Error, NotAnswered>> {
        let replicas = self.replicas().map_err(Ok)?;
        let payload = serde_json::to_vec(call)
            .map_err(|e| Ok(Error::Internal(format!("cannot encode a call: {e}"))))?;
        let answer = replicas
            .nats
            .request(owner, payload, deadline)
            .await
            .map_err(|e| {
                tracing::warn!(%owner, error = %e, "another replica did not answer");
                Err(match e {
                    RequestError::NoResponders | RequestError::Disconnected => {
                        NotAnswered::NotDelivered
                    }
                    RequestError::TimedOut => NotAnswered::Unknown,
                })
            })?;
        if answer.len() > MAX_CALL_BYTES {
            return Err(Ok(Error::Internal("an answer too large".into())));
        }
        let answer: Answer<T> = serde_json::from_slice(&answer)
            .map_err(|e| Ok(Error::Internal(format!("cannot decode an answer: {e}"))))?;
        answer.map_err(|f| match f {
            Failure::Busy => {
                tracing::warn!(%owner, "another replica is too busy to take a call");
                Err(NotAnswered::NotDelivered)
            }
            f => Ok(f.into()),
        })
    }

    /// Tells replica `owner` to stop a game, without waiting.
    pub(super) async fn tell_stop(&self, owner: &str, host: &HostId, id: &SessionId) {
        let Ok(replicas) = self.replicas() else {
            return;
        };
        let call = Call::Stop {
            host_id: host.clone(),
            session_id: id.clone(),
        };
        match serde_json::to_vec(&call) {
            Ok(payload) => {
                if let Err(e) = replicas.nats.tell(owner, payload).await {
                    tracing::warn!(%owner, session = %id, error = %e, "cannot ask for a stop");
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot encode a stop"),
        }
    }

    /// Serves the calls of other replicas for this replica's hosts until `shutdown` fires.
    /// Each runs as a start or an end does (tracked, to completion); a call for a host whose
    /// agent is not here any more answers so.
    pub async fn serve_calls(self: Arc<Self>, mut inbox: Inbox, shutdown: CancellationToken) {
        let slots = Arc::new(Semaphore::new(MAX_SERVED));
        loop {
            let incoming = tokio::select! {
                () = shutdown.cancelled() => return,
                m = inbox.next() => match m { Some(m) => m, None => return },
            };
            let Some(replicas) = self.replicas.as_ref() else {
                return;
            };
            if incoming.payload.len() > MAX_CALL_BYTES {
                tracing::warn!(bytes = incoming.payload.len(), "a call too large; ignored");
                continue;
            }
            let call: Call = match serde_json::from_slice(&incoming.payload) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "a call that does not decode; ignored");
                    continue;
                }
            };
            let nats = replicas.nats.clone();
            // A replica that stops takes no new start: its agents' links close once the
            // starts and ends in flight are done, and a start taken now could be cut by that.
            // Not taken, the start goes to another replica's host at once.
            let stopping = self.is_closing() && matches!(call, Call::Start { .. });
            let permit = Arc::clone(&slots)
                .try_acquire_owned()
                .ok()
                .filter(|_| !stopping);
            let Some(permit) = permit else {
                if stopping {
                    tracing::info!("stopping: a start from another replica goes elsewhere");
                } else {
                    tracing::warn!("too many calls from other replicas at once; one refused");
                }
                if let Ok(bytes) = serde_json::to_vec(&Answer::<()>::Err(Failure::Busy)) {
                    nats.respond(incoming, bytes).await;
                }
                continue;
            };
            let svc = Arc::clone(&self);
            let span = tracing::info_span!("call", from = "replica");
            self.tasks.spawn_on(
                async move {
                    let answer = svc.answer(call).await;
                    drop(permit);
                    match answer {
                        Some(Ok(bytes)) => nats.respond(incoming, bytes).await,
                        Some(Err(e)) => tracing::error!(error = %e, "cannot encode an answer"),
                        None => {}
                    }
                }
                .instrument(span),
                &self.runtime,
            );
        }
    }

    /// Does what another replica asked and answers it encoded; `None` for a call that wants
    /// no answer.
    async fn answer(&self, call: Call) -> Option<serde_json::Result<Vec<u8>>> {
        fn encode<T: Serialize>(answer: Result<T, Error>) -> Option<serde_json::Result<Vec<u8>>> {
            Some(serde_json::to_vec(&answer.map_err(Failure::from)))
        }
        match call {
            Call::Start { start, host } => {
                let started = self.start_here(&start, Some(&host)).await;
                encode(started.map(|(s, new)| Started { session: s, new }))
            }
            Call::End {
                session_id,
                actor,
                host_id,
            } => {
                let link = host_id.as_ref().map(|h| self.registry.link(h));
                match (host_id, link) {
                    // Routed here by a view from before the host moved on: nothing is done.
                    (Some(host), Some(None)) => encode::<Session>(Err(Error::HostUnavailable {
                        host,
                        why: Unreachable::Moved,
                    })),
                    (_, link) => encode(self.end_here(&session_id, actor, link.flatten()).await),
                }
            }
            Call::ReadLog {
                host_id,
                session_id,
                read,
            } => {
                let Some(link) = self.registry.link(&host_id) else {
                    return encode::<LogPiece>(Err(Error::HostUnavailable {
                        host: host_id,
                        why: Unreachable::Moved,
                    }));
                };
                encode(
                    self.log_page_here(&link, &host_id, &session_id, read)
                        .await
                        .map(LogPiece::from),
                )
            }
            Call::Drain { host_id, draining } => {
                self.registry.set_draining(&host_id, draining);
                encode(Ok(()))
            }
            Call::Stop {
                host_id,
                session_id,
            } => {
                if let Some(link) = self.registry.link(&host_id) {
                    link.stop_nowait(session_id);
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owners_errors_come_back_as_they_were() {
        let host = HostId::new("gpu-1").unwrap();
        let errors = [
            Error::Refused("config outside config_dir".into()),
            Error::NoSession(SessionId::new("s").unwrap()),
            Error::NoLog {
                session: SessionId::new("s").unwrap(),
                host: host.clone(),
            },
            Error::HostUnavailable {
                host: host.clone(),
                why: Unreachable::LogBusy,
            },
            Error::LaunchFailed {
                host: host.clone(),
                why: LaunchFailure::Agent("exec failed".into()),
            },
            Error::LaunchTimeout {
                host: host.clone(),
                after: Duration::from_secs(30),
            },
            Error::HostUnavailable {
                host,
                why: Unreachable::StopTimedOut(Duration::from_secs(120)),
            },
            Error::KeyReused,
            Error::QuotaExceeded {
                user: "player-7".into(),
                sessions: vec![SessionId::new("s").unwrap()],
            },
        ];
        for e in errors {
            let wire =
                serde_json::to_vec(&Answer::<Session>::Err(Failure::from(e.clone()))).unwrap();
            let back: Answer<Session> = serde_json::from_slice(&wire).unwrap();
            assert_eq!(Error::from(back.unwrap_err()), e);
        }
        let internal = Error::from(Failure::from(Error::Internal("secret detail".into())));
        assert!(!internal.to_string().contains("secret"), "{internal}");
    }
}
