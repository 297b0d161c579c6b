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
    let start = StartSession {
        game_id,
        mode: blank(q.excute_mode),
        config: blank(q.configfile),
    };
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
pub async fn end(svc: web::Data<Service>, req: HttpRequest) -> Result<HttpResponse, ShapedError> {
    ended(svc, req)
        .await
        .map_err(ShapedError::of(Shape::LegacyEnd))
}

async fn ended(svc: web::Data<Service>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let q: legacy::EndQuery = query(&req)?;
    svc.into_inner()
        .end_by_addr(q.server_ip, q.pid, extract::actor(&req))
        .await?;
    Ok(HttpResponse::Ok().json(legacy::Ended {
        gamestatus: legacy::ENDED.to_owned(),
    }))
}
