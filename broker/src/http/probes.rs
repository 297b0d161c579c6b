//! Probes for load balancers and orchestrators, open to all.

use actix_web::HttpResponse;
use protocol::api;

/// `GET /healthz`: the process is alive.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(api::Health {
        status: "ok".into(),
    })
}
