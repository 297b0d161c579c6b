//! The HTTP API on actix-web. The only module that knows actix: handlers decode the request,
//! call one [`Service`] method, and encode the answer; [`ApiError`] becomes a status and a JSON
//! body here, in one exhaustive match.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_cors::Cors;
use actix_web::dev::Server;
use actix_web::error::QueryPayloadError;
use actix_web::http::header::{self, HeaderName};
use actix_web::http::StatusCode;
use actix_web::middleware::Condition;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer, ResponseError};
use protocol::api::{self, legacy, ErrorBody, ErrorCode, ErrorDetail, SessionQuery, StartSession};
use protocol::{HostId, SessionId};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::{from_fn, Next};
use actix_web::HttpMessage;

use crate::auth::{Action, Caller, Denied, Keys, Role};
use crate::error::ApiError;
use crate::service::Service;
use crate::session::Actor;

/// The largest JSON body accepted.
pub const MAX_BODY: usize = 64 * 1024;

/// The status of each error code.
fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::NotFound | ErrorCode::UnknownGame => StatusCode::NOT_FOUND,
        ErrorCode::Conflict => StatusCode::CONFLICT,
        ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::LaunchFailed => StatusCode::BAD_GATEWAY,
        ErrorCode::NoCapacity | ErrorCode::StoreUnavailable | ErrorCode::HostUnavailable => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        ErrorCode::LaunchTimeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn detail(e: &ApiError) -> ErrorDetail {
    ErrorDetail {
        code: e.code(),
        message: e.to_string(),
    }
}

fn error_response<T: serde::Serialize>(e: &ApiError, body: &T) -> HttpResponse {
    let mut res = HttpResponse::build(status_of(e.code()));
    if e.code() == ErrorCode::Unauthorized {
        res.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
    }
    if let Some(secs) = e.retry_after() {
        res.insert_header((header::RETRY_AFTER, secs.to_string()));
    }
    res.json(body)
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        status_of(self.code())
    }

    fn error_response(&self) -> HttpResponse {
        error_response(
            self,
            &ErrorBody {
                error: detail(self),
            },
        )
    }
}

/// An error of the original portal's calls: same status, the body shape it parses.
#[derive(Debug)]
struct LegacyError {
    error: ApiError,
    gamestatus: &'static str,
}

impl std::fmt::Display for LegacyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl ResponseError for LegacyError {
    fn status_code(&self) -> StatusCode {
        status_of(self.error.code())
    }

    fn error_response(&self) -> HttpResponse {
        let body = legacy::Failed {
            gamestatus: self.gamestatus.to_owned(),
            error: detail(&self.error),
        };
        error_response(&self.error, &body)
    }
}

fn query_error(err: QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::BadRequest(format!("invalid query string: {err}")).into()
}

fn session_id(raw: &str) -> Result<SessionId, ApiError> {
    SessionId::new(raw).map_err(|_| ApiError::NotFound(format!("no session {raw:?}")))
}

fn host_id(raw: &str) -> Result<HostId, ApiError> {
    HostId::new(raw).map_err(|_| ApiError::NotFound(format!("no host {raw:?}")))
}

const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// What a route does, for the role check; `None` for routes open to all (`/healthz`) and for
/// paths and methods that have no route (they answer 404 or 405).
fn action_for(method: &Method, path: &str) -> Option<Action> {
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let get = method == Method::GET;
    let post = method == Method::POST;
    Some(match parts.as_slice() {
        ["v1", "sessions"] if post => Action::StartSession,
        ["v1", "sessions"] if get => Action::ReadSessions,
        ["v1", "sessions", _] if get => Action::ReadSessions,
        ["v1", "sessions", _] if method == Method::DELETE => Action::EndSession,
        ["v1", "sessions", _, "events"] if get => Action::ReadSessions,
        ["v1", "hosts"] if get => Action::ListHosts,
        ["v1", "hosts", _, "drain" | "resume"] if post => Action::DrainHosts,
        ["v1", "games"] if get => Action::ListGames,
        ["IP"] if get => Action::StartSession,
        ["End"] if get => Action::EndSession,
        _ => return None,
    })
}

/// Who caused a change, from the caller the [`authenticate`] middleware identified.
fn actor(req: &HttpRequest) -> Actor {
    match req.extensions().get::<Caller>() {
        Some(Caller::Role(Role::Portal)) => Actor::Portal,
        Some(Caller::Role(Role::Provider)) => Actor::Provider,
        Some(Caller::Role(Role::Admin)) => Actor::Admin,
        Some(Caller::Open) | None => Actor::Api,
    }
}

fn denied(d: Denied, action: Action) -> ApiError {
    match d {
        Denied::Unauthenticated => ApiError::Unauthorized(
            "a valid API key is required: send Authorization: Bearer KEY".into(),
        ),
        Denied::Forbidden(role) => {
            ApiError::Forbidden(format!("the {role} role may not do this ({action:?})"))
        }
    }
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

/// Checks the caller's key and role before anything else of the request is read (a body from
/// an unauthenticated caller is never parsed), and leaves the caller for the handler.
async fn authenticate(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let Some(action) = action_for(req.method(), req.path()) else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    };
    let keys = req
        .app_data::<web::Data<Keys>>()
        .cloned()
        .unwrap_or_default();
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    match keys.authorize(header, action) {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.call(req)
                .await
                .map(ServiceResponse::map_into_left_body)
        }
        Err(d) => {
            let error = denied(d, action);
            let response = match req.path() {
                "/IP" => LegacyError {
                    error,
                    gamestatus: legacy::START_FAILED,
                }
                .error_response(),
                "/End" => LegacyError {
                    error,
                    gamestatus: legacy::END_FAILED,
                }
                .error_response(),
                _ => error.error_response(),
            };
            Ok(req.into_response(response).map_into_right_body())
        }
    }
}

/// How long a client may take to send a request body. actix-web bounds only the head
/// (`client_request_timeout`); a body trickled a byte at a time would otherwise hold a
/// connection and a worker's attention for as long as the client likes.
pub const BODY_DEADLINE: Duration = Duration::from_secs(10);

/// Reads a JSON body of at most [`MAX_BODY`] bytes within [`BODY_DEADLINE`].
async fn read_json<T: serde::de::DeserializeOwned>(
    mut payload: web::Payload,
) -> Result<T, ApiError> {
    use futures::StreamExt;
    let read = async {
        let mut body = web::BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk =
                chunk.map_err(|e| ApiError::BadRequest(format!("cannot read the body: {e}")))?;
            if body.len() + chunk.len() > MAX_BODY {
                return Err(ApiError::PayloadTooLarge(format!(
                    "the body is over the {MAX_BODY}-byte limit"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    let body = tokio::time::timeout(BODY_DEADLINE, read)
        .await
        .map_err(|_| {
            ApiError::BadRequest(format!(
                "the body was not received within {BODY_DEADLINE:?}"
            ))
        })??;
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

async fn start_session(
    svc: web::Data<Service>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
    {
        if len > MAX_BODY {
            return Err(ApiError::PayloadTooLarge(format!(
                "the body is over the {MAX_BODY}-byte limit"
            )));
        }
    }
    let body: StartSession = read_json(payload).await?;
    let key = match req.headers().get(&IDEMPOTENCY_KEY) {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::BadRequest("Idempotency-Key must be visible ASCII".into()))?
                .to_owned(),
        ),
        None => None,
    };
    // In a task of its own, so a client that hangs up does not cut the start short: the slot,
    // the record and the game are settled whatever happens to this request.
    let actor = actor(&req);
    let svc = svc.into_inner();
    let (session, fresh) =
        tokio::spawn(async move { svc.start_idempotent(body, key, actor).await })
            .await
            .map_err(|e| ApiError::Internal(format!("start task failed: {e}")))??;
    Ok(if fresh {
        HttpResponse::Created().json(session)
    } else {
        HttpResponse::Ok().json(session)
    })
}

async fn get_session(
    svc: web::Data<Service>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let s = svc.get(&session_id(&id)?).await?;
    Ok(HttpResponse::Ok().json(s))
}

async fn list_sessions(
    svc: web::Data<Service>,
    q: web::Query<SessionQuery>,
) -> Result<HttpResponse, ApiError> {
    let page = svc.list(&q).await?;
    Ok(HttpResponse::Ok().json(api::SessionList {
        sessions: page.sessions,
        next_cursor: page.next_cursor,
    }))
}

async fn end_session(
    svc: web::Data<Service>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = session_id(&id)?;
    let actor = actor(&req);
    let svc = svc.into_inner();
    // As for starts: an end, once asked, completes even if the client hangs up.
    let s = tokio::spawn(async move { svc.end(&id, actor).await })
        .await
        .map_err(|e| ApiError::Internal(format!("end task failed: {e}")))??;
    Ok(HttpResponse::Ok().json(s))
}

/// `GET /v1/sessions/{id}/events`: the session's history, oldest first.
async fn session_events(
    svc: web::Data<Service>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let events = svc.events(&session_id(&id)?).await?;
    let events: Vec<api::SessionEventView> = events
        .into_iter()
        .map(|e| api::SessionEventView {
            at: e.at,
            event: e.event,
            status: e.status,
            actor: e.actor,
        })
        .collect();
    Ok(HttpResponse::Ok().json(api::SessionEvents { events }))
}

async fn hosts(svc: web::Data<Service>) -> HttpResponse {
    HttpResponse::Ok().json(api::HostList { hosts: svc.hosts() })
}

async fn drain(svc: web::Data<Service>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(svc.set_draining(&host_id(&id)?, true).await?))
}

async fn resume(svc: web::Data<Service>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(svc.set_draining(&host_id(&id)?, false).await?))
}

async fn games(svc: web::Data<Service>) -> HttpResponse {
    HttpResponse::Ok().json(api::GameList { games: svc.games() })
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(api::Health {
        status: "ok".into(),
    })
}

/// `GET /IP?gameId=G&excuteMode=M&configfile=C`: the original portal's start.
async fn legacy_start(
    svc: web::Data<Service>,
    req: HttpRequest,
) -> Result<HttpResponse, LegacyError> {
    let fail = |error| LegacyError {
        error,
        gamestatus: legacy::START_FAILED,
    };
    let q = web::Query::<legacy::StartQuery>::from_query(req.query_string())
        .map_err(|e| fail(ApiError::BadRequest(format!("invalid query string: {e}"))))?;
    let game_id = q
        .game_id
        .parse()
        .map_err(|e| fail(ApiError::BadRequest(format!("gameId: {e}"))))?;
    let blank = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    let start = StartSession {
        game_id,
        mode: blank(&q.excute_mode),
        config: blank(&q.configfile),
    };
    let actor = actor(&req);
    let svc = svc.into_inner();
    let (s, _) = tokio::spawn(async move { svc.start_idempotent(start, None, actor).await })
        .await
        .map_err(|e| fail(ApiError::Internal(format!("start task failed: {e}"))))?
        .map_err(fail)?;
    Ok(HttpResponse::Ok().json(legacy::Started {
        gamestatus: legacy::STARTED.to_owned(),
        game_ip: s.ip.map(|ip| ip.to_string()).unwrap_or_default(),
        pid: s.pid.map(|p| p.to_string()).unwrap_or_default(),
        port: s.port.unwrap_or_default(),
        session_id: s.session_id.to_string(),
    }))
}

/// `GET /End?excuteMode=M&serverIp=IP&pid=PID`: the original portal's end.
async fn legacy_end(
    svc: web::Data<Service>,
    req: HttpRequest,
) -> Result<HttpResponse, LegacyError> {
    let fail = |error| LegacyError {
        error,
        gamestatus: legacy::END_FAILED,
    };
    let q = web::Query::<legacy::EndQuery>::from_query(req.query_string())
        .map_err(|e| fail(ApiError::BadRequest(format!("invalid query string: {e}"))))?;
    let actor = actor(&req);
    let svc = svc.into_inner();
    let (ip, pid) = (q.server_ip.clone(), q.pid.clone());
    tokio::spawn(async move { svc.end_by_addr(&ip, &pid, actor).await })
        .await
        .map_err(|e| fail(ApiError::Internal(format!("end task failed: {e}"))))?
        .map_err(fail)?;
    Ok(HttpResponse::Ok().json(legacy::Ended {
        gamestatus: legacy::ENDED.to_owned(),
    }))
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    ApiError::NotFound(format!("no route {} {}", req.method(), req.path())).error_response()
}

/// A known path with a method it does not take: 405, with a JSON body like every error.
async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    let body = ErrorBody {
        error: ErrorDetail {
            code: ErrorCode::BadRequest,
            message: format!("{} is not allowed on {}", req.method(), req.path()),
        },
    };
    HttpResponse::MethodNotAllowed().json(body)
}

/// A resource whose other methods answer [`method_not_allowed`].
fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/healthz").route(web::get().to(healthz)))
        .service(
            resource("/v1/sessions")
                .route(web::post().to(start_session))
                .route(web::get().to(list_sessions)),
        )
        .service(
            resource("/v1/sessions/{id}")
                .route(web::get().to(get_session))
                .route(web::delete().to(end_session)),
        )
        .service(resource("/v1/sessions/{id}/events").route(web::get().to(session_events)))
        .service(resource("/v1/hosts").route(web::get().to(hosts)))
        .service(resource("/v1/hosts/{id}/drain").route(web::post().to(drain)))
        .service(resource("/v1/hosts/{id}/resume").route(web::post().to(resume)))
        .service(resource("/v1/games").route(web::get().to(games)))
        .service(resource("/IP").route(web::get().to(legacy_start)))
        .service(resource("/End").route(web::get().to(legacy_end)));
}

fn cors(origins: &[String]) -> Cors {
    let mut c = Cors::default()
        .allowed_methods(["GET", "POST", "DELETE"])
        .allowed_headers([header::AUTHORIZATION, header::CONTENT_TYPE, IDEMPOTENCY_KEY])
        .expose_headers([header::RETRY_AFTER])
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
    let data = web::Data::from(service);
    let keys = web::Data::new(settings.keys.clone());
    let origins = settings.cors_origins.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(keys.clone())
            .app_data(web::QueryConfig::default().error_handler(query_error))
            // Outermost last: CORS answers preflights before any key is asked for, and its
            // refusals get a JSON body like every other error.
            .wrap(from_fn(authenticate))
            .wrap(Condition::new(!origins.is_empty(), cors(&origins)))
            .wrap(from_fn(json_cors_errors))
            .configure(routes)
            .default_service(web::to(not_found))
    })
    .workers(settings.workers)
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
