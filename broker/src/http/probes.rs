//! Probes for load balancers and orchestrators, open to all.

use actix_web::{web, HttpResponse, ResponseError};

use super::errors::ApiError;
use crate::service::Service;
use protocol::api;

/// `GET /readyz`: 200 when the broker can serve (its store answers); 503 with the reason.
pub async fn readyz(svc: web::Data<Service>) -> HttpResponse {
    match svc.ready().await {
        Ok(()) => HttpResponse::Ok().json(api::Health {
            status: "ready".into(),
        }),
        Err(e) => ApiError::from(e).error_response(),
    }
}

/// `GET /healthz`: the process is alive.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(api::Health {
        status: "ok".into(),
    })
}
