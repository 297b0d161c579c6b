//! The API's errors. One enum for everything a request can fail with; `broker::http` maps each
//! variant to its status (exhaustively, in one place), and the body is always
//! `{"error": {"code", "message"}}`.

use protocol::api::ErrorCode;
use protocol::GameId;

use crate::store::StoreError;

/// Why a request failed. Messages say what happened and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// Malformed JSON, a wrong type, an unknown mode, a config outside `config_dir`.
    #[error("{0}")]
    BadRequest(String),
    /// No valid API key.
    #[error("{0}")]
    Unauthorized(String),
    /// The key's role may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// No such session, host or route.
    #[error("{0}")]
    NotFound(String),
    /// No host offers the game.
    #[error("no host offers game \"{0}\"; GET /v1/games lists the games on offer")]
    UnknownGame(GameId),
    /// The request conflicts with the resource's state.
    #[error("{0}")]
    Conflict(String),
    /// The body is too large.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The agent could not start the game.
    #[error("{0}")]
    LaunchFailed(String),
    /// No online host offers the game with a free slot.
    #[error("no online host has a free slot for game \"{game}\"; retry in {retry_after_secs} s")]
    NoCapacity {
        /// The game.
        game: GameId,
        /// Seconds to wait, for `Retry-After`.
        retry_after_secs: u32,
    },
    /// The agent did not confirm the launch in time.
    #[error("{0}")]
    LaunchTimeout(String),
    /// The session store cannot be reached.
    #[error("{0}")]
    StoreUnavailable(String),
    /// The session's host cannot be reached now.
    #[error("{0}")]
    HostUnavailable(String),
    /// A fault of the broker's own.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The error's code in the API.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::BadRequest(_) => ErrorCode::BadRequest,
            Self::Unauthorized(_) => ErrorCode::Unauthorized,
            Self::Forbidden(_) => ErrorCode::Forbidden,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::UnknownGame(_) => ErrorCode::UnknownGame,
            Self::Conflict(_) => ErrorCode::Conflict,
            Self::PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
            Self::LaunchFailed(_) => ErrorCode::LaunchFailed,
            Self::NoCapacity { .. } => ErrorCode::NoCapacity,
            Self::LaunchTimeout(_) => ErrorCode::LaunchTimeout,
            Self::StoreUnavailable(_) => ErrorCode::StoreUnavailable,
            Self::HostUnavailable(_) => ErrorCode::HostUnavailable,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }

    /// Seconds for a `Retry-After` header, where the error has one.
    pub fn retry_after(&self) -> Option<u32> {
        match self {
            Self::NoCapacity {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            Self::StoreUnavailable(_) | Self::HostUnavailable(_) => Some(1),
            _ => None,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(id) => Self::NotFound(format!("no session {id}")),
            StoreError::Duplicate(_) | StoreError::Transition(_) => Self::Conflict(e.to_string()),
            StoreError::BadCursor(_) => Self::BadRequest(e.to_string()),
            StoreError::Unavailable(_) => {
                Self::StoreUnavailable(format!("{e}; nothing was changed, retry shortly"))
            }
            StoreError::Backend(_) => Self::Internal(e.to_string()),
        }
    }
}
