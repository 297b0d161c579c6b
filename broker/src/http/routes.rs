//! The API's one route table: each route's method, path, who may call it, the shape of its
//! errors, and its handler. The router and the role check are both built from [`ROUTES`].
//!
//! Authorization is decided from the route that actix matched, never from the path as spelled:
//! each route is registered with a middleware holding its own [`RouteSpec`], so a request
//! reaches a handler only through its route's check, whatever percent-encoding or slashes its
//! path had. A route cannot be declared without its [`Access`] (the field is not optional), and
//! a request that matches no route never reaches a handler: 404, or 405 for a known path with
//! another method.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse, ResponseError};

use super::errors::{ApiError, Shape, ShapedError};
use super::{
    builds, docs, events, games, hosts, legacy, metrics, pools, probes, sessions, ui, usage,
};
use crate::auth::{Action, Caller, Denied, Keys};

/// An HTTP method the API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// GET.
    Get,
    /// POST.
    Post,
    /// PUT.
    Put,
    /// DELETE.
    Delete,
}

impl Verb {
    /// The method's name, as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Delete => "DELETE",
        }
    }

    fn method(self) -> Method {
        match self {
            Self::Get => Method::GET,
            Self::Post => Method::POST,
            Self::Put => Method::PUT,
            Self::Delete => Method::DELETE,
        }
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, key or not (probes).
    Open,
    /// Callers whose role may do this action (anyone, while no key is configured).
    Role(Action),
}

/// One route.
#[derive(Debug)]
pub struct RouteSpec {
    /// The method.
    pub verb: Verb,
    /// The path pattern, actix syntax (`{id}` for a segment).
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
    /// The shape of its error bodies.
    pub shape: Shape,
    /// Attaches the handler.
    handler: fn(actix_web::Route) -> actix_web::Route,
}

use Access::{Open, Role};
use Action as A;
use Verb::{Delete, Get, Post, Put};

const fn route(
    verb: Verb,
    path: &'static str,
    access: Access,
    handler: fn(actix_web::Route) -> actix_web::Route,
) -> RouteSpec {
    RouteSpec {
        verb,
        path,
        access,
        shape: Shape::Api,
        handler,
    }
}

const fn shaped(spec: RouteSpec, shape: Shape) -> RouteSpec {
    RouteSpec { shape, ..spec }
}

/// Every route of the API.
pub static ROUTES: &[RouteSpec] = &[
    route(Get, "/healthz", Open, |r| r.to(probes::healthz)),
    route(Get, "/readyz", Open, |r| r.to(probes::readyz)),
    route(Get, "/openapi.json", Open, |r| r.to(docs::document)),
    route(Get, "/ui", Open, |r| r.to(ui::page)),
    route(Get, "/ui/app.js", Open, |r| r.to(ui::script)),
    route(Get, "/ui/app.css", Open, |r| r.to(ui::style)),
    route(Post, "/v1/sessions", Role(A::StartSession), |r| {
        r.to(sessions::start)
    }),
    route(Get, "/v1/sessions", Role(A::ReadSessions), |r| {
        r.to(sessions::list)
    }),
    route(Get, "/v1/sessions/{id}", Role(A::ReadSessions), |r| {
        r.to(sessions::get)
    }),
    route(Delete, "/v1/sessions/{id}", Role(A::EndSession), |r| {
        r.to(sessions::end)
    }),
    route(
        Get,
        "/v1/sessions/{id}/events",
        Role(A::ReadSessions),
        |r| r.to(sessions::events),
    ),
    route(Get, "/v1/sessions/{id}/logs", Role(A::ReadLogs), |r| {
        r.to(sessions::logs)
    }),
    route(Post, "/v1/sessions/{id}/join", Role(A::JoinSession), |r| {
        r.to(sessions::join)
    }),
    route(
        Post,
        "/v1/sessions/{id}/join-tokens",
        Role(A::MintJoinToken),
        |r| r.to(sessions::join_tokens),
    ),
    route(Get, "/v1/hosts", Role(A::ListHosts), |r| r.to(hosts::list)),
    route(Post, "/v1/hosts/{id}/drain", Role(A::DrainHosts), |r| {
        r.to(hosts::drain)
    }),
    route(Post, "/v1/hosts/{id}/resume", Role(A::DrainHosts), |r| {
        r.to(hosts::resume)
    }),
    route(Get, "/v1/brokers", Role(A::ListHosts), |r| {
        r.to(hosts::brokers)
    }),
    route(Get, "/v1/usage", Role(A::ReadUsage), |r| r.to(usage::get)),
    route(Get, "/v1/games", Role(A::ListGames), |r| r.to(games::list)),
    route(Get, "/v1/games/{id}", Role(A::ManageGames), |r| {
        r.to(games::get)
    }),
    route(Put, "/v1/games/{id}", Role(A::ManageGames), |r| {
        r.to(games::put)
    }),
    route(Delete, "/v1/games/{id}", Role(A::ManageGames), |r| {
        r.to(games::delete)
    }),
    route(Post, "/v1/games/{id}/rollback", Role(A::ManageGames), |r| {
        r.to(games::rollback)
    }),
    route(Get, "/v1/events", Role(A::ReadEvents), |r| {
        r.to(events::stream)
    }),
    route(Get, "/v1/pools", Role(A::ManagePools), |r| {
        r.to(pools::list)
    }),
    route(Get, "/v1/pools/{id}", Role(A::ManagePools), |r| {
        r.to(pools::get)
    }),
    route(Put, "/v1/pools/{id}", Role(A::ManagePools), |r| {
        r.to(pools::put)
    }),
    route(Delete, "/v1/pools/{id}", Role(A::ManagePools), |r| {
        r.to(pools::delete)
    }),
    route(Get, "/v1/builds", Role(A::ManageBuilds), |r| {
        r.to(builds::list)
    }),
    route(Get, "/v1/builds/{id}", Role(A::ManageBuilds), |r| {
        r.to(builds::get)
    }),
    route(Put, "/v1/builds/{id}", Role(A::ManageBuilds), |r| {
        r.to(builds::put)
    }),
    route(Delete, "/v1/builds/{id}", Role(A::ManageBuilds), |r| {
        r.to(builds::delete)
    }),
    route(
        Get,
        "/v1/builds/{id}/content",
        Role(A::ReadBuildContent),
        |r| r.to(builds::content),
    ),
    route(Get, "/metrics", Role(A::ReadMetrics), |r| {
        r.to(metrics::metrics)
    }),
    shaped(
        route(Get, "/IP", Role(A::StartSession), |r| r.to(legacy::start)),
        Shape::LegacyStart,
    ),
    shaped(
        route(Get, "/End", Role(A::EndSession), |r| r.to(legacy::end)),
        Shape::LegacyEnd,
    ),
];

/// Registers every route of [`ROUTES`], each behind its own check, and answers 405 for a
/// known path with another method.
pub fn configure(cfg: &mut web::ServiceConfig) {
    let mut paths: Vec<&'static str> = Vec::new();
    for spec in ROUTES {
        if !paths.contains(&spec.path) {
            paths.push(spec.path);
        }
    }
    for path in paths {
        let mut resource = web::resource(path).default_service(web::to(method_not_allowed));
        for spec in ROUTES.iter().filter(|s| s.path == path) {
            let route = (spec.handler)(web::route().method(spec.verb.method()))
                .wrap(from_fn(move |req, next| authorize(spec, req, next)));
            resource = resource.route(route);
        }
        cfg.service(resource);
    }
}

/// The check of one route: the caller's key and role, before anything else of the request is
/// read (a body from an unauthenticated caller is never parsed). The caller is left for the
/// handler.
async fn authorize(
    spec: &'static RouteSpec,
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    tracing::Span::current().record("route", spec.path);
    let decided = match spec.access {
        Open => Ok(Caller::Open),
        Role(action) => {
            let keys = req.app_data::<web::Data<Keys>>().map(|k| {
                k.authorize(
                    req.headers()
                        .get(header::AUTHORIZATION)
                        .map(|v| v.as_bytes()),
                    action,
                )
            });
            match keys {
                Some(decided) => decided.map_err(|d| match d {
                    Denied::Unauthenticated => ApiError::Unauthorized,
                    Denied::BadToken(why) => ApiError::BadToken(why),
                    Denied::Forbidden(role) => ApiError::Forbidden { role, action },
                    Denied::PlayerForbidden => ApiError::PlayerForbidden(action),
                    Denied::BadGameKey => ApiError::BadGameKey,
                    Denied::GameForbidden => ApiError::GameForbidden,
                    Denied::AgentForbidden => ApiError::AgentForbidden,
                }),
                // Fail closed: a server built without its keys answers no route but the open ones.
                None => Err(ApiError::Unauthorized),
            }
        }
    };
    match decided {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.call(req)
                .await
                .map(ServiceResponse::map_into_left_body)
        }
        Err(error) => {
            let response = ShapedError {
                error,
                shape: spec.shape,
            }
            .error_response();
            Ok(req.into_response(response).map_into_right_body())
        }
    }
}

/// A path no route has: 404.
pub async fn no_route(req: HttpRequest) -> HttpResponse {
    ApiError::NoRoute {
        method: req.method().to_string(),
        path: req.path().to_owned(),
    }
    .error_response()
}

/// A known path with a method its routes do not take: 405, with the methods it takes in
/// `Allow`.
async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    let allowed: Vec<&str> = req
        .match_pattern()
        .map(|pattern| {
            ROUTES
                .iter()
                .filter(|r| r.path == pattern)
                .map(|r| r.verb.as_str())
                .collect()
        })
        .unwrap_or_default();
    let mut res = ApiError::MethodNotAllowed {
        method: req.method().to_string(),
        path: req.path().to_owned(),
    }
    .error_response();
    if let Ok(v) = header::HeaderValue::from_str(&allowed.join(", ")) {
        res.headers_mut().insert(header::ALLOW, v);
    }
    res
}

/// Every method some route takes, for CORS.
pub fn methods() -> Vec<&'static str> {
    let mut verbs: Vec<&'static str> = Vec::new();
    for r in ROUTES {
        if !verbs.contains(&r.verb.as_str()) {
            verbs.push(r.verb.as_str());
        }
    }
    verbs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_method_and_path_is_declared_once() {
        for (i, a) in ROUTES.iter().enumerate() {
            for b in &ROUTES[i + 1..] {
                assert!(
                    (a.verb, a.path) != (b.verb, b.path),
                    "{} {} is declared twice",
                    a.verb.as_str(),
                    a.path
                );
            }
        }
    }

    #[test]
    fn only_probes_the_document_and_the_dashboard_page_are_open() {
        let open: Vec<&str> = ROUTES
            .iter()
            .filter(|r| r.access == Open)
            .map(|r| r.path)
            .collect();
        assert_eq!(
            open,
            [
                "/healthz",
                "/readyz",
                "/openapi.json",
                "/ui",
                "/ui/app.js",
                "/ui/app.css"
            ]
        );
    }
}
