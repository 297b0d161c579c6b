//! A config name, resolved to a file inside its game's `config_dir`: relative, without `..`,
//! still inside the (canonical) directory after following symlinks, and a regular file.

use std::path::{Component, Path};

use super::value::{check_value, truncate, ValueError};
use super::Game;

/// Why a config name does not resolve to a file inside the game's `config_dir`. The names
/// held are cut to their first 64 characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The game has no `config_dir`.
    #[error("this game takes no config file")]
    NoConfigDir,
    /// The name is not a valid value.
    #[error(transparent)]
    Value(#[from] ValueError),
    /// The name is absolute or holds `..`.
    #[error("config {0:?} must be a relative path inside the game's config_dir, without '..'")]
    NotRelative(String),
    /// No such file.
    #[error("config {0:?} does not exist")]
    Missing(String),
    /// Following symlinks leads out of `config_dir`.
    #[error("config {0:?} leads outside the game's config_dir")]
    Outside(String),
    /// It is not a regular file.
    #[error("config {0:?} is not a file")]
    NotAFile(String),
    /// Its resolved path is not UTF-8.
    #[error("config {0:?} is not valid UTF-8")]
    NotUtf8(String),
}

impl Game {
    /// still inside the (canonical) directory, and a regular file.
    pub(super) fn resolve_config_in(&self, name: &str) -> Result<String, ConfigError> {
        let dir = self.config_dir.as_ref().ok_or(ConfigError::NoConfigDir)?;
        check_value("config", name)?;
        let rel = Path::new(name);
        if !rel
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(ConfigError::NotRelative(truncate(name)));
        }
        let full = dir
            .join(rel)
            .canonicalize()
            .map_err(|_| ConfigError::Missing(truncate(name)))?;
        if !full.starts_with(dir) {
            return Err(ConfigError::Outside(truncate(name)));
        }
        if !full.is_file() {
            return Err(ConfigError::NotAFile(truncate(name)));
        }
        full.into_os_string()
            .into_string()
            .map_err(|_| ConfigError::NotUtf8(truncate(name)))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::*;
    use crate::catalog::test_support::*;
    use crate::catalog::ResolveError;

    #[test]
    fn config_messages() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        std::fs::create_dir(tmp.path().join("sub.d")).unwrap();
        let cat = ga_catalog(tmp.path());
        std::os::unix::fs::symlink(outside.path().join("secret"), tmp.path().join("link.conf"))
            .unwrap();
        let message = |game_id: &str, config: &str| match cat.resolve(
            &req(game(game_id), None, Some(config), &BTreeMap::new()),
            &lease(1),
            Path::new("/run/arcade/s"),
        ) {
            Err(ResolveError::BadRequest(m)) => m,
            other => panic!("{config:?}: {other:?}"),
        };
        let long = "x".repeat(300);
        let cases = [
            ("../catalog.toml", r#"config "../catalog.toml" must be a relative path inside the game's config_dir, without '..'"#.to_owned()),
            ("/etc/passwd", r#"config "/etc/passwd" must be a relative path inside the game's config_dir, without '..'"#.to_owned()),
            ("link.conf", r#"config "link.conf" leads outside the game's config_dir"#.to_owned()),
            ("missing.conf", r#"config "missing.conf" does not exist"#.to_owned()),
            ("sub.d", r#"config "sub.d" is not a file"#.to_owned()),
            ("a\0b", "config must not hold control characters".to_owned()),
            ("", "config must not be empty".to_owned()),
            (long.as_str(), "config is longer than 255 bytes".to_owned()),
        ];
        for (config, want) in cases {
            assert_eq!(message("neverball", config), want);
        }
        assert_eq!(
            message("sleeper", "x.conf"),
            "game sleeper takes no config file"
        );
        let dirless = Game::check(entry("/bin/true")).unwrap();
        assert_eq!(
            dirless.resolve_config_in("x").unwrap_err().to_string(),
            "this game takes no config file"
        );
    }
}
