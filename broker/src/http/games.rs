//! `/v1/games`: what can be played now.

use actix_web::{web, HttpResponse};
use protocol::api::{self, ErrorBody, GameList};

use super::errors::ApiError;
use crate::service::Service;

/// `GET /v1/games`: the games of online hosts.
#[utoipa::path(
    get,
    path = "/v1/games",
    tag = "games",
    operation_id = "list_games",
    summary = "The games online hosts offer",
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
