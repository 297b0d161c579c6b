//! Every error the API answers, and the one place that gives each its status and code.
//!
//! [`ApiError`] is the service's [`Error`] plus what only HTTP can get wrong (a key, a route, a
//! body). [`ApiError::status`] is an exhaustive match, grouped by status, with no catch-all
//! arm: a new error cannot reach a client without being given its status here. A 500's body
//! says "internal error" and the request's id; what went wrong goes to the log under that id.

use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use protocol::api::{legacy, ErrorBody, ErrorCode, ErrorDetail};

use super::request::RequestId;
use crate::auth::{Action, Role};
use crate::error::{Dependency, Error, JoinDenied};
use crate::players::TokenError;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The service refused or failed.
    #[error(transparent)]
    Service(#[from] Error),
    /// The request cannot be decoded (malformed JSON, a wrong type, a bad query string).
    #[error("{0}")]
    BadRequest(String),
    /// No valid API key.
    #[error("a valid API key is required: send Authorization: Bearer KEY")]
    Unauthorized,
    /// A player token that does not verify; the message says why, never the token.
    #[error("{0}")]
    BadToken(TokenError),
    /// A player may not do this route's action.
    #[error("a player token may not do this ({0:?}); it may start, read, list and end its own sessions and list games")]
    PlayerForbidden(Action),
    /// A game key that does not verify (made under another secret, or altered).
    #[error("this game key does not verify: use the ARCADE_GAME_KEY its game was given")]
    BadGameKey,
    /// A game key on a route other than its session's join.
    #[error(
        "a game key may only redeem its own session's join tokens (POST /v1/sessions/{{id}}/join)"
    )]
    GameForbidden,
    /// The agent token on a route other than a build's content.
    #[error("the agent token may only download builds (GET /v1/builds/{{sha256}}/content)")]
    AgentForbidden,
    /// A player's start for another user.
    #[error(
        "a player token starts sessions for its own user only: leave user_id out, or send your own"
    )]
    NotYours,
    /// The key's role may not do this.
    #[error("the {role} role may not do this ({action:?})")]
    Forbidden {
        /// The caller's role.
        role: Role,
        /// What the route does.
        action: Action,
    },
    /// A path's id that cannot name anything (not a valid id).
    #[error("no {what} {raw:?}")]
    NoSuch {
        /// What the id is of (`session`, `host`).
        what: &'static str,
        /// The id as sent.
        raw: String,
    },
    /// No route has this path.
    #[error("no route {method} {path}")]
    NoRoute {
        /// The request's method.
        method: String,
        /// The request's path, as sent.
        path: String,
    },
    /// The path's route does not take this method.
    #[error("{method} is not allowed on {path}")]
    MethodNotAllowed {
        /// The request's method.
        method: String,
        /// The request's path, as sent.
        path: String,
    },
    /// The body is over the limit.
    #[error("the body is over the {0}-byte limit")]
    PayloadTooLarge(usize),
}

impl ApiError {
    /// The status and the code of the error: the API's one mapping.
    pub fn status(&self) -> (StatusCode, ErrorCode) {
        use ErrorCode as C;
        use StatusCode as S;
        match self {
            Self::BadRequest(_)
            | Self::Service(Error::Invalid(_) | Error::UnknownMode { .. } | Error::Refused(_)) => {
                (S::BAD_REQUEST, C::BadRequest)
            }
            Self::Service(Error::BadRange { .. }) => (S::RANGE_NOT_SATISFIABLE, C::BadRequest),
            Self::Unauthorized | Self::BadToken(_) | Self::BadGameKey => {
                (S::UNAUTHORIZED, C::Unauthorized)
            }
            Self::Forbidden { .. }
            | Self::PlayerForbidden(_)
            | Self::GameForbidden
            | Self::AgentForbidden
            | Self::NotYours
            | Self::Service(Error::JoinDenied {
                why: JoinDenied::OtherSessionsKey | JoinDenied::NotRunning | JoinDenied::WrongToken,
                ..
            }) => (S::FORBIDDEN, C::Forbidden),
            Self::Service(Error::JoinDenied {
                why: JoinDenied::Used,
                ..
            }) => (S::CONFLICT, C::TokenUsed),
            Self::Service(Error::JoinDenied {
                why: JoinDenied::Expired,
                ..
            }) => (S::GONE, C::TokenExpired),
            Self::NoRoute { .. }
            | Self::NoSuch { .. }
            | Self::Service(
                Error::NoSession(_)
                | Error::NoLog { .. }
                | Error::NoHost(_)
                | Error::NoPool(_)
                | Error::NoBuild(_)
                | Error::NoCentralGame(_)
                | Error::NoSessionAt { .. },
            ) => (S::NOT_FOUND, C::NotFound),
            Self::Service(Error::UnknownGame(_)) => (S::NOT_FOUND, C::UnknownGame),
            Self::MethodNotAllowed { .. } => (S::METHOD_NOT_ALLOWED, C::MethodNotAllowed),
            Self::Service(Error::KeyReused | Error::Conflict(_)) => (S::CONFLICT, C::Conflict),
            Self::Service(Error::PreconditionFailed(_) | Error::GameChanged(_)) => {
                (S::PRECONDITION_FAILED, C::PreconditionFailed)
            }
            Self::PayloadTooLarge(_) | Self::Service(Error::BuildTooLarge(_)) => {
                (S::PAYLOAD_TOO_LARGE, C::PayloadTooLarge)
            }
            Self::Service(Error::QuotaExceeded { .. }) => (S::TOO_MANY_REQUESTS, C::QuotaExceeded),
            Self::Service(Error::Internal(_)) => (S::INTERNAL_SERVER_ERROR, C::Internal),
            Self::Service(Error::LaunchFailed { .. }) => (S::BAD_GATEWAY, C::LaunchFailed),
            Self::Service(Error::NoCapacity { .. }) => (S::SERVICE_UNAVAILABLE, C::NoCapacity),
            Self::Service(Error::HostUnavailable { .. }) => {
                (S::SERVICE_UNAVAILABLE, C::HostUnavailable)
            }
            Self::Service(Error::StoreUnavailable(_) | Error::NotReady(Dependency::Store)) => {
                (S::SERVICE_UNAVAILABLE, C::StoreUnavailable)
            }
            Self::Service(Error::NotReady(Dependency::Nats)) => {
                (S::SERVICE_UNAVAILABLE, C::NatsUnavailable)
            }
            Self::Service(Error::TooManyStreams) => (S::SERVICE_UNAVAILABLE, C::TooManyStreams),
            Self::Service(Error::TooManyUploads(_)) => (S::SERVICE_UNAVAILABLE, C::TooManyUploads),
            Self::Service(Error::LaunchTimeout { .. } | Error::GameNotReady { .. }) => {
                (S::GATEWAY_TIMEOUT, C::LaunchTimeout)
            }
        }
    }

    /// What the caller reads: the error's own words, except for a fault of ours, which is
    /// logged with the request's id and answered with that id only.
    fn detail(&self) -> ErrorDetail {
        let (status, code) = self.status();
        let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
            let id = RequestId::current();
            tracing::error!(request_id = %id, error = %self, "internal error");
            format!("internal error (request id {id}); the broker's log has the details")
        } else {
            if let Self::Service(Error::StoreUnavailable(e)) = self {
                tracing::warn!(request_id = %RequestId::current(), error = %e, "session store unavailable");
            }
            self.to_string()
        };
        ErrorDetail { code, message }
    }

    /// The response, with `body` built from the error's detail.
    fn respond<T: serde::Serialize>(&self, body: impl FnOnce(ErrorDetail) -> T) -> HttpResponse {
        let mut res = HttpResponse::build(self.status().0);
        if matches!(
            self,
            Self::Unauthorized | Self::BadToken(_) | Self::BadGameKey
        ) {
            res.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        if let Self::Service(Error::BadRange { size }) = self {
            res.insert_header((header::CONTENT_RANGE, format!("bytes */{size}")));
        }
        if let Self::Service(e) = self {
            if let Some(secs) = e.retry_after() {
                res.insert_header((header::RETRY_AFTER, secs.to_string()));
            }
        }
        res.json(body(self.detail()))
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status().0
    }

    fn error_response(&self) -> HttpResponse {
        self.respond(|error| ErrorBody { error })
    }
}

/// The body shape a route's errors take: the API's, or one of the original portal's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `{"error": {"code", "message"}}`.
    Api,
    /// `/IP`: `{"gamestatus": "FALSE", "error": {...}}`.
    LegacyStart,
    /// `/End`: `{"gamestatus": "failed", "error": {...}}`.
    LegacyEnd,
}

/// An error answered in a route's [`Shape`]: same status, the body its callers parse.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct ShapedError {
    /// The error.
    pub error: ApiError,
    /// Its body's shape.
    pub shape: Shape,
}

impl ShapedError {
    /// A closure for `map_err` that gives errors this shape.
    pub fn of(shape: Shape) -> impl Fn(ApiError) -> Self {
        move |error| Self { error, shape }
    }
}

impl ResponseError for ShapedError {
    fn status_code(&self) -> StatusCode {
        self.error.status().0
    }

    fn error_response(&self) -> HttpResponse {
        let legacy = |gamestatus: &'static str| {
            move |error| legacy::Failed {
                gamestatus: gamestatus.to_owned(),
                error,
            }
        };
        match self.shape {
            Shape::Api => self.error.error_response(),
            Shape::LegacyStart => self.error.respond(legacy(legacy::START_FAILED)),
            Shape::LegacyEnd => self.error.respond(legacy(legacy::END_FAILED)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

    #[test]
    fn a_fault_of_ours_shows_no_internals() {
        let e = ApiError::from(Error::from(StoreError::Backend(
            "Table 'arcade.sessions' doesn't exist".into(),
        )));
        assert_eq!(
            e.status(),
            (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal)
        );
        let detail = e.detail();
        assert!(
            detail.message.starts_with("internal error"),
            "{}",
            detail.message
        );
        assert!(
            !detail.message.contains("arcade.sessions"),
            "{}",
            detail.message
        );
    }

    #[test]
    fn an_unreachable_store_says_so_without_its_address() {
        let e = ApiError::from(Error::from(StoreError::Unavailable(
            "connect to 10.1.2.3:3306 refused".into(),
        )));
        assert_eq!(
            e.status(),
            (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::StoreUnavailable)
        );
        let detail = e.detail();
        assert!(!detail.message.contains("10.1.2.3"), "{}", detail.message);
        assert!(detail.message.contains("retry"), "{}", detail.message);
    }
}
