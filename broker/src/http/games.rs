//! `/v1/games`: what can be played now; `/v1/games/{id}`: central games (admin), each answer
//! with its `ETag`, a `PUT` or `DELETE` under a stale `If-Match` answered 412.

use actix_web::{web, HttpRequest, HttpResponse};
use protocol::api::{self, CentralGame, ErrorBody, GameList};
use protocol::GameId;

use super::errors::ApiError;
use super::{etag, extract};
use crate::service::Service;

/// A central game with its `ETag`.
fn tagged(res: actix_web::HttpResponseBuilder, g: &CentralGame) -> HttpResponse {
    etag::tagged(res, g.version, g)
}

/// `PUT /v1/games/{id}`: sets a central game.
#[utoipa::path(
    put,
    path = "/v1/games/{id}",
    tag = "games",
    operation_id = "put_game",
    summary = "Set a central game",
    description = "The body is a catalog entry as a host's TOML writes it (`command`, `args`, `modes`, `ready`, `settings`, ...), as JSON, plus `build`: the sha256 of a stored build. It is checked as a host checks its own entries. A changed `build` keeps the previous one for `POST /v1/games/{id}/rollback`.",
    request_body(content = Object, description = "`{\"build\": SHA256, \"command\": ..., ...any catalog key..., \"rollout\"?: {...}}`"),
    params(
        ("id" = GameId, Path, description = "The game."),
        ("If-Match" = Option<String>, Header, description = "Write only if the game's current `ETag` is one of these (`*`: only if it exists)."),
    ),
    responses(
        (status = 201, description = "A new central game.", body = CentralGame, headers(("ETag" = String, description = "The game's version."))),
        (status = 200, description = "The game, changed.", body = CentralGame, headers(("ETag" = String, description = "The game's version."))),
        (status = 400, description = "`bad_request`: malformed JSON, no or an unknown `build`, or an entry a host would refuse (the reason named)", body = ErrorBody),
        (status = 404, description = "`not_found`: the path is not a game id", body = ErrorBody),
        (status = 412, description = "`precondition_failed`: `If-Match` is not the game's current `ETag`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over 64 KiB", body = ErrorBody),
        (status = 503, description = "`store_unavailable`: the store cannot be reached; retry", body = ErrorBody),
    )
)]
pub async fn put(
    svc: web::Data<Service>,
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id = extract::game_id(&id)?;
    let cond = etag::if_match(&req)?;
    let body: serde_json::Map<String, serde_json::Value> = extract::json(&req, payload).await?;
    let (game, created) = svc.put_game(&id, body, cond.as_ref()).await?;
    Ok(if created {
        tagged(HttpResponse::Created(), &game)
    } else {
        tagged(HttpResponse::Ok(), &game)
    })
}

/// `GET /v1/games/{id}`.
#[utoipa::path(
    get,
    path = "/v1/games/{id}",
    tag = "games",
    operation_id = "get_game",
    summary = "One central game",
    params(("id" = GameId, Path, description = "The game.")),
    responses(
        (status = 200, description = "The game.", body = CentralGame, headers(("ETag" = String, description = "The game's version."))),
        (status = 404, description = "`not_found`: no such central game", body = ErrorBody),
        (status = 503, description = "`store_unavailable`: the store cannot be reached; retry", body = ErrorBody),
    )
)]
pub async fn get(svc: web::Data<Service>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let game = svc.central_game(&extract::game_id(&id)?).await?;
    Ok(tagged(HttpResponse::Ok(), &game))
}

/// `DELETE /v1/games/{id}`.
#[utoipa::path(
    delete,
    path = "/v1/games/{id}",
    tag = "games",
    operation_id = "delete_game",
    summary = "Remove a central game",
    description = "No new sessions of it; running ones go on. Its builds may then be removed.",
    params(
        ("id" = GameId, Path, description = "The game."),
        ("If-Match" = Option<String>, Header, description = "Remove only if the game's current `ETag` is one of these."),
    ),
    responses(
        (status = 200, description = "Removed: the game as it was.", body = CentralGame),
        (status = 404, description = "`not_found`: no such central game", body = ErrorBody),
        (status = 412, description = "`precondition_failed`: `If-Match` is not the game's current `ETag`", body = ErrorBody),
        (status = 503, description = "`store_unavailable`: the store cannot be reached; retry", body = ErrorBody),
    )
)]
pub async fn delete(
    svc: web::Data<Service>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let cond = etag::if_match(&req)?;
    let game = svc
        .delete_game(&extract::game_id(&id)?, cond.as_ref())
        .await?;
    Ok(HttpResponse::Ok().json(game))
}

/// `POST /v1/games/{id}/rollback`.
#[utoipa::path(
    post,
    path = "/v1/games/{id}/rollback",
    tag = "games",
    operation_id = "rollback_game",
    summary = "Back to the previous build, at once",
    params(("id" = GameId, Path, description = "The game.")),
    responses(
        (status = 200, description = "The game, on its previous build (the one it left is now its previous).", body = CentralGame, headers(("ETag" = String, description = "The game's version."))),
        (status = 404, description = "`not_found`: no such central game", body = ErrorBody),
        (status = 409, description = "`conflict`: the game has no previous build", body = ErrorBody),
        (status = 503, description = "`store_unavailable`: the store cannot be reached; retry", body = ErrorBody),
    )
)]
pub async fn rollback(
    svc: web::Data<Service>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let game = svc.rollback_game(&extract::game_id(&id)?).await?;
    Ok(tagged(HttpResponse::Ok(), &game))
}

/// `GET /v1/games`: the games of online hosts.
#[utoipa::path(
    get,
    path = "/v1/games",
    tag = "games",
    operation_id = "list_games",
    summary = "The games online hosts offer, and the central games",
    responses(
        (status = 200, description = "Ordered by id.", body = GameList),
        (status = 503, description = "`store_unavailable`: the session store cannot be reached; retry", body = ErrorBody),
    )
)]
pub async fn list(svc: web::Data<Service>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(api::GameList {
        games: svc.games().await?,
    }))
}
