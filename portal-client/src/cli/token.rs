//! `arcade token --user U [--ttl S]`: a player token, signed HS256 with the broker's
//! `hs256:` player key, as a portal's server signs one (API.md, "Players"). For tests and
//! scripts: a real portal signs on its own server, with its own key.

use std::time::{SystemTime, UNIX_EPOCH};

use super::CliError;

/// The longest a player token may be valid for (the broker refuses longer ones).
pub const MAX_TTL_SECS: u64 = 24 * 3600;

/// A token for `user`, valid `ttl` seconds from now, signed with `key` (`hs256:SECRET`).
pub fn mint(user: &str, ttl: u64, key: &str) -> Result<String, CliError> {
    let secret = key
        .strip_prefix("hs256:")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            CliError::Token("--key (or ARCADE_PLAYER_KEY) must be hs256:SECRET".into())
        })?;
    if user.is_empty() {
        return Err(CliError::Token("--user must not be empty".into()));
    }
    if ttl == 0 || ttl > MAX_TTL_SECS {
        return Err(CliError::Token(format!(
            "--ttl must be 1 to {MAX_TTL_SECS} seconds"
        )));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let claims = serde_json::json!({"sub": user, "iat": now, "exp": now + ttl, "aud": "arcade"});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| CliError::Token(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_token_names_its_user_and_expires_within_its_ttl() {
        let t = mint("carol", 600, "hs256:portal-secret").unwrap();
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        v.set_audience(&["arcade"]);
        let data = jsonwebtoken::decode::<serde_json::Value>(
            &t,
            &jsonwebtoken::DecodingKey::from_secret(b"portal-secret"),
            &v,
        )
        .unwrap();
        assert_eq!(data.claims["sub"], "carol");
        let (iat, exp) = (
            data.claims["iat"].as_u64().unwrap(),
            data.claims["exp"].as_u64().unwrap(),
        );
        assert_eq!(exp - iat, 600);
    }

    #[test]
    fn a_key_that_is_not_hs256_or_a_ttl_past_a_day_is_refused() {
        assert!(mint("carol", 600, "/etc/arcade/portal.pem").is_err());
        assert!(mint("carol", 600, "hs256:").is_err());
        assert!(mint("carol", MAX_TTL_SECS + 1, "hs256:s").is_err());
        assert!(mint("", 600, "hs256:s").is_err());
    }
}
