//! `GET /metrics`: the broker's Prometheus metrics, in the text exposition format.

use actix_web::{web, HttpResponse};

use protocol::api::ErrorBody;

use super::errors::ApiError;
use crate::service::Service;

/// `GET /metrics`.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    operation_id = "metrics",
    summary = "Prometheus metrics",
    responses(
        (status = 200, description = "The `arcade_*` series in the OpenMetrics text format.", body = String,
            content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8"),
        (status = 503, description = "`store_unavailable`: the session store cannot be reached; retry", body = ErrorBody),
    )
)]
pub async fn metrics(svc: web::Data<Service>) -> Result<HttpResponse, ApiError> {
    let text = svc.metrics_text().await?;
    Ok(HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(text))
}
