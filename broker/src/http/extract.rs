//! What handlers take from a request beyond actix's extractors: a bounded JSON body, ids from
//! the path, the `Idempotency-Key`, and who is calling.

use std::time::Duration;

use actix_web::http::header::{self, HeaderName};
use actix_web::{web, HttpMessage, HttpRequest};
use futures::StreamExt;
use protocol::{HostId, PoolId, SessionId};

use super::errors::ApiError;
use crate::auth::{Caller, Role};
use crate::session::Actor;

/// The largest JSON body accepted.
pub const MAX_BODY: usize = 64 * 1024;

/// How long a client may take to send a request body. actix-web bounds only the head
/// (`client_request_timeout`); a body trickled a byte at a time would otherwise hold a
/// connection and a worker's attention for as long as the client likes.
pub const BODY_DEADLINE: Duration = Duration::from_secs(10);

/// The header that makes a start retry-safe.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// Reads a JSON body of at most [`MAX_BODY`] bytes within [`BODY_DEADLINE`]; a declared length
/// over the limit is refused before anything is read.
pub async fn json<T: serde::de::DeserializeOwned>(
    req: &HttpRequest,
    mut payload: web::Payload,
) -> Result<T, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|len| len > MAX_BODY) {
        return Err(ApiError::PayloadTooLarge(MAX_BODY));
    }
    let read = async {
        let mut body = web::BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk =
                chunk.map_err(|e| ApiError::BadRequest(format!("cannot read the body: {e}")))?;
            if body.len() + chunk.len() > MAX_BODY {
                return Err(ApiError::PayloadTooLarge(MAX_BODY));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    let body = tokio::time::timeout(BODY_DEADLINE, read)
        .await
        .map_err(|_| {
            ApiError::BadRequest(format!(
                "the body was not received within {BODY_DEADLINE:?}"
            ))
        })??;
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

/// A session id from the path; one that cannot be an id names no session.
pub fn session_id(raw: &str) -> Result<SessionId, ApiError> {
    SessionId::new(raw).map_err(|_| ApiError::NoSuch {
        what: "session",
        raw: raw.to_owned(),
    })
}

/// A host id from the path; one that cannot be an id names no host.
pub fn host_id(raw: &str) -> Result<HostId, ApiError> {
    HostId::new(raw).map_err(|_| ApiError::NoSuch {
        what: "host",
        raw: raw.to_owned(),
    })
}

/// A pool id from the path; one that cannot be an id names no pool.
pub fn pool_id(raw: &str) -> Result<PoolId, ApiError> {
    PoolId::new(raw).map_err(|_| ApiError::NoSuch {
        what: "pool",
        raw: raw.to_owned(),
    })
}

/// A game id from the path; one that cannot be an id names no game.
pub fn game_id(raw: &str) -> Result<protocol::GameId, ApiError> {
    protocol::GameId::new(raw).map_err(|_| ApiError::NoSuch {
        what: "game",
        raw: raw.to_owned(),
    })
}

/// A build id from the path; one that cannot be a sha256 names no build.
pub fn build_id(raw: &str) -> Result<protocol::BuildId, ApiError> {
    protocol::BuildId::new(raw).map_err(|_| ApiError::NoSuch {
        what: "build",
        raw: raw.to_owned(),
    })
}

/// The request's `Idempotency-Key`, if it has one.
pub fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    req.headers()
        .get(&IDEMPOTENCY_KEY)
        .map(|v| {
            v.to_str()
                .map(str::to_owned)
                .map_err(|_| ApiError::BadRequest("Idempotency-Key must be visible ASCII".into()))
        })
        .transpose()
}

/// Who caused a change, from the caller that the route's check identified.
pub fn actor(req: &HttpRequest) -> Actor {
    match req.extensions().get::<Caller>() {
        Some(Caller::Role(Role::Portal)) => Actor::Portal,
        Some(Caller::Role(Role::Provider)) => Actor::Provider,
        Some(Caller::Role(Role::Admin)) => Actor::Admin,
        Some(Caller::Player(_)) => Actor::Player,
        Some(Caller::Game(_)) => Actor::Game,
        Some(Caller::Agent) => Actor::Agent,
        Some(Caller::Open) | None => Actor::Api,
    }
}

/// The session whose game key the caller presented; `None` for any other caller.
pub fn game_key(req: &HttpRequest) -> Option<protocol::SessionId> {
    match req.extensions().get::<Caller>() {
        Some(Caller::Game(session)) => Some(session.clone()),
        _ => None,
    }
}

/// The player calling, by its verified token's user id; `None` for any other caller.
pub fn player(req: &HttpRequest) -> Option<String> {
    match req.extensions().get::<Caller>() {
        Some(Caller::Player(user)) => Some(user.clone()),
        _ => None,
    }
}

/// A start as its caller may make it: a player's is for its own user (a body naming another
/// user is refused); anyone else's as sent.
pub fn own_start(
    req: &HttpRequest,
    mut body: protocol::api::StartSession,
) -> Result<protocol::api::StartSession, ApiError> {
    if let Some(user) = player(req) {
        if body.user_id.as_ref().is_some_and(|u| *u != user) {
            return Err(ApiError::NotYours);
        }
        body.user_id = Some(user);
    }
    Ok(body)
}
