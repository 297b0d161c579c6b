//! [`Client`]: the broker's `/v1` HTTP API as typed async calls.
//!
//! Every call returns the JSON type of [`protocol::api`] that the API documents for it, or a
//! [`ClientError`]:
//!
//! - [`ClientError::Api`] when the broker answered an error in the API's shape
//!   (`{"error": {"code", "message"}}`), with the HTTP status and any `Retry-After`;
//! - [`ClientError::UnexpectedStatus`] when it answered an error status with any other body
//!   (something else is listening at the URL, or a proxy answered);
//! - [`ClientError::Transport`] when no answer arrived at all (the broker is not running, the
//!   URL is wrong, or it did not answer within [`REQUEST_TIMEOUT`]);
//! - [`ClientError::Decode`] when a success answer is not the documented JSON;
//! - [`ClientError::InvalidUrl`] and [`ClientError::InvalidHeader`] when the client is given
//!   something it cannot send.

use protocol::api::{
    BrokerList, Build, BuildList, CentralGame, ErrorBody, EventType, GameList, Health, Host,
    HostList, JoinRequest, JoinToken, Joined, Pool, PoolList, PoolSpec, Session, SessionEvents,
    SessionList, SessionQuery, StartSession, StartedSession, Usage, UsageQuery,
};
use protocol::{BuildId, GameId, HostId, PoolId, SessionId};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, IF_MATCH, RETRY_AFTER};
use reqwest::{Method, RequestBuilder, StatusCode, Url};
use serde::de::DeserializeOwned;

use crate::events::EventStream;

pub use crate::error::ClientError;
pub use crate::timeouts::{CONNECT_TIMEOUT, REQUEST_TIMEOUT, STREAM_TIMEOUT};

/// The header that makes a start idempotent.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";
/// How much of an unexpected answer's body [`ClientError::UnexpectedStatus`] keeps, in chars.
const MAX_BODY_IN_ERROR: usize = 200;

/// `body` as text, cut to [`MAX_BODY_IN_ERROR`] characters, whitespace runs made single spaces.
fn truncate_body(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.chars().count() <= MAX_BODY_IN_ERROR {
        text
    } else {
        let mut cut: String = text.chars().take(MAX_BODY_IN_ERROR).collect();
        cut.push('…');
        cut
    }
}

/// Checks the broker's base URL and returns it without a trailing `/`.
fn parse_base_url(given: &str) -> Result<String, ClientError> {
    let invalid = |reason: &str| ClientError::InvalidUrl {
        url: given.to_owned(),
        reason: reason.to_owned(),
    };
    let url = Url::parse(given.trim())
        .map_err(|e| invalid(&format!("{e}; expected a URL like http://127.0.0.1:8080")))?;
    match url.scheme() {
        "http" | "https" => {}
        _ => return Err(invalid("expected a URL like http://127.0.0.1:8080")),
    }
    if !matches!(url.host_str(), Some(host) if !host.is_empty()) {
        return Err(invalid("it names no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            "credentials do not belong in the URL; give the API key with --api-key or ARCADE_API_KEY",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("it must not have a query or a fragment"));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// A header value for `value`, refusing anything but printable, space-free ASCII.
fn header_value(what: &'static str, value: &str) -> Result<HeaderValue, ClientError> {
    let printable = !value.is_empty() && value.bytes().all(|b| b.is_ascii_graphic());
    if !printable {
        return Err(ClientError::InvalidHeader(what));
    }
    HeaderValue::from_str(value).map_err(|_| ClientError::InvalidHeader(what))
}

/// A typed client for the broker's `/v1` HTTP API.
///
/// Cheap to clone: clones share one connection pool.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    /// Without a trailing `/`; may hold a path prefix (a broker behind a reverse proxy).
    base_url: String,
}

impl Client {
    /// A client for the broker at `base_url` (such as `http://127.0.0.1:8080`; a path prefix is
    /// kept), sending `Authorization: Bearer KEY` with every call when `api_key` is set.
    ///
    /// Connecting may take [`CONNECT_TIMEOUT`], a whole call [`REQUEST_TIMEOUT`]. Nothing is
    /// sent yet: an unreachable broker shows on the first call.
    pub fn new(base_url: &str, api_key: Option<String>) -> Result<Client, ClientError> {
        Self::with_ca(base_url, api_key, None)
    }

    /// A client that calls as a player, with a player token (API.md, "Players"): a JWT the
    /// portal's server signed for this player, sent as `Authorization: Bearer TOKEN`.
    pub fn with_bearer(base_url: &str, token: &str) -> Result<Client, ClientError> {
        Self::new(base_url, Some(token.to_owned()))
    }

    /// Like [`Client::new`], also trusting the CA certificate `ca_pem` (PEM) for an `https://`
    /// broker whose certificate the system does not know (a private CA). The system's
    /// certificate store is trusted either way.
    pub fn with_ca(
        base_url: &str,
        api_key: Option<String>,
        ca_pem: Option<&[u8]>,
    ) -> Result<Client, ClientError> {
        let base_url = parse_base_url(base_url)?;
        let mut headers = HeaderMap::new();
        if let Some(key) = api_key {
            header_value("API key", &key)?;
            let mut value = HeaderValue::from_str(&format!("Bearer {key}"))
                .map_err(|_| ClientError::InvalidHeader("API key"))?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let mut builder = reqwest::Client::builder();
        if let Some(pem) = ca_pem {
            let ca =
                reqwest::Certificate::from_pem(pem).map_err(|source| ClientError::Transport {
                    base_url: base_url.clone(),
                    source,
                })?;
            builder = builder.add_root_certificate(ca);
        }
        let http = builder
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .default_headers(headers)
            .user_agent(concat!("arcade-portal-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| ClientError::Transport {
                base_url: base_url.clone(),
                source,
            })?;
        Ok(Client { http, base_url })
    }

    /// The broker's base URL, without a trailing `/`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `POST /v1/sessions`: starts a game and answers once it runs, with the `ip`, `port` and
    /// `pid` of the live game process. Needs the `portal` or `admin` role.
    pub async fn start_session(&self, request: &StartSession) -> Result<Session, ClientError> {
        self.call(Method::POST, "/v1/sessions", |r| r.json(request))
            .await
    }

    /// Like [`start_session`](Self::start_session), with an `Idempotency-Key`: repeating the
    /// call with the same key answers the same session and starts nothing, so a start can be
    /// retried safely after a lost answer.
    pub async fn start_session_idempotent(
        &self,
        request: &StartSession,
        key: &str,
    ) -> Result<Session, ClientError> {
        let key = header_value("idempotency key", key)?;
        self.call(Method::POST, "/v1/sessions", |r| {
            r.header(IDEMPOTENCY_KEY, key).json(request)
        })
        .await
    }

    /// `POST /v1/sessions`, with an `Idempotency-Key` when given: the session and its one-time
    /// join token (for the player's client to hand the game), as the start answers them.
    pub async fn start_joinable(
        &self,
        request: &StartSession,
        key: Option<&str>,
    ) -> Result<StartedSession, ClientError> {
        let key = key
            .map(|k| header_value("idempotency key", k))
            .transpose()?;
        self.call(Method::POST, "/v1/sessions", |r| match key {
            Some(k) => r.header(IDEMPOTENCY_KEY, k).json(request),
            None => r.json(request),
        })
        .await
    }

    /// `POST /v1/sessions/{id}/join`: redeems a player's join token, as the session's game
    /// does with its `ARCADE_GAME_KEY` (a client made [`with_bearer`](Self::with_bearer) it).
    /// Once only: a second redeem is [`ErrorCode::TokenUsed`].
    pub async fn join(&self, id: &SessionId, token: &str) -> Result<Joined, ClientError> {
        let body = JoinRequest {
            token: token.to_owned(),
        };
        self.call(Method::POST, &format!("/v1/sessions/{id}/join"), |r| {
            r.json(&body)
        })
        .await
    }

    /// `POST /v1/sessions/{id}/join-tokens`: a fresh join token for a reconnect; the previous
    /// one stops working.
    pub async fn new_join_token(&self, id: &SessionId) -> Result<JoinToken, ClientError> {
        self.call(
            Method::POST,
            &format!("/v1/sessions/{id}/join-tokens"),
            |r| r,
        )
        .await
    }

    /// `PUT /v1/builds/{sha256}`: uploads the `size` bytes of `file` as build `id`, streamed;
    /// `progress` is called with the bytes sent so far. Answers the build and whether it is
    /// new (the broker answers at once, reading nothing, for a build it has).
    pub async fn put_build(
        &self,
        id: &BuildId,
        file: tokio::fs::File,
        size: u64,
        progress: impl Fn(u64) + Send + Sync + 'static,
    ) -> Result<(Build, bool), ClientError> {
        use futures::StreamExt as _;
        let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stream =
            tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024).map(move |chunk| {
                if let Ok(c) = &chunk {
                    let n = sent.fetch_add(c.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    progress(n + c.len() as u64);
                }
                chunk
            });
        let path = format!("/v1/builds/{id}");
        let url = format!("{}{path}", self.base_url);
        let response = self
            .http
            .put(url)
            .header(reqwest::header::CONTENT_LENGTH, size)
            .body(reqwest::Body::wrap_stream(stream))
            // Builds may be gigabytes: the client's usual deadline is for calls, not uploads.
            .timeout(std::time::Duration::from_secs(24 * 3600))
            .send()
            .await
            .map_err(|e| self.transport(e))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| self.transport(e))?;
        if status.is_success() {
            let build = serde_json::from_slice(&body).map_err(|source| ClientError::Decode {
                request: format!("PUT {path}"),
                source,
            })?;
            Ok((build, status == StatusCode::CREATED))
        } else {
            Err(error_answer(status, None, &body))
        }
    }

    /// `GET /v1/builds`: the builds, newest first. Needs the `admin` role.
    pub async fn builds(&self) -> Result<BuildList, ClientError> {
        self.call(Method::GET, "/v1/builds", |r| r).await
    }

    /// `DELETE /v1/builds/{sha256}`: removes a build no game or live session uses.
    pub async fn delete_build(&self, id: &BuildId) -> Result<Build, ClientError> {
        self.call(Method::DELETE, &format!("/v1/builds/{id}"), |r| r)
            .await
    }

    /// `GET /v1/sessions/{id}`: one session, in any state. A session the broker does not know
    /// is a [`ClientError::Api`] with [`ErrorCode::NotFound`].
    pub async fn get_session(&self, id: &SessionId) -> Result<Session, ClientError> {
        self.call(Method::GET, &format!("/v1/sessions/{id}"), |r| r)
            .await
    }

    /// `GET /v1/sessions/{id}/events`: the session's history, oldest first: each change, its
    /// state after it, and who caused it.
    pub async fn session_history(&self, id: &SessionId) -> Result<SessionEvents, ClientError> {
        self.call(Method::GET, &format!("/v1/sessions/{id}/events"), |r| r)
            .await
    }

    /// `GET /v1/sessions`: sessions matching every filter set in `query`, newest first.
    pub async fn list_sessions(&self, query: &SessionQuery) -> Result<SessionList, ClientError> {
        self.call(Method::GET, "/v1/sessions", |r| r.query(query))
            .await
    }

    /// `DELETE /v1/sessions/{id}`: ends a session and answers once the game's processes are
    /// gone, with its final state. Ending a session that is already over answers that state.
    pub async fn end_session(&self, id: &SessionId) -> Result<Session, ClientError> {
        self.call(Method::DELETE, &format!("/v1/sessions/{id}"), |r| r)
            .await
    }

    /// `GET /v1/hosts`: every host the broker knows, ordered by id. Needs the `provider` or
    /// `admin` role.
    pub async fn hosts(&self) -> Result<HostList, ClientError> {
        self.call(Method::GET, "/v1/hosts", |r| r).await
    }

    /// `GET /v1/hosts?label=KEY=VALUE...`: the hosts with every one of `labels`, ordered by
    /// id. Needs the `provider` or `admin` role.
    pub async fn hosts_labelled(
        &self,
        labels: &protocol::labels::Labels,
    ) -> Result<HostList, ClientError> {
        let query: Vec<(&str, String)> = labels
            .iter()
            .map(|(k, v)| ("label", format!("{k}={v}")))
            .collect();
        self.call(Method::GET, "/v1/hosts", |r| r.query(&query))
            .await
    }

    /// `GET /v1/usage`: sessions and the time they ran within a window, by user, game or
    /// host. Needs the `provider` or `admin` role.
    pub async fn usage(&self, query: &UsageQuery) -> Result<Usage, ClientError> {
        self.call(Method::GET, "/v1/usage", |r| r.query(query))
            .await
    }

    /// [`usage`](Self::usage) as CSV (`Accept: text/csv`): a header line, then one line per
    /// key.
    pub async fn usage_csv(&self, query: &UsageQuery) -> Result<String, ClientError> {
        let body = self
            .call_bytes(Method::GET, "/v1/usage", |r| {
                r.query(query).header(reqwest::header::ACCEPT, "text/csv")
            })
            .await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// `GET /v1/brokers`: the brokers of the system (one, or every replica seen lately), by
    /// id. Needs the `provider` or `admin` role.
    pub async fn brokers(&self) -> Result<BrokerList, ClientError> {
        self.call(Method::GET, "/v1/brokers", |r| r).await
    }

    /// `POST /v1/hosts/{id}/drain`: the host gets no new sessions; its running ones go on.
    pub async fn drain_host(&self, id: &HostId) -> Result<Host, ClientError> {
        self.call(Method::POST, &format!("/v1/hosts/{id}/drain"), |r| r)
            .await
    }

    /// `POST /v1/hosts/{id}/resume`: a drained host gets new sessions again.
    pub async fn resume_host(&self, id: &HostId) -> Result<Host, ClientError> {
        self.call(Method::POST, &format!("/v1/hosts/{id}/resume"), |r| r)
            .await
    }

    /// `GET /v1/pools`: the warm pools and their counts, by id. Needs the `admin` role.
    pub async fn pools(&self) -> Result<PoolList, ClientError> {
        self.call(Method::GET, "/v1/pools", |r| r).await
    }

    /// `GET /v1/pools/{id}`: one warm pool and its counts. Needs the `admin` role.
    pub async fn pool(&self, id: &PoolId) -> Result<Pool, ClientError> {
        self.call(Method::GET, &format!("/v1/pools/{id}"), |r| r)
            .await
    }

    /// `PUT /v1/pools/{id}`: creates or changes a warm pool. With `version` (a pool's
    /// [`version`](Pool::version), as read before), only if the pool is still at it: else a
    /// [`ClientError::Api`] with [`ErrorCode::PreconditionFailed`]. Needs the `admin` role.
    pub async fn put_pool(
        &self,
        id: &PoolId,
        spec: &PoolSpec,
        version: Option<u64>,
    ) -> Result<Pool, ClientError> {
        self.call(Method::PUT, &format!("/v1/pools/{id}"), |r| {
            let r = r.json(spec);
            match version {
                Some(v) => r.header(IF_MATCH, format!("\"{v}\"")),
                None => r,
            }
        })
        .await
    }

    /// `DELETE /v1/pools/{id}`: removes a warm pool and stops its ready games; `version` as
    /// for [`put_pool`](Self::put_pool). Needs the `admin` role.
    pub async fn delete_pool(
        &self,
        id: &PoolId,
        version: Option<u64>,
    ) -> Result<Pool, ClientError> {
        self.call(
            Method::DELETE,
            &format!("/v1/pools/{id}"),
            |r| match version {
                Some(v) => r.header(IF_MATCH, format!("\"{v}\"")),
                None => r,
            },
        )
        .await
    }

    /// `PUT /v1/games/{id}`: sets a central game: `body` holds its `build` and its catalog
    /// keys (and `rollout`). With `version` (a game's [`version`](CentralGame::version)),
    /// only if the game is still at it. Needs the `admin` role.
    pub async fn put_game(
        &self,
        id: &GameId,
        body: &serde_json::Value,
        version: Option<u64>,
    ) -> Result<CentralGame, ClientError> {
        self.call(Method::PUT, &format!("/v1/games/{id}"), |r| {
            let r = r.json(body);
            match version {
                Some(v) => r.header(IF_MATCH, format!("\"{v}\"")),
                None => r,
            }
        })
        .await
    }

    /// `GET /v1/games/{id}`: a central game. Needs the `admin` role.
    pub async fn central_game(&self, id: &GameId) -> Result<CentralGame, ClientError> {
        self.call(Method::GET, &format!("/v1/games/{id}"), |r| r)
            .await
    }

    /// `POST /v1/games/{id}/rollback`: a central game back to its previous build, at once.
    pub async fn rollback_game(&self, id: &GameId) -> Result<CentralGame, ClientError> {
        self.call(Method::POST, &format!("/v1/games/{id}/rollback"), |r| r)
            .await
    }

    /// `DELETE /v1/games/{id}`: no new sessions of a central game; running ones go on.
    pub async fn delete_game(&self, id: &GameId) -> Result<CentralGame, ClientError> {
        self.call(Method::DELETE, &format!("/v1/games/{id}"), |r| r)
            .await
    }

    /// `GET /v1/games`: the games online hosts offer, ordered by id.
    pub async fn games(&self) -> Result<GameList, ClientError> {
        self.call(Method::GET, "/v1/games", |r| r).await
    }

    /// `GET /v1/events`: the event stream, from the event after `after` (a previous stream's
    /// [`last_event_id`](EventStream::last_event_id)) or, with `None`, from now on; only
    /// `types` (all when empty) of `session` or `host` when given. Needs the `portal`,
    /// `provider` or `admin` role. The stream has no deadline; the connection does.
    pub async fn events(
        &self,
        types: &[EventType],
        session: Option<&SessionId>,
        host: Option<&HostId>,
        after: Option<u64>,
    ) -> Result<EventStream, ClientError> {
        let mut query: Vec<(&str, String)> = Vec::new();
        if !types.is_empty() {
            let t: Vec<&str> = types.iter().map(|t| t.as_str()).collect();
            query.push(("types", t.join(",")));
        }
        if let Some(s) = session {
            query.push(("session_id", s.to_string()));
        }
        if let Some(h) = host {
            query.push(("host_id", h.to_string()));
        }
        let mut request = self
            .http
            .get(format!("{}/v1/events", self.base_url))
            .query(&query)
            // A stream lasts as long as it is read.
            .timeout(STREAM_TIMEOUT);
        if let Some(a) = after {
            request = request.header("Last-Event-ID", a.to_string());
        }
        let response = request.send().await.map_err(|e| self.transport(e))?;
        let status = response.status();
        if !status.is_success() {
            let retry_after = retry_after(response.headers());
            let body = response.bytes().await.map_err(|e| self.transport(e))?;
            return Err(error_answer(status, retry_after, &body));
        }
        Ok(EventStream::new(response, after))
    }

    /// `GET /v1/sessions/{id}/logs`: the game's stdout and stderr, the last `tail` lines
    /// ([`LogRange::Tail`]) or what follows an earlier answer's end ([`LogRange::From`]).
    /// Needs the `provider` or `admin` role.
    pub async fn session_log(
        &self,
        id: &SessionId,
        range: LogRange,
    ) -> Result<GameLog, ClientError> {
        let query = match range {
            LogRange::Tail(n) => ("tail", n.to_string()),
            LogRange::From(offset) => ("from", offset.to_string()),
        };
        let response = self
            .http
            .get(format!("{}/v1/sessions/{id}/logs", self.base_url))
            .query(&[query])
            .send()
            .await
            .map_err(|e| self.transport(e))?;
        let status = response.status();
        let offset = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
        };
        let (start, end) = (offset("arcade-log-start"), offset("arcade-log-end"));
        let retry_after = retry_after(response.headers());
        let body = response.bytes().await.map_err(|e| self.transport(e))?;
        if !status.is_success() {
            return Err(error_answer(status, retry_after, &body));
        }
        match (start, end) {
            (Some(start), Some(end)) => Ok(GameLog {
                text: body.to_vec(),
                start,
                end,
            }),
            _ => Err(ClientError::UnexpectedStatus {
                status: status.as_u16(),
                body: "a log answer without its Arcade-Log-Start and Arcade-Log-End headers".into(),
            }),
        }
    }

    /// `GET /healthz`: whether the broker answers. Needs no API key.
    pub async fn health(&self) -> Result<Health, ClientError> {
        self.call(Method::GET, "/healthz", |r| r).await
    }

    /// `GET /readyz`: whether the broker can serve (its store, and NATS with replicas,
    /// answer), and the database node it uses. Needs no API key.
    pub async fn ready(&self) -> Result<Health, ClientError> {
        self.call(Method::GET, "/readyz", |r| r).await
    }

    /// Sends `method path` (with whatever `build` adds) and reads the answer as `T`.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        build: impl FnOnce(RequestBuilder) -> RequestBuilder,
    ) -> Result<T, ClientError> {
        let body = self.call_bytes(method.clone(), path, build).await?;
        serde_json::from_slice(&body).map_err(|source| ClientError::Decode {
            request: format!("{method} {path}"),
            source,
        })
    }

    /// Sends `method path` (with whatever `build` adds) and answers a success's body, or the
    /// error the broker answered (with its `Retry-After`).
    async fn call_bytes(
        &self,
        method: Method,
        path: &str,
        build: impl FnOnce(RequestBuilder) -> RequestBuilder,
    ) -> Result<Vec<u8>, ClientError> {
        let url = format!("{}{path}", self.base_url);
        let request = build(self.http.request(method, url));
        let response = request.send().await.map_err(|e| self.transport(e))?;
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let body = response.bytes().await.map_err(|e| self.transport(e))?;
        if status.is_success() {
            Ok(body.to_vec())
        } else {
            Err(error_answer(status, retry_after, &body))
        }
    }

    fn transport(&self, source: reqwest::Error) -> ClientError {
        ClientError::Transport {
            base_url: self.base_url.clone(),
            source,
        }
    }
}

/// Which part of a game's output [`Client::session_log`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogRange {
    /// The last lines (the broker answers at most 1 MiB).
    Tail(u32),
    /// What follows this offset: an earlier answer's [`GameLog::end`].
    From(u64),
}

/// Part of a game's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GameLog {
    /// The bytes, as the game wrote them.
    pub text: Vec<u8>,
    /// Where they begin in the whole log.
    pub start: u64,
    /// Where they end: the next [`LogRange::From`].
    pub end: u64,
}

/// An answer's `Retry-After`, in seconds, when it has one.
fn retry_after(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
}

/// The error for a non-success answer.
fn error_answer(status: StatusCode, retry_after: Option<u64>, body: &[u8]) -> ClientError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody { error }) => ClientError::Api {
            status: status.as_u16(),
            code: error.code,
            message: error.message,
            retry_after,
        },
        Err(_) => ClientError::UnexpectedStatus {
            status: status.as_u16(),
            body: truncate_body(body),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_server::{refused_url, serve_once};
    use protocol::api::{ErrorCode, SessionStatus};
    use protocol::GameId;

    const SESSION_JSON: &str = r#"{"session_id":"s1","game_id":"sleeper","mode":"default",
        "config":null,"status":"running","host_id":"host-a","ip":"127.0.0.1","port":20000,
        "pid":4242,"created_at":"2026-11-23T10:00:00Z","started_at":"2026-11-23T10:00:01Z",
        "ended_at":null,"end_reason":null,"exit_code":null}"#;

    #[test]
    fn base_urls_are_checked_and_normalised() {
        let ok = |u: &str| parse_base_url(u).unwrap();
        assert_eq!(ok("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
        assert_eq!(ok("http://127.0.0.1:8080/"), "http://127.0.0.1:8080");
        assert_eq!(ok("http://proxy/arcade/"), "http://proxy/arcade");
        assert_eq!(ok("http://[::1]:8080"), "http://[::1]:8080");
        assert_eq!(ok("https://broker.example/"), "https://broker.example");
        for bad in [
            "",
            "127.0.0.1:8080",
            "localhost:8080",
            "ftp://host",
            "http://user:pw@host",
            "http://host/?x=1",
            "http://host/#frag",
        ] {
            let err = parse_base_url(bad).unwrap_err();
            assert!(
                matches!(err, ClientError::InvalidUrl { .. }),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn api_keys_must_be_sendable() {
        assert!(Client::new("http://h", Some("k-1.x_Y".into())).is_ok());
        for bad in ["", "a b", "a\nb", "é"] {
            let err = Client::new("http://h", Some(bad.into())).unwrap_err();
            assert!(
                matches!(err, ClientError::InvalidHeader("API key")),
                "{bad:?}"
            );
        }
    }

    #[tokio::test]
    async fn start_sends_key_body_and_idempotency_key() {
        let (url, request) = serve_once("201 Created", &[], SESSION_JSON).await;
        let client = Client::new(&url, Some("secret".into())).unwrap();
        let req = StartSession {
            mode: Some("periodic".into()),
            ..StartSession::new(GameId::new("sleeper").unwrap())
        };
        let session = client
            .start_session_idempotent(&req, "retry-1")
            .await
            .unwrap();
        assert_eq!(session.status, SessionStatus::Running);
        assert_eq!(session.port, Some(20000));
        let request = request.await.unwrap();
        assert!(
            request.starts_with("POST /v1/sessions HTTP/1.1\r\n"),
            "{request}"
        );
        let lower = request.to_ascii_lowercase();
        assert!(
            lower.contains("authorization: bearer secret\r\n"),
            "{request}"
        );
        assert!(lower.contains("idempotency-key: retry-1\r\n"), "{request}");
        assert!(
            request.ends_with(r#"{"game_id":"sleeper","mode":"periodic"}"#),
            "{request}"
        );
    }

    #[tokio::test]
    async fn no_key_no_authorization_header() {
        let (url, request) = serve_once("200 OK", &[], r#"{"status":"ok"}"#).await;
        let client = Client::new(&url, None).unwrap();
        assert_eq!(client.health().await.unwrap().status, "ok");
        let request = request.await.unwrap();
        assert!(
            request.starts_with("GET /healthz HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(!request.to_ascii_lowercase().contains("authorization"));
    }

    #[tokio::test]
    async fn list_sends_the_filters_as_query() {
        let (url, request) = serve_once("200 OK", &[], r#"{"sessions":[]}"#).await;
        let client = Client::new(&format!("{url}/"), None).unwrap();
        let query = SessionQuery {
            status: Some(SessionStatus::Running),
            game_id: Some(GameId::new("sleeper").unwrap()),
            host_id: None,
            user_id: Some("player 1".into()),
            limit: Some(5),
            cursor: None,
        };
        let list = client.list_sessions(&query).await.unwrap();
        assert!(list.sessions.is_empty());
        let request = request.await.unwrap();
        assert!(
            request.starts_with(
                "GET /v1/sessions?status=running&game_id=sleeper&user_id=player+1&limit=5 "
            ),
            "{request}"
        );
    }

    #[tokio::test]
    async fn api_errors_keep_code_message_and_retry_after() {
        let body = r#"{"error":{"code":"no_capacity","message":"no online host has a free slot for game \"sleeper\""}}"#;
        let (url, _request) =
            serve_once("503 Service Unavailable", &[("Retry-After", "5")], body).await;
        let client = Client::new(&url, None).unwrap();
        let err = client
            .start_session(&StartSession::new(GameId::new("sleeper").unwrap()))
            .await
            .unwrap_err();
        match &err {
            ClientError::Api {
                status,
                code,
                retry_after,
                ..
            } => {
                assert_eq!(*status, 503);
                assert_eq!(*code, ErrorCode::NoCapacity);
                assert_eq!(*retry_after, Some(5));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            err.to_string(),
            "no_capacity: no online host has a free slot for game \"sleeper\" (retry after 5 s)"
        );
        assert_eq!(err.code(), Some(ErrorCode::NoCapacity));
    }

    #[tokio::test]
    async fn other_error_bodies_are_cut_short() {
        let body = format!("<html>{}</html>", "x".repeat(500));
        let (url, _request) = serve_once("502 Bad Gateway", &[], &body).await;
        let client = Client::new(&url, None).unwrap();
        let err = client.hosts().await.unwrap_err();
        match &err {
            ClientError::UnexpectedStatus { status, body } => {
                assert_eq!(*status, 502);
                assert_eq!(body.chars().count(), MAX_BODY_IN_ERROR + 1);
                assert!(body.starts_with("<html>xxx"));
            }
            other => panic!("{other:?}"),
        }
        assert!(err
            .to_string()
            .starts_with("the broker answered HTTP 502 Bad Gateway: <html>"));
    }

    #[tokio::test]
    async fn bad_success_bodies_are_decode_errors() {
        let (url, _request) = serve_once("200 OK", &[], r#"{"hosts":"none"}"#).await;
        let client = Client::new(&url, None).unwrap();
        let err = client.hosts().await.unwrap_err();
        assert!(matches!(err, ClientError::Decode { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "cannot read the broker's answer to GET /v1/hosts"
        );
    }

    #[tokio::test]
    async fn unreachable_broker_is_named() {
        let url = refused_url().await;
        let client = Client::new(&url, None).unwrap();
        let err = client.games().await.unwrap_err();
        assert!(matches!(err, ClientError::Transport { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!("cannot reach the broker at {url} (is arcade-broker running?)")
        );
    }

    #[test]
    fn idempotency_keys_are_checked() {
        let client = Client::new("http://h", None).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let err = rt
            .block_on(
                client
                    .start_session_idempotent(&StartSession::new(GameId::new("g").unwrap()), "a b"),
            )
            .unwrap_err();
        assert!(matches!(err, ClientError::InvalidHeader("idempotency key")));
    }
}
