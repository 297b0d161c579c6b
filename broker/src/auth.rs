//! API keys and roles (API.md, "HTTP API"): who may call what.
//!
//! Keys are given as `ROLE:KEY`. A request presents one as `Authorization: Bearer KEY`; it is
//! compared against every configured key in time that depends only on the keys' lengths, so
//! the comparison leaks nothing of a key's content. Keys are never logged or echoed.

use std::fmt;

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
}

impl Role {
    /// Whether this role may do `action`.
    pub fn may(self, action: Action) -> bool {
        use Action as A;
        match self {
            Self::Admin => true,
            Self::Portal => matches!(
                action,
                A::StartSession | A::ReadSessions | A::EndSession | A::ListGames | A::ReadEvents
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

/// The configured keys.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    keys: Vec<ApiKey>,
}

/// Who is calling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// No keys are configured: the API is open (on loopback only).
    Open,
    /// A valid key of this role.
    Role(Role),
}

/// Why a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No key, or not a valid one.
    Unauthenticated,
    /// A valid key whose role may not do this.
    Forbidden(Role),
}

/// Compares secrets in time that depends only on their lengths.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Keys {
    /// The keys given.
    pub fn new(keys: Vec<ApiKey>) -> Self {
        Self { keys }
    }

    /// Whether any key is configured (the API is not open).
    pub fn enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Identifies the caller from its `Authorization` header value.
    pub fn identify(&self, authorization: Option<&[u8]>) -> Result<Caller, Denied> {
        if self.keys.is_empty() {
            return Ok(Caller::Open);
        }
        let token = authorization
            .and_then(|h| {
                h.strip_prefix(b"Bearer ")
                    .or_else(|| h.strip_prefix(b"bearer "))
            })
            .ok_or(Denied::Unauthenticated)?;
        // Every key is compared, whichever matches, so timing says nothing of which.
        let mut found = None;
        for k in &self.keys {
            if same_secret(k.key.as_bytes(), token) {
                found = Some(k.role);
            }
        }
        found.map(Caller::Role).ok_or(Denied::Unauthenticated)
    }

    /// Checks that the caller may do `action`.
    pub fn authorize(
        &self,
        authorization: Option<&[u8]>,
        action: Action,
    ) -> Result<Caller, Denied> {
        match self.identify(authorization)? {
            Caller::Open => Ok(Caller::Open),
            Caller::Role(r) if r.may(action) => Ok(Caller::Role(r)),
            Caller::Role(r) => Err(Denied::Forbidden(r)),
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
                ReadEvents
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
                ReadLogs
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
