//! Authorization is decided from the route actix matched, never from how the path was spelled
//! (API.md, "HTTP API"): every route × every caller answers as the role table says, and no
//! spelling of a path — percent-encoded, doubled or trailing slashes, another case, dot
//! segments — reaches a handler without its route's check.
//!
//! Requests are written by hand on a raw TCP connection, so the path reaches the broker
//! exactly as spelled (an HTTP client library would normalise some of these spellings away).

#![allow(clippy::unwrap_used)] // test helpers, not only #[test] fns

use std::net::SocketAddr;
use std::time::Duration;

use broker::http::routes::{Access, ROUTES};
use portal_client::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use tests::keys::{ADMIN, PORTAL, PROVIDER};
use tests::secured;

const WRONG: &str = "wrong-key-0123456789";

/// API.md's role table, written out independently of the code: method, path, who may call.
/// A route added to the code without a line here fails
/// `every_route_is_declared_with_the_roles_api_md_gives_it`.
const TABLE: &[(&str, &str, &[&str])] = &[
    ("GET", "/healthz", &["open"]),
    ("GET", "/readyz", &["open"]),
    ("GET", "/openapi.json", &["open"]),
    ("GET", "/ui", &["open"]),
    ("GET", "/ui/app.js", &["open"]),
    ("GET", "/ui/app.css", &["open"]),
    ("POST", "/v1/sessions", &["portal", "admin", "player"]),
    (
        "GET",
        "/v1/sessions",
        &["portal", "provider", "admin", "player"],
    ),
    (
        "GET",
        "/v1/sessions/{id}",
        &["portal", "provider", "admin", "player"],
    ),
    (
        "DELETE",
        "/v1/sessions/{id}",
        &["portal", "provider", "admin", "player"],
    ),
    (
        "GET",
        "/v1/sessions/{id}/events",
        &["portal", "provider", "admin", "player"],
    ),
    ("GET", "/v1/sessions/{id}/logs", &["provider", "admin"]),
    ("GET", "/v1/hosts", &["provider", "admin"]),
    ("POST", "/v1/hosts/{id}/drain", &["provider", "admin"]),
    ("POST", "/v1/hosts/{id}/resume", &["provider", "admin"]),
    ("GET", "/v1/brokers", &["provider", "admin"]),
    ("GET", "/v1/usage", &["provider", "admin"]),
    ("GET", "/v1/events", &["portal", "provider", "admin"]),
    ("GET", "/metrics", &["provider", "admin"]),
    ("GET", "/v1/games", &["portal", "admin", "player"]),
    ("GET", "/v1/games/{id}", &["admin"]),
    ("PUT", "/v1/games/{id}", &["admin"]),
    ("DELETE", "/v1/games/{id}", &["admin"]),
    ("POST", "/v1/games/{id}/rollback", &["admin"]),
    ("GET", "/v1/pools", &["admin"]),
    ("GET", "/v1/pools/{id}", &["admin"]),
    ("PUT", "/v1/pools/{id}", &["admin"]),
    ("DELETE", "/v1/pools/{id}", &["admin"]),
    ("GET", "/IP", &["portal", "admin", "player"]),
    ("GET", "/End", &["portal", "provider", "admin", "player"]),
    ("POST", "/v1/sessions/{id}/join", &["admin", "game"]),
    ("GET", "/v1/builds", &["admin"]),
    ("GET", "/v1/builds/{id}", &["admin"]),
    ("PUT", "/v1/builds/{id}", &["admin"]),
    ("DELETE", "/v1/builds/{id}", &["admin"]),
    ("GET", "/v1/builds/{id}/content", &["admin", "agent"]),
    (
        "POST",
        "/v1/sessions/{id}/join-tokens",
        &["portal", "admin", "player"],
    ),
];

/// The callers: none, a wrong key, each role, a player (by its token), and a game (by the
/// game key of session `game_key`'s game).
fn callers(game_key: &str) -> Vec<(&'static str, Option<String>)> {
    vec![
        ("game", Some(game_key.to_owned())),
        ("agent", Some(tests::keys::AGENT.to_owned())),
        ("no key", None),
        ("wrong key", Some(WRONG.to_owned())),
        ("portal", Some(PORTAL.to_owned())),
        ("provider", Some(PROVIDER.to_owned())),
        ("admin", Some(ADMIN.to_owned())),
        ("player", Some(tests::keys::player("alice"))),
    ]
}

/// A concrete path for a route's pattern, with a query that gets past decoding but changes
/// nothing that matters (an unknown game, an unknown session, a PID no game has); a join
/// route names `joinable`, the session whose game key the `game` caller holds.
fn concrete(pattern: &str, joinable: &str) -> (String, &'static str) {
    let path = if pattern.starts_with("/v1/hosts/") {
        pattern.replace("{id}", "host-a")
    } else if pattern.starts_with("/v1/games/") {
        pattern.replace("{id}", "no-such-game")
    } else if pattern.starts_with("/v1/builds/") {
        // A sha256 no build has (and no body hashes to).
        pattern.replace("{id}", &"0".repeat(64))
    } else if pattern.ends_with("/join") || pattern.ends_with("/join-tokens") {
        pattern.replace("{id}", joinable)
    } else {
        pattern.replace("{id}", "no-such-session")
    };
    let (query, body) = match pattern {
        "/IP" => ("?gameId=no-such-game", ""),
        "/End" => ("?serverIp=127.0.0.1&pid=1", ""),
        "/v1/sessions" => ("", r#"{"game_id":"no-such-game"}"#),
        "/v1/pools/{id}" => ("", r#"{"game_id":"no-such-game","size":0}"#),
        _ => ("", ""),
    };
    (format!("{path}{query}"), body)
}

/// Status and body of one request written as is.
async fn raw(
    addr: SocketAddr,
    method: &str,
    target: &str,
    key: Option<&str>,
    body: &str,
) -> (u16, String) {
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(k) = key {
        head.push_str(&format!("Authorization: Bearer {k}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    head.push_str(body);
    let exchange = async {
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        conn.write_all(head.as_bytes()).await.unwrap();
        // To the end, but an event stream has none: its head is the answer.
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = conn.read(&mut buf).await.unwrap();
            answer.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&answer);
            let streaming = text.contains("\r\n\r\n") && text.contains("text/event-stream");
            if n == 0 || streaming {
                return answer;
            }
        }
    };
    let answer = tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .unwrap_or_else(|_| panic!("{method} {target}: no answer"));
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{method} {target}: not HTTP: {text:?}"));
    (status, text)
}

/// Whether an answer is the router's own 404 (no route), not a handler's.
fn no_route(status: u16, text: &str) -> bool {
    status == 404 && text.contains("no route")
}

fn allowed(roles: &[&str], caller: &str) -> bool {
    roles.contains(&"open") || roles.contains(&caller)
}

#[test]
fn every_route_is_declared_with_the_roles_api_md_gives_it() {
    let mut declared: Vec<(String, String)> = ROUTES
        .iter()
        .map(|r| (r.verb.as_str().to_owned(), r.path.to_owned()))
        .collect();
    let mut documented: Vec<(String, String)> = TABLE
        .iter()
        .map(|(m, p, _)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    declared.sort();
    documented.sort();
    assert_eq!(
        declared, documented,
        "the route table and API.md's role table disagree: declare each route with its action, and add it here"
    );
    for r in ROUTES {
        let (_, _, roles) = TABLE
            .iter()
            .find(|(m, p, _)| *m == r.verb.as_str() && *p == r.path)
            .unwrap();
        let open = roles.contains(&"open");
        assert_eq!(
            r.access == Access::Open,
            open,
            "{} {}",
            r.verb.as_str(),
            r.path
        );
        if let Access::Role(action) = r.access {
            for role in [
                broker::auth::Role::Portal,
                broker::auth::Role::Provider,
                broker::auth::Role::Admin,
            ] {
                assert_eq!(
                    role.may(action),
                    roles.contains(&role.as_str()),
                    "{} {} for {role}",
                    r.verb.as_str(),
                    r.path
                );
            }
            assert_eq!(
                broker::auth::player_may(action),
                roles.contains(&"player"),
                "{} {} for a player",
                r.verb.as_str(),
                r.path
            );
            assert_eq!(
                broker::auth::game_may(action),
                roles.contains(&"game"),
                "{} {} for a game",
                r.verb.as_str(),
                r.path
            );
            assert_eq!(
                broker::auth::agent_may(action),
                roles.contains(&"agent"),
                "{} {} for an agent",
                r.verb.as_str(),
                r.path
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_each_caller_as_the_role_table_says() {
    let (broker, _agent) = secured().await;
    let admin = Client::new(&broker.url, Some(ADMIN.into())).unwrap();
    let joinable = admin.start_session(&tests::start("joiner")).await.unwrap();
    let (_, game_key) = tests::join_env(&joinable.session_id).await;
    for (method, pattern, roles) in TABLE {
        let (target, body) = concrete(pattern, joinable.session_id.as_str());
        for (caller, key) in callers(&game_key) {
            let (status, text) = raw(broker.http_addr, method, &target, key.as_deref(), body).await;
            let want = match (key.as_deref(), allowed(roles, caller)) {
                (_, true) if roles.contains(&"open") => "answered",
                (None | Some(WRONG), _) => "401",
                (_, false) => "403",
                (_, true) => "answered",
            };
            let ok = match want {
                "401" => status == 401 && text.contains("unauthorized"),
                "403" => status == 403 && text.contains("forbidden"),
                _ => ![401, 403, 405].contains(&status) && !no_route(status, &text),
            };
            assert!(
                ok,
                "{method} {target} as {caller}: want {want}, got {status}: {text}"
            );
        }
    }
}

/// Ways to spell a path that are not the route's own spelling.
fn spellings(path: &str) -> Vec<String> {
    let (path, query) = path.split_once('?').map_or((path, ""), |(p, q)| (p, q));
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let join = |segs: &[String]| format!("/{}", segs.join("/"));
    let mut out = Vec::new();
    for (i, seg) in segments.iter().enumerate() {
        let mut chars = seg.chars();
        let Some(first) = chars.next() else { continue };
        let rest: String = chars.collect();
        let with = |replacement: String| {
            let mut segs: Vec<String> = segments.iter().map(|s| (*s).to_owned()).collect();
            segs[i] = replacement;
            join(&segs)
        };
        // Percent-encoded first letter, lower- and upper-case hex.
        out.push(with(format!("%{:02x}{rest}", first as u32)));
        out.push(with(format!("%{:02X}{rest}", first as u32)));
        // Another case.
        let flipped: String = seg
            .chars()
            .map(|c| {
                if c.is_ascii_lowercase() {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect();
        if flipped != *seg {
            out.push(with(flipped));
        }
        // Dot segments before it.
        out.push(with(format!("./{seg}")));
        out.push(with(format!("x/../{seg}")));
        // A doubled slash before it.
        out.push(with(format!("/{seg}")));
    }
    out.push(format!("{path}/"));
    out.push(format!("/{path}"));
    out.push(format!("{path}//"));
    out.sort();
    out.dedup();
    out.into_iter().map(|p| format!("{p}{query}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_spelling_of_a_path_gets_past_its_routes_check() {
    let (broker, _agent) = secured().await;
    let admin = Client::new(&broker.url, Some(ADMIN.into())).unwrap();
    let joinable = admin.start_session(&tests::start("joiner")).await.unwrap();
    let (_, game_key) = tests::join_env(&joinable.session_id).await;
    let mut tried = 0;
    for (method, pattern, roles) in TABLE {
        if roles.contains(&"open") {
            continue;
        }
        let (target, body) = concrete(pattern, joinable.session_id.as_str());
        for spelled in spellings(&target) {
            for (caller, key) in callers(&game_key) {
                if allowed(roles, caller) {
                    continue;
                }
                let (status, text) =
                    raw(broker.http_addr, method, &spelled, key.as_deref(), body).await;
                let refused = match key.as_deref() {
                    None | Some(WRONG) => status == 401,
                    Some(_) => status == 403,
                };
                assert!(
                    refused || no_route(status, &text),
                    "{method} {spelled} as {caller} reached a handler: {status}: {text}"
                );
                tried += 1;
            }
        }
    }
    assert!(tried > 300, "only {tried} spellings tried");
    // The spellings the old check missed are the route's own, refused like it.
    for (method, spelled) in [
        ("GET", "/v1/%73essions"),
        ("POST", "/v1/hosts/host-a/%64rain"),
        ("GET", "/%49P?gameId=sleeper"),
    ] {
        let (status, text) = raw(broker.http_addr, method, spelled, None, "").await;
        assert_eq!(status, 401, "{method} {spelled}: {text}");
    }
    // Nothing was drained or started (or ended) by any of it.
    let hosts = admin.hosts().await.unwrap().hosts;
    assert!(
        hosts
            .iter()
            .all(|h| h.status == protocol::api::HostStatus::Online),
        "{hosts:?}"
    );
    let sessions = admin
        .list_sessions(&Default::default())
        .await
        .unwrap()
        .sessions;
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0].status, protocol::api::SessionStatus::Running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_are_404_and_other_methods_405_with_json_bodies() {
    let (broker, _agent) = secured().await;
    let (status, text) = raw(broker.http_addr, "GET", "/v2/sessions", None, "").await;
    assert_eq!(status, 404, "{text}");
    assert!(text.contains("\"not_found\""), "{text}");
    let (status, text) = raw(broker.http_addr, "PUT", "/v1/sessions", Some(ADMIN), "").await;
    assert_eq!(status, 405, "{text}");
    assert!(text.contains("\"method_not_allowed\""), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("allow: post, get"),
        "{text}"
    );
    // Every answer carries a request id.
    let (_, text) = raw(broker.http_addr, "GET", "/healthz", None, "").await;
    assert!(
        text.to_ascii_lowercase().contains("x-request-id: "),
        "{text}"
    );
}
