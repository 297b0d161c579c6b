//! `/v1/hosts`: list, drain, resume.

use actix_web::{web, HttpRequest, HttpResponse};
use protocol::api::{self, BrokerList, ErrorBody, Host, HostList};
use protocol::HostId;

use super::errors::ApiError;
use super::extract;
use crate::service::Service;

/// `GET /v1/hosts`.
#[utoipa::path(
    get,
    path = "/v1/hosts",
    tag = "hosts",
    operation_id = "list_hosts",
    summary = "The runtime hosts, their load and their games",
    responses(
        (status = 200, description = "Every host known, ordered by id.", body = HostList),
        (status = 503, description = "`store_unavailable`: the session store cannot be reached; retry", body = ErrorBody),
    )
)]
pub async fn list(svc: web::Data<Service>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(api::HostList {
        hosts: svc.hosts().await?,
    }))
}

/// `GET /v1/brokers`: the brokers of the system.
#[utoipa::path(
    get,
    path = "/v1/brokers",
    tag = "hosts",
    operation_id = "list_brokers",
    summary = "The brokers of the system",
    responses(
        (status = 200, description = "This broker, or every replica seen lately.", body = BrokerList),
        (status = 503, description = "`store_unavailable`: the session store cannot be reached; retry", body = ErrorBody),
    )
)]
pub async fn brokers(svc: web::Data<Service>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(api::BrokerList {
        brokers: svc.brokers().await?,
    }))
}

/// `POST /v1/hosts/{id}/drain`: the host takes no new session; its running ones go on.
#[utoipa::path(
    post,
    path = "/v1/hosts/{id}/drain",
    tag = "hosts",
    operation_id = "drain_host",
    summary = "Drain a host",
    description = "The host takes no new session; its running ones go on.",
    params(("id" = HostId, Path, description = "The host.")),
    responses(
        (status = 200, description = "The host.", body = Host),
        (status = 404, description = "`not_found`: no such host", body = ErrorBody),
        (status = 503, description = "`store_unavailable`: the session store cannot be reached; retry", body = ErrorBody),
    )
)]
pub async fn drain(
    svc: web::Data<Service>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let host = extract::host_id(&id)?;
    let h = svc.set_draining(&host, true, extract::actor(&req)).await?;
    Ok(HttpResponse::Ok().json(h))
}

/// `POST /v1/hosts/{id}/resume`.
#[utoipa::path(
    post,
    path = "/v1/hosts/{id}/resume",
    tag = "hosts",
    operation_id = "resume_host",
    summary = "Resume a drained host",
    description = "The host takes new sessions again.",
    params(("id" = HostId, Path, description = "The host.")),
    responses(
        (status = 200, description = "The host.", body = Host),
        (status = 404, description = "`not_found`: no such host", body = ErrorBody),
        (status = 503, description = "`store_unavailable`: the session store cannot be reached; retry", body = ErrorBody),
    )
)]
pub async fn resume(
    svc: web::Data<Service>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let host = extract::host_id(&id)?;
    let h = svc.set_draining(&host, false, extract::actor(&req)).await?;
    Ok(HttpResponse::Ok().json(h))
}
