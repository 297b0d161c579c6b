//! API keys and roles (API.md, "HTTP API"): who may call what.
//!
//! Keys are given as `ROLE:KEY`. A request presents one as `Authorization: Bearer KEY`; it is
//! compared against every configured key in time that depends only on the keys' lengths, so
//! the comparison leaks nothing of a key's content. Keys are never logged or echoed.

use std::fmt;
use std::sync::Arc;

use protocol::SessionId;

use crate::join::GameKeys;
use crate::players::{PlayerKeys, TokenError};

/// A caller's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A web portal: starts, reads, lists and ends sessions; lists games.
    Portal,
    /// A provider: reads, lists and ends sessions; lists, drains and resumes hosts.
    Provider,
    /// Everything.
    Admin,
}

/// What a request does, for the role check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `POST /v1/sessions`, `GET /IP`.
    StartSession,
    /// `GET /v1/sessions`, `GET /v1/sessions/{id}` and its events.
    ReadSessions,
    /// `DELETE /v1/sessions/{id}`, `GET /End`.
    EndSession,
    /// `GET /v1/games`.
    ListGames,
    /// `GET /v1/hosts`, `GET /v1/brokers`.
    ListHosts,
    /// `POST /v1/hosts/{id}/drain|resume`.
    DrainHosts,
    /// `GET /v1/events`.
    ReadEvents,
    /// `GET /metrics`.
    ReadMetrics,
    /// `GET /v1/sessions/{id}/logs`.
    ReadLogs,
    /// `/v1/pools`: read, create, change and remove warm pools (admin only).
    ManagePools,
    /// `POST /v1/sessions/{id}/join`: redeem a join token (a game, by its game key).
    JoinSession,
    /// `POST /v1/sessions/{id}/join-tokens`: a fresh join token for a reconnect.
    MintJoinToken,
    /// `/v1/builds`: upload, read, list and remove builds (admin only).
    ManageBuilds,
    /// `GET /v1/builds/{sha256}/content`: a build's bytes (admin, and agents by their token).
    ReadBuildContent,
    /// `/v1/games/{id}`: set, read, roll back and remove central games (admin only).
    ManageGames,
    /// `GET /v1/usage`: sessions and time run, by user, game or host.
    ReadUsage,
}

impl Role {
    /// Whether this role may do `action`.
    pub fn may(self, action: Action) -> bool {
        use Action as A;
        match self {
            Self::Admin => true,
            Self::Portal => matches!(
                action,
                A::StartSession
                    | A::ReadSessions
                    | A::EndSession
                    | A::ListGames
                    | A::ReadEvents
                    | A::MintJoinToken
            ),
            Self::Provider => matches!(
                action,
                A::ReadSessions
                    | A::EndSession
                    | A::ListHosts
                    | A::DrainHosts
                    | A::ReadEvents
                    | A::ReadMetrics
                    | A::ReadLogs
                    | A::ReadUsage
            ),
        }
    }

    /// The role's name, as in `--api-key ROLE:KEY`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Portal => "portal",
            Self::Provider => "provider",
            Self::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One configured key. `Debug` does not show the key.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    role: Role,
    key: String,
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({}:***)", self.role)
    }
}

/// The shortest key accepted: a key is a secret, not a password to remember.
pub const MIN_KEY_LEN: usize = 16;

/// Why a `ROLE:KEY` is refused. No variant holds the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// No `:`.
    #[error("an API key must be given as ROLE:KEY (ROLE is portal, provider or admin)")]
    Shape,
    /// Not a role (its first 32 characters).
    #[error("unknown API key role {0:?}: use portal, provider or admin")]
    UnknownRole(String),
    /// Too short, or not visible ASCII.
    #[error("the {0} API key must be at least {MIN_KEY_LEN} visible ASCII characters")]
    Weak(Role),
}

impl std::str::FromStr for ApiKey {
    type Err = KeyError;

    /// Parses `ROLE:KEY`. The error never contains the key.
    fn from_str(s: &str) -> Result<Self, KeyError> {
        let (role, key) = s.split_once(':').ok_or(KeyError::Shape)?;
        let role = match role.trim() {
            "portal" => Role::Portal,
            "provider" => Role::Provider,
            "admin" => Role::Admin,
            other => return Err(KeyError::UnknownRole(other.chars().take(32).collect())),
        };
        if key.len() < MIN_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(KeyError::Weak(role));
        }
        Ok(Self {
            role,
            key: key.to_owned(),
        })
    }
}

/// The configured keys: API keys, and the keys that verify player tokens. `Debug` shows no
/// secret.
#[derive(Clone, Default)]
pub struct Keys {
    keys: Vec<ApiKey>,
    players: Option<Arc<PlayerKeys>>,
    games: Option<GameKeys>,
    agent_token: Option<String>,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys")
            .field("keys", &self.keys)
            .field("players", &self.players.is_some())
            .field("games", &self.games.is_some())
            .field("agent_token", &self.agent_token.as_ref().map(|_| "***"))
            .finish()
    }
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No keys are configured: anyone (the API is open, on loopback).
    Open,
    /// A caller with an API key of this role.
    Role(Role),
    /// A player, by a verified player token: its user id.
    Player(String),
    /// A game, by its game key: its session.
    Game(SessionId),
    /// An agent, by the agent token (`--agent-token`).
    Agent,
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No key, or one that is not configured.
    Unauthenticated,
    /// A player token that does not verify (it is not an API key either).
    BadToken(TokenError),
    /// The key's role may not do this.
    Forbidden(Role),
    /// A player may not do this.
    PlayerForbidden,
    /// A game key that does not verify.
    BadGameKey,
    /// A game key may only redeem its own session's join tokens.
    GameForbidden,
    /// The agent token may only read builds' bytes.
    AgentForbidden,
}

/// Compares secrets in time that depends only on their lengths.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What a player may do: start sessions for its own user, read, list and end its own, and
/// list games. Which sessions are its own is the handlers' to check.
pub fn player_may(action: Action) -> bool {
    matches!(
        action,
        Action::StartSession
            | Action::ReadSessions
            | Action::EndSession
            | Action::ListGames
            | Action::MintJoinToken
    )
}

/// What an agent may do with the agent token: download builds.
pub fn agent_may(action: Action) -> bool {
    action == Action::ReadBuildContent
}

/// What a game may do with its key: redeem its own session's join tokens. Which session is
/// its own is the handler's to check.
pub fn game_may(action: Action) -> bool {
    action == Action::JoinSession
}

impl Keys {
    /// The given API keys; no player token is accepted.
    pub fn new(keys: Vec<ApiKey>) -> Self {
        Self {
            keys,
            players: None,
            games: None,
            agent_token: None,
        }
    }

    /// These keys, and the agent token, which agents download builds with.
    pub fn with_agent_token(mut self, token: Option<String>) -> Self {
        self.agent_token = token.filter(|t| !t.is_empty());
        self
    }

    /// These keys, and game keys verified with `games`.
    pub fn with_games(mut self, games: GameKeys) -> Self {
        self.games = Some(games);
        self
    }

    /// These keys, and player tokens verified with `players`.
    pub fn with_players(mut self, players: Arc<PlayerKeys>) -> Self {
        self.players = Some(players);
        self
    }

    /// Whether any API key is configured (else the API is open to callers without one).
    pub fn enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Who presents `authorization` (the `Authorization` header's value): an API key's role,
    /// a player by a verified token, or anyone while no API key is configured (a player
    /// token is still a player's: it never widens what its bearer may do).
    pub fn identify(&self, authorization: Option<&[u8]>) -> Result<Caller, Denied> {
        let token = authorization.and_then(|h| {
            h.strip_prefix(b"Bearer ")
                .or_else(|| h.strip_prefix(b"bearer "))
        });
        let Some(token) = token else {
            return if self.keys.is_empty() {
                Ok(Caller::Open)
            } else {
                Err(Denied::Unauthenticated)
            };
        };
        let mut found = None;
        for k in &self.keys {
            if same_secret(k.key.as_bytes(), token) {
                found = Some(k.role);
            }
        }
        if let Some(role) = found {
            return Ok(Caller::Role(role));
        }
        if self
            .agent_token
            .as_ref()
            .is_some_and(|t| same_secret(t.as_bytes(), token))
        {
            return Ok(Caller::Agent);
        }
        if let Some(games) = self.games.as_ref().filter(|_| GameKeys::looks_like(token)) {
            return games
                .verify(token)
                .map(Caller::Game)
                .ok_or(Denied::BadGameKey);
        }
        match &self.players {
            Some(players) => {
                let token = std::str::from_utf8(token)
                    .map_err(|_| Denied::BadToken(TokenError::Malformed))?;
                players
                    .verify(token)
                    .map(|p| Caller::Player(p.user))
                    .map_err(Denied::BadToken)
            }
            None if self.keys.is_empty() => Ok(Caller::Open),
            None => Err(Denied::Unauthenticated),
        }
    }

    /// [`Self::identify`], and whether that caller may do `action`.
    pub fn authorize(
        &self,
        authorization: Option<&[u8]>,
        action: Action,
    ) -> Result<Caller, Denied> {
        match self.identify(authorization)? {
            Caller::Open => Ok(Caller::Open),
            Caller::Role(r) if r.may(action) => Ok(Caller::Role(r)),
            Caller::Role(r) => Err(Denied::Forbidden(r)),
            Caller::Player(u) if player_may(action) => Ok(Caller::Player(u)),
            Caller::Player(_) => Err(Denied::PlayerForbidden),
            Caller::Game(s) if game_may(action) => Ok(Caller::Game(s)),
            Caller::Game(_) => Err(Denied::GameForbidden),
            Caller::Agent if agent_may(action) => Ok(Caller::Agent),
            Caller::Agent => Err(Denied::AgentForbidden),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
        assert!(!same_secret(b"", b"a"));
    }

    #[test]
    fn roles_table() {
        use Action::*;
        let all = [
            StartSession,
            ReadSessions,
            EndSession,
            ListGames,
            ListHosts,
            DrainHosts,
            ReadEvents,
            ReadMetrics,
            ReadLogs,
            ManagePools,
            JoinSession,
            MintJoinToken,
            ManageBuilds,
            ReadBuildContent,
            ManageGames,
            ReadUsage,
        ];
        let allowed = |r: Role| {
            all.iter()
                .filter(|a| r.may(**a))
                .copied()
                .collect::<Vec<_>>()
        };
        assert_eq!(
            allowed(Role::Portal),
            [
                StartSession,
                ReadSessions,
                EndSession,
                ListGames,
                ReadEvents,
                MintJoinToken
            ]
        );
        assert_eq!(
            allowed(Role::Provider),
            [
                ReadSessions,
                EndSession,
                ListHosts,
                DrainHosts,
                ReadEvents,
                ReadMetrics,
                ReadLogs,
                ReadUsage
            ]
        );
        assert_eq!(allowed(Role::Admin), all);
    }

    #[test]
    fn keys_parse_and_never_show() {
        let k: ApiKey = "portal:0123456789abcdef".parse().unwrap();
        assert_eq!(format!("{k:?}"), "ApiKey(portal:***)");
        for bad in [
            "portal",
            "boss:0123456789abcdef",
            "admin:short",
            "admin:has space 0123456789",
        ] {
            let err = bad.parse::<ApiKey>().unwrap_err().to_string();
            assert!(!err.contains("0123456789"), "{err}");
        }
    }

    #[test]
    fn identifies_and_authorizes() {
        let keys = Keys::new(vec![
            "portal:pppppppppppppppp".parse().unwrap(),
            "provider:vvvvvvvvvvvvvvvv".parse().unwrap(),
        ]);
        assert_eq!(keys.identify(None), Err(Denied::Unauthenticated));
        assert_eq!(
            keys.identify(Some(b"Bearer nope")),
            Err(Denied::Unauthenticated)
        );
        assert_eq!(
            keys.identify(Some(b"pppppppppppppppp")),
            Err(Denied::Unauthenticated)
        );
        assert_eq!(
            keys.identify(Some(b"Bearer pppppppppppppppp")),
            Ok(Caller::Role(Role::Portal))
        );
        assert_eq!(
            keys.authorize(Some(b"Bearer pppppppppppppppp"), Action::DrainHosts),
            Err(Denied::Forbidden(Role::Portal))
        );
        assert_eq!(
            Keys::default().authorize(None, Action::DrainHosts),
            Ok(Caller::Open)
        );
    }
}
