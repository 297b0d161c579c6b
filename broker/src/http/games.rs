//! `/v1/games`: what can be played now.

use actix_web::{web, HttpResponse};
use protocol::api;

use crate::service::Service;

/// `GET /v1/games`: the games of online hosts.
pub async fn list(svc: web::Data<Service>) -> HttpResponse {
    HttpResponse::Ok().json(api::GameList { games: svc.games() })
}
