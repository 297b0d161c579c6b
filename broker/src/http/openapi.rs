//! The API as an OpenAPI 3.1 document (served by `docs::document`), generated from the code — the
//! handlers' `#[utoipa::path]` annotations, the JSON types of `protocol::api`, and the route
//! table, from which every operation gets its roles and its 401 and 403 answers. A copy is
//! committed (`broker/openapi.json`); a test fails when it drifts from what this builds.

use protocol::api::ErrorBody;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, ResponseBuilder};
use utoipa::{OpenApi, ToSchema};

use super::routes::{Access, Verb, ROUTES};
use super::{
    builds, docs, events, games, hosts, legacy, metrics, pools, probes, sessions, ui, usage,
};
use crate::auth::{self, Role};

/// The name of the bearer-key security scheme.
const BEARER: &str = "api_key";
/// The name of the player-token security scheme (API.md, "Players").
const PLAYER: &str = "player_token";
/// The name of the game-key security scheme (API.md, "Players").
const GAME: &str = "game_key";
/// The name of the agent-token security scheme (builds' downloads).
const AGENT: &str = "agent_token";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Arcade broker API",
        description = "Start, watch and end game-streaming sessions on runtime hosts. With API keys configured (`--api-key ROLE:KEY`), every call but the probes, this document and the dashboard page needs `Authorization: Bearer KEY`, and each operation says which roles may call it.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        sessions::start,
        sessions::list,
        sessions::get,
        sessions::end,
        sessions::events,
        sessions::logs,
        sessions::join,
        sessions::join_tokens,
        builds::list,
        builds::get,
        builds::put,
        builds::delete,
        builds::content,
        pools::list,
        pools::get,
        pools::put,
        pools::delete,
        hosts::list,
        hosts::drain,
        hosts::resume,
        hosts::brokers,
        usage::get,
        games::list,
        games::get,
        games::put,
        games::delete,
        games::rollback,
        events::stream,
        metrics::metrics,
        probes::healthz,
        probes::readyz,
        legacy::start,
        legacy::end,
        docs::document,
        ui::page,
        ui::script,
        ui::style,
    ),
    components(schemas(ErrorBody))
)]
struct ApiDoc;

/// The document as served (`docs::document`): [`build`]'s, as JSON.
pub fn json() -> String {
    build()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// The document: the annotations, then what the route table says of each operation.
pub fn build() -> Document {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        BEARER,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "An API key given to the broker with --api-key ROLE:KEY.",
                ))
                .build(),
        ),
    );
    components.add_security_scheme(
        PLAYER,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .description(Some(
                    "A player token: a JWT the portal's server signs (EdDSA, RS256 or HS256) with `sub` = the player's user id and `exp` at most 24 h ahead, verified with --player-key. A player starts, reads, lists and ends only its own sessions.",
                ))
                .build(),
        ),
    );
    components.add_security_scheme(
        GAME,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "A game key: the ARCADE_GAME_KEY a session's game is given; it redeems that session's join tokens, while the session runs, and nothing else.",
                ))
                .build(),
        ),
    );
    components.add_security_scheme(
        AGENT,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "The agent token (--agent-token): agents download builds with it, and do nothing else over HTTP.",
                ))
                .build(),
        ),
    );
    for route in ROUTES {
        let Access::Role(action) = route.access else {
            continue;
        };
        let Some(op) = operation(&mut doc, route.path, route.verb) else {
            continue;
        };
        let mut roles: Vec<&str> = [Role::Portal, Role::Provider, Role::Admin]
            .into_iter()
            .filter(|r| r.may(action))
            .map(Role::as_str)
            .collect();
        let mut security = vec![SecurityRequirement::new::<_, _, &str>(BEARER, [])];
        if auth::player_may(action) {
            roles.push("player (its own sessions)");
            security.push(SecurityRequirement::new::<_, _, &str>(PLAYER, []));
        }
        if auth::game_may(action) {
            roles.push("game (its own session's key)");
            security.push(SecurityRequirement::new::<_, _, &str>(GAME, []));
        }
        if auth::agent_may(action) {
            roles.push("agent (the agent token)");
            security.push(SecurityRequirement::new::<_, _, &str>(AGENT, []));
        }
        let line = format!("Roles: {}.", roles.join(", "));
        op.description = Some(match op.description.take() {
            Some(d) => format!("{d}\n\n{line}"),
            None => line,
        });
        op.security = Some(security);
        let error = |text: &str| {
            ResponseBuilder::new()
                .description(text)
                .content(
                    "application/json",
                    utoipa::openapi::ContentBuilder::new()
                        .schema(Some(utoipa::openapi::Ref::from_schema_name(
                            ErrorBody::name(),
                        )))
                        .build(),
                )
                .build()
        };
        let responses = &mut op.responses.responses;
        responses.insert(
            "401".into(),
            error("`unauthorized`: no valid API key (keys are configured), or a player token or game key that does not verify").into(),
        );
        // A route whose own refusals are 403 too says so in its annotation: kept.
        responses
            .entry("403".into())
            .or_insert_with(|| error("`forbidden`: the key's role may not call this").into());
    }
    doc
}

/// The operation of `path` and `verb`, if the document has it.
fn operation<'a>(doc: &'a mut Document, path: &str, verb: Verb) -> Option<&'a mut Operation> {
    let item: &mut PathItem = doc.paths.paths.get_mut(path)?;
    match verb {
        Verb::Get => item.get.as_mut(),
        Verb::Post => item.post.as_mut(),
        Verb::Put => item.put.as_mut(),
        Verb::Delete => item.delete.as_mut(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route of the table is in the document with its method, and nothing else is.
    #[test]
    fn the_document_has_every_route_and_only_them() {
        let mut doc = build();
        for route in ROUTES {
            assert!(
                operation(&mut doc, route.path, route.verb).is_some(),
                "{} {} is not in the document: annotate its handler and list it in ApiDoc",
                route.verb.as_str(),
                route.path
            );
        }
        let documented: usize = doc
            .paths
            .paths
            .values()
            .map(|i| {
                usize::from(i.get.is_some())
                    + usize::from(i.post.is_some())
                    + usize::from(i.delete.is_some())
                    + usize::from(i.put.is_some())
                    + usize::from(i.patch.is_some())
            })
            .sum();
        assert_eq!(
            documented,
            ROUTES.len(),
            "the document has operations no route serves"
        );
    }

    /// The committed copy is what the code builds. To update it after a change of the API:
    /// `ARCADE_UPDATE_OPENAPI=1 cargo test -p broker openapi`.
    #[test]
    fn the_committed_openapi_json_is_up_to_date() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");
        let built = build().to_pretty_json().unwrap() + "\n";
        if std::env::var_os("ARCADE_UPDATE_OPENAPI").is_some() {
            std::fs::write(path, &built).unwrap();
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == built,
            "broker/openapi.json differs from the API the code describes; run \
             ARCADE_UPDATE_OPENAPI=1 cargo test -p broker openapi, review and commit it"
        );
    }
}
