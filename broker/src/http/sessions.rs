//! `/v1/sessions`: start, read, list, end, a session's history and its game's output.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use protocol::api::{
    self, ErrorBody, JoinRequest, JoinToken, Joined, Session, SessionEvents, SessionList,
    SessionQuery, StartSession, StartedSession,
};
use protocol::SessionId;

use super::errors::ApiError;
use super::extract;
use crate::service::{LogQuery, Service, DEFAULT_TAIL};

/// `POST /v1/sessions`: 201 and the session once its game runs; 200 and the first start's
/// session for a repeated `Idempotency-Key`.
#[utoipa::path(
    post,
    path = "/v1/sessions",
    tag = "sessions",
    operation_id = "start_session",
    summary = "Start a game",
    description = "Places the game on a host with a free slot and answers once its process runs, with the IP, port and PID players connect to.",
    request_body = StartSession,
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "Makes the start retry-safe: a repeated key answers 200 with the first start's session and starts nothing (1 to 255 bytes)."),
    ),
    responses(
        (status = 201, description = "The game runs: the session, and its one-time join token for the player's client.", body = StartedSession),
        (status = 200, description = "A repeated `Idempotency-Key`: the first start's session (and its join token, while it is the session's).", body = StartedSession),
        (status = 400, description = "`bad_request`: malformed JSON, a field of the wrong type, an unknown mode, a config outside the game's config_dir", body = ErrorBody),
        (status = 404, description = "`unknown_game`: no host offers the game", body = ErrorBody),
        (status = 409, description = "`conflict`: the `Idempotency-Key` was used with another request", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over 64 KiB", body = ErrorBody),
        (status = 502, description = "`launch_failed`: the host could not start the game", body = ErrorBody),
        (status = 503, description = "`no_capacity` (with `Retry-After`), `host_unavailable` or `store_unavailable`; retry", body = ErrorBody),
        (status = 504, description = "`launch_timeout`: the host did not confirm the launch in time; nothing is left running", body = ErrorBody),
    )
)]
pub async fn start(
    svc: web::Data<Service>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body: StartSession = extract::json(&req, payload).await?;
    let body = extract::own_start(&req, body)?;
    let key = extract::idempotency_key(&req)?;
    let started = svc
        .into_inner()
        .start_and_join(body, key, extract::actor(&req))
        .await?;
    let answer = api::StartedSession {
        session: started.session,
        join_expires_at: started.join.as_ref().map(|j| j.expires_at),
        join_token: started.join.map(|j| j.token),
    };
    Ok(if started.new {
        HttpResponse::Created().json(answer)
    } else {
        HttpResponse::Ok().json(answer)
    })
}

/// `POST /v1/sessions/{id}/join`: the session's game redeems the token its player's client
/// gave it, once.
#[utoipa::path(
    post,
    path = "/v1/sessions/{id}/join",
    tag = "sessions",
    operation_id = "join_session",
    summary = "Redeem a join token (the session's game, with its game key)",
    description = "Called by the game with `Authorization: Bearer $ARCADE_GAME_KEY` when a player's client connects and hands it a join token. A token is redeemed at most once, across replicas and restarts; redeeming sends `session.joined`.",
    params(("id" = SessionId, Path, description = "The session.")),
    request_body = JoinRequest,
    responses(
        (status = 200, description = "The token was this session's, unused and unexpired: the player may play.", body = Joined),
        (status = 400, description = "`bad_request`: malformed JSON or no `token`", body = ErrorBody),
        (status = 401, description = "`unauthorized`: no game key, or one that does not verify", body = ErrorBody),
        (status = 403, description = "`forbidden`: another session's game key, a wrong (or replaced) token, or a session that does not run", body = ErrorBody),
        (status = 404, description = "`not_found`: no such session", body = ErrorBody),
        (status = 409, description = "`token_used`: the token was redeemed before", body = ErrorBody),
        (status = 410, description = "`token_expired`: the token is past `--join-token-ttl`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over 64 KiB", body = ErrorBody),
        (status = 503, description = "`store_unavailable`: the session store cannot be reached; the redeem's outcome is unknown", body = ErrorBody),
    )
)]
pub async fn join(
    svc: web::Data<Service>,
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id = extract::session_id(&id)?;
    let body: api::JoinRequest = extract::json(&req, payload).await?;
    let s = svc
        .redeem(&id, &body.token, extract::game_key(&req).as_ref())
        .await?;
    Ok(HttpResponse::Ok().json(api::Joined {
        session_id: s.session_id,
        user_id: s.user_id,
    }))
}

/// `POST /v1/sessions/{id}/join-tokens`: a fresh join token for the session's player (a
/// reconnect); the previous one stops working.
#[utoipa::path(
    post,
    path = "/v1/sessions/{id}/join-tokens",
    tag = "sessions",
    operation_id = "mint_join_token",
    summary = "A fresh join token (reconnects)",
    params(("id" = SessionId, Path, description = "The session.")),
    responses(
        (status = 201, description = "The fresh token; the previous one is void.", body = JoinToken),
        (status = 404, description = "`not_found`: no such session (or another player's)", body = ErrorBody),
        (status = 409, description = "`conflict`: the session does not run", body = ErrorBody),
        (status = 503, description = "`store_unavailable`: the session store cannot be reached; retry", body = ErrorBody),
    )
)]
pub async fn join_tokens(
    svc: web::Data<Service>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let player = extract::player(&req);
    let join = svc
        .mint_join(&extract::session_id(&id)?, player.as_deref())
        .await?;
    Ok(HttpResponse::Created().json(api::JoinToken {
        join_token: join.token,
        join_expires_at: join.expires_at,
    }))
}

/// `GET /v1/sessions/{id}`.
#[utoipa::path(
    get,
    path = "/v1/sessions/{id}",
    tag = "sessions",
    operation_id = "get_session",
    summary = "One session",
    params(("id" = SessionId, Path, description = "The session.")),
    responses(
        (status = 200, description = "The session.", body = Session),
        (status = 404, description = "`not_found`: no such session", body = ErrorBody),
        (status = 503, description = "`store_unavailable`: the session store cannot be reached; retry", body = ErrorBody),
    )
)]
pub async fn get(
    svc: web::Data<Service>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let player = extract::player(&req);
    let s = svc
        .get_as(&extract::session_id(&id)?, player.as_deref())
        .await?;
    Ok(HttpResponse::Ok().json(s))
}

/// `GET /v1/sessions?status=&game_id=&host_id=&limit=&cursor=`: one page, newest first.
#[utoipa::path(
    get,
    path = "/v1/sessions",
    tag = "sessions",
    operation_id = "list_sessions",
    summary = "Sessions, newest first, one page",
    params(SessionQuery),
    responses(
        (status = 200, description = "One page; pass `next_cursor` back as `cursor` for the next.", body = SessionList),
        (status = 400, description = "`bad_request`: a filter that is not a status, an id or a number, or a cursor the broker did not hand out", body = ErrorBody),
        (status = 503, description = "`store_unavailable`: the session store cannot be reached; retry", body = ErrorBody),
    )
)]
pub async fn list(
    svc: web::Data<Service>,
    req: HttpRequest,
    q: web::Query<SessionQuery>,
) -> Result<HttpResponse, ApiError> {
    let mut q = q.into_inner();
    // A player lists its own sessions, whatever user it names.
    if let Some(user) = extract::player(&req) {
        q.user_id = Some(user);
    }
    let page = svc.list(&q).await?;
    Ok(HttpResponse::Ok().json(api::SessionList {
        sessions: page.sessions,
        next_cursor: page.next_cursor,
    }))
}

/// `DELETE /v1/sessions/{id}`: answers once the game's processes are gone.
#[utoipa::path(
    delete,
    path = "/v1/sessions/{id}",
    tag = "sessions",
    operation_id = "end_session",
    summary = "End a session",
    description = "Answers once the game's processes are gone. Repeating it answers the same final state.",
    params(("id" = SessionId, Path, description = "The session.")),
    responses(
        (status = 200, description = "The session, over.", body = Session),
        (status = 404, description = "`not_found`: no such session", body = ErrorBody),
        (status = 503, description = "`host_unavailable` (the host is offline or did not confirm the stop in time; the session is `stopping`) or `store_unavailable`; retry", body = ErrorBody),
    )
)]
pub async fn end(
    svc: web::Data<Service>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = extract::session_id(&id)?;
    if let Some(user) = extract::player(&req) {
        svc.get_as(&id, Some(&user)).await?;
    }
    let s = svc.into_inner().end(id, extract::actor(&req)).await?;
    Ok(HttpResponse::Ok().json(s))
}

/// `GET /v1/sessions/{id}/events`: the session's history, oldest first.
#[utoipa::path(
    get,
    path = "/v1/sessions/{id}/events",
    tag = "sessions",
    operation_id = "session_history",
    summary = "A session's history, oldest first",
    params(("id" = SessionId, Path, description = "The session.")),
    responses(
        (status = 200, description = "What happened, when, and who caused it.", body = SessionEvents),
        (status = 404, description = "`not_found`: no such session", body = ErrorBody),
        (status = 503, description = "`store_unavailable`: the session store cannot be reached; retry", body = ErrorBody),
    )
)]
pub async fn events(
    svc: web::Data<Service>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = extract::session_id(&id)?;
    if let Some(user) = extract::player(&req) {
        svc.get_as(&id, Some(&user)).await?;
    }
    let events = svc.events(&id).await?;
    let events: Vec<api::SessionEventView> = events
        .into_iter()
        .map(|e| api::SessionEventView {
            at: e.at,
            event: e.event,
            status: e.status,
            actor: e.actor,
        })
        .collect();
    Ok(HttpResponse::Ok().json(api::SessionEvents { events }))
}

/// The query of `GET /v1/sessions/{id}/logs`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// The last this many lines (default 200).
    #[param(maximum = 4294967295.0, format = Int64)]
    tail: Option<u32>,
    /// Instead of a tail: the output from this byte offset (an earlier answer's
    /// `Arcade-Log-End` header), to follow a log.
    #[param(minimum = 0, format = Int64)]
    from: Option<i64>,
}

/// The header with the offset of an answer's first byte in the whole log.
pub const LOG_START: &str = "arcade-log-start";
/// The header with the offset just past an answer's last byte: where `?from=` goes on.
pub const LOG_END: &str = "arcade-log-end";

/// `GET /v1/sessions/{id}/logs[?tail=N | ?from=OFFSET]`: the game's stdout and stderr as text.
#[utoipa::path(
    get,
    path = "/v1/sessions/{id}/logs",
    tag = "sessions",
    operation_id = "session_logs",
    summary = "A game's output",
    description = "The game's stdout and stderr as its host's agent keeps them (for running sessions, and ended ones for the agent's --log-retention), at most 1 MiB.",
    params(("id" = SessionId, Path, description = "The session."), LogsQuery),
    responses(
        (status = 200, description = "The output.", body = String, content_type = "text/plain",
            headers(
                ("Arcade-Log-Start" = u64, description = "The offset of the answer's first byte in the whole log."),
                ("Arcade-Log-End" = u64, description = "The offset just past its last byte: `?from=` this to follow the log."),
            )),
        (status = 400, description = "`bad_request`: both `tail` and `from`, a negative `from`, or a value that is not a number", body = ErrorBody),
        (status = 404, description = "`not_found`: no such session, or its host no longer has its log", body = ErrorBody),
        (status = 503, description = "`host_unavailable`: the session's host is offline, busy or did not answer; or `store_unavailable`", body = ErrorBody),
    )
)]
pub async fn logs(
    svc: web::Data<Service>,
    id: web::Path<String>,
    q: web::Query<LogsQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = extract::session_id(&id)?;
    let query =
        match (q.tail, q.from) {
            (Some(_), Some(_)) => {
                return Err(ApiError::BadRequest("give tail or from, not both".into()))
            }
            (_, Some(offset)) => LogQuery::From(u64::try_from(offset).map_err(|_| {
                ApiError::BadRequest("from must be a byte offset, 0 or more".into())
            })?),
            (tail, None) => LogQuery::Tail(tail.unwrap_or(DEFAULT_TAIL)),
        };
    let log = svc.session_log(&id, query).await?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .insert_header((LOG_START, log.start.to_string()))
        .insert_header((LOG_END, log.end.to_string()))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(log.text))
}
