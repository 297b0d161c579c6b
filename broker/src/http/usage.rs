//! `GET /v1/usage`: JSON, or CSV for `Accept: text/csv`.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use protocol::api::{ErrorBody, Usage, UsageQuery};

use super::errors::ApiError;
use crate::service::Service;

/// `GET /v1/usage`.
#[utoipa::path(
    get,
    path = "/v1/usage",
    tag = "usage",
    operation_id = "get_usage",
    summary = "Sessions and time run, by user, game or host",
    description = "Sessions that ran within the window (from `running`, or a player's claim of a pool's game, to their end, or now), the seconds each ran inside it summed, and those seconds times each session's GPUs. `Accept: text/csv` gives CSV.",
    params(UsageQuery),
    responses(
        (status = 200, description = "The sums, the most time first.", body = Usage),
        (status = 400, description = "`bad_request`: a time is not RFC 3339, `from` is not before `to`, or the window is longer than 366 days", body = ErrorBody),
        (status = 503, description = "`store_unavailable`: the session store cannot be reached; retry", body = ErrorBody),
    )
)]
pub async fn get(
    svc: web::Data<Service>,
    req: HttpRequest,
    q: web::Query<UsageQuery>,
) -> Result<HttpResponse, ApiError> {
    let usage = svc.usage(&q).await?;
    let csv = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/csv"));
    if csv {
        return Ok(HttpResponse::Ok()
            .content_type("text/csv; charset=utf-8")
            .body(usage.to_csv()));
    }
    Ok(HttpResponse::Ok().json(usage))
}
