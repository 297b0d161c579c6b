//! `/v1/sessions`: start, read, list, end, a session's history and its game's output.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use protocol::api::{self, SessionQuery, StartSession};

use super::errors::ApiError;
use super::extract;
use crate::service::{LogQuery, Service, DEFAULT_TAIL};

/// `POST /v1/sessions`: 201 and the session once its game runs; 200 and the first start's
/// session for a repeated `Idempotency-Key`.
pub async fn start(
    svc: web::Data<Service>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body: StartSession = extract::json(&req, payload).await?;
    let key = extract::idempotency_key(&req)?;
    let (session, fresh) = svc
        .into_inner()
        .start(body, key, extract::actor(&req))
        .await?;
    Ok(if fresh {
        HttpResponse::Created().json(session)
    } else {
        HttpResponse::Ok().json(session)
    })
}

/// `GET /v1/sessions/{id}`.
pub async fn get(svc: web::Data<Service>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let s = svc.get(&extract::session_id(&id)?).await?;
    Ok(HttpResponse::Ok().json(s))
}

/// `GET /v1/sessions?status=&game_id=&host_id=&limit=&cursor=`: one page, newest first.
pub async fn list(
    svc: web::Data<Service>,
    q: web::Query<SessionQuery>,
) -> Result<HttpResponse, ApiError> {
    let page = svc.list(&q).await?;
    Ok(HttpResponse::Ok().json(api::SessionList {
        sessions: page.sessions,
        next_cursor: page.next_cursor,
    }))
}

/// `DELETE /v1/sessions/{id}`: answers once the game's processes are gone.
pub async fn end(
    svc: web::Data<Service>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = extract::session_id(&id)?;
    let s = svc.into_inner().end(id, extract::actor(&req)).await?;
    Ok(HttpResponse::Ok().json(s))
}

/// `GET /v1/sessions/{id}/events`: the session's history, oldest first.
pub async fn events(
    svc: web::Data<Service>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let events = svc.events(&extract::session_id(&id)?).await?;
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
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    /// The last this many lines (default [`DEFAULT_TAIL`]).
    tail: Option<u32>,
    /// Instead of a tail: the output from this byte offset (an earlier answer's
    /// [`LOG_END`] header), to follow a log.
    from: Option<u64>,
}

/// The header with the offset of an answer's first byte in the whole log.
pub const LOG_START: &str = "arcade-log-start";
/// The header with the offset just past an answer's last byte: where `?from=` goes on.
pub const LOG_END: &str = "arcade-log-end";

/// `GET /v1/sessions/{id}/logs[?tail=N | ?from=OFFSET]`: the game's stdout and stderr as text.
pub async fn logs(
    svc: web::Data<Service>,
    id: web::Path<String>,
    q: web::Query<LogsQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = extract::session_id(&id)?;
    let query = match (q.tail, q.from) {
        (Some(_), Some(_)) => {
            return Err(ApiError::BadRequest("give tail or from, not both".into()))
        }
        (_, Some(offset)) => LogQuery::From(offset),
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
