//! `/v1/hosts`: list, drain, resume.

use actix_web::{web, HttpRequest, HttpResponse};
use protocol::api;

use super::errors::ApiError;
use super::extract;
use crate::service::Service;

/// `GET /v1/hosts`.
pub async fn list(svc: web::Data<Service>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(api::HostList {
        hosts: svc.hosts().await?,
    }))
}

/// `GET /v1/brokers`: the brokers of the system.
pub async fn brokers(svc: web::Data<Service>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(api::BrokerList {
        brokers: svc.brokers().await?,
    }))
}

/// `POST /v1/hosts/{id}/drain`: the host takes no new session; its running ones go on.
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
pub async fn resume(
    svc: web::Data<Service>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let host = extract::host_id(&id)?;
    let h = svc.set_draining(&host, false, extract::actor(&req)).await?;
    Ok(HttpResponse::Ok().json(h))
}
