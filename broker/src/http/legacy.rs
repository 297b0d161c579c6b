//! The original portal's calls, `GET /IP` and `GET /End`, on top of the same sessions, with
//! the field names, string values and error shapes that portal parses.

use actix_web::{web, HttpRequest, HttpResponse};
use protocol::api::{legacy, StartSession};

use super::errors::{ApiError, Shape, ShapedError};
use super::extract;
use crate::service::Service;

fn query<T: serde::de::DeserializeOwned>(req: &HttpRequest) -> Result<T, ApiError> {
    web::Query::<T>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|e| ApiError::BadRequest(format!("invalid query string: {e}")))
}

/// `GET /IP?gameId=G&excuteMode=M&configfile=C`: starts a game.
#[utoipa::path(
    get,
    path = "/IP",
    tag = "original portal",
    operation_id = "legacy_start",
    summary = "Start a game (the original portal's call)",
    description = "The first GamingAnywhere portal's call from the browser, kept with its field names and strings. Errors have the v1 status and `{\"gamestatus\": \"FALSE\", \"error\": {...}}`.",
    params(legacy::StartQuery),
    responses(
        (status = 200, description = "The game runs (`PID` is a string, as the portal expects).", body = legacy::Started),
        (status = 400, description = "`bad_request`", body = legacy::Failed),
        (status = 404, description = "`unknown_game`", body = legacy::Failed),
        (status = 502, description = "`launch_failed`", body = legacy::Failed),
        (status = 503, description = "`no_capacity`, `host_unavailable` or `store_unavailable`", body = legacy::Failed),
        (status = 504, description = "`launch_timeout`", body = legacy::Failed),
    )
)]
pub async fn start(svc: web::Data<Service>, req: HttpRequest) -> Result<HttpResponse, ShapedError> {
    started(svc, req)
        .await
        .map_err(ShapedError::of(Shape::LegacyStart))
}

async fn started(svc: web::Data<Service>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let q: legacy::StartQuery = query(&req)?;
    let game_id = q
        .game_id
        .parse()
        .map_err(|e| ApiError::BadRequest(format!("gameId: {e}")))?;
    let blank = |v: Option<String>| v.filter(|s| !s.is_empty());
    // Every field spelled out: the old portal's call decides each (a new one must be thought
    // of here).
    let start = StartSession {
        game_id,
        mode: blank(q.excute_mode),
        config: blank(q.configfile),
        settings: Default::default(),
        user_id: None,
        max_duration_s: None,
        labels: Default::default(),
        prefer: Default::default(),
    };
    // A player's start is its own (quotas count it).
    let start = extract::own_start(&req, start)?;
    let (s, _) = svc
        .into_inner()
        .start(start, None, extract::actor(&req))
        .await?;
    Ok(HttpResponse::Ok().json(legacy::Started {
        gamestatus: legacy::STARTED.to_owned(),
        game_ip: s.ip.map(|ip| ip.to_string()).unwrap_or_default(),
        pid: s.pid.map(|p| p.to_string()).unwrap_or_default(),
        port: s.port.unwrap_or_default(),
        session_id: s.session_id.to_string(),
    }))
}

/// `GET /End?excuteMode=M&serverIp=IP&pid=PID`: ends the running session of that game.
#[utoipa::path(
    get,
    path = "/End",
    tag = "original portal",
    operation_id = "legacy_end",
    summary = "End a game (the original portal's call)",
    description = "Ends the running session whose game has that IP and PID, once its processes are gone. Errors have the v1 status and `{\"gamestatus\": \"failed\", \"error\": {...}}`.",
    params(legacy::EndQuery),
    responses(
        (status = 200, description = "`{\"gamestatus\": \"end game sucessful\"}` (spelled as the portal expects).", body = legacy::Ended),
        (status = 400, description = "`bad_request`", body = legacy::Failed),
        (status = 404, description = "`not_found`: no running session has that IP and PID", body = legacy::Failed),
        (status = 503, description = "`host_unavailable` or `store_unavailable`", body = legacy::Failed),
    )
)]
pub async fn end(svc: web::Data<Service>, req: HttpRequest) -> Result<HttpResponse, ShapedError> {
    ended(svc, req)
        .await
        .map_err(ShapedError::of(Shape::LegacyEnd))
}

async fn ended(svc: web::Data<Service>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let q: legacy::EndQuery = query(&req)?;
    let player = extract::player(&req);
    svc.into_inner()
        .end_by_addr(q.server_ip, q.pid, player.as_deref(), extract::actor(&req))
        .await?;
    Ok(HttpResponse::Ok().json(legacy::Ended {
        gamestatus: legacy::ENDED.to_owned(),
    }))
}
