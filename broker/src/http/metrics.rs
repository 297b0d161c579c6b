//! `GET /metrics`: the broker's Prometheus metrics, in the text exposition format.

use actix_web::{web, HttpResponse};

use super::errors::ApiError;
use crate::service::Service;

/// `GET /metrics`.
pub async fn metrics(svc: web::Data<Service>) -> Result<HttpResponse, ApiError> {
    let text = svc.metrics_text().await?;
    Ok(HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(text))
}
