//! What a broker operation can fail with, in the broker's own words.
//!
//! The service returns [`Error`]; it knows nothing of HTTP. `broker::http` turns each variant
//! into a status and a body in one exhaustive match, and a variant's `Display` is the message a
//! caller may read — except [`Error::Internal`], whose text goes to the log only.

use std::time::Duration;

use protocol::{BuildId, GameId, HostId, PoolId, SessionId};

use crate::store::StoreError;

/// Why an operation failed. Messages say what happened and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A value of the request that the broker refuses (a mode too long, an empty
    /// `Idempotency-Key`, a cursor it did not hand out).
    #[error("{0}")]
    Invalid(String),
    /// The game has no such mode on any host that offers it.
    #[error("unknown mode {mode:?} for game {game}: it offers {}", offered.join(", "))]
    UnknownMode {
        /// The game.
        game: GameId,
        /// The mode asked for.
        mode: String,
        /// The modes on offer.
        offered: Vec<String>,
    },
    /// The agent refused the request as given (a config outside `config_dir`, a bad mode).
    #[error("{0}")]
    Refused(String),
    /// No such session.
    #[error("no session {0}")]
    NoSession(SessionId),
    /// The session's host has no log of it: the game never started there, or the log was
    /// removed after the agent's `--log-retention`.
    #[error("host {host} has no log of session {session}: its game never started, or the log is older than the agent's --log-retention")]
    NoLog {
        /// The session.
        session: SessionId,
        /// Its host.
        host: HostId,
    },
    /// No such host.
    #[error("no host {0}")]
    NoHost(HostId),
    /// No such pool.
    #[error("no pool {0}")]
    NoPool(PoolId),
    /// No such build.
    #[error("no build {0}")]
    NoBuild(BuildId),
    /// No such central game.
    #[error("no central game {0} (PUT /v1/games/{0} sets one)")]
    NoCentralGame(GameId),
    /// `If-Match` names a version that is not the central game's current one.
    #[error("game {0} has changed (or does not exist): read it again for its current ETag")]
    GameChanged(GameId),
    /// An upload larger than `--max-build-size`.
    #[error("the build is larger than --max-build-size ({0} bytes)")]
    BuildTooLarge(u64),
    /// A `Range` that starts at or past a build's end.
    #[error("the range starts at or past the build's end ({size} bytes)")]
    BadRange {
        /// The build's size.
        size: u64,
    },
    /// `If-Match` names a version that is not the pool's current one.
    #[error("pool {0} has changed (or does not exist): read it again for its current ETag")]
    PreconditionFailed(PoolId),
    /// No running session has this game address (the original portal's `/End`).
    #[error("no running session has IP {ip:?} and PID {pid:?}")]
    NoSessionAt {
        /// The IP asked for.
        ip: String,
        /// The PID asked for.
        pid: String,
    },
    /// No host offers the game.
    #[error("no host offers game \"{0}\"; GET /v1/games lists the games on offer")]
    UnknownGame(GameId),
    /// An `Idempotency-Key` reused with another request.
    #[error("this Idempotency-Key was used with a different request")]
    KeyReused,
    /// The change conflicts with the session's state.
    #[error("{0}")]
    Conflict(String),
    /// The user holds as many sessions as `--max-sessions-per-user` allows.
    #[error("user {user:?} holds {} sessions, the most allowed: {}; end one to start another", sessions.len(), sessions.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
    QuotaExceeded {
        /// The user.
        user: String,
        /// Its sessions not over.
        sessions: Vec<SessionId>,
    },
    /// No online host offers the game with a free slot.
    #[error("no online host has a free slot for game \"{game}\"; retry in {retry_after_secs} s")]
    NoCapacity {
        /// The game.
        game: GameId,
        /// Seconds to wait before retrying.
        retry_after_secs: u32,
    },
    /// The agent could not start the game.
    #[error("{}", why.of(host))]
    LaunchFailed {
        /// The host.
        host: HostId,
        /// Why.
        why: LaunchFailure,
    },
    /// The agent did not confirm the launch in time; whatever it launched is stopped.
    #[error("host {host} did not confirm the launch within {after:?}; nothing is left running")]
    LaunchTimeout {
        /// The host.
        host: HostId,
        /// The launch timeout.
        after: Duration,
    },
    /// The game's readiness check did not pass in time; the agent stopped it.
    #[error("host {host}: {why}")]
    GameNotReady {
        /// The host.
        host: HostId,
        /// What the agent said.
        why: String,
    },
    /// The session's host cannot be reached now.
    #[error("{}", why.of(host))]
    HostUnavailable {
        /// The host.
        host: HostId,
        /// What went wrong with it.
        why: Unreachable,
    },
    /// The session store cannot be reached; nothing was changed.
    #[error("the session store cannot be reached; nothing was changed, retry shortly")]
    StoreUnavailable(#[source] StoreError),
    /// Something the broker needs cannot be reached: it is not ready (`GET /readyz`).
    #[error("not ready: the {0} cannot be reached")]
    NotReady(Dependency),
    /// The broker serves as many event streams as it can.
    #[error("this broker serves as many event streams as it can; retry shortly or through another broker")]
    TooManyStreams,
    /// The broker receives as many uploads as it takes at once.
    #[error("this broker receives as many uploads as it takes at once ({0}); retry shortly or through another broker")]
    TooManyUploads(usize),
    /// A join token was not redeemed.
    #[error("{why} (session {session})")]
    JoinDenied {
        /// The session.
        session: SessionId,
        /// Why.
        why: JoinDenied,
    },
    /// A fault of the broker's own. The text is for the log, never for the caller.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Why a join token was not redeemed (API.md, "Players").
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JoinDenied {
    /// A game key of another session.
    #[error("this game key is another session's")]
    OtherSessionsKey,
    /// The session does not run (not yet, or no more): its game key is dead.
    #[error("the session does not run, so its game key is not valid")]
    NotRunning,
    /// Not the session's current token.
    #[error("this is not the session's join token (or a fresh one replaced it)")]
    WrongToken,
    /// Redeemed before.
    #[error("this join token was redeemed before")]
    Used,
    /// Past `--join-token-ttl`.
    #[error("this join token expired; the player may ask for a fresh one")]
    Expired,
}

/// What the broker needs to serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dependency {
    /// The session store.
    Store,
    /// NATS, between replicas.
    Nats,
}

impl std::fmt::Display for Dependency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Store => "session store",
            Self::Nats => "replicas' NATS",
        })
    }
}

/// Why an agent did not start a game.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum LaunchFailure {
    /// The agent tried and failed; its words.
    Agent(String),
    /// The agent's link dropped before it answered.
    Disconnected,
}

impl LaunchFailure {
    /// What happened, said of `host`.
    fn of(&self, host: &HostId) -> String {
        match self {
            Self::Agent(why) => format!("host {host} could not start the game: {why}"),
            Self::Disconnected => {
                format!("host {host}'s agent disconnected during the launch; retry")
            }
        }
    }
}

/// Why a session's host cannot be reached now.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Unreachable {
    /// It is not connected; a session being ended stays `stopping` until it is back or lost.
    Offline,
    /// Its agent's link dropped while it stopped the game.
    DisconnectedWhileStopping,
    /// It did not confirm a stop in time.
    StopTimedOut(Duration),
    /// It was declared lost while it launched the game.
    LostDuringLaunch,
    /// Its agent moved to another broker meanwhile.
    Moved,
    /// The broker its agent is connected to cannot be reached (or NATS cannot).
    ReplicaUnreachable,
    /// It is not connected, so its game logs cannot be read.
    LogOffline,
    /// Its agent is reading as many logs as it will at once.
    LogBusy,
    /// Its agent could not read the log (its own log says why).
    LogUnreadable,
    /// It did not answer in time.
    NoAnswer(Duration),
}

impl Unreachable {
    /// What happened, said of `host`.
    fn of(&self, host: &HostId) -> String {
        match self {
            Self::Offline => format!("host {host} is offline; the session is stopping and ends when its host comes back or is declared lost"),
            Self::DisconnectedWhileStopping => {
                format!("host {host}'s agent disconnected while stopping the game; retry")
            }
            Self::StopTimedOut(after) => {
                format!("host {host} did not confirm the stop within {after:?}; retry")
            }
            Self::LostDuringLaunch => format!("host {host} went away during the launch; retry"),
            Self::Moved => format!("host {host}'s agent moved to another broker meanwhile; retry"),
            Self::ReplicaUnreachable => {
                format!("the broker that host {host}'s agent is connected to cannot be reached; retry")
            }
            Self::LogOffline => {
                format!("host {host} is offline; its game logs can be read when it is back")
            }
            Self::LogBusy => format!("host {host} is busy reading other logs; retry"),
            Self::LogUnreadable => {
                format!("host {host} could not read the log; its agent's log says why")
            }
            Self::NoAnswer(after) => format!("host {host} did not answer within {after:?}; retry"),
        }
    }
}

impl Error {
    /// A short name of the error, for metrics' outcome labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Invalid(_) | Self::UnknownMode { .. } | Self::Refused(_) => "bad_request",
            Self::NoSession(_)
            | Self::NoLog { .. }
            | Self::NoHost(_)
            | Self::NoPool(_)
            | Self::NoBuild(_)
            | Self::NoCentralGame(_)
            | Self::NoSessionAt { .. } => "not_found",
            Self::GameChanged(_) => "precondition_failed",
            Self::BuildTooLarge(_) => "payload_too_large",
            Self::BadRange { .. } => "bad_request",
            Self::PreconditionFailed(_) => "precondition_failed",
            Self::UnknownGame(_) => "unknown_game",
            Self::KeyReused | Self::Conflict(_) => "conflict",
            Self::QuotaExceeded { .. } => "quota_exceeded",
            Self::NoCapacity { .. } => "no_capacity",
            Self::LaunchFailed { .. } => "launch_failed",
            Self::LaunchTimeout { .. } | Self::GameNotReady { .. } => "launch_timeout",
            Self::HostUnavailable { .. } => "host_unavailable",
            Self::StoreUnavailable(_) | Self::NotReady(_) => "store_unavailable",
            Self::TooManyStreams => "too_many_streams",
            Self::TooManyUploads(_) => "too_many_uploads",
            Self::JoinDenied { why, .. } => match why {
                JoinDenied::Used => "token_used",
                JoinDenied::Expired => "token_expired",
                JoinDenied::OtherSessionsKey | JoinDenied::NotRunning | JoinDenied::WrongToken => {
                    "forbidden"
                }
            },
            Self::Internal(_) => "internal",
        }
    }

    /// Seconds a caller should wait before retrying, where retrying is the remedy.
    pub fn retry_after(&self) -> Option<u32> {
        match self {
            Self::NoCapacity {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            Self::StoreUnavailable(_) | Self::HostUnavailable { .. } | Self::NotReady(_) => Some(1),
            Self::TooManyStreams | Self::TooManyUploads(_) => Some(5),
            _ => None,
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(id) => Self::NoSession(id),
            StoreError::Duplicate(_) | StoreError::Transition(_) => Self::Conflict(e.to_string()),
            StoreError::BadCursor(_) => Self::Invalid(e.to_string()),
            StoreError::Unavailable(_) | StoreError::Conflict(_) => Self::StoreUnavailable(e),
            StoreError::Backend(_) | StoreError::NotShared | StoreError::LeaseLost(_) => {
                Self::Internal(e.to_string())
            }
            StoreError::Fenced(host) => Self::HostUnavailable {
                host,
                why: Unreachable::Moved,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_errors_name_the_host_and_what_to_do() {
        let host = HostId::new("gpu-7").unwrap();
        let e = Error::HostUnavailable {
            host: host.clone(),
            why: Unreachable::StopTimedOut(Duration::from_secs(120)),
        };
        assert_eq!(
            e.to_string(),
            "host gpu-7 did not confirm the stop within 120s; retry"
        );
        assert_eq!(e.retry_after(), Some(1));
        let e = Error::LaunchFailed {
            host,
            why: LaunchFailure::Disconnected,
        };
        assert_eq!(
            e.to_string(),
            "host gpu-7's agent disconnected during the launch; retry"
        );
    }
}
