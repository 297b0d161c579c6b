//! `GET /openapi.json`: the OpenAPI document, built once at start-up by `openapi::build` and
//! handed to this handler as app data. Apart from `openapi`, so the route table (which names
//! this handler) and the document's builder (which reads the route table) do not import
//! each other.

use actix_web::{web, HttpResponse};

/// The OpenAPI document as served: JSON, built once.
#[derive(Debug, Clone)]
pub struct ApiDocument(pub String);

/// `GET /openapi.json`.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    operation_id = "openapi",
    summary = "This document",
    responses((status = 200, description = "The API as OpenAPI 3.1.", content_type = "application/json"))
)]
pub async fn document(doc: web::Data<ApiDocument>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(doc.0.clone())
}
