//! Join tokens and game keys (API.md, "Players"): the secrets that let a game tell its own
//! player from anyone else who can reach its port.
//!
//! - A **join token** is 128 random bits, base64url (22 characters), handed only to whoever
//!   started the session. The store keeps its SHA-256 ([`token_hash`]), never the token. A
//!   start under an `Idempotency-Key` also keeps it [`seal`]ed under that key, so a repeat of
//!   the key (on any replica, after any restart) answers the same token: only a caller that
//!   holds the key can open it.
//! - A **game key** is the session's id with an HMAC-SHA256 of it under a secret every
//!   replica reads from the store ([`GameKeys`]): any replica verifies it without a store
//!   read, and it names its session, so another session's key is refused before anything is
//!   looked up. It is valid only while its session runs: the redeem's store write checks
//!   that.
//!
//! Nothing here logs or shows a secret: [`Join`]'s and [`GameKeys`]' `Debug` hide them.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use protocol::wire::Secret;
use protocol::SessionId;
use ring::rand::SecureRandom as _;
use ring::{digest, hmac};
use time::OffsetDateTime;

/// How a game key starts, so a bearer is told from an API key or a JWT at a glance.
const GAME_KEY_PREFIX: &str = "arcade-game.";
/// A game key's MAC: HMAC-SHA256, base64url.
const MAC_LEN: usize = 43;
/// The name of the game keys' secret in the store.
pub const GAME_KEY_SECRET: &str = "game-keys";

/// A join token and until when it may be redeemed.
#[derive(Clone, PartialEq, Eq)]
pub struct Join {
    /// The token, base64url.
    pub token: String,
    /// When it stops being accepted.
    pub expires_at: OffsetDateTime,
}

impl fmt::Debug for Join {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Join(***, expires {})", self.expires_at)
    }
}

/// Random bytes from the system's generator.
///
/// # Panics
/// When the system has no random source: nothing secret can be made then.
pub fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .expect("the system's random source");
    b
}

/// A fresh token: 128 random bits, base64url.
pub fn mint() -> String {
    URL_SAFE_NO_PAD.encode(random::<16>())
}

/// What the store keeps of a token.
pub fn token_hash(token: &str) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, token.as_bytes());
    let mut h = [0u8; 32];
    h.copy_from_slice(d.as_ref());
    h
}

/// The pad a session's token is sealed with under `key` (its raw `Idempotency-Key`).
fn pad(key: &str, session: &SessionId) -> [u8; 16] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(b"arcade join seal\0");
    ctx.update(&(key.len() as u64).to_be_bytes());
    ctx.update(key.as_bytes());
    ctx.update(session.as_str().as_bytes());
    let mut p = [0u8; 16];
    p.copy_from_slice(&ctx.finish().as_ref()[..16]);
    p
}

/// `token` sealed under `key`, for a repeat of that key to open; `None` for a token that is
/// not one of [`mint`]'s.
pub fn seal(token: &str, key: &str, session: &SessionId) -> Option<[u8; 16]> {
    let raw: [u8; 16] = URL_SAFE_NO_PAD.decode(token).ok()?.try_into().ok()?;
    let pad = pad(key, session);
    Some(std::array::from_fn(|i| raw[i] ^ pad[i]))
}

/// The token [`seal`] sealed, opened with the same key; the caller checks it against the
/// stored hash (another key opens it into garbage).
pub fn unseal(sealed: &[u8; 16], key: &str, session: &SessionId) -> String {
    let pad = pad(key, session);
    URL_SAFE_NO_PAD.encode(std::array::from_fn::<u8, 16, _>(|i| sealed[i] ^ pad[i]))
}

/// Makes and checks game keys.
#[derive(Clone)]
pub struct GameKeys {
    key: hmac::Key,
}

impl fmt::Debug for GameKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GameKeys(***)")
    }
}

impl GameKeys {
    /// Keys made with `secret` (every replica reads the same from the store).
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// `session`'s game key.
    pub fn key_for(&self, session: &SessionId) -> Secret {
        let mac = hmac::sign(&self.key, session.as_str().as_bytes());
        Secret(format!(
            "{GAME_KEY_PREFIX}{}.{session}",
            URL_SAFE_NO_PAD.encode(mac.as_ref())
        ))
    }

    /// Whether `bearer` has a game key's shape (it may still not verify).
    pub fn looks_like(bearer: &[u8]) -> bool {
        bearer.starts_with(GAME_KEY_PREFIX.as_bytes())
    }

    /// The session whose game key `bearer` is, if it is one.
    pub fn verify(&self, bearer: &[u8]) -> Option<SessionId> {
        let rest = bearer.strip_prefix(GAME_KEY_PREFIX.as_bytes())?;
        let rest = std::str::from_utf8(rest).ok()?;
        let (mac, session) = rest.split_at_checked(MAC_LEN)?;
        let session = session.strip_prefix('.')?;
        let mac = URL_SAFE_NO_PAD.decode(mac).ok()?;
        hmac::verify(&self.key, session.as_bytes(), &mac).ok()?;
        SessionId::new(session).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sid(s: &str) -> SessionId {
        SessionId::new(s).unwrap()
    }

    #[test]
    fn tokens_are_128_random_bits_and_only_their_hash_is_kept() {
        let (a, b) = (mint(), mint());
        assert_eq!(a.len(), 22);
        assert_ne!(a, b);
        assert_eq!(token_hash(&a), token_hash(&a));
        assert_ne!(token_hash(&a), token_hash(&b));
    }

    #[test]
    fn a_sealed_token_opens_only_with_its_key_and_session() {
        let t = mint();
        let s = sid("s-1");
        let sealed = seal(&t, "order-42", &s).unwrap();
        assert_eq!(unseal(&sealed, "order-42", &s), t);
        assert_ne!(unseal(&sealed, "order-43", &s), t);
        assert_ne!(unseal(&sealed, "order-42", &sid("s-2")), t);
        assert!(seal("not a token", "k", &s).is_none());
    }

    #[test]
    fn a_game_key_names_its_session_and_verifies_only_under_its_secret() {
        let keys = GameKeys::new(b"0123456789abcdef0123456789abcdef");
        let s = sid("019a-session");
        let key = keys.key_for(&s);
        assert!(GameKeys::looks_like(key.0.as_bytes()));
        assert_eq!(keys.verify(key.0.as_bytes()), Some(s.clone()));
        assert_eq!(format!("{key:?}"), "Secret(***)");
        let other = GameKeys::new(b"another secret, another cluster!");
        assert_eq!(other.verify(key.0.as_bytes()), None);
        // Another session's id with this key's MAC.
        let forged = key.0.replace("019a-session", "019b-session");
        assert_eq!(keys.verify(forged.as_bytes()), None);
        for bad in ["", "arcade-game.", "arcade-game.x.s", "pppppppppppppppp"] {
            assert_eq!(keys.verify(bad.as_bytes()), None, "{bad:?}");
        }
    }
}
