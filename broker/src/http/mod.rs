//! The HTTP API on actix-web, the only module that knows actix.
//!
//! - [`routes`]: the one route table (method, path, who may call it, handler); the router and
//!   the role check are both built from it, the check reading the route actix matched;
//! - [`errors`]: [`ApiError`](errors::ApiError) and its one mapping to a status and a body;
//! - [`request`]: each request's id and tracing span;
//! - [`extract`]: bounded bodies, ids, the `Idempotency-Key`, the caller;
//! - handlers, one file per resource: [`sessions`], [`hosts`], [`games`], [`probes`], and the
//!   original portal's calls in [`legacy`], the dashboard's files in [`ui`], the OpenAPI
//!   document in [`openapi`]. A handler decodes, calls one [`Service`] method,
//!   and encodes its answer.

mod builds;
mod docs;
pub mod errors;
mod etag;
mod events;
pub mod extract;
mod games;
mod hosts;
mod legacy;
mod metrics;
pub mod openapi;
mod pools;
mod probes;
pub mod request;
pub mod routes;
mod sessions;
mod ui;
mod usage;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_cors::Cors;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Server, ServiceRequest, ServiceResponse};
use actix_web::error::QueryPayloadError;
use actix_web::http::header;
use actix_web::middleware::{from_fn, Condition, Next};
use actix_web::{web, App, HttpRequest, HttpServer, ResponseError};

pub use extract::{BODY_DEADLINE, MAX_BODY};

use crate::auth::Keys;
use crate::service::Service;
use errors::ApiError;

fn query_error(err: QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::BadRequest(format!("invalid query string: {err}")).into()
}

/// Gives actix-cors's refusals (an origin, method or header not allowed) the API's JSON error
/// body instead of plain text.
async fn json_cors_errors(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let res = match next.call(req).await {
        Ok(res) => res,
        Err(e) => match e.as_error::<actix_cors::CorsError>() {
            Some(cors) => {
                let error = ApiError::BadRequest(format!("CORS: {cors}"));
                return Err(actix_web::error::InternalError::from_response(
                    error.to_string(),
                    error.error_response(),
                )
                .into());
            }
            None => return Err(e),
        },
    };
    let refused = res
        .response()
        .error()
        .and_then(|e| e.as_error::<actix_cors::CorsError>())
        .map(ToString::to_string);
    match refused {
        Some(reason) => {
            let response = ApiError::BadRequest(format!("CORS: {reason}")).error_response();
            Ok(res.into_response(response).map_into_right_body())
        }
        None => Ok(res.map_into_left_body()),
    }
}

fn cors(origins: &[String]) -> Cors {
    let mut c = Cors::default()
        .allowed_methods(routes::methods())
        .allowed_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            extract::IDEMPOTENCY_KEY,
            request::REQUEST_ID,
        ])
        .expose_headers([header::RETRY_AFTER, request::REQUEST_ID])
        .max_age(3600);
    for o in origins {
        c = if o == "*" {
            c.allow_any_origin()
        } else {
            c.allowed_origin(o)
        };
    }
    c
}

/// While the broker stops, each answer closes its connection: a client's kept-alive
/// connection would otherwise bring its next request here and keep the drain busy until its
/// grace ran out, where it should reconnect (through a load balancer, to another replica).
async fn close_when_stopping(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let service = req.app_data::<web::Data<Service>>().cloned();
    let mut res = next.call(req).await?;
    if service.is_some_and(|s| s.is_closing()) {
        res.response_mut()
            .head_mut()
            .set_connection_type(actix_web::http::ConnectionType::Close);
    }
    Ok(res)
}

/// HTTP settings.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Browser origins allowed.
    pub cors_origins: Vec<String>,
    /// Worker threads.
    pub workers: usize,
    /// In-flight requests get this long to finish at shutdown.
    pub shutdown_grace: Duration,
    /// API keys; none: open.
    pub keys: Keys,
    /// HTTPS; `None`: plain HTTP.
    pub tls: Option<rustls::ServerConfig>,
}

/// Builds the HTTP server on `listener`; it runs when awaited, until its handle stops it.
pub fn server(
    service: Arc<Service>,
    settings: &HttpSettings,
    listener: TcpListener,
) -> std::io::Result<Server> {
    let metrics = web::Data::from(Arc::clone(service.metrics()));
    let data = web::Data::from(service);
    let keys = web::Data::new(settings.keys.clone());
    let document = web::Data::new(docs::ApiDocument(openapi::json()));
    let origins = settings.cors_origins.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(metrics.clone())
            .app_data(keys.clone())
            .app_data(document.clone())
            .app_data(web::QueryConfig::default().error_handler(query_error))
            .configure(routes::configure)
            .default_service(web::to(routes::no_route))
            // Outermost last: each request gets its id first; CORS answers preflights before
            // any route (and so any key) is involved, and its refusals get a JSON body.
            .wrap(Condition::new(!origins.is_empty(), cors(&origins)))
            .wrap(from_fn(json_cors_errors))
            .wrap(from_fn(close_when_stopping))
            .wrap(from_fn(request::identify))
    })
    .workers(settings.workers)
    // Small writes go out at once: an event on a stream must not wait for the ACK of the
    // previous one (Nagle's algorithm and a delayed ACK held one for 40 ms).
    .tcp_nodelay(true)
    .max_connections(10_000)
    .keep_alive(Duration::from_secs(75))
    .client_request_timeout(Duration::from_secs(10))
    .disable_signals()
    .shutdown_timeout(settings.shutdown_grace.as_secs());
    let server = match settings.tls.clone() {
        Some(tls) => server.listen_rustls_0_23(listener, tls)?,
        None => server.listen(listener)?,
    }
    .run();
    Ok(server)
}
