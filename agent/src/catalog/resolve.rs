//! Turning a launch request into exactly what to run for one session — the program, its argv
//! and environment, the session's own copy of its config, its readiness check — or saying why
//! the request is refused. Placeholder values always become parts of single argv elements;
//! nothing here is ever parsed by a shell.

use std::path::{Path, PathBuf};
use std::time::Duration;

use protocol::wire::LaunchRequest;
use protocol::GameId;
use regex::Regex;

use super::template::{Placeholder, Values};
use super::value::truncate;
use super::{Catalog, Game, Ready};
use crate::limits::Limits;
use crate::ports::Lease;
use crate::session_config::SessionConfig;

/// Why a launch request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// The game is not in this catalog.
    #[error("game {0:?} is not in this host's catalog")]
    UnknownGame(String),
    /// The request is wrong: an unknown mode, a config outside `config_dir`, a bad value.
    #[error("{0}")]
    BadRequest(String),
}

/// Exactly what to run for one session. `Debug` shows the environment's names, not its
/// values (`ARCADE_GAME_KEY` is a secret).
#[derive(Clone, PartialEq, Eq)]
pub struct LaunchSpec {
    /// The program.
    pub program: String,
    /// Its argv after the program name.
    pub args: Vec<String>,
    /// Environment variables to set, `ARCADE_*` included.
    pub env: Vec<(String, String)>,
    /// The mode chosen.
    pub mode: String,
    /// Resource limits to apply.
    pub limits: Limits,
    /// The readiness check, if the game has one, and how long it may take.
    pub ready: Option<(ReadyCheck, Duration)>,
    /// The session's own copy of its config, to write before the spawn, if the game sets
    /// keys in it.
    pub session_config: Option<SessionConfig>,
}

impl std::fmt::Debug for LaunchSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaunchSpec")
            .field("program", &self.program)
            .field("args", &self.args)
            .field("env", &self.env.iter().map(|(k, _)| k).collect::<Vec<_>>())
            .field("mode", &self.mode)
            .field("limits", &self.limits)
            .field("ready", &self.ready)
            .field("session_config", &self.session_config)
            .finish()
    }
}

/// A readiness check for one session.
#[derive(Debug, Clone)]
pub enum ReadyCheck {
    /// A TCP connection to the session's port succeeds.
    Tcp,
    /// A line of the game's output matches.
    Log(Regex),
    /// This file exists.
    File(PathBuf),
}

impl PartialEq for ReadyCheck {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Tcp, Self::Tcp) => true,
            (Self::Log(a), Self::Log(b)) => a.as_str() == b.as_str(),
            (Self::File(a), Self::File(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for ReadyCheck {}

impl Catalog {
    /// Turns a launch request into what to run, for a session holding `lease`, whose own
    /// files go in `session_dir`.
    pub fn resolve(
        &self,
        req: &LaunchRequest,
        lease: &Lease,
        session_dir: &Path,
    ) -> Result<LaunchSpec, ResolveError> {
        self.games
            .get(&req.game_id)
            .ok_or_else(|| ResolveError::UnknownGame(req.game_id.to_string()))?
            .resolve(req, lease, session_dir, None)
    }
}

impl Game {
    /// Turns a launch request for this game into what to run, for a session holding
    /// `lease`, whose own files go in `session_dir`; `build` is `{build}`, the directory of
    /// a central game's unpacked build.
    pub fn resolve(
        &self,
        req: &LaunchRequest,
        lease: &Lease,
        session_dir: &Path,
        build: Option<&str>,
    ) -> Result<LaunchSpec, ResolveError> {
        let game = self;
        let (game_id, session_id) = (&req.game_id, &req.session_id);
        let (mode, config) = (req.mode.as_deref(), req.config.as_deref());
        let mode = match mode {
            None => game.modes[0].clone(),
            Some(m) if game.modes.iter().any(|x| x == m) => m.to_owned(),
            Some(m) => {
                return Err(ResolveError::BadRequest(format!(
                    "unknown mode {:?} for game {game_id}: it offers {}",
                    truncate(m),
                    game.modes.join(", ")
                )))
            }
        };
        let chosen = game.resolve_config(game_id, config)?;
        if req.gpus.len() != usize::try_from(game.gpus).unwrap_or(usize::MAX) {
            return Err(ResolveError::BadRequest(format!(
                "game {game_id} takes {} GPUs; the launch named {}",
                game.gpus,
                req.gpus.len()
            )));
        }
        let ports: Vec<String> = lease.ports.iter().map(u16::to_string).collect();
        let slot = lease.slot.to_string();
        let gpu = req
            .gpus
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let mut values = Values {
            mode: &mode,
            config: chosen.as_deref(),
            ports: &ports,
            slot: &slot,
            session_id: session_id.as_str(),
            build,
            gpu: &gpu,
        };
        let applied = protocol::settings::apply(&game.settings, &req.settings)
            .map_err(|e| ResolveError::BadRequest(e.to_string()))?;
        // With keys to set, `{config}` is the session's own copy of the chosen file.
        let session_config = match (&chosen, game.config_set.is_empty() && applied.is_empty()) {
            (_, true) => None,
            (None, false) => return Err(needs(game_id, Placeholder::Config)),
            (Some(original), false) => {
                let original = PathBuf::from(original);
                let name = original.file_name().unwrap_or_default();
                let mut set = game
                    .config_set
                    .iter()
                    .map(|(k, t)| Ok((k.clone(), t.expand(&values)?)))
                    .collect::<Result<Vec<_>, Placeholder>>()
                    .map_err(|p| needs(game_id, p))?;
                set.extend(applied);
                Some(SessionConfig {
                    path: session_dir.join(name),
                    original,
                    set,
                })
            }
        };
        let copy = session_config
            .as_ref()
            .map(|c| c.path.display().to_string());
        if let Some(c) = &copy {
            values.config = Some(c);
        }
        let program = game
            .command
            .expand(&values)
            .map_err(|p| needs(game_id, p))?;
        let args = game
            .args
            .iter()
            .map(|a| a.expand(&values))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|p| needs(game_id, p))?;
        let mut env: Vec<(String, String)> = game
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        env.push(("ARCADE_SESSION_ID".into(), session_id.to_string()));
        env.push(("ARCADE_PORT".into(), ports[0].clone()));
        env.push(("ARCADE_PORTS".into(), ports.join(",")));
        env.push(("ARCADE_SLOT".into(), slot.clone()));
        env.push(("ARCADE_MODE".into(), mode.clone()));
        if let Some(b) = &req.build {
            env.push(("ARCADE_BUILD".into(), b.to_string()));
        }
        if !req.gpus.is_empty() {
            // CUDA's and the NVIDIA container runtime's names for the devices a process sees.
            env.push(("CUDA_VISIBLE_DEVICES".into(), gpu.clone()));
            env.push(("NVIDIA_VISIBLE_DEVICES".into(), gpu.clone()));
        }
        if let Some(c) = values.config {
            env.push(("ARCADE_CONFIG".into(), c.to_owned()));
        }
        if let Some(join) = &req.join {
            env.push(("ARCADE_JOIN_URL".into(), join.url.clone()));
            env.push(("ARCADE_GAME_KEY".into(), join.key.0.clone()));
        }
        let ready = match &game.ready {
            None => None,
            Some(Ready::Tcp) => Some(ReadyCheck::Tcp),
            Some(Ready::Log(re)) => Some(ReadyCheck::Log(re.clone())),
            Some(Ready::File(t)) => Some(ReadyCheck::File(PathBuf::from(
                t.expand(&values).map_err(|p| needs(game_id, p))?,
            ))),
        }
        .map(|check| (check, game.ready_timeout));
        Ok(LaunchSpec {
            program,
            args,
            env,
            mode,
            limits: game.limits,
            ready,
            session_config,
        })
    }
}

fn needs(game_id: &GameId, placeholder: Placeholder) -> ResolveError {
    if let Placeholder::Port(_) = placeholder {
        // Checked at load: a lease always has every port its templates use.
        return ResolveError::BadRequest(format!(
            "game {game_id}: {{{}}} has no port in this lease",
            placeholder.name()
        ));
    }
    ResolveError::BadRequest(format!(
        "game {game_id} needs a {} and none was given (its catalog entry has no default)",
        placeholder.name()
    ))
}

impl Game {
    fn resolve_config(
        &self,
        game_id: &GameId,
        requested: Option<&str>,
    ) -> Result<Option<String>, ResolveError> {
        match (requested, &self.default_config) {
            (Some(_), None) if self.config_dir.is_none() => Err(ResolveError::BadRequest(format!(
                "game {game_id} takes no config file"
            ))),
            (Some(name), _) => self
                .resolve_config_in(name)
                .map(Some)
                .map_err(|e| ResolveError::BadRequest(e.to_string())),
            (None, Some(default)) => self
                .resolve_config_in(default)
                .map(Some)
                .map_err(|e| ResolveError::BadRequest(e.to_string())),
            (None, None) => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::catalog::test_support::*;
    use crate::catalog::SettingEntry;

    #[test]
    fn resolves_placeholders_into_single_args() {
        let tmp = tempfile::tempdir().unwrap();
        let cat = ga_catalog(tmp.path());
        let spec = cat
            .resolve(
                &req(game("neverball"), Some("periodic"), None, &BTreeMap::new()),
                &lease(20001),
                Path::new("/run/arcade/s"),
            )
            .unwrap();
        assert_eq!(spec.program, "/opt/ga/bin/ga-server-periodic");
        let conf = tmp
            .path()
            .canonicalize()
            .unwrap()
            .join("server.neverball.conf");
        assert_eq!(
            spec.args,
            vec![
                conf.display().to_string(),
                "--port=20001".into(),
                "s-1".into()
            ]
        );
        assert!(spec
            .env
            .contains(&("ARCADE_SESSION_ID".to_owned(), "s-1".to_owned())));
        assert!(spec
            .env
            .contains(&("ARCADE_PORT".to_owned(), "20001".to_owned())));
        let spec = cat
            .resolve(
                &req(game("sleeper"), None, None, &BTreeMap::new()),
                &lease(20002),
                Path::new("/run/arcade/s"),
            )
            .unwrap();
        assert_eq!(
            (spec.program.as_str(), spec.mode.as_str()),
            ("/bin/sleep", "default")
        );
    }

    #[test]
    fn default_mode_is_the_first() {
        let tmp = tempfile::tempdir().unwrap();
        let cat = ga_catalog(tmp.path());
        let spec = cat
            .resolve(
                &req(
                    game("neverball"),
                    None,
                    Some("other.conf"),
                    &BTreeMap::new(),
                ),
                &lease(1),
                Path::new("/run/arcade/s"),
            )
            .unwrap();
        assert_eq!(spec.mode, "event-driven");
        assert!(spec.args[0].ends_with("/other.conf"));
    }

    #[test]
    fn refuses_what_it_must() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        let cat = ga_catalog(tmp.path());
        std::os::unix::fs::symlink(outside.path().join("secret"), tmp.path().join("link.conf"))
            .unwrap();
        let nb = game("neverball");
        let cases: &[(Option<&str>, Option<&str>)] = &[
            (Some("turbo"), None),
            (None, Some("../catalog.toml")),
            (None, Some("/etc/passwd")),
            (None, Some("link.conf")),
            (None, Some("missing.conf")),
            (None, Some("a\0b")),
            (None, Some("")),
            (None, Some(&"x".repeat(300))),
        ];
        for (mode, config) in cases {
            let r = cat.resolve(
                &req(nb.clone(), *mode, *config, &BTreeMap::new()),
                &lease(1),
                Path::new("/run/arcade/s"),
            );
            assert!(
                matches!(r, Err(ResolveError::BadRequest(_))),
                "{mode:?} {config:?}: {r:?}"
            );
        }
        assert!(matches!(
            cat.resolve(
                &req(game("sleeper"), None, Some("x.conf"), &BTreeMap::new()),
                &lease(1),
                Path::new("/run/arcade/s")
            ),
            Err(ResolveError::BadRequest(_))
        ));
        assert!(matches!(
            cat.resolve(
                &req(game("nope"), None, None, &BTreeMap::new()),
                &lease(1),
                Path::new("/run/arcade/s")
            ),
            Err(ResolveError::UnknownGame(_))
        ));
    }

    /// A game with two ports and keys set in its config: the session's copy is `{config}`,
    /// its values are this lease's, and the environment says the ports and the slot.
    #[test]
    fn a_lease_fills_ports_slot_and_the_session_config() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().canonicalize().unwrap();
        std::fs::write(dir.join("server.conf"), "server-port = 8554\n").unwrap();
        let mut e = entry("/opt/ga/ga-server-event-driven");
        e.args = vec!["{config}".into(), "--slot={slot}".into()];
        e.ports = Some(2);
        e.config_dir = Some(dir.clone());
        e.default_config = Some("server.conf".into());
        e.config_set = BTreeMap::from([
            ("server-port".into(), "{port}".into()),
            ("control-port".into(), "{port1}".into()),
            ("display".into(), ":{slot}".into()),
        ]);
        e.settings = BTreeMap::from([
            (
                "video-fps".into(),
                SettingEntry {
                    values: vec!["30".into(), "60".into()],
                    default: Some("60".into()),
                    ..SettingEntry::default()
                },
            ),
            (
                "video-specific[b]".into(),
                SettingEntry {
                    min: Some(1e6),
                    max: Some(2e7),
                    default: Some("8000000".into()),
                    ..SettingEntry::default()
                },
            ),
        ]);
        let cat = Catalog::from_entries([("ga".to_owned(), e)]).unwrap();
        assert_eq!(cat.offers()[0].settings.len(), 2);
        assert_eq!(cat.game(&game("ga")).unwrap().ports(), 2);
        assert!(cat.game(&game("nope")).is_none());
        let lease = Lease {
            ports: vec![20004, 20007],
            slot: 3,
            gpus: Vec::new(),
            weight: 1,
        };
        let spec = cat
            .resolve(
                &req(
                    game("ga"),
                    None,
                    None,
                    &BTreeMap::from([("video-fps".to_owned(), "30".to_owned())]),
                ),
                &lease,
                Path::new("/var/lib/arcade/sessions/s"),
            )
            .unwrap();
        assert_eq!(
            spec.args,
            ["/var/lib/arcade/sessions/s/server.conf", "--slot=3"]
        );
        let copy = spec.session_config.unwrap();
        assert_eq!(copy.original, dir.join("server.conf"));
        assert_eq!(
            copy.set,
            [
                ("control-port".to_owned(), "20007".to_owned()),
                ("display".to_owned(), ":3".to_owned()),
                ("server-port".to_owned(), "20004".to_owned()),
                // The setting chosen, and the other's default.
                ("video-fps".to_owned(), "30".to_owned()),
                ("video-specific[b]".to_owned(), "8000000".to_owned()),
            ]
        );
        let refused = cat.resolve(
            &req(
                game("ga"),
                None,
                None,
                &BTreeMap::from([(
                    "video-fps".to_owned(),
                    "30\ninclude = /etc/shadow".to_owned(),
                )]),
            ),
            &lease,
            Path::new("/var/lib/arcade/sessions/s"),
        );
        assert!(
            matches!(&refused, Err(ResolveError::BadRequest(m)) if m.contains("video-fps")),
            "{refused:?}"
        );
        let env: BTreeMap<String, String> = spec.env.into_iter().collect();
        assert_eq!(env["ARCADE_PORTS"], "20004,20007");
        assert_eq!(env["ARCADE_SLOT"], "3");
        assert_eq!(
            env["ARCADE_CONFIG"],
            "/var/lib/arcade/sessions/s/server.conf"
        );
    }
}
