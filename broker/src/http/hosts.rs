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
    params(("label" = Option<String>, Query, description = "Only hosts with this label, `KEY=VALUE`; repeatable (every one must match).")),
    responses(
        (status = 200, description = "Every host known (with every label asked for), ordered by id.", body = HostList),
        (status = 400, description = "`bad_request`: a label is not `KEY=VALUE`", body = ErrorBody),
        (status = 503, description = "`store_unavailable`: the session store cannot be reached; retry", body = ErrorBody),
    )
)]
pub async fn list(svc: web::Data<Service>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let wanted = label_filter(req.query_string())?;
    let mut hosts = svc.hosts().await?;
    hosts.retain(|h| protocol::labels::fits(&h.labels, &wanted));
    Ok(HttpResponse::Ok().json(api::HostList { hosts }))
}

/// The labels of `?label=KEY=VALUE&label=...`; other parameters are refused.
fn label_filter(query: &str) -> Result<protocol::labels::Labels, ApiError> {
    let pairs = web::Query::<Vec<(String, String)>>::from_query(query)
        .map_err(|e| ApiError::BadRequest(format!("query: {e}")))?;
    let mut wanted = protocol::labels::Labels::new();
    for (name, value) in pairs.into_inner() {
        if name != "label" {
            return Err(ApiError::BadRequest(format!(
                "unknown query parameter {name:?}: use label=KEY=VALUE"
            )));
        }
        let (k, v) =
            protocol::labels::parse(&value).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        wanted.insert(k, v);
    }
    Ok(wanted)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_filters_are_pairs() {
        let l = label_filter("label=region%3Deu&label=gpu=a100").unwrap();
        assert_eq!(l.get("region").map(String::as_str), Some("eu"));
        assert_eq!(l.get("gpu").map(String::as_str), Some("a100"));
        assert!(label_filter("").unwrap().is_empty());
        assert!(label_filter("label=region").is_err());
        assert!(label_filter("region=eu").is_err());
    }
}
