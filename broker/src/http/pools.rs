//! `/v1/pools`: warm pools, admin only. Every pool answer carries its `ETag`; a `PUT` or
//! `DELETE` with an `If-Match` that is not the pool's current one answers 412, so two
//! operators cannot overwrite each other.

use actix_web::{web, HttpRequest, HttpResponse};
use protocol::api::{ErrorBody, Pool, PoolList, PoolSpec};
use protocol::PoolId;

use super::errors::ApiError;
use super::{etag, extract};
use crate::service::Service;

/// A pool with its `ETag`.
fn tagged(res: actix_web::HttpResponseBuilder, p: &Pool) -> HttpResponse {
    etag::tagged(res, p.version, p)
}

/// `PUT /v1/pools/{id}`: creates or changes a pool.
#[utoipa::path(
    put,
    path = "/v1/pools/{id}",
    tag = "pools",
    operation_id = "put_pool",
    summary = "Create or change a warm pool",
    description = "The broker keeps `size` games of this game, mode and config launched and ready; a start that asks for the same game, mode and config takes one at once. Ready games older than `max_age_s` are replaced one at a time.",
    request_body = PoolSpec,
    params(
        ("id" = PoolId, Path, description = "The pool's name."),
        ("If-Match" = Option<String>, Header, description = "Write only if the pool's current `ETag` is one of these (`*`: only if it exists)."),
    ),
    responses(
        (status = 201, description = "A new pool.", body = Pool, headers(("ETag" = String, description = "The pool's version."))),
        (status = 200, description = "The pool, changed.", body = Pool, headers(("ETag" = String, description = "The pool's version."))),
        (status = 400, description = "`bad_request`: malformed JSON, a size over 1000, a max_age_s of 0", body = ErrorBody),
        (status = 404, description = "`unknown_game`: no host has ever offered the game", body = ErrorBody),
        (status = 412, description = "`precondition_failed`: `If-Match` is not the pool's current `ETag`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over 64 KiB", body = ErrorBody),
        (status = 503, description = "`store_unavailable`: the session store cannot be reached; retry", body = ErrorBody),
    )
)]
pub async fn put(
    svc: web::Data<Service>,
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id = extract::pool_id(&id)?;
    let cond = etag::if_match(&req)?;
    let spec: PoolSpec = extract::json(&req, payload).await?;
    let (pool, created) = svc.put_pool(&id, spec, cond.as_ref()).await?;
    Ok(if created {
        tagged(HttpResponse::Created(), &pool)
    } else {
        tagged(HttpResponse::Ok(), &pool)
    })
}

/// `GET /v1/pools`.
#[utoipa::path(
    get,
    path = "/v1/pools",
    tag = "pools",
    operation_id = "list_pools",
    summary = "The warm pools and their counts",
    responses(
        (status = 200, description = "Every pool, ordered by id.", body = PoolList),
        (status = 503, description = "`store_unavailable`: the session store cannot be reached; retry", body = ErrorBody),
    )
)]
pub async fn list(svc: web::Data<Service>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(PoolList {
        pools: svc.pools().await?,
    }))
}

/// `GET /v1/pools/{id}`.
#[utoipa::path(
    get,
    path = "/v1/pools/{id}",
    tag = "pools",
    operation_id = "get_pool",
    summary = "One warm pool and its counts",
    params(("id" = PoolId, Path, description = "The pool.")),
    responses(
        (status = 200, description = "The pool.", body = Pool, headers(("ETag" = String, description = "The pool's version."))),
        (status = 404, description = "`not_found`: no such pool", body = ErrorBody),
        (status = 503, description = "`store_unavailable`: the session store cannot be reached; retry", body = ErrorBody),
    )
)]
pub async fn get(svc: web::Data<Service>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let pool = svc.pool(&extract::pool_id(&id)?).await?;
    Ok(tagged(HttpResponse::Ok(), &pool))
}

/// `DELETE /v1/pools/{id}`: removes a pool and stops its ready games.
#[utoipa::path(
    delete,
    path = "/v1/pools/{id}",
    tag = "pools",
    operation_id = "delete_pool",
    summary = "Remove a warm pool",
    description = "Answers once its ready games are stopped; games it was still launching are stopped as soon as they are ready. Games already claimed by players go on.",
    params(
        ("id" = PoolId, Path, description = "The pool."),
        ("If-Match" = Option<String>, Header, description = "Remove only if the pool's current `ETag` is one of these."),
    ),
    responses(
        (status = 200, description = "The pool as it was.", body = Pool),
        (status = 404, description = "`not_found`: no such pool", body = ErrorBody),
        (status = 412, description = "`precondition_failed`: `If-Match` is not the pool's current `ETag`", body = ErrorBody),
        (status = 503, description = "`store_unavailable`: the session store cannot be reached; retry", body = ErrorBody),
    )
)]
pub async fn delete(
    svc: web::Data<Service>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = extract::pool_id(&id)?;
    let cond = etag::if_match(&req)?;
    let pool = svc.into_inner().delete_pool(&id, cond.as_ref()).await?;
    Ok(HttpResponse::Ok().json(pool))
}
