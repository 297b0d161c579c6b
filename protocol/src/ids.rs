//! Typed identifiers.
//!
//! Every id that crosses a trust boundary (an HTTP path, a request body, an agent's handshake)
//! is validated once, when it is made: 1 to [`MAX_ID_LEN`] bytes of ASCII letters, digits,
//! `-`, `_` and `.`, not starting with `.`. This keeps ids safe to put in file names, log lines
//! and URLs, and means the rest of the code never re-checks them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The longest id accepted, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The string is empty.
    #[error("{kind} must not be empty")]
    Empty {
        /// Which kind of id.
        kind: &'static str,
    },
    /// The string is longer than [`MAX_ID_LEN`].
    #[error("{kind} is longer than {MAX_ID_LEN} bytes")]
    TooLong {
        /// Which kind of id.
        kind: &'static str,
    },
    /// The string holds a character outside `[A-Za-z0-9._-]`, or starts with `.`.
    #[error("{kind} {value:?} may only hold letters, digits, '-', '_' and '.', and must not start with '.'")]
    BadChar {
        /// Which kind of id.
        kind: &'static str,
        /// The offending value, cut to a readable length.
        value: String,
    },
}

fn validate(kind: &'static str, s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if s.len() > MAX_ID_LEN {
        return Err(IdError::TooLong { kind });
    }
    let ok = s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !s.starts_with('.');
    if !ok {
        return Err(IdError::BadChar {
            kind,
            value: s.chars().take(64).collect(),
        });
    }
    Ok(())
}

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates `s` and wraps it.
            pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                validate($kind, &s)?;
                Ok(Self(s))
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

typed_id!(
    /// A session: one game launched for one player. Made by the broker (a UUIDv7: unique
    /// and roughly time-ordered, but nothing may rely on its order), opaque to everyone else.
    SessionId,
    "session id"
);
typed_id!(
    /// A runtime host, as its agent names itself (`--host-id`, by default the hostname).
    HostId,
    "host id"
);
typed_id!(
    /// A game, as named in the agents' catalogs (`[games.NAME]`).
    GameId,
    "game id"
);
typed_id!(
    /// A warm pool of ready games, named by the operator who made it (`PUT /v1/pools/{id}`).
    PoolId,
    "pool id"
);

/// A build: the sha256 of its bytes, 64 lowercase hex digits. A build never changes, so its
/// name is its content's hash.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BuildId(String);

/// Why a string is not a build id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a build is named by its sha256: 64 lowercase hex digits, not {0:?}")]
pub struct BuildIdError(String);

impl BuildId {
    /// Validates `s` (64 lowercase hex digits) and wraps it.
    pub fn new(s: impl Into<String>) -> Result<Self, BuildIdError> {
        let s = s.into();
        if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Self(s))
        } else {
            Err(BuildIdError(s.chars().take(72).collect()))
        }
    }

    /// The build named by a sha256 digest.
    pub fn of_digest(digest: &[u8; 32]) -> Self {
        use fmt::Write as _;
        let mut s = String::with_capacity(64);
        for b in digest {
            let _ = write!(s, "{b:02x}");
        }
        Self(s)
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for BuildId {
    type Error = BuildIdError;
    fn try_from(s: String) -> Result<Self, BuildIdError> {
        Self::new(s)
    }
}

impl std::str::FromStr for BuildId {
    type Err = BuildIdError;
    fn from_str(s: &str) -> Result<Self, BuildIdError> {
        Self::new(s)
    }
}

impl From<BuildId> for String {
    fn from(id: BuildId) -> String {
        id.0
    }
}

impl fmt::Display for BuildId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_is_named_by_its_sha256() {
        let empty = [
            0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f,
            0xb9, 0x24, 0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b,
            0x78, 0x52, 0xb8, 0x55,
        ];
        let id = BuildId::of_digest(&empty);
        assert_eq!(
            id.as_str(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(BuildId::new(id.as_str()).unwrap(), id);
        for bad in [
            "",
            "E3B0",
            &"g".repeat(64),
            &id.as_str().to_uppercase(),
            "../x",
        ] {
            assert!(BuildId::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn accepts_plain_ids() {
        for ok in [
            "a",
            "host-a",
            "neverball_1.2",
            "0190c3c8-7d2e-7f00-8000-000000000000",
        ] {
            assert!(GameId::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_bad_ids() {
        let long = "x".repeat(MAX_ID_LEN + 1);
        for bad in [
            "",
            ".hidden",
            "../etc",
            "a/b",
            "a b",
            "é",
            "a\0b",
            long.as_str(),
        ] {
            assert!(HostId::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn serde_validates() {
        let id: Result<SessionId, _> = serde_json::from_str("\"../x\"");
        assert!(id.is_err());
        let id: SessionId = serde_json::from_str("\"abc\"").unwrap();
        assert_eq!(id.as_str(), "abc");
    }
}

/// What a build is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum BuildKind {
    /// A `.tar.gz` of a game's directory, unpacked by agents.
    Archive,
    /// One executable.
    File,
}

impl BuildKind {
    /// Its name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Archive => "archive",
            Self::File => "file",
        }
    }
}
