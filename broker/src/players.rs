//! Player tokens (API.md, "Players"): JWTs a portal's own server signs for one player, so a
//! browser carries a credential good for that player alone, for a short while, instead of an
//! API key.
//!
//! Verified by `jsonwebtoken` with the `--player-key` keys, never by hand. The algorithm is
//! the key's, never the token's: an Ed25519 key verifies EdDSA only, an RSA key RS256 only, an
//! `hs256:` secret HS256 only. So `alg: none` never verifies, and neither does an HS256 token
//! "signed" with a public key's bytes as its secret (the key-confusion attack). A token's
//! `kid` picks among the keys (a PEM file's key id is its file name without extension; a
//! JWKS names its own); without one, every key of the token's algorithm is tried. `sub` is the
//! player's user id; `exp` is required and at most [`MAX_LIFETIME`] ahead; `nbf` is honoured;
//! `aud`, when present, must be `arcade`.
//!
//! Key files are read again when they change ([`PlayerKeys::refresh`], run off the async
//! threads by its owner), so keys rotate without a restart. A verified token is remembered by
//! its SHA-256 until its `exp`: a player's repeated calls pay the signature check once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// The longest a player token may be valid for, from now.
pub const MAX_LIFETIME_SECS: u64 = 24 * 3600;
/// [`MAX_LIFETIME_SECS`], for the docs.
pub const MAX_LIFETIME: std::time::Duration = std::time::Duration::from_secs(MAX_LIFETIME_SECS);
/// The audience a token may name.
pub const AUDIENCE: &str = "arcade";
/// Verified tokens remembered at most; past it the expired ones are forgotten, then all.
const CACHE_CAP: usize = 100_000;

/// One `--player-key`: a key file (PEM or JWKS), or an HS256 secret.
#[derive(Clone, PartialEq, Eq)]
pub enum KeySpec {
    /// A file holding an Ed25519 or RSA public key (PEM), or a JWKS.
    File(PathBuf),
    /// `hs256:SECRET`.
    Hs256(Vec<u8>),
}

impl std::fmt::Debug for KeySpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(p) => write!(f, "File({})", p.display()),
            Self::Hs256(_) => f.write_str("Hs256(<secret>)"),
        }
    }
}

impl FromStr for KeySpec {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.strip_prefix("hs256:") {
            Some("") => Err(KeyError::EmptySecret),
            Some(secret) => Ok(Self::Hs256(secret.as_bytes().to_vec())),
            None if s.is_empty() => Err(KeyError::EmptyPath),
            None => Ok(Self::File(PathBuf::from(s))),
        }
    }
}

/// Why the player keys could not be read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// `hs256:` with nothing after it.
    #[error("--player-key hs256:SECRET needs a secret")]
    EmptySecret,
    /// An empty `--player-key`.
    #[error("--player-key needs a file or hs256:SECRET")]
    EmptyPath,
    /// A key file that cannot be read or holds no key this broker accepts.
    #[error("--player-key {path}: {why}")]
    File {
        /// The file.
        path: String,
        /// What is wrong with it.
        why: String,
    },
}

/// Why a player token is refused (401). The message says what to fix, never the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts with a JSON header and claims.
    #[error("the bearer is neither a configured API key nor a player token (not a JWT)")]
    Malformed,
    /// An algorithm the broker never accepts (`none` among them).
    #[error("the player token's alg {0:?} is not accepted (EdDSA, RS256 or HS256 only)")]
    Algorithm(String),
    /// A `kid` no configured key has.
    #[error("no player key has the token's kid {0:?}")]
    UnknownKid(String),
    /// No key of the token's algorithm (and `kid`) verifies its signature.
    #[error("the player token's signature does not verify with any player key")]
    BadSignature,
    /// Past its `exp`.
    #[error("the player token has expired")]
    Expired,
    /// Before its `nbf`.
    #[error("the player token is not valid yet (nbf)")]
    NotYetValid,
    /// `exp` further ahead than [`MAX_LIFETIME`].
    #[error("the player token's exp is more than 24 hours ahead")]
    TooLong,
    /// An `aud` that is not `arcade`.
    #[error("the player token's aud must be \"arcade\"")]
    Audience,
    /// A required claim is missing or of the wrong type.
    #[error("the player token needs {0}")]
    Claim(&'static str),
}

/// A verified player.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Player {
    /// The user id (`sub`).
    pub user: String,
    /// When the token expires, in Unix seconds.
    pub expires_at: u64,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Aud {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    exp: Option<u64>,
    #[serde(default)]
    aud: Option<Aud>,
}

/// One key, with the one algorithm it verifies.
struct Key {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

/// What was read from the key specs, and the files' stamps when they were read.
struct Loaded {
    keys: Vec<Key>,
    stamps: Vec<Option<(SystemTime, u64)>>,
}

/// The player keys, and the tokens verified with them.
pub struct PlayerKeys {
    specs: Vec<KeySpec>,
    loaded: RwLock<Loaded>,
    verified: Mutex<HashMap<[u8; 32], Player>>,
}

impl std::fmt::Debug for PlayerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlayerKeys")
            .field("specs", &self.specs)
            .finish_non_exhaustive()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A file's modification time and length, to tell when it changed.
fn stamp(spec: &KeySpec) -> Option<(SystemTime, u64)> {
    match spec {
        KeySpec::File(p) => std::fs::metadata(p)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len()))),
        KeySpec::Hs256(_) => None,
    }
}

fn file_error(path: &Path, why: impl std::fmt::Display) -> KeyError {
    KeyError::File {
        path: path.display().to_string(),
        why: why.to_string(),
    }
}

/// The keys a file holds: a JWKS (JSON with `keys`), or one PEM public key, Ed25519 or RSA,
/// whose key id is the file's name without its extension.
fn read_file(path: &Path) -> Result<Vec<Key>, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|e| file_error(path, e))?;
    if text.trim_start().starts_with('{') {
        let set: JwkSet = serde_json::from_str(&text)
            .map_err(|e| file_error(path, format!("not a JWKS: {e}")))?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            let alg = match &jwk.algorithm {
                AlgorithmParameters::OctetKeyPair(_) => Algorithm::EdDSA,
                AlgorithmParameters::RSA(_) => Algorithm::RS256,
                AlgorithmParameters::OctetKey(_) => Algorithm::HS256,
                AlgorithmParameters::EllipticCurve(_) => {
                    return Err(file_error(
                        path,
                        "EC keys are not accepted (EdDSA, RS256, HS256)",
                    ))
                }
            };
            let key = DecodingKey::from_jwk(jwk).map_err(|e| file_error(path, e))?;
            keys.push(Key {
                kid: jwk.common.key_id.clone(),
                alg,
                key,
            });
        }
        if keys.is_empty() {
            return Err(file_error(path, "the JWKS has no keys"));
        }
        return Ok(keys);
    }
    let kid = path.file_stem().map(|s| s.to_string_lossy().into_owned());
    let bytes = text.as_bytes();
    let (key, alg) = match DecodingKey::from_ed_pem(bytes) {
        Ok(k) => (k, Algorithm::EdDSA),
        Err(_) => match DecodingKey::from_rsa_pem(bytes) {
            Ok(k) => (k, Algorithm::RS256),
            Err(_) => {
                return Err(file_error(
                    path,
                    "neither an Ed25519 nor an RSA public key in PEM, nor a JWKS",
                ))
            }
        },
    };
    Ok(vec![Key { kid, alg, key }])
}

/// Every key of `specs`, and the files' stamps.
fn read_all(specs: &[KeySpec]) -> Result<Loaded, KeyError> {
    let mut keys = Vec::new();
    let mut stamps = Vec::new();
    for spec in specs {
        stamps.push(stamp(spec));
        match spec {
            KeySpec::File(p) => keys.extend(read_file(p)?),
            KeySpec::Hs256(secret) => keys.push(Key {
                kid: None,
                alg: Algorithm::HS256,
                key: DecodingKey::from_secret(secret),
            }),
        }
    }
    Ok(Loaded { keys, stamps })
}

/// The `alg` a token's header names, read only to say why it is refused.
fn named_alg(token: &str) -> Option<String> {
    use base64::Engine as _;
    let header = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("alg")?.as_str().map(str::to_owned)
}

impl PlayerKeys {
    /// Reads every key of `specs`; an unreadable file or one with no key is an error.
    pub fn load(specs: Vec<KeySpec>) -> Result<Self, KeyError> {
        let loaded = read_all(&specs)?;
        Ok(Self {
            specs,
            loaded: RwLock::new(loaded),
            verified: Mutex::new(HashMap::new()),
        })
    }

    /// Reads the key files again if any changed since they were read; answers whether the
    /// keys changed. Blocking (file IO): run it off the async threads. A file that changed
    /// into something unreadable keeps the keys as they were (the error says why).
    pub fn refresh(&self) -> Result<bool, KeyError> {
        let stamps: Vec<_> = self.specs.iter().map(stamp).collect();
        let same = self
            .loaded
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .stamps
            == stamps;
        if same {
            return Ok(false);
        }
        let fresh = read_all(&self.specs)?;
        *self.loaded.write().unwrap_or_else(PoisonError::into_inner) = fresh;
        // A key taken away takes its tokens with it.
        self.verified
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        Ok(true)
    }

    /// The player a token names, if one of the keys verifies it and its claims hold now.
    pub fn verify(&self, token: &str) -> Result<Player, TokenError> {
        self.verify_at(token, now())
    }

    fn verify_at(&self, token: &str, now: u64) -> Result<Player, TokenError> {
        let mut hash = [0u8; 32];
        hash.copy_from_slice(
            ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref(),
        );
        if let Some(p) = self.remembered(&hash, now) {
            return Ok(p);
        }
        let player = self.check(token, now)?;
        let mut verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        if verified.len() >= CACHE_CAP {
            verified.retain(|_, p| p.expires_at > now);
            if verified.len() >= CACHE_CAP {
                verified.clear();
            }
        }
        verified.insert(hash, player.clone());
        Ok(player)
    }

    fn remembered(&self, hash: &[u8; 32], now: u64) -> Option<Player> {
        let verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        verified.get(hash).filter(|p| p.expires_at > now).cloned()
    }

    /// The signature and claims of `token`, without the cache.
    fn check(&self, token: &str, now: u64) -> Result<Player, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| match named_alg(token) {
            Some(alg) => TokenError::Algorithm(alg),
            None => TokenError::Malformed,
        })?;
        if !matches!(
            header.alg,
            Algorithm::EdDSA | Algorithm::RS256 | Algorithm::HS256
        ) {
            return Err(TokenError::Algorithm(format!("{:?}", header.alg)));
        }
        let loaded = self.loaded.read().unwrap_or_else(PoisonError::into_inner);
        let named: Vec<&Key> = match &header.kid {
            Some(kid) => {
                let v: Vec<&Key> = loaded
                    .keys
                    .iter()
                    .filter(|k| k.kid.as_deref() == Some(kid.as_str()))
                    .collect();
                if v.is_empty() {
                    return Err(TokenError::UnknownKid(kid.clone()));
                }
                v
            }
            None => loaded.keys.iter().collect(),
        };
        let mut refused = TokenError::BadSignature;
        // The key's algorithm, never the token's: a key verifies only its own kind.
        for key in named.into_iter().filter(|k| k.alg == header.alg) {
            let mut validation = Validation::new(key.alg);
            validation.leeway = 0;
            validation.validate_nbf = true;
            validation.validate_aud = false;
            validation.set_required_spec_claims(&["exp", "sub"]);
            match jsonwebtoken::decode::<Claims>(token, &key.key, &validation) {
                Ok(data) => return claims_now(data.claims, now),
                Err(e) => match e.kind() {
                    ErrorKind::InvalidSignature => {}
                    ErrorKind::ExpiredSignature => return Err(TokenError::Expired),
                    ErrorKind::ImmatureSignature => return Err(TokenError::NotYetValid),
                    ErrorKind::MissingRequiredClaim(c) if c == "exp" => {
                        return Err(TokenError::Claim("exp"))
                    }
                    ErrorKind::MissingRequiredClaim(_) => return Err(TokenError::Claim("sub")),
                    ErrorKind::Json(_) => {
                        refused = TokenError::Claim("sub (a string) and exp (a number)")
                    }
                    _ => refused = TokenError::Malformed,
                },
            }
        }
        Err(refused)
    }
}

/// How often the key files are looked at for changes.
const WATCH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Reads the key files again whenever they change, until `shutdown` fires: keys rotate
/// without a restart. A file that changed into something unreadable keeps the keys as they
/// were, and says why in the log.
pub async fn watch(
    keys: std::sync::Arc<PlayerKeys>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(WATCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let k = std::sync::Arc::clone(&keys);
        match tokio::task::spawn_blocking(move || k.refresh()).await {
            Ok(Ok(true)) => tracing::info!("player keys changed; read them again"),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "player keys changed but cannot be read; keeping the old ones")
            }
            Err(e) => tracing::warn!(error = %e, "cannot look at the player keys"),
        }
    }
}

/// The claims of a token whose signature verified, checked against `now`.
fn claims_now(c: Claims, now: u64) -> Result<Player, TokenError> {
    let exp = c.exp.ok_or(TokenError::Claim("exp"))?;
    if exp <= now {
        return Err(TokenError::Expired);
    }
    if exp > now + MAX_LIFETIME_SECS {
        return Err(TokenError::TooLong);
    }
    let aud_ok = match &c.aud {
        None => true,
        Some(Aud::One(a)) => a == AUDIENCE,
        Some(Aud::Many(v)) => v.iter().any(|a| a == AUDIENCE),
    };
    if !aud_ok {
        return Err(TokenError::Audience);
    }
    let user = c
        .sub
        .filter(|s| !s.is_empty())
        .ok_or(TokenError::Claim("sub"))?;
    Ok(Player {
        user,
        expires_at: exp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const ED_KEY: &[u8] = include_bytes!("../tests/fixtures/players/ed-1.key");
    const RSA_KEY: &[u8] = include_bytes!("../tests/fixtures/players/rsa-1.key");
    const RSA_PUB: &[u8] = include_bytes!("../tests/fixtures/players/rsa-1.pem");
    const SECRET: &str = "a-test-secret-of-the-portal";

    fn fixture(name: &str) -> KeySpec {
        KeySpec::File(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/players")
                .join(name),
        )
    }

    fn keys() -> PlayerKeys {
        PlayerKeys::load(vec![
            fixture("ed-1.pem"),
            fixture("rsa-1.pem"),
            format!("hs256:{SECRET}").parse().unwrap(),
        ])
        .unwrap()
    }

    fn claims(exp_in: i64) -> serde_json::Value {
        let exp = i64::try_from(now()).unwrap() + exp_in;
        json!({"sub": "alice", "exp": exp})
    }

    fn signed(alg: Algorithm, kid: Option<&str>, claims: &serde_json::Value) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        let key = match alg {
            Algorithm::EdDSA => EncodingKey::from_ed_pem(ED_KEY).unwrap(),
            Algorithm::RS256 => EncodingKey::from_rsa_pem(RSA_KEY).unwrap(),
            _ => EncodingKey::from_secret(SECRET.as_bytes()),
        };
        encode(&header, claims, &key).unwrap()
    }

    #[test]
    fn each_kind_of_key_verifies_its_own_tokens() {
        let k = keys();
        for (alg, kid) in [
            (Algorithm::EdDSA, Some("ed-1")),
            (Algorithm::EdDSA, None),
            (Algorithm::RS256, Some("rsa-1")),
            (Algorithm::HS256, None),
        ] {
            let p = k.verify(&signed(alg, kid, &claims(600))).unwrap();
            assert_eq!(p.user, "alice", "{alg:?}");
        }
        let mut with_aud = claims(600);
        with_aud["aud"] = json!(["other", "arcade"]);
        assert!(k.verify(&signed(Algorithm::HS256, None, &with_aud)).is_ok());
    }

    #[test]
    fn every_bad_token_is_refused_with_its_reason() {
        use base64::Engine as _;
        let k = keys();
        let b64 = |v: &serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let none = format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "JWT"})),
            b64(&claims(600))
        );
        // The key-confusion attack: HS256 with the RSA public key's bytes as the secret.
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("rsa-1".into());
        let confused = encode(&header, &claims(600), &EncodingKey::from_secret(RSA_PUB)).unwrap();
        let confused_no_kid = encode(
            &Header::new(Algorithm::HS256),
            &claims(600),
            &EncodingKey::from_secret(RSA_PUB),
        )
        .unwrap();
        let good = signed(Algorithm::EdDSA, Some("ed-1"), &claims(600));
        let (head, rest) = good.split_once('.').unwrap();
        let tampered = format!("{head}.{}", rest.replacen('.', ".A", 1));
        let mut wrong_aud = claims(600);
        wrong_aud["aud"] = json!("someone-else");
        let mut not_yet = claims(600);
        not_yet["nbf"] = json!(now() + 300);
        let no_exp = json!({"sub": "alice"});
        let cases: Vec<(&str, String, TokenError)> = vec![
            ("alg none", none, TokenError::Algorithm("none".into())),
            ("key confusion, by kid", confused, TokenError::BadSignature),
            (
                "key confusion, no kid",
                confused_no_kid,
                TokenError::BadSignature,
            ),
            ("bad signature", tampered, TokenError::BadSignature),
            (
                "expired",
                signed(Algorithm::HS256, None, &claims(-10)),
                TokenError::Expired,
            ),
            (
                "not yet valid",
                signed(Algorithm::HS256, None, &not_yet),
                TokenError::NotYetValid,
            ),
            (
                "exp too far ahead",
                signed(Algorithm::RS256, Some("rsa-1"), &claims(25 * 3600)),
                TokenError::TooLong,
            ),
            (
                "wrong aud",
                signed(Algorithm::HS256, None, &wrong_aud),
                TokenError::Audience,
            ),
            (
                "unknown kid",
                signed(Algorithm::EdDSA, Some("ed-9"), &claims(600)),
                TokenError::UnknownKid("ed-9".into()),
            ),
            (
                "no exp",
                signed(Algorithm::HS256, None, &no_exp),
                TokenError::Claim("exp"),
            ),
            ("garbage", "not.a.jwt".into(), TokenError::Malformed),
            ("empty", String::new(), TokenError::Malformed),
        ];
        for (what, token, want) in cases {
            assert_eq!(k.verify(&token), Err(want), "{what}");
        }
    }

    #[test]
    fn a_key_added_to_a_jwks_file_is_used_after_a_refresh_and_one_removed_stops() {
        use base64::Engine as _;
        let dir = std::env::temp_dir().join(format!("arcade-players-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keys.json");
        // The Ed25519 public key's 32 bytes are the end of its SPKI DER.
        let pem = include_str!("../tests/fixtures/players/ed-1.pem");
        let der: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(der)
            .unwrap();
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&der[der.len() - 32..]);
        let jwk = |kid: &str| json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid});
        let write = |keys: Vec<serde_json::Value>| {
            std::fs::write(&path, json!({ "keys": keys }).to_string()).unwrap();
        };
        write(vec![jwk("k1")]);
        let k = PlayerKeys::load(vec![KeySpec::File(path.clone())]).unwrap();
        let t2 = signed(Algorithm::EdDSA, Some("k2"), &claims(600));
        assert_eq!(k.verify(&t2), Err(TokenError::UnknownKid("k2".into())));
        let t1 = signed(Algorithm::EdDSA, Some("k1"), &claims(600));
        assert!(k.verify(&t1).is_ok());
        // Rotation: k2 added (a different length, so the file's stamp changes even within
        // the file system's time granularity).
        write(vec![jwk("k1"), jwk("k2")]);
        assert!(k.refresh().unwrap());
        assert_eq!(k.verify(&t2).unwrap().user, "alice");
        // k1 retired: its token stops, cached or not.
        write(vec![jwk("k2-only-now")]);
        assert!(k.refresh().unwrap());
        assert_eq!(k.verify(&t1), Err(TokenError::UnknownKid("k1".into())));
        assert!(!k.refresh().unwrap(), "nothing changed since");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn key_specs_are_files_or_hs256_secrets() {
        assert_eq!(
            "hs256:s3cret".parse::<KeySpec>().unwrap(),
            KeySpec::Hs256(b"s3cret".to_vec())
        );
        assert!(matches!(
            "hs256:".parse::<KeySpec>(),
            Err(KeyError::EmptySecret)
        ));
        assert_eq!(
            "/etc/arcade/players.pem".parse::<KeySpec>().unwrap(),
            KeySpec::File("/etc/arcade/players.pem".into())
        );
        assert!(format!("{:?}", KeySpec::Hs256(b"s3cret".to_vec())).contains("<secret>"));
        let missing = PlayerKeys::load(vec![KeySpec::File("/nonexistent/k.pem".into())]);
        assert!(matches!(missing, Err(KeyError::File { .. })));
    }
}
