//! Probes for load balancers and orchestrators, open to all.

use actix_web::{web, HttpResponse, ResponseError};

use super::errors::ApiError;
use crate::service::Service;
use protocol::api::{self, ErrorBody, Health};

/// `GET /readyz`: 200 when the broker can serve (its store answers); 503 with the reason.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "probes",
    operation_id = "readyz",
    summary = "Whether the broker can serve",
    responses(
        (status = 200, description = "The store (and NATS, with replicas) answers: `{\"status\": \"ready\"}`.", body = Health),
        (status = 503, description = "`store_unavailable` or `nats_unavailable`, with the reason", body = ErrorBody),
    )
)]
pub async fn readyz(svc: web::Data<Service>) -> HttpResponse {
    match svc.ready().await {
        Ok(()) => HttpResponse::Ok().json(api::Health {
            status: "ready".into(),
            database: svc.database_node(),
        }),
        Err(e) => ApiError::from(e).error_response(),
    }
}

/// `GET /healthz`: the process is alive.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "probes",
    operation_id = "healthz",
    summary = "Whether the process is alive",
    responses((status = 200, description = "`{\"status\": \"ok\"}`.", body = Health))
)]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(api::Health {
        status: "ok".into(),
        database: None,
    })
}
