//! `/v1/games`: what can be played now.

use actix_web::{web, HttpResponse};
use protocol::api;

use super::errors::ApiError;
use crate::service::Service;

/// `GET /v1/games`: the games of online hosts.
pub async fn list(svc: web::Data<Service>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(api::GameList {
        games: svc.games().await?,
    }))
}
