//! `GET /ui`: the operator dashboard, a page and its script and style, embedded in the binary
//! (`broker/ui/`), so nothing is loaded from another host. The page uses the API like any
//! client, with the key the operator types; its routes are open, the API's are not. A strict
//! Content-Security-Policy keeps it to this origin.

use actix_web::http::header;
use actix_web::HttpResponse;

/// Only this origin: no inline script, nothing from elsewhere, not framed.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .body(body)
}

/// `GET /ui`.
#[utoipa::path(
    get,
    path = "/ui",
    tag = "dashboard",
    operation_id = "dashboard",
    summary = "The operator dashboard",
    description = "Hosts and sessions, live from the event stream, with drain, resume and end buttons. The page asks for an API key when the broker has keys.",
    responses((status = 200, description = "The page.", body = String, content_type = "text/html"))
)]
pub async fn page() -> HttpResponse {
    asset(
        "text/html; charset=utf-8",
        include_str!("../../ui/index.html"),
    )
}

/// `GET /ui/app.js`.
#[utoipa::path(
    get,
    path = "/ui/app.js",
    tag = "dashboard",
    operation_id = "dashboard_script",
    summary = "The dashboard's script",
    responses((status = 200, description = "JavaScript.", body = String, content_type = "text/javascript"))
)]
pub async fn script() -> HttpResponse {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../../ui/app.js"),
    )
}

/// `GET /ui/app.css`.
#[utoipa::path(
    get,
    path = "/ui/app.css",
    tag = "dashboard",
    operation_id = "dashboard_style",
    summary = "The dashboard's style",
    responses((status = 200, description = "CSS.", body = String, content_type = "text/css"))
)]
pub async fn style() -> HttpResponse {
    asset("text/css; charset=utf-8", include_str!("../../ui/app.css"))
}
